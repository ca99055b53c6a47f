/* The two ports, framing, control message decoding and replies (docs/protocol.md). */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

/* Hands every complete frame in port->in to the port's handler. Returns -1,
 * leaving the bad frame in place, when a header announces more than the
 * port's limit: the stream can no longer be trusted to be in sync. */
int port_dispatch(struct port *port)
{
	while (buf_size(&port->in) >= HEADER_SIZE) {
		const unsigned char *p = port->in.data + port->in.off;
		uint32_t first = get_be32(p), len = get_be32(p + 4);
		if (len > port->max_payload) {
			logmsg("%s: frame of %u bytes exceeds the %u limit", port->name, len,
			       port->max_payload);
			return -1;
		}
		if (buf_size(&port->in) < HEADER_SIZE + (size_t)len)
			break;
		port->on_frame(first, p + HEADER_SIZE, len);
		buf_consume(&port->in, HEADER_SIZE + (size_t)len);
	}
	return 0;
}

/* Reads what the port has and hands every complete frame to its handler.
 * port->in never holds more than one partial frame plus IO_MAX bytes. */
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
	/* docs/protocol.md: a peer that receives more gives up. */
	if (port_dispatch(port) < 0)
		die("%s: the host's stream is corrupt", port->name);
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

/*
 * Copies a control payload into m (NUL-terminated, so every record is a C
 * string even if the host's last one is not) and checks its shape: every
 * record must be `key=value` with a non-empty key and end in a NUL. Returns
 * false with m->error set otherwise; m is usable either way (msg_get then
 * sees only well-formed records). Free with msg_free.
 */
bool msg_decode(uint32_t type, const unsigned char *payload, uint32_t len, struct msg *m)
{
	char *copy = malloc((size_t)len + 1);

	if (!copy)
		die("out of memory");
	memcpy(copy, payload, len);
	copy[len] = '\0';
	*m = (struct msg){ .type = type, .payload = copy, .len = len };
	if (len > 0 && payload[len - 1] != '\0') {
		snprintf(m->error, sizeof m->error, "its last record does not end in NUL");
		return false;
	}
	size_t i = 0;
	FOR_EACH_RECORD(m, rec) {
		i++;
		const char *eq = strchr(rec, '=');
		if (!eq || eq == rec) {
			snprintf(m->error, sizeof m->error, "record %zu is not key=value", i);
			return false;
		}
	}
	return true;
}

void msg_free(struct msg *m)
{
	free((char *)m->payload);
	m->payload = NULL;
}

static bool key_is(const char *rec, const char *key, size_t klen)
{
	return strncmp(rec, key, klen) == 0 && rec[klen] == '=';
}

/* Value of the first `key=` record, or NULL. */
const char *msg_get(const struct msg *m, const char *key)
{
	size_t klen = strlen(key);

	FOR_EACH_RECORD(m, rec) {
		if (key_is(rec, key, klen))
			return rec + klen + 1;
	}
	return NULL;
}

/* Values of every `key=` record, in order, into out (if not NULL); returns how many. */
size_t msg_list(const struct msg *m, const char *key, const char **out)
{
	size_t klen = strlen(key), n = 0;

	FOR_EACH_RECORD(m, rec) {
		if (key_is(rec, key, klen)) {
			if (out)
				out[n] = rec + klen + 1;
			n++;
		}
	}
	return n;
}

/* A missing or empty key gives dflt; a malformed or too large number gives
 * false: only decimal digits, no sign, no spaces, at most max. */
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

/* OK to CONTAINER carries the boot stamps (`hyperrun bench boot`); request_ns
 * and now_ns let the host map them to its own clock. */
void reply_ok(void)
{
	struct reply r = { .len = 0 };

	reply_add(&r, "agent_ns", "%lld", agent_ns);
	reply_add(&r, "request_ns", "%lld", request_ns);
	reply_add(&r, "mounted_ns", "%lld", mounted_ns);
	reply_add(&r, "now_ns", "%lld", now_ns());
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

void reply_started(uint32_t id, pid_t pid, long long exec_ns)
{
	struct reply r = { .len = 0 };

	reply_add(&r, "id", "%u", id);
	reply_add(&r, "pid", "%d", (int)pid);
	reply_add(&r, "request_ns", "%lld", request_ns);
	reply_add(&r, "exec_ns", "%lld", exec_ns);
	reply_add(&r, "now_ns", "%lld", now_ns());
	reply_send(MSG_STARTED, &r);
}

void reply_exit(uint32_t id, int status)
{
	struct reply r = { .len = 0 };

	reply_add(&r, "id", "%u", id);
	reply_add(&r, "status", "%d", status);
	reply_send(MSG_EXIT, &r);
}

/* --- control dispatch ----------------------------------------------------------------- */

static const struct handler {
	uint32_t type;
	bool (*fn)(const struct msg *m);
} handlers[] = {
	{ MSG_CONTAINER, handle_container },
	{ MSG_EXEC, handle_exec },
	{ MSG_WINSIZE, handle_winsize },
	{ MSG_SIGNAL, handle_signal },
};

/* Every handler gets the message, well-formed or not (m.error says): those
 * that answer reply ERROR, the others log it. A failed CONTAINER or main EXEC
 * ends the VM: nothing else ever could. */
void on_ctl_frame(uint32_t type, const unsigned char *payload, uint32_t len)
{
	static unsigned unknown_types;
	struct msg m;
	bool end = false;
	size_t i;

	request_ns = now_ns();
	msg_decode(type, payload, len, &m);
	for (i = 0; i < sizeof handlers / sizeof handlers[0]; i++) {
		if (handlers[i].type == type) {
			end = handlers[i].fn(&m);
			break;
		}
	}
	if (i == sizeof handlers / sizeof handlers[0])
		log_limited(&unknown_types, "ignoring unknown control message type %u", type);
	msg_free(&m);
	if (end)
		shutdown_vm(FAILURE_GRACE_MS);
}
