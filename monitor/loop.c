/*
 * The poll loop. Back-pressure is expressed only by what we poll for:
 *  - the guest io socket is not read while a process owner's io queue is full
 *    (the guest then blocks, like a pipe);
 *  - clients' io sockets are not read while the guest-bound io queue is full,
 *    nor their ctl sockets while the guest-bound ctl queue is;
 *  - the guest ctl socket is always read.
 */
#include "monitor.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

enum { P_CTL, P_IO, P_LISTEN, P_SIG, P_CLIENTS };

/* Sends what the queue holds without blocking; -1 once the peer is gone. */
static int flush(int fd, struct buf *q)
{
	while (buf_size(q) > 0) {
		ssize_t n = send(fd, q->data + q->off, buf_size(q), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0)
			return errno == EAGAIN || errno == EINTR ? 0 : -1;
		buf_consume(q, (size_t)n);
	}
	return 0;
}

static void close_clients(void)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		client_drop(i);
}

/* Hanging up on the guest: the agent then powers the VM off. */
/* Become the --on-exit program (the restart policy's judge), as a fresh process would
 * start: no signals blocked or ignored; every descriptor but stderr is close-on-exec. */
static void run_on_exit(void)
{
	sigset_t none;

	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	execv(on_exit_argv[0], on_exit_argv);
	note("cannot run %s: %s", on_exit_argv[0], strerror(errno));
}

static noreturn void finish(int status)
{
	close(guest.ctl);
	close(guest.io);
	close_clients();
	log_close(&mainlog);
	if (on_exit_argv)
		run_on_exit();
	exit(status);
}

static noreturn void vm_gone(const char *why)
{
	note("%s", why);
	exit_file(container_dirfd, STATUS_VM_GONE,
		  "the VM ended before the container's main process exited");
	finish(0);
}

static noreturn void hostile(const char *why)
{
	note("the guest broke the protocol: %s", why);
	exit_file(container_dirfd, STATUS_AGENT, "the guest broke the protocol");
	finish(1);
}

static bool queues_empty(void)
{
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (clients[i].used && (buf_size(&clients[i].ctl_out) || buf_size(&clients[i].io_out)))
			return false;
	return true;
}

/*
 * After main's EXIT: ms until we hang up, 0 for now, -1 for not yet decided by
 * time. Main's EOFs are waited for too (at most EXIT_LINGER_MS): they travel on
 * the other socket and may still be on their way with the end of the log.
 */
static int linger_ms(void)
{
	if (!main_done)
		return -1;
	/*
	 * The wait counts only while output can flow: a client that reads slowly
	 * (its queue not empty, so the guest is not read) must not lose the tail
	 * still inside the guest because the clock ran while it caught up.
	 */
	if (!queues_empty() || owner_backlogged())
		main_done_at = now_ms();
	long long left = main_done_at + EXIT_LINGER_MS - now_ms();
	if (queues_empty() && (left <= 0 || (client_count() == 0 && main_output_done)))
		return 0;
	return left > 0 ? (int)left : -1;
}

static void watch(struct pollfd *p, int fd, bool in, bool out)
{
	p->fd = in || out ? fd : -1;
	p->events = (short)((in ? POLLIN : 0) | (out ? POLLOUT : 0));
	p->revents = 0;
}

static void read_guest(int fd, struct buf *in, uint32_t max, frame_fn *fn, const char *name)
{
	int r = read_frames(fd, in, max, fn, NULL);

	if (r == -1)
		vm_gone(name);
	if (r == -2)
		hostile("a frame longer than the port's limit");
	if (guest.hostile)
		hostile("too many unexpected frames");
}

static void serve_client(int slot, struct pollfd *pc, struct pollfd *pi)
{
	struct client *c = &clients[slot];
	void *ctx = (void *)(intptr_t)slot;

	if ((pc->revents & (POLLIN | POLLHUP | POLLERR)) && (pc->events & POLLIN) &&
	    read_frames(c->ctl, &c->ctl_in, CTL_MAX, client_ctl_frame, ctx) < 0)
		client_doom(slot);
	if ((pi->revents & (POLLIN | POLLHUP | POLLERR)) && (pi->events & POLLIN) &&
	    read_frames(c->io, &c->io_in, IO_MAX, client_io_frame, ctx) < 0)
		client_doom(slot);
}

static void flush_all(void)
{
	if (flush(guest.ctl, &guest.ctl_out) < 0)
		vm_gone("the guest's control socket failed");
	if (flush(guest.io, &guest.io_out) < 0)
		vm_gone("the guest's I/O socket failed");
	for (int i = 0; i < MAX_CLIENTS; i++) {
		if (!clients[i].used || client_doomed(i))
			continue;
		if (flush(clients[i].ctl, &clients[i].ctl_out) < 0 ||
		    flush(clients[i].io, &clients[i].io_out) < 0)
			client_doom(i);
	}
	for (int i = 0; i < MAX_CLIENTS; i++)
		if (client_doomed(i))
			client_drop(i);
}

int monitor_loop(int listen_fd, int sig_fd)
{
	struct pollfd pfd[P_CLIENTS + 2 * MAX_CLIENTS];

	for (;;) {
		bool guest_ctl_full = buf_size(&guest.ctl_out) >= QUEUE_MAX;
		bool guest_io_full = buf_size(&guest.io_out) >= QUEUE_MAX;
		watch(&pfd[P_CTL], guest.ctl, true, buf_size(&guest.ctl_out) > 0);
		watch(&pfd[P_IO], guest.io, !owner_backlogged(), buf_size(&guest.io_out) > 0);
		watch(&pfd[P_LISTEN], listen_fd, true, false);
		watch(&pfd[P_SIG], sig_fd, true, false);
		for (int i = 0; i < MAX_CLIENTS; i++) {
			struct client *c = &clients[i];
			struct pollfd *p = &pfd[P_CLIENTS + 2 * i];
			watch(p, c->ctl, c->used && !guest_ctl_full, c->used && buf_size(&c->ctl_out));
			watch(p + 1, c->io, c->used && !guest_io_full, c->used && buf_size(&c->io_out));
		}
		int timeout = linger_ms();
		if (timeout == 0)
			finish(0);
		if (poll(pfd, sizeof pfd / sizeof pfd[0], timeout) < 0) {
			if (errno == EINTR)
				continue;
			note("poll: %s", strerror(errno));
			vm_gone("poll failed");
		}
		if (pfd[P_SIG].revents & POLLIN)
			vm_gone("stopped by a signal");
		if (pfd[P_CTL].revents)
			read_guest(guest.ctl, &guest.ctl_in, CTL_MAX, guest_ctl_frame,
				   "the guest hung up its control socket");
		if (pfd[P_IO].revents & (POLLIN | POLLHUP | POLLERR))
			read_guest(guest.io, &guest.io_in, IO_MAX, guest_io_frame,
				   "the guest hung up its I/O socket");
		for (int i = 0; i < MAX_CLIENTS; i++)
			if (clients[i].used && !client_doomed(i))
				serve_client(i, &pfd[P_CLIENTS + 2 * i], &pfd[P_CLIENTS + 2 * i + 1]);
		flush_all();
		if (pfd[P_LISTEN].revents & POLLIN)
			client_accept(listen_fd);
	}
}
