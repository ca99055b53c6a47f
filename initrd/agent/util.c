/* Logging, dying, small helpers and the byte queue. */
#include "agent.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* --- logging and dying --------------------------------------------------- */

int log_fd = 2;

/* Text from the host or the container may end up here: control characters
 * become '?' so nothing can forge console lines or send terminal escapes. */
static void vlogmsg(const char *fmt, va_list ap)
{
	char text[900], line[1024];

	vsnprintf(text, sizeof text, fmt, ap);
	for (char *p = text; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	int n = snprintf(line, sizeof line, "hyperrun-agent: %s\n", text);
	if (write(log_fd, line, (size_t)n) < 0) {
		/* nowhere left to complain */
	}
}

void logmsg(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlogmsg(fmt, ap);
	va_end(ap);
}

void log_limited(unsigned *count, const char *fmt, ...)
{
	va_list ap;

	if (*count > LOG_BURST)
		return;
	if (++*count > LOG_BURST) {
		logmsg("(more messages like the previous ones are not logged)");
		return;
	}
	va_start(ap, fmt);
	vlogmsg(fmt, ap);
	va_end(ap);
}

const char *errstr(int err)
{
	static char buf[128];

	snprintf(buf, sizeof buf, "%s", strerror(err));
	buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

noreturn void die(const char *fmt, ...)
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

long long agent_ns, mounted_ns, request_ns;

long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
	}
}

/* Devices show up asynchronously while the kernel probes virtio. */
bool wait_for_path(const char *path, int timeout_ms)
{
	long long deadline = now_ms() + timeout_ms;

	while (access(path, F_OK) < 0) {
		if (now_ms() >= deadline)
			return false;
		sleep_ms(10);
	}
	return true;
}

/* path is relative to dirfd (or absolute). Never blocks, whatever is there. */
int write_file(int dirfd, const char *path, const char *text)
{
	int fd = openat(dirfd, path, O_WRONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	close(fd);
	return n < 0 ? -1 : 0;
}

/* Ports are blocking: the host always reads them, so a full queue only means
 * "wait". virtio-serial takes at most 32 KiB per write, hence the loop. */
void write_all(int fd, const void *data, size_t len, const char *what)
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

void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

bool parse_uint(const char *s, unsigned long max, unsigned long *out)
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

size_t buf_size(const struct buf *b)
{
	return b->len - b->off;
}

/* Makes room for n more bytes at data + len. */
void buf_reserve(struct buf *b, size_t n)
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

void buf_append(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off == b->len)
		b->off = b->len = 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){ 0 };
}


/* --- reading files the container controls ------------------------------------ */

int proc_dir_fd = -1;

/*
 * Opens path without side effects (O_PATH opens no device, FIFO or tty),
 * accepts only a regular file of at most cap bytes, reopens that very inode
 * through our own /proc (not the container's, which the workload may replace)
 * and reads it non-blocking. Symlinks are followed: they resolve inside the
 * agent's root, which is the container's root once CONTAINER has run.
 */
int read_untrusted(const char *path, size_t cap, char **out, size_t *outlen, char *err,
		   size_t errlen)
{
	struct stat st, st2;
	char link[64];
	char *data = NULL;
	size_t len = 0, size;
	int fd = -1;

	*out = NULL;
	*outlen = 0;
	int pfd = open(path, O_PATH | O_CLOEXEC);
	if (pfd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return 1;
		snprintf(err, errlen, "open %s: %s", path, errstr(errno));
		return -1;
	}
	if (fstat(pfd, &st) < 0) {
		snprintf(err, errlen, "stat %s: %s", path, errstr(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", path);
		goto fail;
	}
	if (st.st_size < 0 || (unsigned long long)st.st_size > cap)
		goto too_large;
	snprintf(link, sizeof link, "self/fd/%d", pfd);
	fd = openat(proc_dir_fd, link, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "open %s: %s", path, errstr(errno));
		goto fail;
	}
	if (fstat(fd, &st2) < 0 || st2.st_dev != st.st_dev || st2.st_ino != st.st_ino) {
		snprintf(err, errlen, "%s changed while it was opened", path);
		goto fail;
	}
	/* The size may change under us: read up to cap + 1 bytes to tell. */
	size = (size_t)st.st_size + 1;
	if (size < 4096)
		size = 4096;
	if (size > cap + 1)
		size = cap + 1;
	if (!(data = malloc(size + 1)))
		die("out of memory");
	for (;;) {
		if (len == size) {
			if (size > cap)
				goto too_large;
			size = size > (cap + 1) / 2 ? cap + 1 : size * 2;
			char *grown = realloc(data, size + 1);
			if (!grown)
				die("out of memory");
			data = grown;
		}
		ssize_t n = read(fd, data + len, size - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "read %s: %s", path, errstr(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	if (len > cap)
		goto too_large;
	data[len] = '\0';
	close(fd);
	close(pfd);
	*out = data;
	*outlen = len;
	return 0;
too_large:
	if (cap % (1u << 20) == 0)
		snprintf(err, errlen, "%s is larger than %zu MiB", path, cap >> 20);
	else
		snprintf(err, errlen, "%s is larger than %zu bytes", path, cap);
fail:
	free(data);
	if (fd >= 0)
		close(fd);
	close(pfd);
	return -1;
}
