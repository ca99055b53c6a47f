/*
 * Clients, the process table, and routing frames between them and the guest.
 *
 * A client gets a pair of sockets that behave like the QEMU ones. What it
 * sends goes to the guest unchanged (except ATTACH and PS, which the monitor
 * answers, and a second CONTAINER or a clashing EXEC id, which it refuses).
 * What the guest sends goes to the client that started the process (its
 * owner) and to those that attached to it. The guest is untrusted: a frame
 * that makes no sense is dropped and counted, and too many make it hostile.
 */
#include "monitor.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

struct client clients[MAX_CLIENTS];
struct proc procs[MAX_PROCS];
struct guest guest = { .ctl = -1, .io = -1 };
bool main_done;
bool main_output_done;
long long main_done_at;

static bool container_sent;
int setup_waiter = -1;
static bool doomed[MAX_CLIENTS]; /* dropped once the current dispatch is over */
unsigned long long exit_seq;
static unsigned long ignored_from_clients; /* unknown request types, for a debugger */

/* --- clients ------------------------------------------------------------------ */

static int free_slot(void)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (!clients[i].used)
			return i;
	return -1;
}

/* The client's ends must stay blocking: O_NONBLOCK lives in the open file
 * description, which SCM_RIGHTS shares with the receiver. */
static int make_pair(int fds[2])
{
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0)
		return -1;
	fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
	return 0;
}

static int send_fds(int conn, int ctl, int io)
{
	union {
		char buf[CMSG_SPACE(2 * sizeof(int))];
		struct cmsghdr align;
	} u;
	char byte = 'H';
	struct iovec iov = { &byte, 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			     .msg_controllen = sizeof u.buf };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
	int fds[2] = { ctl, io };

	memset(u.buf, 0, sizeof u.buf);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof fds);
	memcpy(CMSG_DATA(c), fds, sizeof fds);
	return sendmsg(conn, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) == 1 ? 0 : -1;
}

void client_accept(int listen_fd)
{
	int conn = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
	int slot = free_slot(), ctl[2], io[2];

	if (conn < 0)
		return;
	if (slot < 0 || make_pair(ctl) < 0) {
		close(conn);
		return;
	}
	if (make_pair(io) < 0) {
		close(ctl[0]);
		close(ctl[1]);
		close(conn);
		return;
	}
	int sent = send_fds(conn, ctl[1], io[1]);
	close(ctl[1]);
	close(io[1]);
	close(conn);
	if (sent < 0) {
		close(ctl[0]);
		close(io[0]);
		return;
	}
	clients[slot] = (struct client){ .used = true, .ctl = ctl[0], .io = io[0] };
	doomed[slot] = false;
}

/* Its processes keep running in the guest; their output is dropped from now on. */
void client_drop(int slot)
{
	struct client *c = &clients[slot];

	if (!c->used)
		return;
	close(c->ctl);
	close(c->io);
	buf_free(&c->ctl_in);
	buf_free(&c->io_in);
	buf_free(&c->ctl_out);
	buf_free(&c->io_out);
	*c = (struct client){ .ctl = -1, .io = -1 };
	for (int i = 0; i < MAX_PROCS; i++) {
		if (procs[i].owner == slot)
			procs[i].owner = -1;
		procs[i].subscribers &= ~(1ull << slot);
	}
	if (setup_waiter == slot)
		setup_waiter = -1;
	doomed[slot] = false;
}

void client_doom(int slot)
{
	doomed[slot] = true;
}

bool client_doomed(int slot)
{
	return doomed[slot];
}

size_t client_count(void)
{
	size_t n = 0;

	for (int i = 0; i < MAX_CLIENTS; i++)
		n += clients[i].used;
	return n;
}

/* A client that lets its control queue grow past the bound is not reading. */
void to_client_ctl(int slot, const void *frame, size_t len)
{
	struct client *c = &clients[slot];

	if (slot < 0 || !c->used || doomed[slot])
		return;
	if (buf_size(&c->ctl_out) + len > QUEUE_MAX) {
		doomed[slot] = true;
		return;
	}
	buf_append(&c->ctl_out, frame, len);
}

static void reply(int slot, struct buf *frame)
{
	to_client_ctl(slot, frame->data + frame->off, buf_size(frame));
	buf_free(frame);
}

static void reply_error(int slot, uint32_t id, unsigned status, const char *message)
{
	struct buf f = { 0 };
	char ids[16], st[16];

	snprintf(ids, sizeof ids, "%u", id);
	snprintf(st, sizeof st, "%u", status);
	if (id)
		frame_build(&f, MSG_ERROR, "id", ids, "status", st, "message", message, NULL);
	else
		frame_build(&f, MSG_ERROR, "status", st, "message", message, NULL);
	reply(slot, &f);
}

/* --- the process table ---------------------------------------------------------- */

/* A process that has exited stays (as `exited`) until its slot is needed, so
 * that EOF frames arriving after its EXIT still reach the owner. */
