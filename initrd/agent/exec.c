/* Spawning a process: its stdio, the child's set-up and execve. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

/* --- EXEC: the child ------------------------------------------------------------ */

int null_fd = -1, pts_fd = -1, busybox_fd = -1;

/* What a child that could not exec tells the agent; < PIPE_BUF, so one write. */
struct exec_failure {
	int status;
	char message[500];
};

static noreturn void child_fail(int errfd, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static noreturn void child_fail(int errfd, int status, const char *fmt, ...)
{
	struct exec_failure f = { .status = status };
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(f.message, sizeof f.message, fmt, ap);
	va_end(ap);
	if (write(errfd, &f, sizeof f) < 0) {
		/* the agent then sees EOF without a report and says 125 */
	}
	_exit(status);
}

const char *env_get(const char **envp, const char *key)
{
	size_t klen = strlen(key);

	for (; *envp; envp++)
		if (strncmp(*envp, key, klen) == 0 && (*envp)[klen] == '=')
			return *envp + klen + 1;
	return NULL;
}

/* Docker creates a missing working directory; so do we (as root, 0755). */
static void mkdir_p(const char *path)
{
	char buf[4096];

	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			mkdir(buf, 0755);
			*p = '/';
		}
	}
	mkdir(buf, 0755);
}

static noreturn void exec_failed(int errfd, const char *file, int err, bool searched)
{
	switch (err) {
	case ENOENT:
	case ENOTDIR:
		if (searched)
			child_fail(errfd, STATUS_NOT_FOUND,
				   "exec: \"%s\": executable file not found in $PATH", file);
		child_fail(errfd, STATUS_NOT_FOUND, "exec: \"%s\": no such file or directory", file);
	case EACCES:
	case EPERM:
	case EISDIR:
		child_fail(errfd, STATUS_CANNOT_EXEC, "exec: \"%s\": permission denied", file);
	default:
		child_fail(errfd, STATUS_CANNOT_EXEC, "exec: \"%s\": %s", file, errstr(err));
	}
}

/* execve, searching the process's own PATH like execvp but without its
 * /bin/sh fallback for ENOEXEC (docker has none either). */
static noreturn void exec_command(const char **argv, const char **envp, int errfd)
{
	char *const *av = (char *const *)argv, *const *ev = (char *const *)envp;
	const char *file = argv[0];
	char path[4096], full[4096];
	bool denied = false;

	if (!*file)
		exec_failed(errfd, file, ENOENT, true);
	if (strchr(file, '/')) {
		execve(file, av, ev);
		exec_failed(errfd, file, errno, false);
	}
	const char *search = env_get(envp, "PATH");
	snprintf(path, sizeof path, "%s", search ? search : DEFAULT_PATH);
	for (char *dir = path, *next; dir; dir = next) {
		next = strchr(dir, ':');
		if (next)
			*next++ = '\0';
		if (snprintf(full, sizeof full, "%s/%s", *dir ? dir : ".", file) >= (int)sizeof full)
			continue;
		execve(full, av, ev);
		switch (errno) {
		case EACCES:
			denied = true;
			break;
		case ENOENT:
		case ENOTDIR:
		case ENAMETOOLONG:
		case ELOOP:
			break;
		default:
			exec_failed(errfd, file, errno, true);
		}
	}
	exec_failed(errfd, file, denied ? EACCES : ENOENT, true);
}

/* Runs in the forked child, as root with every capability until
 * apply_caps; never returns. */
static noreturn void run_child(const struct exec_spec *s, int errfd)
{
	const struct user *u = &s->user;
	sigset_t none;
	char err[512];
	int in = s->child_fd[0];

	/* Undo PID 1's own settings: blocked SIGCHLD, ignored SIGPIPE, -1000. */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Through our /proc: the container's may not be a real one. */
	write_file(proc_dir_fd, "self/oom_score_adj", "0");
	if (enter_namespaces(s, err, sizeof err) < 0)
		child_fail(errfd, STATUS_AGENT, "%s", err);

	if (setsid() < 0)
		child_fail(errfd, STATUS_AGENT, "setsid: %s", errstr(errno));
	if (s->tty) {
		if (ioctl(s->child_fd[0], TIOCSCTTY, 0) < 0)
			child_fail(errfd, STATUS_AGENT, "set controlling terminal: %s", errstr(errno));
		/* Like a login: the user owns its terminal. */
		if (fchown(s->child_fd[0], u->uid, (gid_t)-1) < 0) {
			/* not fatal */
		}
	} else if (in < 0) {
		/* Ours, not the container's /dev/null, which could be anything. */
		in = null_fd;
	}
	/* All our fds are >= 3 (0-2 are the console), so dup2 cannot clobber one. */
	if (dup2(in, 0) < 0 || dup2(s->child_fd[1], 1) < 0 || dup2(s->child_fd[2], 2) < 0)
		child_fail(errfd, STATUS_AGENT, "dup2: %s", errstr(errno));

	mkdir_p(s->cwd);
	if (drop_bounding_set(s->caps, err, sizeof err) < 0)
		child_fail(errfd, STATUS_AGENT, "%s", err);
	if (setgroups(u->ngroups, u->groups) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0)
		child_fail(errfd, STATUS_AGENT, "set user %u:%u: %s", (unsigned)u->uid,
			   (unsigned)u->gid, errstr(errno));
	if (chdir(s->cwd) < 0)
		child_fail(errfd, STATUS_AGENT, "chdir to cwd (\"%s\"): %s", s->cwd, errstr(errno));
	/* Last: changing user and directory may need what the container lacks.
	 * No PR_SET_NO_NEW_PRIVS: docker does not set it by default either. */
	if (apply_caps(s->caps, u->uid == 0, err, sizeof err) < 0)
		child_fail(errfd, STATUS_AGENT, "%s", err);
	if (s->exe_fd >= 0) {
		/* The agent's busybox: not a path, so nothing in the container (its
		 * root, mounts or PATH) decides what runs. It picks the applet from
		 * argv[0]. Close-on-exec is fine for an ELF binary (not a script). */
		syscall(SYS_execveat, s->exe_fd, "", (char *const *)s->argv,
			(char *const *)s->envp, AT_EMPTY_PATH);
		exec_failed(errfd, s->argv[0], errno, false);
	}
	exec_command(s->argv, s->envp, errfd);
}

