/*
 * hyperrun-agent: PID 1 of a hyperrun VM.
 *
 * It mounts the container's root disk, switches into it and then starts
 * processes for the host, carrying control messages over one virtio-serial
 * port and every process's stdio, multiplexed, over another. The wire format
 * is docs/protocol.md; this file follows it.
 *
 * One thread, one poll() loop over the two ports, a signalfd for SIGCHLD and
 * every process's pipes. Only writes to the ports may block (the host is
 * always reading them). Writes into a process's stdin never block: a process
 * that does not read its stdin must not stall the whole VM.
 *
 * Built with: gcc -static -Os -Wall -Wextra -Werror (see initrd/build).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdnoreturn.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* --- protocol constants (docs/protocol.md) ------------------------------ */

#define CTL_PORT_NAME "org.hyperrun.ctl"
#define IO_PORT_NAME "org.hyperrun.io"
#define HEADER_SIZE 8
#define CTL_MAX (1u << 20)
#define IO_MAX (1u << 16)

enum msg_type {
	MSG_CONTAINER = 1,
	MSG_EXEC = 2,
	MSG_WINSIZE = 3,
	MSG_SIGNAL = 4,
	MSG_OK = 64,
	MSG_ERROR = 65,
	MSG_STARTED = 66,
	MSG_EXIT = 67,
};

enum stream_kind { KIND_STDIN = 0, KIND_STDOUT = 1, KIND_STDERR = 2 };

/* Statuses of docs/protocol.md "Exit statuses". */
#define STATUS_AGENT 125
#define STATUS_CANNOT_EXEC 126
#define STATUS_NOT_FOUND 127

/* --- tunables ------------------------------------------------------------ */

#define MAX_PROCS 64
#define MAX_ID (UINT32_MAX / 4) /* stream = id * 4 + kind must fit a u32 */
#define MAX_GROUPS 256
#define DEVICE_WAIT_MS 10000 /* virtio ports and the root disk */
#define PORT_RETRY_MS 20     /* re-poll a port whose host end is not connected */
#define STDIN_HIGH_WATER (1u << 20)
/* After a read shorter than SMALL_READ, leave that output alone for
 * BATCH_MS so a program writing line by line is sent in batches: under TCG
 * every frame is a VM exit, and per-line frames made `seq 200000` on a tty
 * 15x slower. The first bytes after a pause still go out at once. */
#define SMALL_READ 1024
#define BATCH_MS 2
#define SHUTDOWN_GRACE_MS 3000 /* wait this long for the host to hang up */
#define NEWROOT "/newroot"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* --- logging and dying --------------------------------------------------- */

static int log_fd = 2;

static void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logmsg(const char *fmt, ...)
{
	char text[900], line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	int n = snprintf(line, sizeof line, "hyperrun-agent: %s\n", text);
	if (write(log_fd, line, (size_t)n) < 0) {
		/* nowhere left to complain */
	}
}

/* Go-style lower-case error text, so our messages read like docker's. */
static const char *errstr(int err)
{
	static char buf[128];

	snprintf(buf, sizeof buf, "%s", strerror(err));
	buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

static noreturn void power_off(void)
{
	sync();
	/* Read-only leaves a clean ext4 even if a dying process still writes. */
	mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
	sync();
	reboot(RB_POWER_OFF);
	/* Not reached; if it were, PID 1 exiting panics and panic=-1 ends the VM. */
	_exit(1);
}

/* The host reports the console tail when the VM ends without an EXIT. */
static noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static noreturn void die(const char *fmt, ...)
{
	char text[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	logmsg("fatal: %s", text);
	power_off();
}

/* --- small helpers -------------------------------------------------------- */

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

/* Devices show up asynchronously while the kernel probes virtio. */
static bool wait_for_path(const char *path, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;

	while (access(path, F_OK) < 0) {
		if (now_ms() >= deadline)
			return false;
		sleep_ms(10);
	}
	return true;
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	close(fd);
	return n < 0 ? -1 : 0;
}

/* Ports are blocking: the host always reads them, so a full queue only means
 * "wait". virtio-serial takes at most 32 KiB per write, hence the loop. */
static void write_all(int fd, const void *data, size_t len, const char *what)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("write to %s: %s", what, errstr(errno));
		}
		p += n;
		len -= (size_t)n;
	}
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	if (!s || !isdigit((unsigned char)s[0]))
		return false;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*out = v;
	return true;
}

