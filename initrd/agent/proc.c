/* The process table: stdio pumping, reaping, EXEC, WINSIZE and SIGNAL. */
#include "agent.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* --- processes ---------------------------------------------------------------- */

struct proc procs[MAX_PROCS];

static struct proc *proc_by_id(uint32_t id)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (procs[i].used && procs[i].id == id)
			return &procs[i];
	return NULL;
}

static struct proc *proc_by_pid(pid_t pid)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (procs[i].used && !procs[i].exited && procs[i].pid == pid)
			return &procs[i];
	return NULL;
}

/* The container's main process while it runs: later processes join its namespaces. */
static struct proc *proc_main(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (procs[i].used && procs[i].main && !procs[i].exited)
			return &procs[i];
	return NULL;
}

static struct proc *proc_free_slot(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (!procs[i].used)
			return &procs[i];
	return NULL;
}

/* Ids of the last processes released: the host may still send stdin for
 * them (it cannot know they are gone), which is no reason to complain. */
static uint32_t gone[MAX_PROCS];
static size_t gone_next;

static bool recently_gone(uint32_t id)
{
	for (size_t i = 0; i < MAX_PROCS; i++)
		if (gone[i] == id)
			return true;
	return false;
}

/* A tty process's in_fd/out_fd alias its pty, which lives until proc_release. */
static void proc_close(struct proc *p, int *fd)
{
	if (*fd >= 0 && *fd != p->pty)
		close(*fd);
	*fd = -1;
}

void proc_release(struct proc *p)
{
	if (p->used) {
		gone[gone_next] = p->id;
		gone_next = (gone_next + 1) % MAX_PROCS;
	}
	proc_close(p, &p->in_fd);
	proc_close(p, &p->out_fd);
	proc_close(p, &p->err_fd);
	if (p->pty >= 0)
		close(p->pty);
	buf_free(&p->inq);
	*p = (struct proc){ .pty = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1 };
}

/* Forwards one read of the process's stdout/stderr/pty as an I/O frame; at the
 * end of the stream sends the EOF frame instead. */
void pump_output(struct proc *p, int *fd, long long *quiet_until, enum stream_kind kind)
{
	static unsigned char frame[HEADER_SIZE + IO_MAX];
	uint32_t stream = p->id * 4 + kind;

	ssize_t n = read(*fd, frame + HEADER_SIZE, IO_MAX);
	if (n > 0) {
		send_frame(&io_port, stream, frame, (uint32_t)n);
		if (n < SMALL_READ)
			*quiet_until = now_ms() + BATCH_MS;
		return;
	}
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	/* A pipe says 0 at the end; a pty master says EIO once no slave fd is left. */
	if (n < 0 && errno != EIO)
		logmsg("read output of process %u: %s", p->id, errstr(errno));
	proc_close(p, fd);
	send_frame(&io_port, stream, frame, 0);
}

