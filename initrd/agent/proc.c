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

static struct proc *proc_free_slot(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (!procs[i].used)
			return &procs[i];
	return NULL;
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

/* I/O port frame from the host: only stdin streams flow this way. */
void on_io_frame(uint32_t stream, const unsigned char *data, uint32_t len)
{
	if (stream % 4 != KIND_STDIN)
		return;
	struct proc *p = proc_by_id(stream / 4);
	/* Unknown id, stdin=0, or the process closed its stdin: drop. */
	if (!p || p->in_fd < 0 || p->stdin_eof)
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
			shutdown_vm();
	}
}

/* --- EXEC ------------------------------------------------------------------------------ */

/* Returns whether the process runs; otherwise ERROR has been sent. */
static bool start_process(const struct msg *m, bool *is_main_out)
{
	unsigned long id, tty, rows, cols, want_stdin, is_main;
	struct exec_spec s = { .child_fd = { -1, -1, -1 } };
	const char **argv = NULL, **envp = NULL;
	char err[512], home_env[300];
	int ours[3] = { -1, -1, -1 };
	struct proc *p;

	*is_main_out = msg_uint(m, "main", 0, 1, &is_main) && is_main;
	if (!msg_uint(m, "id", 0, MAX_ID, &id) || id == 0) {
		reply_error(0, STATUS_AGENT, "EXEC without a valid id");
		return false;
	}
	s.id = (uint32_t)id;
	if (!msg_uint(m, "tty", 0, 1, &tty) || !msg_uint(m, "rows", 0, 0xffff, &rows) ||
	    !msg_uint(m, "cols", 0, 0xffff, &cols) || !msg_uint(m, "stdin", 0, 1, &want_stdin) ||
	    !msg_uint(m, "main", 0, 1, &is_main)) {
		reply_error(s.id, STATUS_AGENT, "EXEC with a malformed number");
		return false;
	}
	if (!container_ready) {
		reply_error(s.id, STATUS_AGENT, "EXEC before CONTAINER");
		return false;
	}
	if (proc_by_id(s.id)) {
		reply_error(s.id, STATUS_AGENT, "process id %u is already in use", s.id);
		return false;
	}
	if (!(p = proc_free_slot())) {
		reply_error(s.id, STATUS_AGENT, "too many processes (%d)", MAX_PROCS);
		return false;
	}
	size_t argc = msg_list(m, "arg", NULL), envc = msg_list(m, "env", NULL);
	if (argc == 0) {
		reply_error(s.id, STATUS_AGENT, "EXEC without a command");
		return false;
	}
	argv = calloc(argc + 1, sizeof *argv);
	envp = calloc(envc + 2, sizeof *envp); /* + HOME + NULL */
	if (!argv || !envp)
		die("out of memory");
	msg_list(m, "arg", argv);
	msg_list(m, "env", envp);
	s.argv = argv;
	s.envp = envp;
	s.tty = tty;
	s.cwd = msg_get(m, "cwd");
	if (!s.cwd || !*s.cwd)
		s.cwd = "/";

	if (resolve_user(msg_get(m, "user"), &s.user, err, sizeof err) < 0) {
		reply_error(s.id, STATUS_AGENT, "%s", err);
		goto out;
	}
	if (!env_get(envp, "HOME")) {
		snprintf(home_env, sizeof home_env, "HOME=%s", s.user.home);
		envp[envc] = home_env;
	}
	if (make_stdio(&s, want_stdin, (unsigned short)rows, (unsigned short)cols, ours) < 0) {
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
		.main = is_main,
		.tty = s.tty,
		.id = s.id,
		.pid = pid,
		.pty = s.tty ? ours[0] : -1,
		/* Without stdin=1 a tty gets no input either (docker -t without -i). */
		.in_fd = s.tty && !want_stdin ? -1 : ours[0],
		.out_fd = ours[1],
		.err_fd = s.tty ? -1 : ours[2],
	};
	reply_started(s.id, pid);
out:
	free(argv);
	free(envp);
	return p->used;
}

void handle_exec(const struct msg *m)
{
	bool is_main = false;

	/* The container ends with its main process, also one that never ran. */
	if (!start_process(m, &is_main) && is_main)
		shutdown_vm();
}

/* --- WINSIZE, SIGNAL --------------------------------------------------------------- */

void handle_winsize(const struct msg *m)
{
	unsigned long id, rows, cols;

	if (!msg_uint(m, "id", 0, MAX_ID, &id) || !msg_uint(m, "rows", 0, 0xffff, &rows) ||
	    !msg_uint(m, "cols", 0, 0xffff, &cols))
		return;
	struct proc *p = proc_by_id((uint32_t)id);
	if (!p || p->pty < 0)
		return;
	/* The kernel sends SIGWINCH to the terminal's foreground process group. */
	struct winsize ws = { .ws_row = (unsigned short)rows, .ws_col = (unsigned short)cols };
	if (ioctl(p->pty, TIOCSWINSZ, &ws) < 0)
		logmsg("TIOCSWINSZ for process %lu: %s", id, errstr(errno));
}

void handle_signal(const struct msg *m)
{
	unsigned long id, sig;

	if (!msg_uint(m, "id", 0, MAX_ID, &id) || !msg_uint(m, "signal", 0, NSIG - 1, &sig) ||
	    sig == 0)
		return;
	struct proc *p = proc_by_id((uint32_t)id);
	if (p && !p->exited && kill(p->pid, (int)sig) < 0)
		logmsg("kill %d %lu: %s", (int)p->pid, sig, errstr(errno));
}

