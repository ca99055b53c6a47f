/* The two ports, framing, control message decoding and replies (docs/protocol.md). */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

/* --- ports ------------------------------------------------------------------ */

/* frame points at HEADER_SIZE reserved bytes followed by len payload bytes:
 * one write per frame keeps the virtio queue short. */
void send_frame(struct port *port, uint32_t first, unsigned char *frame, uint32_t len)
{
	put_be32(frame, first);
	put_be32(frame + 4, len);
	write_all(port->fd, frame, HEADER_SIZE + (size_t)len, port->name);
}

/* Reads what the port has and hands every complete frame to its handler. */
void read_port(struct port *port)
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

void open_port(struct port *port)
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

/* Value of the first `key=` record, or NULL. */
const char *msg_get(const struct msg *m, const char *key)
{
	size_t klen = strlen(key);

	FOR_EACH_RECORD(m, rec) {
		if (strncmp(rec, key, klen) == 0 && rec[klen] == '=')
			return rec + klen + 1;
	}
	return NULL;
}

/* Values of every `key=` record, in order, into out (if not NULL); returns how many. */
size_t msg_list(const struct msg *m, const char *key, const char **out)
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
bool msg_uint(const struct msg *m, const char *key, unsigned long dflt, unsigned long max,
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

void reply_ok(void)
{
	struct reply r = { .len = 0 };

	reply_send(MSG_OK, &r);
}

void reply_error(uint32_t id, int status, const char *fmt, ...)
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

void reply_started(uint32_t id, pid_t pid)
{
	struct reply r = { .len = 0 };

	reply_add(&r, "id", "%u", id);
	reply_add(&r, "pid", "%d", (int)pid);
	reply_send(MSG_STARTED, &r);
}

void reply_exit(uint32_t id, int status)
{
	struct reply r = { .len = 0 };

	reply_add(&r, "id", "%u", id);
	reply_add(&r, "status", "%d", status);
	reply_send(MSG_EXIT, &r);
}

