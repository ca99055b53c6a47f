/* Start-up, control dispatch, the poll loop and power-off. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* --- power-off ------------------------------------------------------------------------- */

noreturn void power_off(void)
{
	sync();
	/* Read-only leaves a clean ext4 even if a dying process still writes. */
	mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
	sync();
	reboot(RB_POWER_OFF);
	/* Not reached; if it were, PID 1 exiting panics and panic=-1 ends the VM. */
	_exit(1);
}

/* After main's EXIT: give the host time to read what QEMU still holds for the
 * sockets (a power-off drops it), i.e. until it hangs up the control port. */
noreturn void shutdown_vm(long long grace_ms)
{
	long long deadline = now_ms() + grace_ms;
	char scratch[4096];

	mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
	for (;;) {
		long long left = deadline - now_ms();
		if (left <= 0)
			break;
		struct pollfd pfd = { .fd = ctl_port.fd, .events = POLLIN };
		if (poll(&pfd, 1, (int)left) <= 0)
			continue;
		if (read(ctl_port.fd, scratch, sizeof scratch) == 0)
			break;
	}
	power_off();
}

/* --- the ports --------------------------------------------------------------------------- */

struct port ctl_port = { CTL_PORT_NAME, -1, CTL_MAX, on_ctl_frame, { 0 }, 0 };
struct port io_port = { IO_PORT_NAME, -1, IO_MAX, on_io_frame, { 0 }, 0 };

/* --- start-up and the main loop ---------------------------------------------------------- */

static void mount_early(void)
{
	/* EBUSY: the kernel may have mounted devtmpfs itself. */
	if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, NULL) < 0 && errno != EBUSY)
		die("mount /dev: %s", errstr(errno));
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		die("mount /proc: %s", errstr(errno));
	if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
		die("mount /sys: %s", errstr(errno));
}

static void setup_stdio_and_log(void)
{
	int fd = open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);

	if (fd >= 0)
		log_fd = fd;
	/* Keep 0-2 occupied so no pipe of ours ever lands there (see run_child). */
	for (int i = 0; i < 3; i++) {
		if (fcntl(i, F_GETFD) < 0 && open("/dev/null", O_RDWR) != i)
			die("cannot open /dev/null as fd %d", i);
	}
}

static int setup_signals(void)
{
	sigset_t set;

	/* PID 1 only gets signals it has handlers for; make the rest explicit. */
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	/* Ctrl-Alt-Del becomes a SIGINT we ignore, not a reboot. */
	reboot(RB_DISABLE_CAD);
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		die("signalfd: %s", errstr(errno));
	return fd;
}

enum watch_kind { W_SIGNAL, W_PORT, W_OUT, W_ERR, W_IN };

struct watch {
	enum watch_kind kind;
	struct proc *p;
	struct port *port;
};

#define MAX_WATCHES (3 + 3 * MAX_PROCS)

static void add_watch(struct pollfd *pfd, struct watch *w, int *n, int fd, short events,
		      struct watch what)
{
	pfd[*n] = (struct pollfd){ .fd = fd, .events = events };
	w[*n] = what;
	(*n)++;
}

/* Whether a deadline is still ahead; if so lowers *timeout to meet it. */
static bool quiet(long long until, int *timeout)
{
	long long wait = until - now_ms();

	if (wait <= 0)
		return false;
	if (*timeout < 0 || wait < *timeout)
		*timeout = (int)wait;
	return true;
}

/* Adds a port to the poll set unless its host end was not connected recently;
 * lowers *timeout so we look again in time. */
static void watch_port(struct pollfd *pfd, struct watch *w, int *n, struct port *port,
		       int *timeout)
{
	if (quiet(port->retry_at, timeout))
		return;
	add_watch(pfd, w, n, port->fd, POLLIN, (struct watch){ .kind = W_PORT, .port = port });
}

static noreturn void serve(int sigfd)
{
	static struct pollfd pfd[MAX_WATCHES];
	static struct watch w[MAX_WATCHES];

	for (;;) {
		int n = 0, timeout = -1;

		add_watch(pfd, w, &n, sigfd, POLLIN, (struct watch){ .kind = W_SIGNAL });
		for (int i = 0; i < MAX_PROCS; i++) {
			struct proc *p = &procs[i];
			if (!p->used)
				continue;
			if (p->out_fd >= 0 && !quiet(p->out_quiet_until, &timeout))
				add_watch(pfd, w, &n, p->out_fd, POLLIN,
					  (struct watch){ .kind = W_OUT, .p = p });
			if (p->err_fd >= 0 && !quiet(p->err_quiet_until, &timeout))
				add_watch(pfd, w, &n, p->err_fd, POLLIN,
					  (struct watch){ .kind = W_ERR, .p = p });
			if (p->in_fd >= 0 && buf_size(&p->inq) > 0)
				add_watch(pfd, w, &n, p->in_fd, POLLOUT,
					  (struct watch){ .kind = W_IN, .p = p });
		}
		/* Backpressure: while a process is not reading its stdin, stop
		 * taking more from the host instead of buffering without bound. */
		if (!stdin_backlogged())
			watch_port(pfd, w, &n, &io_port, &timeout);
		watch_port(pfd, w, &n, &ctl_port, &timeout);

		if (poll(pfd, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			die("poll: %s", errstr(errno));
		}
		/* Procs are only released in finish_processes, so w[].p stays valid. */
		for (int i = 0; i < n; i++) {
			if (!pfd[i].revents)
				continue;
			struct proc *p = w[i].p;
			switch (w[i].kind) {
			case W_SIGNAL:
				reap_children(sigfd);
				break;
			case W_OUT:
				if (p->out_fd >= 0)
					pump_output(p, &p->out_fd, &p->out_quiet_until,
						    KIND_STDOUT);
				break;
			case W_ERR:
				if (p->err_fd >= 0)
					pump_output(p, &p->err_fd, &p->err_quiet_until,
						    KIND_STDERR);
				break;
			case W_IN:
				flush_stdin(p);
				break;
			case W_PORT:
				read_port(w[i].port);
				break;
			}
		}
		finish_processes();
	}
}

int main(void)
{
	agent_ns = now_ns();
	if (getpid() != 1) {
		fprintf(stderr, "hyperrun-agent: must run as PID 1 of a hyperrun VM\n");
		return STATUS_AGENT;
	}
	for (int i = 0; i < MAX_PROCS; i++)
		proc_release(&procs[i]);
	mount_early();
	setup_stdio_and_log();
	/* Ours, opened before CONTAINER makes the container's root ours: the
	 * workload can replace its /proc and /dev/null (see read_untrusted, run_child). */
	if ((proc_dir_fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
		die("open /proc: %s", errstr(errno));
	if ((null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0)
		die("open /dev/null: %s", errstr(errno));
	/* The tools of `EXEC tool=busybox` (`top`, `cp`) on any image: opened now, from
	 * the initrd, which no process sees once CONTAINER has switched root. */
	if ((busybox_fd = open(BUSYBOX_PATH, O_RDONLY | O_CLOEXEC)) < 0)
		logmsg("open %s: %s; EXEC tool=%s will fail", BUSYBOX_PATH, errstr(errno),
		       TOOL_BUSYBOX);
	/* The OOM killer should pick the container's processes, never us. */
	if (write_file(proc_dir_fd, "self/oom_score_adj", "-1000") < 0)
		logmsg("oom_score_adj: %s", errstr(errno));
	int sigfd = setup_signals();
	open_port(&ctl_port);
	open_port(&io_port);
	serve(sigfd);
}
