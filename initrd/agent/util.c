/* Logging, dying, small helpers and the byte queue. */
#include "agent.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* --- logging and dying --------------------------------------------------- */

int log_fd = 2;

void logmsg(const char *fmt, ...)
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

int write_file(const char *path, const char *text)
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