/* --- EXEC: the agent's side ------------------------------------------------------------ */

/* Not through /dev/ptmx and /dev/pts/N: the workload may have replaced them
 * (by a FIFO, say). The master comes from the devpts instance CONTAINER
 * mounted, the slave from the master itself (TIOCGPTPEER). */
static int open_pty(unsigned short rows, unsigned short cols, int *master, int *slave)
{
	struct winsize ws = { .ws_row = rows, .ws_col = cols };

	*master = openat(pts_fd, "ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*master < 0)
		return -1;
	if (unlockpt(*master) < 0 ||
	    /* Size before the fork, so the program never sees 0x0. */
	    (rows && cols && ioctl(*master, TIOCSWINSZ, &ws) < 0) ||
	    (*slave = ioctl(*master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		int saved = errno;
		close(*master);
		errno = saved;
		return -1;
	}
	return 0;
}

void close_fds(int *fds, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

static bool set_nonblocking(int fd)
{
	int flags = fcntl(fd, F_GETFL);

	return flags >= 0 && fcntl(fd, F_SETFL, flags | O_NONBLOCK) >= 0;
}

/*
 * Creates the process's stdio. Fills s->child_fd with the child's ends and
 * ours[] with in, out, err (a tty: the master in all three). Returns -1 with
 * errno set on failure, everything closed.
 */
int make_stdio(struct exec_spec *s, bool want_stdin, unsigned short rows,
		      unsigned short cols, int ours[3])
{
	int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };

	if (s->tty) {
		int master, slave;
		if (open_pty(rows, cols, &master, &slave) < 0)
			return -1;
		if (!set_nonblocking(master)) {
			int saved = errno;
			close(master);
			close(slave);
			errno = saved;
			return -1;
		}
		s->child_fd[0] = s->child_fd[1] = s->child_fd[2] = slave;
		ours[0] = ours[1] = ours[2] = master;
		return 0;
	}
	if ((want_stdin && (pipe2(in, O_CLOEXEC) < 0 || !set_nonblocking(in[1]))) ||
	    pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
		int saved = errno;
		close_fds(in, 2);
		close_fds(out, 2);
		close_fds(err, 2);
		errno = saved;
		return -1;
	}
	s->child_fd[0] = in[0];
	s->child_fd[1] = out[1];
	s->child_fd[2] = err[1];
	ours[0] = in[1];
	ours[1] = out[0];
	ours[2] = err[0];
	return 0;
}

void close_child_fds(struct exec_spec *s)
{
	if (s->tty) {
		close(s->child_fd[0]);
	} else {
		close_fds(s->child_fd, 3);
	}
}

/*
 * Forks and execs; returns the pid once execve succeeded (the close-on-exec
 * report pipe reached EOF), or 0 after replying ERROR itself.
 */
pid_t spawn(struct exec_spec *s)
{
	int report[2];
	struct exec_failure f;

	if (pipe2(report, O_CLOEXEC) < 0) {
		reply_error(s->id, STATUS_AGENT, "pipe: %s", errstr(errno));
		return 0;
	}
	/* The report pipe works across the clone as across a fork: the child
	 * holds its write end until execve closes it. */
	pid_t pid = s->main ? fork_isolated() : fork_joined(&s->ns);
	if (pid == 0) {
		close(report[0]);
		run_child(s, report[1]);
	}
	close(report[1]);
	if (pid < 0) {
		close(report[0]);
		reply_error(s->id, STATUS_AGENT, "%s: %s",
			    s->main ? "clone into new namespaces" : "fork into the container",
			    errstr(errno));
		return 0;
	}
	ssize_t n;
	do
		n = read(report[0], &f, sizeof f);
	while (n < 0 && errno == EINTR);
	close(report[0]);
	if (n == 0) {
		s->exec_ns = now_ns();
		return pid;
	}
	/* It failed and exits right away; reap it here, it is nobody's business. */
	waitpid(pid, NULL, 0);
	if (n == (ssize_t)sizeof f) {
		f.message[sizeof f.message - 1] = '\0';
		reply_error(s->id, f.status, "%s", f.message);
	} else {
		reply_error(s->id, STATUS_AGENT, "the process failed before exec");
	}
	return 0;
}