/* --- byte queue ------------------------------------------------------------- */

/* Bytes live in data[off, len); consumed bytes are reclaimed lazily. */
struct buf {
	unsigned char *data;
	size_t off, len, cap;
};

static size_t buf_size(const struct buf *b)
{
	return b->len - b->off;
}

/* Makes room for n more bytes at data + len. */
static void buf_reserve(struct buf *b, size_t n)
{
	if (b->cap - b->len >= n)
		return;
	if (b->off > 0) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->cap - b->len >= n)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < n)
		cap *= 2;
	unsigned char *data = realloc(b->data, cap);
	if (!data)
		die("out of memory");
	b->data = data;
	b->cap = cap;
}

static void buf_append(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

static void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off == b->len)
		b->off = b->len = 0;
}

static void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){ 0 };
}

/* --- ports ------------------------------------------------------------------ */

typedef void frame_fn(uint32_t first, const unsigned char *payload, uint32_t len);

struct port {
	const char *name;
	int fd;
	uint32_t max_payload;
	frame_fn *on_frame;
	struct buf in;
	/* virtio-serial reads return 0 (and poll says POLLHUP) while the host end
	 * is not connected; we then leave the port alone until retry_at. */
	long long retry_at;
};

static frame_fn on_ctl_frame, on_io_frame;

static struct port ctl_port = { CTL_PORT_NAME, -1, CTL_MAX, on_ctl_frame, { 0 }, 0 };
static struct port io_port = { IO_PORT_NAME, -1, IO_MAX, on_io_frame, { 0 }, 0 };

/* frame points at HEADER_SIZE reserved bytes followed by len payload bytes:
 * one write per frame keeps the virtio queue short. */
static void send_frame(struct port *port, uint32_t first, unsigned char *frame, uint32_t len)
{
	put_be32(frame, first);
	put_be32(frame + 4, len);
	write_all(port->fd, frame, HEADER_SIZE + (size_t)len, port->name);
}

/* Reads what the port has and hands every complete frame to its handler. */
static void read_port(struct port *port)
{
	buf_reserve(&port->in, IO_MAX);
	ssize_t n = read(port->fd, port->in.data + port->in.len, port->in.cap - port->in.len);
	if (n == 0) {
		port->retry_at = now_ms() + PORT_RETRY_MS;
		return;
	}
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return;
		die("read from %s: %s", port->name, errstr(errno));
	}
	port->in.len += (size_t)n;

	while (buf_size(&port->in) >= HEADER_SIZE) {
		const unsigned char *p = port->in.data + port->in.off;
		uint32_t first = get_be32(p), len = get_be32(p + 4);
		if (len > port->max_payload)
			die("%s: frame of %u bytes exceeds the %u limit", port->name, len,
			    port->max_payload);
		if (buf_size(&port->in) < HEADER_SIZE + (size_t)len)
			break;
		port->on_frame(first, p + HEADER_SIZE, len);
		buf_consume(&port->in, HEADER_SIZE + (size_t)len);
	}
}

/* Finds the /dev node of the virtio-serial port the host named `want`. */
static int find_port(const char *want)
{
	DIR *dir = opendir("/sys/class/virtio-ports");
	struct dirent *d;
	int fd = -1;

	if (!dir)
		return -1;
	while (fd < 0 && (d = readdir(dir))) {
		char path[512], name[128] = "";
		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", d->d_name);
		FILE *f = fopen(path, "re");
		if (!f)
			continue;
		if (fgets(name, sizeof name, f))
			name[strcspn(name, "\n")] = '\0';
		fclose(f);
		if (strcmp(name, want) != 0)
			continue;
		snprintf(path, sizeof path, "/dev/%s", d->d_name);
		if (wait_for_path(path, DEVICE_WAIT_MS))
			fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
	}
	closedir(dir);
	return fd;
}

