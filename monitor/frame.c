/* Framing (docs/protocol.md "Framing") and control payload records. */
#include "monitor.h"

#include <errno.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <unistd.h>

/* Hands every complete frame in `in` to fn, header included, so a frame can be
 * forwarded byte for byte. Returns -2 at a header announcing more than max:
 * nothing is allocated for an announced length, and the stream cannot be
 * resynchronised after it. */
int dispatch_frames(struct buf *in, uint32_t max, frame_fn *fn, void *ctx)
{
	while (buf_size(in) >= HEADER_SIZE) {
		const unsigned char *p = in->data + in->off;
		uint32_t first = get_be32(p), len = get_be32(p + 4);
		if (len > max)
			return -2;
		if (buf_size(in) < HEADER_SIZE + (size_t)len)
			break;
		fn(ctx, first, p, len);
		buf_consume(in, HEADER_SIZE + (size_t)len);
	}
	return 0;
}

/* One read of at most READ_CHUNK, so `in` holds at most one partial frame
 * plus one read. */
int read_frames(int fd, struct buf *in, uint32_t max, frame_fn *fn, void *ctx)
{
	buf_reserve(in, READ_CHUNK);
	ssize_t n = recv(fd, in->data + in->len, READ_CHUNK, MSG_DONTWAIT);
	if (n == 0)
		return -1;
	if (n < 0)
		return errno == EINTR || errno == EAGAIN ? 0 : -1;
	in->len += (size_t)n;
	int r = dispatch_frames(in, max, fn, ctx);
	return r < 0 ? r : 1;
}

bool payload_ok(const unsigned char *p, uint32_t len)
{
	uint32_t start = 0;

	if (len > 0 && p[len - 1] != '\0')
		return false;
	while (start < len) {
		const unsigned char *rec = p + start;
		size_t n = strlen((const char *)rec);
		const char *eq = memchr(rec, '=', n);
		if (!eq || eq == (const char *)rec)
			return false;
		start += (uint32_t)n + 1;
	}
	return true;
}

/* Only on a payload that passed payload_ok (every record ends in NUL). */
const char *payload_get(const unsigned char *p, uint32_t len, const char *key, bool *dup)
{
	size_t klen = strlen(key);
	const char *found = NULL;
	uint32_t start = 0;

	*dup = false;
	while (start < len) {
		const char *rec = (const char *)p + start;
		size_t n = strlen(rec);
		if (n > klen && strncmp(rec, key, klen) == 0 && rec[klen] == '=') {
			if (found)
				*dup = true;
			else
				found = rec + klen + 1;
		}
		start += (uint32_t)n + 1;
	}
	return found;
}

int payload_num(const unsigned char *p, uint32_t len, const char *key, uint32_t max,
		uint32_t *out)
{
	bool dup;
	const char *v = payload_get(p, len, key, &dup);

	if (!v)
		return 0;
	return !dup && parse_dec(v, max, out) ? 1 : -1;
}

/* Two passes, so the header goes in with its length already known. */
void frame_build(struct buf *out, uint32_t type, ...)
{
	unsigned char header[HEADER_SIZE];
	size_t total = 0;
	const char *key;
	va_list ap, again;

	va_start(ap, type);
	va_copy(again, ap);
	while ((key = va_arg(ap, const char *)))
		total += strlen(key) + strlen(va_arg(ap, const char *)) + 2;
	va_end(ap);
	put_be32(header, type);
	put_be32(header + 4, (uint32_t)total);
	buf_append(out, header, sizeof header);
	while ((key = va_arg(again, const char *))) {
		const char *value = va_arg(again, const char *);
		buf_append(out, key, strlen(key));
		buf_append(out, "=", 1);
		buf_append(out, value, strlen(value) + 1);
	}
	va_end(again);
}
