/*
 * Guest -> clients. Everything here is untrusted input (docs/protocol.md "The
 * host trusts no frame"): a frame that names no known process, a type the
 * guest never sends, a malformed payload are dropped and counted, and after
 * MAX_DROPS the guest is hostile and the monitor ends the run. Frames that
 * make sense are forwarded unchanged; the clients check them again.
 */
#include "monitor.h"

#include <stdio.h>

void guest_drop(const char *what)
{
	if (guest.drops == 0)
		note("dropped a frame from the guest: %s (further drops are counted)", what);
	if (++guest.drops >= MAX_DROPS)
		guest.hostile = true;
}

/* A full subscriber is dropped rather than stalling the container; the owner
 * is never dropped here, the guest io socket waits for it instead. */
static void to_client_io(int slot, bool owner, const unsigned char *frame, size_t len)
{
	struct client *c = &clients[slot];

	if (!c->used || client_doomed(slot))
		return;
	if (!owner && buf_size(&c->io_out) + len > QUEUE_MAX) {
		client_doom(slot);
		return;
	}
	buf_append(&c->io_out, frame, len);
}

static void to_watchers(const struct proc *p, const unsigned char *frame, size_t len, bool io)
{
	for (int i = 0; i < MAX_CLIENTS; i++) {
		bool owner = p->owner == i;
		if (!owner && !(p->subscribers & (1ull << i)))
			continue;
		if (io)
			to_client_io(i, owner, frame, len);
		else
			to_client_ctl(i, frame, len);
	}
}

bool owner_backlogged(void)
{
	for (int i = 0; i < MAX_PROCS; i++) {
		int o = procs[i].owner;
		if (procs[i].used && o >= 0 && buf_size(&clients[o].io_out) >= QUEUE_MAX)
			return true;
	}
	return false;
}

/* The main process's end: the status the exit file keeps. */
static void main_finished(unsigned status, const char *message)
{
	exit_file(container_dirfd, status, message);
	if (!main_done) {
		main_done = true;
		main_done_at = now_ms();
	}
}

static void on_error(const unsigned char *frame, const unsigned char *p, uint32_t len)
{
	uint32_t id = 0, status = STATUS_AGENT;
	int has_id = payload_num(p, len, "id", MAX_ID, &id);
	struct proc *proc = has_id == 1 ? find_proc(id, false) : NULL;

	if (has_id == 0) {
		if (setup_waiter < 0) {
			guest_drop("ERROR that nobody waits for");
			return;
		}
		to_client_ctl(setup_waiter, frame, HEADER_SIZE + (size_t)len);
		return;
	}
	if (!proc) {
		guest_drop("ERROR for an unknown process");
		return;
	}
	to_watchers(proc, frame, HEADER_SIZE + (size_t)len, false);
	if (proc->main) {
		char message[MESSAGE_MAX + 1];
		bool dup;
		if (payload_num(p, len, "status", 255, &status) != 1)
			status = STATUS_AGENT;
		sanitize(payload_get(p, len, "message", &dup), message);
		main_finished(status, message);
	}
	/* It never started: no EOF will follow. */
	if (proc->main)
		main_output_done = true;
	*proc = (struct proc){ .owner = -1 };
}

static void on_exit_msg(const unsigned char *frame, const unsigned char *p, uint32_t len)
{
	uint32_t id = 0, status = 0;
	struct proc *proc = NULL;

	if (payload_num(p, len, "id", MAX_ID, &id) == 1)
		proc = find_proc(id, false);
	if (!proc) {
		guest_drop("EXIT for an unknown process");
		return;
	}
	/* The exit file first: a client may act on EXIT at once. */
	if (proc->main) {
		if (payload_num(p, len, "status", 255, &status) == 1)
			main_finished(status, "");
		else
			main_finished(STATUS_AGENT, "the guest reported an invalid exit status");
	}
	to_watchers(proc, frame, HEADER_SIZE + (size_t)len, false);
	proc->exited = true;
	proc->seq = ++exit_seq;
}

void guest_ctl_frame(void *ctx, uint32_t type, const unsigned char *frame, uint32_t len)
{
	const unsigned char *p = frame + HEADER_SIZE;
	uint32_t id = 0;
	struct proc *proc = NULL;

	(void)ctx;
	if (!payload_ok(p, len)) {
		guest_drop("malformed control payload");
		return;
	}
	switch (type) {
	case MSG_OK:
		if (setup_waiter < 0) {
			guest_drop("OK that nobody waits for");
			return;
		}
		to_client_ctl(setup_waiter, frame, HEADER_SIZE + (size_t)len);
		return;
	case MSG_ERROR:
		on_error(frame, p, len);
		return;
	case MSG_STARTED:
		if (payload_num(p, len, "id", MAX_ID, &id) == 1)
			proc = find_proc(id, false);
		if (!proc) {
			guest_drop("STARTED for an unknown process");
			return;
		}
		to_watchers(proc, frame, HEADER_SIZE + (size_t)len, false);
		return;
	case MSG_EXIT:
		on_exit_msg(frame, p, len);
		return;
	default:
		guest_drop("unknown control message type");
		return;
	}
}

void guest_io_frame(void *ctx, uint32_t stream, const unsigned char *frame, uint32_t len)
{
	uint32_t id = stream / 4, kind = stream % 4;
	struct proc *proc = id ? find_proc(id, true) : NULL;

	(void)ctx;
	if (kind != KIND_STDOUT && kind != KIND_STDERR) {
		guest_drop("I/O frame of a stream kind the guest never sends");
		return;
	}
	if (!proc) {
		guest_drop("I/O frame for an unknown process");
		return;
	}
	/* The log first: it must not depend on anyone reading. */
	if (proc->main && len > 0)
		log_output(&mainlog, (enum stream_kind)kind, frame + HEADER_SIZE, len);
	if (proc->main && len == 0) {
		proc->ended |= (unsigned char)(1u << kind);
		main_output_done = (proc->ended & proc->streams) == proc->streams;
	}
	to_watchers(proc, frame, HEADER_SIZE + (size_t)len, true);
}