/* Writes queued stdin without blocking; the poll loop calls again on POLLOUT. */
void flush_stdin(struct proc *p)
{
	while (p->in_fd >= 0 && buf_size(&p->inq) > 0) {
		ssize_t n = write(p->in_fd, p->inq.data + p->inq.off, buf_size(&p->inq));
		if (n > 0) {
			buf_consume(&p->inq, (size_t)n);
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		/* EPIPE (or EIO on a pty): nobody will ever read the rest. */
		buf_free(&p->inq);
		proc_close(p, &p->in_fd);
	}
	if (p->stdin_eof && buf_size(&p->inq) == 0)
		proc_close(p, &p->in_fd);
}

bool stdin_backlogged(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (procs[i].used && buf_size(&procs[i].inq) > STDIN_HIGH_WATER)
			return true;
	return false;
}

/* I/O port frame from the host: only stdin streams flow this way. Anything
 * else is dropped, and logged (a few times) when it cannot be a race. */
void on_io_frame(uint32_t stream, const unsigned char *data, uint32_t len)
{
	static unsigned bad_frames;
	uint32_t id = stream / 4;

	if (stream % 4 != KIND_STDIN) {
		log_limited(&bad_frames, "dropping an I/O frame for stream %u (kind %u is not stdin)",
			    stream, stream % 4);
		return;
	}
	struct proc *p = proc_by_id(id);
	if (!p) {
		if (id == 0 || !recently_gone(id))
			log_limited(&bad_frames, "dropping %s for unknown process %u",
				    len ? "stdin" : "stdin EOF", id);
		return;
	}
	/* stdin=0, or the process closed its stdin: drop. */
	if (p->in_fd < 0 || p->stdin_eof)
		return;
	if (len == 0) {
		/* Closing a pty's stdin would hang up the terminal; ignore EOF. */
		if (!p->tty) {
			p->stdin_eof = true;
			flush_stdin(p);
		}
		return;
	}
	buf_append(&p->inq, data, len);
	flush_stdin(p);
}

/* Reaps every zombie (orphans of the container get reparented to us); only
 * processes we started are reported. */
void reap_children(int sigfd)
{
	struct signalfd_siginfo si;
	int wstatus;
	pid_t pid;

	while (read(sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
	}
	while ((pid = waitpid(-1, &wstatus, WNOHANG)) > 0) {
		struct proc *p = proc_by_pid(pid);
		if (!p)
			continue;
		p->exited = true;
		p->status = WIFSIGNALED(wstatus) ? 128 + WTERMSIG(wstatus) : WEXITSTATUS(wstatus);
		/* The container ends with its main process; killing the rest also
		 * lets the main process's pipes reach EOF if children inherited them. */
		if (p->main)
			kill(-1, SIGKILL);
	}
}

/* Sends EXIT for every process that has exited and whose output is drained. */
void finish_processes(void)
{
	for (int i = 0; i < MAX_PROCS; i++) {
		struct proc *p = &procs[i];
		if (!p->used || !p->exited || p->out_fd >= 0 || p->err_fd >= 0)
			continue;
		bool was_main = p->main;
		/* The host may destroy the VM as soon as it has EXIT: flush first. */
		if (was_main)
			sync();
		reply_exit(p->id, p->status);
		proc_release(p);
		if (was_main)
			shutdown_vm(EXIT_GRACE_MS);
	}
}

/* --- EXEC ------------------------------------------------------------------------------ */

/* Returns whether the process runs; otherwise ERROR has been sent. */
static bool start_process(const struct msg *m, bool *is_main_out)
{
	struct exec_spec s = { .child_fd = { -1, -1, -1 }, .ns = { { -1, -1, -1, -1 } },
			       .exe_fd = -1 };
	struct exec_req r;
	char err[512], home_env[MAX_HOME + 5];
	int ours[3] = { -1, -1, -1 };
	struct proc *p = NULL;
	bool ok = decode_exec(m, &r, err, sizeof err);

	*is_main_out = r.main;
	s.id = r.id;
	if (!ok) {
		reply_error(r.id, STATUS_AGENT, "%s", err);
		goto out;
	}
	if (!container_ready) {
		reply_error(s.id, STATUS_AGENT, "EXEC before CONTAINER");
		goto out;
	}
	if (proc_by_id(s.id)) {
		reply_error(s.id, STATUS_AGENT, "process id %u is already in use", s.id);
		goto out;
	}
	if (!(p = proc_free_slot())) {
		reply_error(s.id, STATUS_AGENT, "too many processes (%d)", MAX_PROCS);
		goto out;
	}
	s.argv = r.argv;
	s.envp = r.envp;
	s.tty = r.tty;
	s.cwd = r.cwd;
	s.main = r.main;
	if (!r.all_caps && (r.caps & ~caps_known())) {
		reply_error(s.id, STATUS_AGENT, "capability %d is not known to the guest kernel",
			    __builtin_ctzll(r.caps & ~caps_known()));
		goto out;
	}
	s.caps = r.caps & caps_known();
	if (r.tool) {
		if (busybox_fd < 0) {
			reply_error(s.id, STATUS_NOT_FOUND, "exec: the agent has no %s", TOOL_BUSYBOX);
			goto out;
		}
		s.exe_fd = busybox_fd;
	}
	if (r.main && proc_main()) {
		reply_error(s.id, STATUS_AGENT, "the container already has a main process");
		goto out;
	}
	if (!r.main) {
		/* Never in the agent's own namespaces: without a running main
		 * process there is no container to join. */
		struct proc *m = proc_main();
		if (!m) {
			reply_error(s.id, STATUS_AGENT, "the container's main process is not running");
			goto out;
		}
		if (ns_open(m->pid, &s.ns, err, sizeof err) < 0) {
			reply_error(s.id, STATUS_AGENT, "%s", err);
			goto out;
		}
	}

	if (resolve_user(r.user, &s.user, err, sizeof err) < 0) {
		reply_error(s.id, STATUS_AGENT, "%s", err);
		goto out;
	}
	if (!env_get(r.envp, "HOME")) {
		snprintf(home_env, sizeof home_env, "HOME=%s", s.user.home);
		r.envp[r.envc] = home_env;
	}
	if (make_stdio(&s, r.want_stdin, r.rows, r.cols, ours) < 0) {
		reply_error(s.id, STATUS_AGENT, "create stdio: %s", errstr(errno));
		goto out;
	}
	pid_t pid = spawn(&s);
	close_child_fds(&s);
	if (!pid) {
		if (s.tty)
			close(ours[0]);
		else
			close_fds(ours, 3);
		goto out;
	}
	*p = (struct proc){
		.used = true,
		.main = r.main,
		.tty = s.tty,
		.id = s.id,
		.pid = pid,
		.pty = s.tty ? ours[0] : -1,
		/* Without stdin=1 a tty gets no input either (docker -t without -i). */
		.in_fd = s.tty && !r.want_stdin ? -1 : ours[0],
		.out_fd = ours[1],
		.err_fd = s.tty ? -1 : ours[2],
	};
	reply_started(s.id, pid, s.exec_ns);
out:
	ns_close(&s.ns);
	exec_req_free(&r);
	return p && p->used;
}

bool handle_exec(const struct msg *m)
{
	bool is_main = false;

	/* The container ends with its main process, also one that never ran. */
	return !start_process(m, &is_main) && is_main;
}

/* --- WINSIZE, SIGNAL --------------------------------------------------------------- */

/* Neither has a reply to carry an error: a bad one is logged and ignored. */
static unsigned bad_requests;

bool handle_winsize(const struct msg *m)
{
	struct winsize_req r;
	char err[256];

	if (!decode_winsize(m, &r, err, sizeof err)) {
		log_limited(&bad_requests, "ignoring %s", err);
		return false;
	}
	struct proc *p = proc_by_id(r.id);
	if (!p || p->pty < 0)
		return false;
	/* The kernel sends SIGWINCH to the terminal's foreground process group. */
	struct winsize ws = { .ws_row = r.rows, .ws_col = r.cols };
	if (ioctl(p->pty, TIOCSWINSZ, &ws) < 0)
		logmsg("TIOCSWINSZ for process %u: %s", r.id, errstr(errno));
	return false;
}

bool handle_signal(const struct msg *m)
{
	struct signal_req r;
	char err[256];

	if (!decode_signal(m, &r, err, sizeof err)) {
		log_limited(&bad_requests, "ignoring %s", err);
		return false;
	}
	struct proc *p = proc_by_id(r.id);
	if (p && !p->exited && kill(p->pid, r.signal) < 0)
		logmsg("kill %d %d: %s", (int)p->pid, r.signal, errstr(errno));
	return false;
}