static void open_port(struct port *port)
{
	long long deadline = now_ms() + DEVICE_WAIT_MS;

	while ((port->fd = find_port(port->name)) < 0) {
		if (now_ms() >= deadline)
			die("virtio-serial port %s not found (is virtio_console built in?)",
			    port->name);
		sleep_ms(10);
	}
}

/* --- control messages: decoding and replies --------------------------------- */

/* An incoming control message; payload[len] is a NUL we added, so every
 * record, even a truncated last one, is a C string. */
struct msg {
	uint32_t type;
	const char *payload;
	size_t len;
};

#define FOR_EACH_RECORD(m, rec)                                        \
	for (const char *rec = (m)->payload; rec < (m)->payload + (m)->len; \
	     rec += strlen(rec) + 1)

/* Value of the first `key=` record, or NULL. */
static const char *msg_get(const struct msg *m, const char *key)
{
	size_t klen = strlen(key);

	FOR_EACH_RECORD(m, rec) {
		if (strncmp(rec, key, klen) == 0 && rec[klen] == '=')
			return rec + klen + 1;
	}
	return NULL;
}

/* Values of every `key=` record, in order, into out (if not NULL); returns how many. */
static size_t msg_list(const struct msg *m, const char *key, const char **out)
{
	size_t klen = strlen(key), n = 0;

	FOR_EACH_RECORD(m, rec) {
		if (strncmp(rec, key, klen) == 0 && rec[klen] == '=') {
			if (out)
				out[n] = rec + klen + 1;
			n++;
		}
	}
	return n;
}

/* A missing key gives dflt; a malformed or too large number gives false. */
static bool msg_uint(const struct msg *m, const char *key, unsigned long dflt, unsigned long max,
		     unsigned long *out)
{
	const char *v = msg_get(m, key);

	if (!v || !*v) {
		*out = dflt;
		return true;
	}
	return parse_uint(v, max, out);
}

struct reply {
	unsigned char frame[HEADER_SIZE + 4096];
	size_t len; /* payload bytes after the header */
};

