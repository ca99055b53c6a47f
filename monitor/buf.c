/* Byte queues and small helpers shared by the rest of the monitor. */
#include "monitor.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (!p) {
		/* Every allocation is bounded; running out means the host is in trouble. */
		note("out of memory");
		_exit(1);
	}
	return p;
}

size_t buf_size(const struct buf *b)
{
	return b->len - b->off;
}

/* Makes room for n more bytes at data + len, moving live bytes to the front
 * first so a queue that keeps draining never grows. */
void buf_reserve(struct buf *b, size_t n)
{
	if (b->off > 0 && b->cap - b->len < n) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
	}
	if (b->cap - b->len >= n)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap - b->len < n)
		cap *= 2;
	unsigned char *p = realloc(b->data, cap);
	if (!p) {
		note("out of memory");
		_exit(1);
	}
	b->data = p;
	b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, p, n);
	b->len += n;
}

/* An emptied queue gives back a large buffer: 64 clients that each once held
 * 4 MiB must not keep 256 MiB. */
void buf_consume(struct buf *b, size_t n)
{
	b->off += n;
	if (b->off < b->len)
		return;
	b->off = b->len = 0;
	if (b->cap > 2 * READ_CHUNK)
		buf_free(b);
}

void buf_free(struct buf *b)
{
	free(b->data);
	*b = (struct buf){ 0 };
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

/* By hand rather than strtoul, which takes signs, spaces and a locale. */
bool parse_dec(const char *s, uint32_t max, uint32_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (!s)
		return false;
	for (i = 0; s[i]; i++) {
		if (i >= 10 || s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (i == 0 || v > max)
		return false;
	*out = (uint32_t)v;
	return true;
}

long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void note(const char *fmt, ...)
{
	static unsigned lines;
	char line[512];
	va_list ap;
	int saved = errno;

	if (lines > STDERR_LINES)
		return;
	if (lines++ == STDERR_LINES) {
		snprintf(line, sizeof line, "hyperrun-monitor: further messages are not logged\n");
	} else {
		static const char prefix[] = "hyperrun-monitor: ";
		memcpy(line, prefix, sizeof prefix - 1);
		va_start(ap, fmt);
		int n = vsnprintf(line + sizeof prefix - 1, sizeof line - sizeof prefix, fmt, ap);
		va_end(ap);
		n = n < 0 ? 0 : n + (int)sizeof prefix - 1;
		if ((size_t)n > sizeof line - 2)
			n = sizeof line - 2;
		line[n] = '\n';
		line[n + 1] = '\0';
	}
	/* Best effort: a full disk must not stop the monitor. */
	if (write(2, line, strlen(line)) < 0)
		errno = saved;
	errno = saved;
}
