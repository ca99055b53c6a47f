/* Arguments, daemonizing, connecting to QEMU, the poll loop and the end. */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct logfile mainlog = { .fd = -1 };
int container_dirfd = -1;

struct options {
	const char *ctl, *io, *listen, *dir;
	unsigned long long log_max_size;
	unsigned log_max_files;
	unsigned connect_timeout_s;
};

static const char usage[] =
	"usage: hyperrun-monitor --ctl CTL_SOCK --io IO_SOCK --listen MON_SOCK --dir DIR\n"
	"                        --log-max-size BYTES --log-max-files N"
	" [--connect-timeout SECONDS]\n"
	"                        [--on-exit PROGRAM [ARG...]]\n";

static void bad_args(const char *why)
{
	fprintf(stderr, "hyperrun-monitor: %s\n%s", why, usage);
	exit(2);
}

static unsigned long long number_arg(const char *name, const char *s, unsigned long long max)
{
	char *end;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (s[0] < '0' || s[0] > '9' || *end || errno || v == 0 || v > max) {
		char why[128];
		snprintf(why, sizeof why, "%s must be a number from 1 to %llu", name, max);
		bad_args(why);
	}
	return v;
}

static void parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longs[] = {
		{ "ctl", required_argument, NULL, 'c' },
		{ "io", required_argument, NULL, 'i' },
		{ "listen", required_argument, NULL, 'l' },
		{ "dir", required_argument, NULL, 'd' },
		{ "log-max-size", required_argument, NULL, 's' },
		{ "log-max-files", required_argument, NULL, 'n' },
		{ "connect-timeout", required_argument, NULL, 't' },
		{ 0 },
	};
	int c;

	*o = (struct options){ .connect_timeout_s = 10 };
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
		switch (c) {
		case 'c': o->ctl = optarg; break;
		case 'i': o->io = optarg; break;
		case 'l': o->listen = optarg; break;
		case 'd': o->dir = optarg; break;
		case 's': o->log_max_size = number_arg("--log-max-size", optarg, 1ull << 40); break;
		case 'n': o->log_max_files = (unsigned)number_arg("--log-max-files", optarg, 1000); break;
		case 't': o->connect_timeout_s = (unsigned)number_arg("--connect-timeout", optarg, 3600); break;
		default: bad_args("unknown option or missing value");
		}
	}
	if (optind < argc)
		bad_args("unexpected argument");
	if (!o->ctl || !o->io || !o->listen || !o->dir || !o->log_max_size || !o->log_max_files)
		bad_args("--ctl, --io, --listen, --dir, --log-max-size and --log-max-files are needed");
	const char *paths[] = { o->ctl, o->io, o->listen };
	for (size_t i = 0; i < 3; i++)
		if (!*paths[i] || strlen(paths[i]) >= sizeof((struct sockaddr_un *)0)->sun_path)
			bad_args("a socket path is empty or too long for a UNIX socket");
}

static noreturn void fail(const char *what, const char *path)
{
	note("%s %s: %s", what, path, strerror(errno));
	exit(1);
}

static struct sockaddr_un address(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	memcpy(a.sun_path, path, strlen(path));
	return a;
}

/* QEMU creates its sockets while the domain starts: retry until they appear.
 * Nonblocking, so a full backlog (EAGAIN) is retried too, never waited on
 * past the deadline. */
static int connect_qemu(const char *path, long long deadline)
{
	struct sockaddr_un a = address(path);

	for (;;) {
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0)
			fail("socket for", path);
		if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0)
			return fd;
		int err = errno;
		close(fd);
		errno = err;
		bool again = err == ENOENT || err == ECONNREFUSED || err == EAGAIN;
		if (!again || now_ms() >= deadline)
			fail("cannot connect to", path);
		usleep(CONNECT_RETRY_MS * 1000);
	}
}

static int listen_on(const char *path)
{
	struct sockaddr_un a = address(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		fail("socket for", path);
	if (unlink(path) < 0 && errno != ENOENT)
		fail("cannot remove the stale", path);
	/* umask 077 is in force: the socket is never more open than 0600. */
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || chmod(path, 0600) < 0 ||
	    listen(fd, 16) < 0)
		fail("cannot listen on", path);
	return fd;
}

static void to_dev_null(void)
{
	int fd = open("/dev/null", O_RDWR);

	if (fd < 0)
		return;
	dup2(fd, 0);
	dup2(fd, 1);
	if (fd > 2)
		close(fd);
}

/* The child of the fork; returns the listening socket and the signalfd. */
static void start(const struct options *o, int *listen_fd, int *sig_fd)
{
	sigset_t mask;

	setsid();
	umask(077);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	*sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (*sig_fd < 0)
		fail("signalfd", "");
	long long deadline = now_ms() + (long long)o->connect_timeout_s * 1000;
	guest.ctl = connect_qemu(o->ctl, deadline);
	guest.io = connect_qemu(o->io, deadline);
	container_dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (container_dirfd < 0)
		fail("cannot open", o->dir);
	if (log_open(&mainlog, container_dirfd, (off_t)o->log_max_size, o->log_max_files) < 0)
		note("cannot open container.log: %s (will retry)", strerror(errno));
	*listen_fd = listen_on(o->listen);
	/* After the paths above are used: they may be relative to the caller's directory. */
	if (chdir("/") < 0)
		fail("chdir", "/");
	char ready[32];
	int n = snprintf(ready, sizeof ready, "ready %d\n", (int)getpid());
	if (write(1, ready, (size_t)n) != n)
		fail("cannot write", "ready");
	to_dev_null();
}

char **on_exit_argv;

int main(int argc, char **argv)
{
	struct options o;
	int listen_fd, sig_fd;

	/* Everything after --on-exit is the program to become once the VM is gone. */
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--on-exit") == 0) {
			if (i + 1 >= argc || argv[i + 1][0] != '/')
				bad_args("--on-exit needs an absolute program path");
			on_exit_argv = &argv[i + 1];
			argc = i;
			break;
		}
	}
	parse_args(argc, argv, &o);
	pid_t pid = fork();
	if (pid < 0) {
		perror("hyperrun-monitor: fork");
		return 1;
	}
	if (pid > 0)
		return 0;
	start(&o, &listen_fd, &sig_fd);
	return monitor_loop(listen_fd, sig_fd);
}