static void reply_add(struct reply *r, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void reply_add(struct reply *r, const char *key, const char *fmt, ...)
{
	char *dst = (char *)r->frame + HEADER_SIZE + r->len;
	size_t room = sizeof r->frame - HEADER_SIZE - r->len;
	va_list ap;

	int n = snprintf(dst, room, "%s=", key);
	if (n < 0 || (size_t)n >= room)
		return;
	va_start(ap, fmt);
	vsnprintf(dst + n, room - (size_t)n, fmt, ap);
	va_end(ap);
	/* vsnprintf truncates and terminates, so the record always ends in NUL. */
	r->len += strlen(dst) + 1;
}

static void reply_send(uint32_t type, struct reply *r)
{
	send_frame(&ctl_port, type, r->frame, (uint32_t)r->len);
}

static void reply_ok(void)
{
	struct reply r = { .len = 0 };

	reply_send(MSG_OK, &r);
}

/* id 0 means "not about a process" (ids start at 1). */
static void reply_error(uint32_t id, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void reply_error(uint32_t id, int status, const char *fmt, ...)
{
	struct reply r = { .len = 0 };
	char text[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	logmsg("error: %s", text);
	if (id)
		reply_add(&r, "id", "%u", id);
	reply_add(&r, "status", "%d", status);
	reply_add(&r, "message", "%s", text);
	reply_send(MSG_ERROR, &r);
}

static void reply_started(uint32_t id, pid_t pid)
{
	struct reply r = { .len = 0 };

	reply_add(&r, "id", "%u", id);
	reply_add(&r, "pid", "%d", (int)pid);
	reply_send(MSG_STARTED, &r);
}

static void reply_exit(uint32_t id, int status)
{
	struct reply r = { .len = 0 };

	reply_add(&r, "id", "%u", id);
	reply_add(&r, "status", "%d", status);
	reply_send(MSG_EXIT, &r);
}

/* --- processes ---------------------------------------------------------------- */

struct proc {
	bool used, main, tty, exited, stdin_eof;
	uint32_t id;
	pid_t pid;
	int status; /* exit code, or 128 + signal */
	int pty;    /* pty master (tty only; also in_fd and out_fd), -1 otherwise */
	int in_fd;  /* our end of its stdin, -1 once closed or when stdin=0 */
	int out_fd, err_fd; /* our ends of its output, -1 once drained to EOF */
	long long out_quiet_until, err_quiet_until; /* see BATCH_MS */
	struct buf inq;     /* stdin bytes the process has not read yet */
};

static struct proc procs[MAX_PROCS];
static bool container_ready;

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

static void proc_release(struct proc *p)
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
static void pump_output(struct proc *p, int *fd, long long *quiet_until, enum stream_kind kind)
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
static void flush_stdin(struct proc *p)
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

static bool stdin_backlogged(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		if (procs[i].used && buf_size(&procs[i].inq) > STDIN_HIGH_WATER)
			return true;
	return false;
}

/* I/O port frame from the host: only stdin streams flow this way. */
static void on_io_frame(uint32_t stream, const unsigned char *data, uint32_t len)
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
static void reap_children(int sigfd)
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

/* After main's EXIT: give the host time to read what QEMU still holds for the
 * sockets (a power-off drops it), i.e. until it hangs up the control port. */
static noreturn void shutdown_vm(void)
{
	long long deadline = now_ms() + SHUTDOWN_GRACE_MS;
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

/* Sends EXIT for every process that has exited and whose output is drained. */
static void finish_processes(void)
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

/* --- CONTAINER ------------------------------------------------------------------ */

struct api_mount {
	const char *source, *target, *fstype;
	unsigned long flags;
	const char *data;
};

/* Targets are relative to the container root; mounted in this order. */
static const struct api_mount api_mounts[] = {
	{ "proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
	{ "sysfs", "sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
	{ "devtmpfs", "dev", "devtmpfs", MS_NOSUID, NULL },
	{ "devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
	  "newinstance,ptmxmode=0666,mode=0620,gid=5" },
	{ "shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777" },
	{ "tmpfs", "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755" },
};

static const struct {
	const char *target, *path;
} dev_links[] = {
	{ "/proc/self/fd", "dev/fd" },
	{ "/proc/self/fd/0", "dev/stdin" },
	{ "/proc/self/fd/1", "dev/stdout" },
	{ "/proc/self/fd/2", "dev/stderr" },
};

/* Mounts the API filesystems inside the container root (cwd is NEWROOT).
 * Missing mount points are created on the container's own disk. */
static int mount_api_filesystems(char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof api_mounts / sizeof api_mounts[0]; i++) {
		const struct api_mount *a = &api_mounts[i];
		if (mkdir(a->target, 0755) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "mkdir /%s: %s", a->target, errstr(errno));
			return -1;
		}
		if (mount(a->source, a->target, a->fstype, a->flags, a->data) < 0) {
			snprintf(err, errlen, "mount %s on /%s: %s", a->fstype, a->target,
				 errstr(errno));
			return -1;
		}
	}
	/* The devtmpfs node would open the initial devpts instance, not ours. */
	if (unlink("dev/ptmx") < 0 && errno != ENOENT) {
		snprintf(err, errlen, "unlink /dev/ptmx: %s", errstr(errno));
		return -1;
	}
	if (symlink("pts/ptmx", "dev/ptmx") < 0) {
		snprintf(err, errlen, "symlink /dev/ptmx: %s", errstr(errno));
		return -1;
	}
	for (size_t i = 0; i < sizeof dev_links / sizeof dev_links[0]; i++) {
		if (symlink(dev_links[i].target, dev_links[i].path) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "symlink /%s: %s", dev_links[i].path, errstr(errno));
			return -1;
		}
	}
	return 0;
}

/* Returns whether the container root is ready; otherwise ERROR has been sent. */
static bool setup_container(const struct msg *m)
{
	const char *rootfs = msg_get(m, "rootfs");
	const char *fstype = msg_get(m, "fstype");
	const char *hostname = msg_get(m, "hostname");
	char dev[256], err[512];

	if (!fstype || !*fstype)
		fstype = "ext4";
	if (!rootfs || !*rootfs || strchr(rootfs, '/')) {
		reply_error(0, STATUS_AGENT, "CONTAINER needs rootfs=<block device name>");
		return false;
	}
	snprintf(dev, sizeof dev, "/dev/%s", rootfs);
	if (!wait_for_path(dev, DEVICE_WAIT_MS)) {
		reply_error(0, STATUS_AGENT, "root disk %s did not appear", dev);
		return false;
	}
	if (mount(dev, NEWROOT, fstype, 0, NULL) < 0) {
		reply_error(0, STATUS_AGENT, "mount %s (%s) on %s: %s", dev, fstype, NEWROOT,
			    errstr(errno));
		return false;
	}
	if (chdir(NEWROOT) < 0) {
		reply_error(0, STATUS_AGENT, "chdir %s: %s", NEWROOT, errstr(errno));
		return false;
	}
	if (mount_api_filesystems(err, sizeof err) < 0) {
		reply_error(0, STATUS_AGENT, "prepare the container root: %s", err);
		return false;
	}
	if (hostname && *hostname && sethostname(hostname, strlen(hostname)) < 0) {
		reply_error(0, STATUS_AGENT, "sethostname %s: %s", hostname, errstr(errno));
		return false;
	}
	/* switch_root without deleting the initramfs: we stay PID 1 and keep the
	 * port fds; the initramfs is a few hundred KiB. */
	if (mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
		reply_error(0, STATUS_AGENT, "switch root: %s", errstr(errno));
		return false;
	}
	return true;
}

static void handle_container(const struct msg *m)
{
	if (container_ready) {
		reply_error(0, STATUS_AGENT, "the container is already set up");
		return;
	}
	/* Without a root there is nothing left to do: end the VM. */
	if (!setup_container(m))
		shutdown_vm();
	container_ready = true;
	reply_ok();
}

/* --- EXEC: user resolution --------------------------------------------------------- */

struct user {
	uid_t uid;
	gid_t gid;
	char home[256];
	size_t ngroups;
	gid_t groups[MAX_GROUPS];
};

/* Splits a passwd/group line at ':' in place; returns the number of fields. */
static int split_fields(char *line, char **fields, int max)
{
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
	fields[n++] = line;
	for (char *p = line; *p && n < max; p++) {
		if (*p == ':') {
			*p = '\0';
			fields[n++] = p + 1;
		}
	}
	return n;
}

static bool list_has(char *list, const char *name)
{
	char *save = NULL;

	for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (strcmp(tok, name) == 0)
			return true;
	return false;
}

/*
 * Resolves a docker `user` spec inside the container root, the way runc's
 * GetExecUser does: "" is uid 0; a numeric part is always an id, a name is
 * looked up in /etc/passwd (/etc/group); a numeric uid need not exist. With an
 * explicit group there are no supplementary groups; otherwise they are the
 * /etc/group entries listing the user. Hand-parsed: static glibc has no NSS.
 */
static int resolve_user(const char *spec, struct user *u, char *err, size_t errlen)
{
	char want[256], line[4096], matched_name[256] = "";
	char *fields[7];
	unsigned long num, gnum;

	snprintf(want, sizeof want, "%s", spec ? spec : "");
	char *group = strchr(want, ':');
	if (group)
		*group++ = '\0';
	const char *name = want[0] ? want : "0";
	bool numeric = parse_uint(name, UINT32_MAX - 1, &num);
	bool gnumeric = group && parse_uint(group, UINT32_MAX - 1, &gnum);

	*u = (struct user){ .uid = 0, .gid = 0, .home = "/" };

	FILE *f = fopen("/etc/passwd", "re");
	while (f && fgets(line, sizeof line, f)) {
		unsigned long uid, gid;
		int n = split_fields(line, fields, 7);
		if (n < 4 || !parse_uint(fields[2], UINT32_MAX, &uid) ||
		    !parse_uint(fields[3], UINT32_MAX, &gid))
			continue;
		if (numeric ? uid != num : strcmp(fields[0], name) != 0)
			continue;
		/* First match wins, as in runc. */
		snprintf(matched_name, sizeof matched_name, "%s", fields[0]);
		u->uid = (uid_t)uid;
		u->gid = (gid_t)gid;
		if (n >= 6 && fields[5][0])
			snprintf(u->home, sizeof u->home, "%s", fields[5]);
		break;
	}
	if (f)
		fclose(f);
	if (!matched_name[0]) {
		if (!numeric) {
			snprintf(err, errlen, "unable to find user %s: no matching entries in passwd file",
				 name);
			return -1;
		}
		u->uid = (uid_t)num;
	}

	if (!(group && *group) && !matched_name[0])
		return 0;
	bool group_found = false;
	f = fopen("/etc/group", "re");
	while (f && fgets(line, sizeof line, f)) {
		unsigned long gid;
		int n = split_fields(line, fields, 4);
		if (n < 3 || !parse_uint(fields[2], UINT32_MAX, &gid))
			continue;
		if (group && *group) {
			if (gnumeric ? gid == gnum : strcmp(fields[0], group) == 0) {
				u->gid = (gid_t)gid;
				group_found = true;
				break;
			}
		} else if (n == 4 && list_has(fields[3], matched_name) && u->ngroups < MAX_GROUPS) {
			u->groups[u->ngroups++] = (gid_t)gid;
		}
	}
	if (f)
		fclose(f);
	if (group && *group && !group_found) {
		if (!gnumeric) {
			snprintf(err, errlen, "unable to find group %s: no matching entries in group file",
				 group);
			return -1;
		}
		u->gid = (gid_t)gnum;
	}
	return 0;
}

/* --- EXEC: the child ------------------------------------------------------------ */

struct exec_spec {
	uint32_t id;
	bool tty;
	const char **argv;
	const char **envp;
	const char *cwd;
	struct user user;
	int child_fd[3]; /* the child's stdin (-1: /dev/null), stdout, stderr; a tty's slave */
};

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

static const char *env_get(const char **envp, const char *key)
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

/* Runs in the forked child; never returns. */
static noreturn void run_child(const struct exec_spec *s, int errfd)
{
	const struct user *u = &s->user;
	sigset_t none;
	int in = s->child_fd[0];

	/* Undo PID 1's own settings: blocked SIGCHLD, ignored SIGPIPE, -1000. */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	write_file("/proc/self/oom_score_adj", "0");

	if (setsid() < 0)
		child_fail(errfd, STATUS_AGENT, "setsid: %s", errstr(errno));
	if (s->tty) {
		if (ioctl(s->child_fd[0], TIOCSCTTY, 0) < 0)
			child_fail(errfd, STATUS_AGENT, "set controlling terminal: %s", errstr(errno));
		/* Like a login: the user owns its terminal. */
		if (fchown(s->child_fd[0], u->uid, (gid_t)-1) < 0) {
			/* not fatal */
		}
	} else if (in < 0 && (in = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0) {
		child_fail(errfd, STATUS_AGENT, "open /dev/null: %s", errstr(errno));
	}
	/* All our fds are >= 3 (0-2 are the console), so dup2 cannot clobber one. */
	if (dup2(in, 0) < 0 || dup2(s->child_fd[1], 1) < 0 || dup2(s->child_fd[2], 2) < 0)
		child_fail(errfd, STATUS_AGENT, "dup2: %s", errstr(errno));

	mkdir_p(s->cwd);
	if (setgroups(u->ngroups, u->groups) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0)
		child_fail(errfd, STATUS_AGENT, "set user %u:%u: %s", (unsigned)u->uid,
			   (unsigned)u->gid, errstr(errno));
	if (chdir(s->cwd) < 0)
		child_fail(errfd, STATUS_AGENT, "chdir to cwd (\"%s\"): %s", s->cwd, errstr(errno));
	exec_command(s->argv, s->envp, errfd);
}

/* --- EXEC: the agent's side ------------------------------------------------------------ */

static int open_pty(unsigned short rows, unsigned short cols, int *master, int *slave)
{
	char name[64];
	struct winsize ws = { .ws_row = rows, .ws_col = cols };

	*master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (*master < 0)
		return -1;
	if (grantpt(*master) < 0 || unlockpt(*master) < 0 ||
	    ptsname_r(*master, name, sizeof name) != 0 ||
	    /* Size before the fork, so the program never sees 0x0. */
	    (rows && cols && ioctl(*master, TIOCSWINSZ, &ws) < 0) ||
	    (*slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0) {
		int saved = errno;
		close(*master);
		errno = saved;
		return -1;
	}
	return 0;
}

static void close_fds(int *fds, size_t n)
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
static int make_stdio(struct exec_spec *s, bool want_stdin, unsigned short rows,
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

static void close_child_fds(struct exec_spec *s)
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
static pid_t spawn(struct exec_spec *s)
{
	int report[2];
	struct exec_failure f;

	if (pipe2(report, O_CLOEXEC) < 0) {
		reply_error(s->id, STATUS_AGENT, "pipe: %s", errstr(errno));
		return 0;
	}
	pid_t pid = fork();
	if (pid == 0) {
		close(report[0]);
		run_child(s, report[1]);
	}
	close(report[1]);
	if (pid < 0) {
		close(report[0]);
		reply_error(s->id, STATUS_AGENT, "fork: %s", errstr(errno));
		return 0;
	}
	ssize_t n;
	do
		n = read(report[0], &f, sizeof f);
	while (n < 0 && errno == EINTR);
	close(report[0]);
	if (n == 0)
		return pid;
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

static void handle_exec(const struct msg *m)
{
	bool is_main = false;

	/* The container ends with its main process, also one that never ran. */
	if (!start_process(m, &is_main) && is_main)
		shutdown_vm();
}

/* --- WINSIZE, SIGNAL --------------------------------------------------------------- */

static void handle_winsize(const struct msg *m)
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

static void handle_signal(const struct msg *m)
{
	unsigned long id, sig;

	if (!msg_uint(m, "id", 0, MAX_ID, &id) || !msg_uint(m, "signal", 0, NSIG - 1, &sig) ||
	    sig == 0)
		return;
	struct proc *p = proc_by_id((uint32_t)id);
	if (p && !p->exited && kill(p->pid, (int)sig) < 0)
		logmsg("kill %d %lu: %s", (int)p->pid, sig, errstr(errno));
}

/* --- control dispatch ----------------------------------------------------------------- */

static const struct handler {
	uint32_t type;
	void (*fn)(const struct msg *m);
} handlers[] = {
	{ MSG_CONTAINER, handle_container },
	{ MSG_EXEC, handle_exec },
	{ MSG_WINSIZE, handle_winsize },
	{ MSG_SIGNAL, handle_signal },
};

static void on_ctl_frame(uint32_t type, const unsigned char *payload, uint32_t len)
{
	char *copy = malloc((size_t)len + 1);

	if (!copy)
		die("out of memory");
	memcpy(copy, payload, len);
	copy[len] = '\0';
	struct msg m = { type, copy, len };
	size_t i;
	for (i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
		if (handlers[i].type == type) {
			handlers[i].fn(&m);
			break;
		}
	}
	if (i == sizeof handlers / sizeof handlers[0])
		logmsg("ignoring unknown control message type %u", type);
	free(copy);
}

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
	if (getpid() != 1) {
		fprintf(stderr, "hyperrun-agent: must run as PID 1 of a hyperrun VM\n");
		return STATUS_AGENT;
	}
	for (int i = 0; i < MAX_PROCS; i++)
		proc_release(&procs[i]);
	mount_early();
	setup_stdio_and_log();
	/* The OOM killer should pick the container's processes, never us. */
	if (write_file("/proc/self/oom_score_adj", "-1000") < 0)
		logmsg("oom_score_adj: %s", errstr(errno));
	int sigfd = setup_signals();
	open_port(&ctl_port);
	open_port(&io_port);
	serve(sigfd);
}