struct proc *find_proc(uint32_t id, bool with_exited)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (procs[i].used && procs[i].id == id && (with_exited || !procs[i].exited))
			return &procs[i];
	return NULL;
}

static struct proc *new_proc(uint32_t id)
{
	struct proc *p = find_proc(id, true), *oldest = NULL;

	for (int i = 0; !p && i < MAX_PROCS; i++) {
		if (!procs[i].used)
			p = &procs[i];
		else if (procs[i].exited && (!oldest || procs[i].seq < oldest->seq))
			oldest = &procs[i];
	}
	if (!p)
		p = oldest;
	if (p)
		*p = (struct proc){ .used = true, .id = id, .owner = -1 };
	return p;
}

/* --- client -> guest ------------------------------------------------------------ */

static void to_guest(struct buf *q, const unsigned char *frame, uint32_t len)
{
	buf_append(q, frame, HEADER_SIZE + (size_t)len);
}

static void client_exec(int slot, const unsigned char *frame, const unsigned char *p,
			uint32_t len)
{
	uint32_t id = 0;
	bool dup;
	char text[64];

	if (payload_num(p, len, "id", MAX_ID, &id) != 1 || id == 0) {
		reply_error(slot, 0, STATUS_AGENT, "invalid process id");
		return;
	}
	if (main_done) {
		/* The agent is about to power the VM off: nothing more starts. */
		reply_error(slot, id, STATUS_AGENT, "the container is stopping");
		return;
	}
	if (find_proc(id, false)) {
		snprintf(text, sizeof text, "process id %u is in use", id);
		reply_error(slot, id, STATUS_AGENT, text);
		return;
	}
	struct proc *proc = new_proc(id);
	if (!proc) {
		reply_error(slot, id, STATUS_AGENT, "too many processes");
		return;
	}
	const char *m = payload_get(p, len, "main", &dup);
	proc->main = m && strcmp(m, "1") == 0;
	/* With a tty the pty carries both: there is no stderr stream to end. */
	const char *tty = payload_get(p, len, "tty", &dup);
	proc->streams = tty && strcmp(tty, "1") == 0 ? 1u << KIND_STDOUT
						     : (1u << KIND_STDOUT) | (1u << KIND_STDERR);
	proc->owner = slot;
	to_guest(&guest.ctl_out, frame, len);
}

static void client_attach(int slot, const unsigned char *p, uint32_t len)
{
	uint32_t id = 0;
	struct proc *proc = NULL;

	if (payload_num(p, len, "id", MAX_ID, &id) == 1)
		proc = find_proc(id, false);
	if (!proc) {
		reply_error(slot, id, 1, "no such process");
		return;
	}
	proc->subscribers |= 1ull << slot;
	struct buf f = { 0 };
	frame_build(&f, MSG_OK, NULL);
	reply(slot, &f);
}

static void client_ps(int slot)
{
	struct buf f = { 0 };
	unsigned char header[HEADER_SIZE];
	char rec[32];

	buf_append(&f, header, sizeof header);
	for (int i = 0; i < MAX_PROCS; i++) {
		if (procs[i].used && !procs[i].exited) {
			int n = snprintf(rec, sizeof rec, "proc=%u", procs[i].id);
			buf_append(&f, rec, (size_t)n + 1);
		}
	}
	put_be32(f.data, MSG_OK);
	put_be32(f.data + 4, (uint32_t)(f.len - HEADER_SIZE));
	reply(slot, &f);
}

void client_ctl_frame(void *ctx, uint32_t type, const unsigned char *frame, uint32_t len)
{
	int slot = (int)(intptr_t)ctx;
	const unsigned char *p = frame + HEADER_SIZE;

	if (doomed[slot])
		return;
	if (!payload_ok(p, len)) {
		doomed[slot] = true;
		return;
	}
	switch (type) {
	case MSG_CONTAINER:
		if (container_sent) {
			reply_error(slot, 0, STATUS_AGENT, "the container is already set up");
			return;
		}
		container_sent = true;
		setup_waiter = slot;
		to_guest(&guest.ctl_out, frame, len);
		return;
	case MSG_EXEC:
		client_exec(slot, frame, p, len);
		return;
	case MSG_WINSIZE:
	case MSG_SIGNAL:
		to_guest(&guest.ctl_out, frame, len);
		return;
	case MSG_ATTACH:
		client_attach(slot, p, len);
		return;
	case MSG_PS:
		client_ps(slot);
		return;
	default:
		/* A client is root and trusted: nothing to defend against. */
		ignored_from_clients++;
		return;
	}
}

/* Whole frames only, so frames of different clients never interleave. */
void client_io_frame(void *ctx, uint32_t stream, const unsigned char *frame, uint32_t len)
{
	(void)stream;
	if (!doomed[(int)(intptr_t)ctx])
		to_guest(&guest.io_out, frame, len);
}
