/*
 * Unit tests of the agent's input handling, run on the host without a VM:
 * framing, control message decoding and validation, the dispatch and its
 * replies, I/O frame routing, and reading the container's /etc/passwd and
 * /etc/group. Linked against the agent's real sources (all but main.c, whose
 * few symbols are stubbed here); initrd/test-units builds and runs it, under
 * AddressSanitizer and UBSan when the compiler has them.
 *
 * Usage: test-parser [SUBSTRING]   (runs the tests whose name contains it)
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- stubs for main.c ------------------------------------------------------------ */

struct port ctl_port = { CTL_PORT_NAME, -1, CTL_MAX, on_ctl_frame, { 0 }, 0 };
struct port io_port = { IO_PORT_NAME, -1, IO_MAX, on_io_frame, { 0 }, 0 };

/* die() ends here: no test may reach it. */
noreturn void power_off(void)
{
	fprintf(stderr, "test-parser: the agent would have powered off (die)\n");
	abort();
}

static jmp_buf shutdown_jmp;
static bool shutdown_armed;
static int shutdowns;

noreturn void shutdown_vm(long long grace_ms)
{
	(void)grace_ms;
	shutdowns++;
	if (!shutdown_armed) {
		fprintf(stderr, "test-parser: unexpected shutdown_vm\n");
		abort();
	}
	longjmp(shutdown_jmp, 1);
}

/* --- a tiny test framework ---------------------------------------------------------- */

static int failures, checks;
static const char *current;

#define CHECK(cond, ...) check_((cond), #cond, __FILE__, __LINE__, "" __VA_ARGS__)

static void check_(bool ok, const char *expr, const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	checks++;
	if (ok)
		return;
	failures++;
	fprintf(stderr, "FAIL %s: %s:%d: %s", current, file, line, expr);
	if (*fmt) {
		fprintf(stderr, " -- ");
		va_start(ap, fmt);
		vfprintf(stderr, fmt, ap);
		va_end(ap);
	}
	fprintf(stderr, "\n");
}

static bool contains(const char *s, const char *part)
{
	return s && strstr(s, part);
}

/* --- captured replies and log -------------------------------------------------------- */

static int reply_rd = -1, log_rd = -1;

static void setup_pipes(void)
{
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		abort();
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
	reply_rd = p[0];
	ctl_port.fd = p[1];
	if (pipe2(p, O_CLOEXEC) < 0)
		abort();
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	fcntl(p[1], F_SETFL, O_NONBLOCK); /* a full log loses lines, never blocks */
	fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
	log_rd = p[0];
	log_fd = p[1];
}

struct reply {
	uint32_t type;
	char payload[8192];
	uint32_t len;
};

static bool read_full(int fd, void *dst, size_t n)
{
	char *p = dst;

	while (n > 0) {
		ssize_t got = read(fd, p, n);
		if (got <= 0)
			return false;
		p += got;
		n -= (size_t)got;
	}
	return true;
}

/* The next reply the agent wrote, or false if there is none. */
static bool next_reply(struct reply *r)
{
	unsigned char hdr[HEADER_SIZE];

	if (!read_full(reply_rd, hdr, sizeof hdr))
		return false;
	r->type = get_be32(hdr);
	r->len = get_be32(hdr + 4);
	if (r->len >= sizeof r->payload || !read_full(reply_rd, r->payload, r->len)) {
		CHECK(false, "reply of %u bytes unreadable", r->len);
		return false;
	}
	r->payload[r->len] = '\0';
	CHECK(r->len == 0 || r->payload[r->len - 1] == '\0', "reply record not NUL-terminated");
	return true;
}

static const char *reply_get(const struct reply *r, const char *key)
{
	size_t klen = strlen(key);

	for (const char *p = r->payload; p < r->payload + r->len; p += strlen(p) + 1)
		if (strncmp(p, key, klen) == 0 && p[klen] == '=')
			return p + klen + 1;
	return NULL;
}

static int count_replies(void)
{
	struct reply r;
	int n = 0;

	while (next_reply(&r))
		n++;
	return n;
}

static char logbuf[1 << 20];

/* Everything logged since the last call. */
static const char *take_log(void)
{
	size_t n = 0;
	ssize_t got;

	while (n < sizeof logbuf - 1 && (got = read(log_rd, logbuf + n, sizeof logbuf - 1 - n)) > 0)
		n += (size_t)got;
	logbuf[n] = '\0';
	return logbuf;
}

static int count_lines(const char *s)
{
	int n = 0;

	for (; *s; s++)
		n += *s == '\n';
	return n;
}

/* --- building payloads ------------------------------------------------------------------- */

struct payload {
	char *data;
	size_t len, cap;
};

static void pl_raw(struct payload *p, const void *bytes, size_t n)
{
	if (p->len + n > p->cap) {
		p->cap = (p->len + n) * 2 + 64;
		p->data = realloc(p->data, p->cap);
		if (!p->data)
			abort();
	}
	memcpy(p->data + p->len, bytes, n);
	p->len += n;
}

/* Appends one record and its NUL. */
static void pl_add(struct payload *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void pl_add(struct payload *p, const char *fmt, ...)
{
	va_list ap;
	char *text;

	va_start(ap, fmt);
	if (vasprintf(&text, fmt, ap) < 0)
		abort();
	va_end(ap);
	pl_raw(p, text, strlen(text) + 1);
	free(text);
}

static void pl_free(struct payload *p)
{
	free(p->data);
	*p = (struct payload){ 0 };
}

/* Adds one record per '|'-separated part of records (the tables' shorthand). */
static void pl_add_records(struct payload *p, const char *records)
{
	char recs[256];

	snprintf(recs, sizeof recs, "%s", records);
	for (char *save, *rec = strtok_r(recs, "|", &save); rec; rec = strtok_r(NULL, "|", &save))
		pl_add(p, "%s", rec);
}

/* msg_decode of p as a message of type t. */
static bool decode(struct msg *m, uint32_t t, const struct payload *p)
{
	return msg_decode(t, (const unsigned char *)(p->data ? p->data : ""), (uint32_t)p->len, m);
}

/* Sends p as a control frame through the real dispatch. */
static void send_ctl(uint32_t type, const struct payload *p)
{
	on_ctl_frame(type, (const unsigned char *)(p->data ? p->data : ""), (uint32_t)p->len);
}

/* --- framing -------------------------------------------------------------------------------- */

static struct {
	int n;
	uint32_t first[8];
	uint32_t len[8];
	unsigned char data[8][64];
} got_frames;

static void record_frame(uint32_t first, const unsigned char *payload, uint32_t len)
{
	int i = got_frames.n++;

	if (i >= 8)
		return;
	got_frames.first[i] = first;
	got_frames.len[i] = len;
	memcpy(got_frames.data[i], payload, len < 64 ? len : 64);
}

static size_t put_frame(unsigned char *dst, uint32_t first, const char *data, uint32_t len)
{
	put_be32(dst, first);
	put_be32(dst + 4, len);
	memcpy(dst + HEADER_SIZE, data, len);
	return HEADER_SIZE + len;
}

static void test_frames_split_anywhere(void)
{
	struct port port = { "test", -1, 64, record_frame, { 0 }, 0 };
	unsigned char stream[256];
	size_t n = 0;

	n += put_frame(stream + n, 7, "hello", 5);
	n += put_frame(stream + n, 8, "", 0);
	n += put_frame(stream + n, 0xffffffffu, "x\0y", 3);
	got_frames.n = 0;
	/* One byte at a time: headers and payloads split everywhere. */
	for (size_t i = 0; i < n; i++) {
		buf_append(&port.in, stream + i, 1);
		CHECK(port_dispatch(&port) == 0);
	}
	CHECK(got_frames.n == 3, "%d frames", got_frames.n);
	CHECK(got_frames.first[0] == 7 && got_frames.len[0] == 5 &&
	      memcmp(got_frames.data[0], "hello", 5) == 0);
	CHECK(got_frames.first[1] == 8 && got_frames.len[1] == 0);
	CHECK(got_frames.first[2] == 0xffffffffu && got_frames.len[2] == 3 &&
	      memcmp(got_frames.data[2], "x\0y", 3) == 0);
	CHECK(buf_size(&port.in) == 0);
	/* All at once. */
	got_frames.n = 0;
	buf_append(&port.in, stream, n);
	CHECK(port_dispatch(&port) == 0 && got_frames.n == 3);
	buf_free(&port.in);
}

static void test_frame_over_limit(void)
{
	struct port port = { "test", -1, 64, record_frame, { 0 }, 0 };
	unsigned char hdr[HEADER_SIZE];

	got_frames.n = 0;
	/* Exactly the limit, announced but not yet there: wait, allocate nothing. */
	put_be32(hdr, 1);
	put_be32(hdr + 4, 64);
	buf_append(&port.in, hdr, sizeof hdr);
	CHECK(port_dispatch(&port) == 0 && got_frames.n == 0);
	buf_free(&port.in);
	take_log();
	static const uint32_t lens[] = { 65, 4096, CTL_MAX, 0x7fffffffu, 0x80000000u, 0xfffffff8u,
					 0xffffffffu };
	for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
		uint32_t len = lens[i];
		put_be32(hdr + 4, len);
		buf_append(&port.in, hdr, sizeof hdr);
		CHECK(port_dispatch(&port) == -1, "length %u", len);
		CHECK(got_frames.n == 0);
		buf_free(&port.in);
	}
	CHECK(contains(take_log(), "exceeds the 64 limit"));
}

static void test_ctl_frame_of_max_size(void)
{
	struct port port = { "test", -1, CTL_MAX, record_frame, { 0 }, 0 };
	unsigned char hdr[HEADER_SIZE];
	static unsigned char chunk[65536];

	got_frames.n = 0;
	put_be32(hdr, 2);
	put_be32(hdr + 4, CTL_MAX);
	buf_append(&port.in, hdr, sizeof hdr);
	for (size_t left = CTL_MAX; left > 0; left -= sizeof chunk) {
		CHECK(port_dispatch(&port) == 0 && got_frames.n == 0);
		buf_append(&port.in, chunk, sizeof chunk);
	}
	CHECK(port_dispatch(&port) == 0 && got_frames.n == 1 && got_frames.len[0] == CTL_MAX);
	buf_free(&port.in);
}

/* --- control payloads -------------------------------------------------------------------------- */

static void test_records(void)
{
	struct payload p = { 0 };
	struct msg m;

	CHECK(decode(&m, 1, &p) && !m.error[0]);
	CHECK(msg_get(&m, "a") == NULL && msg_list(&m, "a", NULL) == 0);
	msg_free(&m);

	pl_add(&p, "a=1");
	pl_add(&p, "b=");
	pl_add(&p, "idx=5");
	pl_add(&p, "id=3");
	pl_add(&p, "c=x=y");
	pl_add(&p, "a=2");
	pl_add(&p, "\xff\xfe\x01=\x7f"); /* a key nobody knows: ignored */
	CHECK(decode(&m, 1, &p), "%s", m.error);
	CHECK(strcmp(msg_get(&m, "a"), "1") == 0 && strcmp(msg_get(&m, "b"), "") == 0);
	CHECK(strcmp(msg_get(&m, "id"), "3") == 0, "a longer key must not match");
	CHECK(strcmp(msg_get(&m, "c"), "x=y") == 0, "split at the first =");
	CHECK(msg_get(&m, "i") == NULL && msg_get(&m, "") == NULL);
	const char *vals[2];
	CHECK(msg_list(&m, "a", vals) == 2 && strcmp(vals[0], "1") == 0 && strcmp(vals[1], "2") == 0);
	msg_free(&m);
	pl_free(&p);
}

static void test_malformed_records(void)
{
	static const struct {
		const char *bytes;
		size_t len;
		const char *why;
	} cases[] = {
		{ "id=1", 4, "does not end in NUL" },
		{ "id=1\0arg=x", 10, "does not end in NUL" },
		{ "id=1\0\0", 6, "record 2 is not key=value" },
		{ "\0", 1, "record 1 is not key=value" },
		{ "noequals\0", 9, "record 1 is not key=value" },
		{ "=value\0", 7, "record 1 is not key=value" },
		{ "id=1\0garbage\x01\x02\0", 15, "record 2 is not key=value" },
		{ "\xff\xff\xff\xff", 4, "does not end in NUL" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct msg m;
		bool ok = msg_decode(2, (const unsigned char *)cases[i].bytes, (uint32_t)cases[i].len, &m);
		CHECK(!ok && contains(m.error, cases[i].why), "case %zu: %s", i, m.error);
		/* Still safe to look into: the copy is NUL-terminated. */
		const char *id = msg_get(&m, "id");
		CHECK(!id || strcmp(id, "1") == 0);
		msg_free(&m);
	}
}

static void test_numbers(void)
{
	static const struct {
		const char *text;
		unsigned long max;
		bool ok;
		unsigned long want;
	} cases[] = {
		{ "0", 1, true, 0 },
		{ "1", 1, true, 1 },
		{ "007", 10, true, 7 },
		{ "2", 1, false, 0 },
		{ "-1", ULONG_MAX, false, 0 },
		{ "+1", ULONG_MAX, false, 0 },
		{ " 1", ULONG_MAX, false, 0 },
		{ "1 ", ULONG_MAX, false, 0 },
		{ "0x10", ULONG_MAX, false, 0 },
		{ "1e3", ULONG_MAX, false, 0 },
		{ "18446744073709551615", ULONG_MAX, true, ULONG_MAX },
		{ "18446744073709551616", ULONG_MAX, false, 0 },
		{ "99999999999999999999999999999", ULONG_MAX, false, 0 },
		{ "1073741823", MAX_ID, true, MAX_ID },
		{ "1073741824", MAX_ID, false, 0 },
		{ "65536", 0xffff, false, 0 },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		unsigned long v = 12345;
		bool ok = parse_uint(cases[i].text, cases[i].max, &v);
		CHECK(ok == cases[i].ok && (!ok || v == cases[i].want), "%s", cases[i].text);
	}
	unsigned long v = 1;
	CHECK(!parse_uint("", 10, &v) && !parse_uint(NULL, 10, &v));

	/* msg_uint: absent or empty is the default. */
	struct payload p = { 0 };
	struct msg m;
	pl_add(&p, "rows=");
	pl_add(&p, "cols=-5");
	decode(&m, 2, &p);
	CHECK(msg_uint(&m, "rows", 7, 10, &v) && v == 7);
	CHECK(msg_uint(&m, "absent", 9, 10, &v) && v == 9);
	CHECK(!msg_uint(&m, "cols", 0, 10, &v));
	msg_free(&m);
	pl_free(&p);
}

/* --- EXEC, CONTAINER, WINSIZE, SIGNAL validation --------------------------------------------- */

static bool exec_of(struct payload *p, struct exec_req *r, char *err, size_t errlen)
{
	struct msg m;

	decode(&m, MSG_EXEC, p);
	bool ok = decode_exec(&m, r, err, errlen);
	/* r points into the message: check it before it goes. */
	if (ok) {
		CHECK(r->argv[r->argc] == NULL && r->envp[r->envc] == NULL &&
		      r->envp[r->envc + 1] == NULL);
	}
	exec_req_free(r);
	msg_free(&m);
	return ok;
}

static void test_exec_valid(void)
{
	struct payload p = { 0 };
	struct exec_req r;
	struct msg m;
	char err[512];

	pl_add(&p, "id=1");
	pl_add(&p, "arg=sh");
	pl_add(&p, "arg=");
	pl_add(&p, "arg=a b\x01");
	pl_add(&p, "env=A=1");
	pl_add(&p, "env=NOEQUALS");
	pl_add(&p, "cwd=/work");
	pl_add(&p, "user=alice:audio");
	pl_add(&p, "tty=1");
	pl_add(&p, "rows=65535");
	pl_add(&p, "cols=");
	pl_add(&p, "stdin=1");
	pl_add(&p, "main=1");
	pl_add(&p, "future=whatever");
	decode(&m, MSG_EXEC, &p);
	CHECK(decode_exec(&m, &r, err, sizeof err), "%s", err);
	CHECK(r.id == 1 && r.main && r.tty && r.want_stdin && r.rows == 65535 && r.cols == 0);
	CHECK(r.argc == 3 && strcmp(r.argv[0], "sh") == 0 && strcmp(r.argv[1], "") == 0 &&
	      strcmp(r.argv[2], "a b\x01") == 0 && r.argv[3] == NULL);
	CHECK(r.envc == 2 && strcmp(r.envp[0], "A=1") == 0 && strcmp(r.envp[1], "NOEQUALS") == 0 &&
	      r.envp[2] == NULL && r.envp[3] == NULL);
	CHECK(strcmp(r.cwd, "/work") == 0 && strcmp(r.user, "alice:audio") == 0);
	exec_req_free(&r);
	msg_free(&m);
	pl_free(&p);

	/* Defaults. */
	pl_add(&p, "id=1073741823");
	pl_add(&p, "arg=true");
	decode(&m, MSG_EXEC, &p);
	CHECK(decode_exec(&m, &r, err, sizeof err), "%s", err);
	CHECK(r.id == MAX_ID && !r.main && !r.tty && !r.want_stdin && r.rows == 0);
	CHECK(strcmp(r.cwd, "/") == 0 && strcmp(r.user, "") == 0 && r.envc == 0 && !r.tool);
	exec_req_free(&r);
	msg_free(&m);
	pl_free(&p);

	/* tool=busybox; empty is no tool. */
	for (int empty = 0; empty < 2; empty++) {
		pl_add(&p, "id=2");
		pl_add(&p, "arg=ps");
		pl_add(&p, empty ? "tool=" : "tool=busybox");
		decode(&m, MSG_EXEC, &p);
		CHECK(decode_exec(&m, &r, err, sizeof err), "%s", err);
		CHECK(r.tool == !empty && strcmp(r.argv[0], "ps") == 0);
		exec_req_free(&r);
		msg_free(&m);
		pl_free(&p);
	}
}

static void test_exec_refused(void)
{
	static const struct {
		const char *records; /* '|' separates records */
		const char *why;
		uint32_t id;         /* what the reply can still name */
		bool main;
	} cases[] = {
		{ "arg=true", "without a valid id", 0, false },
		{ "id=|arg=true", "without a valid id", 0, false },
		{ "id=0|arg=true", "without a valid id", 0, false },
		{ "id=-1|arg=true", "without a valid id", 0, false },
		{ "id=+1|arg=true", "without a valid id", 0, false },
		{ "id= 1|arg=true", "without a valid id", 0, false },
		{ "id=1a|arg=true", "without a valid id", 0, false },
		{ "id=1073741824|arg=true", "without a valid id", 0, false },
		{ "id=4294967296|arg=true", "without a valid id", 0, false },
		{ "id=99999999999999999999999999|arg=true", "without a valid id", 0, false },
		{ "id=1|id=2|arg=true", "more than one id", 0, false },
		{ "id=4|arg=true|user=root|user=alice", "more than one user", 4, false },
		{ "id=4|arg=true|cwd=/|cwd=/etc", "more than one cwd", 4, false },
		{ "id=4|arg=true|main=1|main=1", "more than one main", 4, false },
		{ "id=4|arg=true|tty=2", "malformed tty", 4, false },
		{ "id=4|arg=true|tty=-1", "malformed tty", 4, false },
		{ "id=4|arg=true|stdin=yes", "malformed stdin", 4, false },
		{ "id=4|arg=true|rows=65536", "malformed rows", 4, false },
		{ "id=4|arg=true|cols=-80", "malformed cols", 4, false },
		{ "id=4|arg=true|main=2", "malformed main", 4, false },
		{ "id=4", "without a command", 4, false },
		{ "id=4|env=A=1", "without a command", 4, false },
		{ "id=4|arg=ps|tool=bash", "unknown tool (want busybox)", 4, false },
		{ "id=4|arg=ps|tool=busybox|tool=busybox", "more than one tool", 4, false },
		/* A main EXEC refused still ends the VM: main is read best-effort. */
		{ "id=1|main=1|tty=7|arg=true", "malformed tty", 1, true },
		{ "id=1|main=1", "without a command", 1, true },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct payload p = { 0 };
		struct exec_req r;
		char err[512] = "";

		pl_add_records(&p, cases[i].records);
		CHECK(!exec_of(&p, &r, err, sizeof err) && contains(err, cases[i].why), "%s: %s",
		      cases[i].records, err);
		CHECK(r.id == cases[i].id && r.main == cases[i].main, "%s: id %u main %d",
		      cases[i].records, r.id, r.main);
		pl_free(&p);
	}
}

/* `caps`: all, none, or capability numbers; missing or empty means all. */
static void test_exec_caps(void)
{
	static const struct {
		const char *value; /* NULL: no caps record */
		bool ok, all;
		uint64_t set;
	} cases[] = {
		{ NULL, true, true, UINT64_MAX },
		{ "", true, true, UINT64_MAX },
		{ "all", true, true, UINT64_MAX },
		{ "none", true, false, 0 },
		{ "0", true, false, 1 },
		{ "0,1,3,4,5,6,7,8,10,13,18,27,29,31", true, false, 0xa80425fb },
		{ "21,63", true, false, (UINT64_C(1) << 21) | (UINT64_C(1) << 63) },
		{ "5,5", true, false, 1 << 5 },
		{ "64", false, false, 0 },
		{ "1000", false, false, 0 },
		{ "-1", false, false, 0 },
		{ "+1", false, false, 0 },
		{ " 1", false, false, 0 },
		{ "0x1", false, false, 0 },
		{ "1,,2", false, false, 0 },
		{ ",1", false, false, 0 },
		{ "1,", false, false, 0 },
		{ "all,1", false, false, 0 },
		{ "ALL", false, false, 0 },
		{ "CAP_CHOWN", false, false, 0 },
		{ "none,0", false, false, 0 },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct payload p = { 0 };
		struct exec_req r;
		struct msg m;
		char err[512] = "";

		pl_add(&p, "id=3");
		pl_add(&p, "arg=true");
		if (cases[i].value)
			pl_add(&p, "caps=%s", cases[i].value);
		decode(&m, MSG_EXEC, &p);
		bool ok = decode_exec(&m, &r, err, sizeof err);
		const char *v = cases[i].value ? cases[i].value : "(none)";
		CHECK(ok == cases[i].ok, "%s: %s", v, err);
		if (ok)
			CHECK(r.all_caps == cases[i].all && r.caps == cases[i].set, "%s: %d %llx", v,
			      r.all_caps, (unsigned long long)r.caps);
		else
			CHECK(contains(err, "EXEC with malformed caps") && r.id == 3, "%s: %s", v, err);
		exec_req_free(&r);
		msg_free(&m);
		pl_free(&p);
	}

	/* Like every scalar, it may appear only once. */
	struct payload p = { 0 };
	struct exec_req r;
	char err[512] = "";
	pl_add(&p, "id=3");
	pl_add(&p, "arg=true");
	pl_add(&p, "caps=1");
	pl_add(&p, "caps=2");
	CHECK(!exec_of(&p, &r, err, sizeof err) && contains(err, "more than one caps"), "%s", err);
	pl_free(&p);
}

static void test_exec_limits(void)
{
	struct payload p = { 0 };
	struct exec_req r;
	char err[512], *cwd;

	/* Malformed payload: refused as a whole, but the id is still known. */
	pl_add(&p, "id=9");
	pl_add(&p, "main=1");
	pl_raw(&p, "arg=true", 8); /* no NUL */
	CHECK(!exec_of(&p, &r, err, sizeof err) && contains(err, "malformed EXEC"), "%s", err);
	CHECK(r.id == 9 && r.main);
	pl_free(&p);
	pl_add(&p, "id=9");
	pl_add(&p, "arg=true");
	pl_add(&p, "junk");
	CHECK(!exec_of(&p, &r, err, sizeof err) && contains(err, "record 3 is not key=value"), "%s", err);
	pl_free(&p);

	/* Arguments and environment: up to the limits, not one more. */
	for (int which = 0; which < 2; which++) {
		const char *key = which ? "env" : "arg";
		int max = which ? MAX_ENV : MAX_ARGS;
		pl_add(&p, "id=2");
		if (which)
			pl_add(&p, "arg=true");
		for (int i = 0; i < max; i++)
			pl_add(&p, "%s=%d", key, i);
		CHECK(p.len <= CTL_MAX);
		CHECK(exec_of(&p, &r, err, sizeof err), "%s: %s", key, err);
		pl_add(&p, "%s=one-too-many", key);
		CHECK(!exec_of(&p, &r, err, sizeof err) && contains(err, which ? "environment" : "arguments"),
		      "%s", err);
		CHECK(r.id == 2);
		pl_free(&p);
	}

	/* cwd: PATH_MAX - 1 bytes at most (mkdir_p and chdir could not do more). */
	cwd = malloc(PATH_MAX + 1);
	memset(cwd, 'd', PATH_MAX);
	cwd[0] = '/';
	cwd[PATH_MAX - 1] = '\0';
	pl_add(&p, "id=3");
	pl_add(&p, "arg=true");
	pl_add(&p, "cwd=%s", cwd);
	CHECK(exec_of(&p, &r, err, sizeof err), "%s", err);
	pl_free(&p);
	cwd[PATH_MAX - 1] = 'd';
	cwd[PATH_MAX] = '\0';
	pl_add(&p, "id=3");
	pl_add(&p, "arg=true");
	pl_add(&p, "cwd=%s", cwd);
	CHECK(!exec_of(&p, &r, err, sizeof err) && contains(err, "cwd longer than"), "%s", err);
	pl_free(&p);
	free(cwd);
}

/* Decodes CONTAINER from records joined by '|': refused with an error containing why, or,
 * with why NULL, accepted (and with want_root, on rootfs vda with an fstype). */
static void check_container_case(const char *records, const char *why, bool want_root)
{
	struct payload p = { 0 };
	struct container_req r;
	struct msg m;
	char err[512] = "";

	pl_add_records(&p, records);
	decode(&m, MSG_CONTAINER, &p);
	bool ok = decode_container(&m, &r, err, sizeof err);
	if (why)
		CHECK(!ok && contains(err, why), "%s: %s", records, err);
	else if (want_root)
		CHECK(ok && strcmp(r.rootfs, "vda") == 0 && *r.fstype, "%s: %s", records, err);
	else
		CHECK(ok, "%s: %s", records, err);
	msg_free(&m);
	pl_free(&p);
}

static void test_container_requests(void)
{
	static const struct {
		const char *records;
		const char *why; /* NULL: accepted */
	} cases[] = {
		{ "rootfs=vda", NULL },
		{ "rootfs=vda|fstype=|hostname=", NULL },
		{ "rootfs=vda|fstype=xfs|hostname=box|future=1", NULL },
		{ "hostname=box", "needs rootfs" },
		{ "rootfs=", "needs rootfs" },
		{ "rootfs=../vda", "needs rootfs" },
		{ "rootfs=/dev/vda", "needs rootfs" },
		{ "rootfs=.", "needs rootfs" },
		{ "rootfs=..", "needs rootfs" },
		{ "rootfs=vda|rootfs=vdb", "more than one rootfs" },
		{ "rootfs=vda|hostname=a|hostname=b", "more than one hostname" },
		{ "rootfs=vda|noequals", "malformed CONTAINER" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		check_container_case(cases[i].records, cases[i].why, true);

	/* Lengths: a device name, an fstype and a hostname are short. */
	char big[200];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	const char *fields[] = { "rootfs", "fstype", "hostname" };
	for (size_t i = 0; i < 3; i++) {
		struct payload p = { 0 };
		struct container_req r;
		struct msg m;
		char err[512] = "";
		if (i != 0)
			pl_add(&p, "rootfs=vda");
		pl_add(&p, "%s=%s", fields[i], big);
		decode(&m, MSG_CONTAINER, &p);
		CHECK(!decode_container(&m, &r, err, sizeof err), "%s", fields[i]);
		msg_free(&m);
		pl_free(&p);
	}
	{
		struct payload p = { 0 };
		struct container_req r;
		struct msg m;
		char err[512] = "";
		pl_add(&p, "rootfs=vda");
		pl_add(&p, "hostname=%.*s", HOST_NAME_MAX, big);
		decode(&m, MSG_CONTAINER, &p);
		CHECK(decode_container(&m, &r, err, sizeof err), "%s", err);
		msg_free(&m);
		pl_free(&p);
	}
}

/* Decodes CONTAINER from records joined by '|'; only the mounts (copied out of the
 * message) may be looked at afterwards. */
static bool decode_mount_case(const char *records, struct container_req *r, char *err, size_t errlen)
{
	struct payload p = { 0 };
	struct msg m;

	pl_add(&p, "rootfs=vda");
	pl_add_records(&p, records);
	decode(&m, MSG_CONTAINER, &p);
	bool ok = decode_container(&m, r, err, errlen);
	msg_free(&m);
	pl_free(&p);
	return ok;
}

static void test_container_mounts(void)
{
	static const struct {
		const char *records;
		const char *why; /* NULL: accepted */
	} cases[] = {
		{ "mount=virtiofs hr0 rw - /data", NULL },
		{ "mount=virtiofs hr15 ro - /a b/c d", NULL },
		{ "mount=9p hr1 copy - /var/lib/x", NULL },
		{ "mount=tmpfs - rw mode=1777 /tmp", NULL },
		{ "mount=tmpfs - ro size=65536,mode=0700 /run/x", NULL },
		{ "mount=ext4 hr0 rw - /data", "virtiofs, 9p or tmpfs" },
		{ "mount=virtiofs vda rw - /data", "tag hrN" },
		{ "mount=virtiofs hr123 rw - /data", "tag hrN" },
		{ "mount=virtiofs hr rw - /data", "tag hrN" },
		{ "mount=virtiofs hr0 rw size=1 /data", "tag hrN" },
		{ "mount=virtiofs hr0 rwx - /data", "ro, rw or copy" },
		{ "mount=tmpfs - copy mode=1777 /data", "ro, rw or copy" },
		{ "mount=virtiofs hr0 rw - data", "absolute path" },
		{ "mount=virtiofs hr0 rw - /", "absolute path" },
		{ "mount=virtiofs hr0 rw -", "want KIND" },
		{ "mount=virtiofs hr0", "want KIND" },
		{ "mount=tmpfs - rw size=1,nr_inodes=5,mode=1777 /t", "mode=OCTAL" },
		{ "mount=tmpfs - rw mode=1777,uid=0 /t", "mode=OCTAL" },
		{ "mount=tmpfs - rw mode=9 /t", "mode=OCTAL" },
		{ "mount=tmpfs - rw size=-1,mode=1777 /t", "mode=OCTAL" },
		{ "mount=tmpfs - rw size=99999999999999999,mode=1777 /t", "mode=OCTAL" },
		{ "mount=tmpfs - rw size=0,mode=1777 /t", "mode=OCTAL" },
		{ "mount=tmpfs hr0 rw mode=1777 /t", "mode=OCTAL" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct container_req r;
		char err[512] = "";
		bool ok = decode_mount_case(cases[i].records, &r, err, sizeof err);
		if (cases[i].why)
			CHECK(!ok && contains(err, cases[i].why), "%s: %s", cases[i].records, err);
		else
			CHECK(ok && r.nmounts == 1 && r.mounts[0].target[0] == '/', "%s: %s",
			      cases[i].records, err);
	}

	/* What is mounted is rebuilt from parsed values; a target keeps its spaces. */
	{
		struct container_req r;
		char err[512] = "";
		CHECK(decode_mount_case("mount=tmpfs - ro size=1024,mode=0755 /x y|"
					"mount=virtiofs hr1 copy - /vol", &r, err, sizeof err) &&
		      r.nmounts == 2, "%s", err);
		CHECK(strcmp(r.mounts[0].data, "size=1024,mode=0755") == 0 && r.mounts[0].readonly &&
		      strcmp(r.mounts[0].target, "/x y") == 0 && strcmp(r.mounts[0].source, "tmpfs") == 0,
		      "%s", r.mounts[0].data);
		CHECK(strcmp(r.mounts[1].fstype, "virtiofs") == 0 && r.mounts[1].copy &&
		      !r.mounts[1].readonly && strcmp(r.mounts[1].source, "hr1") == 0 && !r.mounts[1].data[0],
		      "%s", r.mounts[1].source);
	}

	/* Limits: the number of mounts and a target's length. */
	{
		struct payload p = { 0 };
		struct container_req r;
		struct msg m;
		char err[512] = "";
		pl_add(&p, "rootfs=vda");
		for (int i = 0; i <= MAX_MOUNTS; i++)
			pl_add(&p, "mount=tmpfs - rw mode=1777 /t%d", i);
		decode(&m, MSG_CONTAINER, &p);
		CHECK(!decode_container(&m, &r, err, sizeof err) && contains(err, "at most"), "%s", err);
		msg_free(&m);
		pl_free(&p);
	}
	{
		static char big[MAX_MOUNT_TARGET + 8];
		struct payload p = { 0 };
		struct container_req r;
		struct msg m;
		char err[512] = "";
		memset(big, 'a', sizeof big - 1);
		big[0] = '/';
		pl_add(&p, "rootfs=vda");
		pl_add(&p, "mount=virtiofs hr0 rw - %s", big);
		decode(&m, MSG_CONTAINER, &p);
		CHECK(!decode_container(&m, &r, err, sizeof err) && contains(err, "malformed mount"),
		      "%s", err);
		msg_free(&m);
		pl_free(&p);
	}
}

static void test_container_network(void)
{
	static const struct {
		const char *records;
		const char *why; /* NULL: accepted */
	} cases[] = {
		{ "rootfs=vda", NULL },
		{ "rootfs=vda|net=none|hosts=127.0.0.1 localhost\n", NULL },
		{ "rootfs=vda|net=user|ip=10.0.2.15/24|gw=10.0.2.2|mtu=1500|resolv=nameserver 10.0.2.3\n",
		  NULL },
		{ "rootfs=vda|net=user|ip=10.0.2.15/24", NULL },
		{ "rootfs=vda|net=user|ip=10.0.2.15/24|gw=|mtu=", NULL },
		{ "rootfs=vda|net=user|ip=192.168.7.1/32", NULL },
		{ "rootfs=vda|net=tap", "unknown net" },
		{ "rootfs=vda|net=user", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2.15", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2.15/0", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2.15/33", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2.15/+24", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2.256/24", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2.015/24", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2/24", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2.15.1/24", "needs ip" },
		{ "rootfs=vda|net=user|ip= 10.0.2.15/24", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2.1555/24", "needs ip" },
		{ "rootfs=vda|net=user|ip=10.0.2.15/24|gw=10.0.3.2", "malformed gw" },
		{ "rootfs=vda|net=user|ip=10.0.2.15/24|gw=10.0.2.15", "malformed gw" },
		{ "rootfs=vda|net=user|ip=10.0.2.15/24|gw=10.0.2.x", "malformed gw" },
		{ "rootfs=vda|net=user|ip=10.0.2.15/24|mtu=67", "mtu below 68" },
		{ "rootfs=vda|net=user|ip=10.0.2.15/24|mtu=65536", "malformed mtu" },
		{ "rootfs=vda|net=user|ip=10.0.2.15/24|mtu=-1", "malformed mtu" },
		{ "rootfs=vda|net=none|ip=10.0.2.15/24", "no net=user" },
		{ "rootfs=vda|gw=10.0.2.2", "no net=user" },
		{ "rootfs=vda|net=none|mtu=1500", "no net=user" },
		{ "rootfs=vda|net=user|net=user|ip=10.0.2.15/24", "more than one net" },
		{ "rootfs=vda|hosts=a|hosts=b", "more than one hosts" },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		check_container_case(cases[i].records, cases[i].why, false);

	/* What a good one decodes to. */
	struct payload p = { 0 };
	struct container_req r;
	struct msg m;
	char err[512] = "";
	pl_add(&p, "rootfs=vda");
	pl_add(&p, "net=user");
	pl_add(&p, "ip=10.0.2.15/24");
	pl_add(&p, "gw=10.0.2.2");
	pl_add(&p, "mtu=9000");
	pl_add(&p, "hosts=H");
	decode(&m, MSG_CONTAINER, &p);
	CHECK(decode_container(&m, &r, err, sizeof err), "%s", err);
	CHECK(r.net_user && r.ip == 0x0a00020f && r.prefix == 24 && r.gw == 0x0a000202 &&
		      r.mtu == 9000 && strcmp(r.hosts, "H") == 0 && r.resolv == NULL,
	      "decoded %x/%u gw %x mtu %u", r.ip, r.prefix, r.gw, r.mtu);
	msg_free(&m);
	pl_free(&p);
	/* Without net: only lo, as before the keys existed. */
	pl_add(&p, "rootfs=vda");
	decode(&m, MSG_CONTAINER, &p);
	CHECK(decode_container(&m, &r, err, sizeof err) && !r.net_user && !r.hosts && !r.resolv,
	      "%s", err);
	msg_free(&m);
	pl_free(&p);

	/* The files are bounded. */
	char *big = malloc(MAX_NET_FILE + 2);
	for (int over = 0; over <= 1; over++) {
		memset(big, 'h', MAX_NET_FILE + 1);
		big[MAX_NET_FILE + over] = '\0';
		pl_add(&p, "rootfs=vda");
		pl_add(&p, "resolv=%s", big);
		decode(&m, MSG_CONTAINER, &p);
		bool ok = decode_container(&m, &r, err, sizeof err);
		CHECK(over ? !ok && contains(err, "longer than") : ok, "resolv of %u bytes: %s",
		      MAX_NET_FILE + over, err);
		msg_free(&m);
		pl_free(&p);
	}
	free(big);

	/* parse_ipv4 alone. */
	uint32_t ip;
	CHECK(parse_ipv4("0.0.0.0", &ip) && ip == 0, "0.0.0.0");
	CHECK(parse_ipv4("255.255.255.255", &ip) && ip == UINT32_MAX, "255.255.255.255");
	const char *bad[] = { "", "1", "1.2.3", "1.2.3.4.", ".1.2.3", "1..2.3", "1.2.3.4 ",
			      "01.2.3.4", "1.2.3.-4", "1.2.3.4/8", "0x1.2.3.4", "256.1.1.1" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECK(!parse_ipv4(bad[i], &ip), "%s accepted", bad[i]);
}

static void test_winsize_signal_requests(void)
{
	static const struct {
		uint32_t type;
		const char *records;
		bool ok;
	} cases[] = {
		{ MSG_WINSIZE, "id=1|rows=50|cols=132", true },
		{ MSG_WINSIZE, "id=1", true },
		{ MSG_WINSIZE, "rows=50|cols=132", false },
		{ MSG_WINSIZE, "id=0|rows=50", false },
		{ MSG_WINSIZE, "id=1|rows=65536", false },
		{ MSG_WINSIZE, "id=1|rows=1|rows=2", false },
		{ MSG_SIGNAL, "id=1|signal=9", true },
		{ MSG_SIGNAL, "id=1|signal=64", true },
		{ MSG_SIGNAL, "id=1|signal=65", false },
		{ MSG_SIGNAL, "id=1|signal=0", false },
		{ MSG_SIGNAL, "id=1|signal=-9", false },
		{ MSG_SIGNAL, "id=1|signal=", false },
		{ MSG_SIGNAL, "id=1", false },
		{ MSG_SIGNAL, "signal=9", false },
		{ MSG_SIGNAL, "id=1|signal=9|signal=15", false },
		{ MSG_SIGNAL, "id=1|signal=99999999999999999999999", false },
	};

	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct payload p = { 0 };
		struct winsize_req w;
		struct signal_req s;
		struct msg m;
		char err[256] = "";

		pl_add_records(&p, cases[i].records);
		decode(&m, cases[i].type, &p);
		bool ok = cases[i].type == MSG_WINSIZE ? decode_winsize(&m, &w, err, sizeof err)
						       : decode_signal(&m, &s, err, sizeof err);
		CHECK(ok == cases[i].ok, "%s: %s", cases[i].records, err);
		msg_free(&m);
		pl_free(&p);
	}
}

/* --- the dispatch and its replies ------------------------------------------------------------ */

static void test_dispatch_replies(void)
{
	struct payload p = { 0 };
	struct reply r;

	container_ready = false;
	count_replies();
	take_log();

	/* Malformed EXEC: one ERROR naming the id, status 125. */
	pl_add(&p, "id=5");
	pl_raw(&p, "arg=true", 8);
	send_ctl(MSG_EXEC, &p);
	CHECK(next_reply(&r) && r.type == MSG_ERROR);
	CHECK(contains(reply_get(&r, "id"), "5") && strcmp(reply_get(&r, "status"), "125") == 0);
	CHECK(contains(reply_get(&r, "message"), "malformed EXEC"), "%s", reply_get(&r, "message"));
	CHECK(count_replies() == 0);
	pl_free(&p);

	/* No usable id: an ERROR without one. */
	pl_add(&p, "id=abc");
	pl_add(&p, "arg=true");
	send_ctl(MSG_EXEC, &p);
	CHECK(next_reply(&r) && r.type == MSG_ERROR && reply_get(&r, "id") == NULL);
	pl_free(&p);

	/* A well-formed EXEC passes validation and meets the next check. */
	pl_add(&p, "id=6");
	pl_add(&p, "arg=true");
	send_ctl(MSG_EXEC, &p);
	CHECK(next_reply(&r) && r.type == MSG_ERROR &&
	      contains(reply_get(&r, "message"), "EXEC before CONTAINER"));
	pl_free(&p);

	/* Too many arguments. */
	pl_add(&p, "id=7");
	for (int i = 0; i <= MAX_ARGS; i++)
		pl_add(&p, "arg=x");
	send_ctl(MSG_EXEC, &p);
	CHECK(next_reply(&r) && r.type == MSG_ERROR && strcmp(reply_get(&r, "id"), "7") == 0 &&
	      contains(reply_get(&r, "message"), "arguments"));
	pl_free(&p);

	/* A malformed main EXEC ends the VM after its ERROR. */
	pl_add(&p, "id=1");
	pl_add(&p, "main=1");
	pl_add(&p, "tty=9");
	pl_add(&p, "arg=true");
	shutdowns = 0;
	shutdown_armed = true;
	if (!setjmp(shutdown_jmp))
		send_ctl(MSG_EXEC, &p);
	shutdown_armed = false;
	CHECK(shutdowns == 1);
	CHECK(next_reply(&r) && r.type == MSG_ERROR && strcmp(reply_get(&r, "id"), "1") == 0);
	pl_free(&p);

	/* CONTAINER twice is refused without ending anything. */
	container_ready = true;
	pl_add(&p, "rootfs=vda");
	send_ctl(MSG_CONTAINER, &p);
	CHECK(next_reply(&r) && r.type == MSG_ERROR &&
	      contains(reply_get(&r, "message"), "already set up"));
	container_ready = false;
	pl_free(&p);

	/* WINSIZE, SIGNAL and unknown types have no reply: logged, ignored. */
	pl_add(&p, "id=1");
	pl_add(&p, "signal=-9");
	send_ctl(MSG_SIGNAL, &p);
	send_ctl(MSG_WINSIZE, &p);
	pl_free(&p);
	pl_raw(&p, "garbage", 7);
	send_ctl(MSG_SIGNAL, &p);
	send_ctl(MSG_WINSIZE, &p);
	send_ctl(12345, &p);
	pl_free(&p);
	pl_add(&p, "id=77");
	pl_add(&p, "signal=9");
	send_ctl(MSG_SIGNAL, &p); /* no such process */
	pl_free(&p);
	CHECK(count_replies() == 0);
	const char *log = take_log();
	CHECK(contains(log, "ignoring SIGNAL without a valid signal"), "%s", log);
	CHECK(contains(log, "ignoring malformed WINSIZE"), "%s", log);
	CHECK(contains(log, "unknown control message type 12345"), "%s", log);
}

static void test_log_is_bounded_and_clean(void)
{
	struct payload p = { 0 };

	take_log();
	for (int i = 0; i < 1000; i++)
		send_ctl(1000 + (uint32_t)i, &p);
	const char *log = take_log();
	CHECK(count_lines(log) >= 2 && count_lines(log) <= LOG_BURST + 1, "%d lines", count_lines(log));
	CHECK(contains(log, "not logged"));

	logmsg("a\x1b[2Jb\nc\rd\x7f");
	log = take_log();
	CHECK(strcmp(log, "hyperrun-agent: a?[2Jb?c?d?\n") == 0, "%s", log);
}

/* --- I/O frames ------------------------------------------------------------------------------------ */

static void reset_procs(void)
{
	for (int i = 0; i < MAX_PROCS; i++)
		procs[i] = (struct proc){ .pty = -1, .in_fd = -1, .out_fd = -1, .err_fd = -1 };
}

static void test_io_frames(void)
{
	int in[2];
	char got[64];

	reset_procs();
	if (pipe2(in, O_CLOEXEC | O_NONBLOCK) < 0)
		abort();
	procs[3] = (struct proc){ .used = true, .id = 3, .pid = 999999, .pty = -1, .in_fd = in[1],
				  .out_fd = -1, .err_fd = -1 };
	take_log();

	/* Not stdin, unknown processes, absurd ids: dropped, logged. */
	on_io_frame(3 * 4 + KIND_STDOUT, (const unsigned char *)"x", 1);
	on_io_frame(3 * 4 + KIND_STDERR, (const unsigned char *)"x", 1);
	on_io_frame(3 * 4 + 3, (const unsigned char *)"x", 1);
	on_io_frame(4 * 4, (const unsigned char *)"x", 1);
	on_io_frame(4 * 4, (const unsigned char *)"", 0);
	on_io_frame(0, (const unsigned char *)"x", 1);
	on_io_frame(0xffffffffu, (const unsigned char *)"x", 1);
	on_io_frame(0xfffffffcu, (const unsigned char *)"", 0);
	CHECK(read(in[0], got, sizeof got) < 0 && errno == EAGAIN, "nothing reached the process");
	const char *log = take_log();
	CHECK(count_lines(log) == 8, "%s", log);
	CHECK(contains(log, "unknown process 4") && contains(log, "kind 3 is not stdin"), "%s", log);

	/* Its own stdin arrives, then EOF closes the pipe. */
	on_io_frame(3 * 4, (const unsigned char *)"hello", 5);
	CHECK(read(in[0], got, sizeof got) == 5 && memcmp(got, "hello", 5) == 0);
	on_io_frame(3 * 4, (const unsigned char *)"", 0);
	CHECK(procs[3].in_fd == -1 && read(in[0], got, sizeof got) == 0);
	on_io_frame(3 * 4, (const unsigned char *)"late", 4); /* after EOF: dropped */
	on_io_frame(3 * 4, (const unsigned char *)"", 0);
	CHECK(take_log()[0] == '\0', "stdin after EOF is no protocol error");

	/* Once released, stray stdin for it is expected (a race), not logged. */
	proc_release(&procs[3]);
	on_io_frame(3 * 4, (const unsigned char *)"x", 1);
	CHECK(take_log()[0] == '\0');
	close(in[0]);
	reset_procs();
}

/* --- files the container controls -------------------------------------------------------------------- */

static char dir[64];

static char *path_in(const char *name)
{
	static char paths[4][256];
	static int next;
	char *p = paths[next++ % 4];

	snprintf(p, 256, "%s/%s", dir, name);
	return p;
}

static void write_text(const char *name, const char *text)
{
	FILE *f = fopen(path_in(name), "w");

	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
		abort();
}

static const char *const good_passwd =
	"root:x:0:0:root:/root:/bin/sh\n"
	"alice:x:1000:1000:Alice:/home/alice:/bin/sh\n";
static const char *const good_group =
	"root:x:0:\nwheel:x:10:root,alice\naudio:x:29:bob,alice\nalice:x:1000:\ntty:x:5:\n";

static void use_files(const char *passwd, const char *group)
{
	static char pw[256], gr[256];

	snprintf(pw, sizeof pw, "%s/%s", dir, passwd);
	snprintf(gr, sizeof gr, "%s/%s", dir, group);
	passwd_path = pw;
	group_path = gr;
}

static int resolve(const char *spec, struct user *u, char *err)
{
	long long t0 = now_ms();
	int r = resolve_user(spec, u, err, 512);

	CHECK(now_ms() - t0 < 2000, "resolving %.40s took %lld ms", spec, now_ms() - t0);
	return r;
}

static void test_users_good_files(void)
{
	struct user u;
	char err[512];

	write_text("passwd", good_passwd);
	write_text("group", good_group);
	use_files("passwd", "group");
	CHECK(resolve("alice", &u, err) == 0, "%s", err);
	CHECK(u.uid == 1000 && u.gid == 1000 && strcmp(u.home, "/home/alice") == 0);
	CHECK(u.ngroups == 2 && u.groups[0] == 10 && u.groups[1] == 29);
	CHECK(resolve("1000:audio", &u, err) == 0 && u.uid == 1000 && u.gid == 29 && u.ngroups == 0);
	CHECK(resolve("", &u, err) == 0 && u.uid == 0 && strcmp(u.home, "/root") == 0);
	CHECK(resolve("4242", &u, err) == 0 && u.uid == 4242 && u.gid == 0 && strcmp(u.home, "/") == 0);
	CHECK(resolve("alice:4242", &u, err) == 0 && u.gid == 4242);
	CHECK(resolve("alice:", &u, err) == 0 && u.gid == 1000 && u.ngroups == 2);
	CHECK(resolve("bob", &u, err) < 0 &&
	      strcmp(err, "unable to find user bob: no matching entries in passwd file") == 0, "%s", err);
	CHECK(resolve("alice:nogroup", &u, err) < 0 &&
	      strcmp(err, "unable to find group nogroup: no matching entries in group file") == 0,
	      "%s", err);
	CHECK(resolve("1000x", &u, err) < 0, "not a number, so a name");

	/* Missing files are no error (runc): numeric ids still work. */
	use_files("nonexistent", "nonexistent");
	CHECK(resolve("", &u, err) == 0 && u.uid == 0 && strcmp(u.home, "/") == 0);
	CHECK(resolve("5:6", &u, err) == 0 && u.uid == 5 && u.gid == 6);
	CHECK(resolve("alice", &u, err) < 0 && contains(err, "no matching entries"));
	use_files("passwd/sub", "group/sub"); /* ENOTDIR */
	CHECK(resolve("7", &u, err) == 0 && u.uid == 7);

	/* Symlinks are legitimate. */
	symlink("passwd", path_in("passwd-link"));
	symlink("nowhere", path_in("dangling"));
	use_files("passwd-link", "dangling");
	CHECK(resolve("alice", &u, err) == 0 && u.uid == 1000 && u.ngroups == 0, "%s", err);
}

static void test_users_hostile_files(void)
{
	struct user u;
	char err[512];

	write_text("passwd", good_passwd);
	write_text("group", good_group);

	/* A FIFO nobody writes to: refused at once, not waited on. */
	CHECK(mkfifo(path_in("fifo"), 0644) == 0);
	use_files("fifo", "group");
	CHECK(resolve("alice", &u, err) < 0 &&
	      contains(err, "unable to find user alice: ") && contains(err, "fifo is not a regular file"),
	      "%s", err);
	CHECK(resolve("", &u, err) < 0 && contains(err, "unable to find user 0: "), "%s", err);
	use_files("passwd", "fifo");
	CHECK(resolve("alice", &u, err) < 0 &&
	      contains(err, "unable to find groups for user alice: ") && contains(err, "not a regular"),
	      "%s", err);
	CHECK(resolve("alice:audio", &u, err) < 0 && contains(err, "unable to find group audio: "),
	      "%s", err);
	CHECK(resolve("4242", &u, err) == 0, "no entry, no group file needed");

	/* Devices (reached through a symlink), a directory. */
	symlink("/dev/zero", path_in("zero"));
	symlink("/dev/null", path_in("null"));
	mkdir(path_in("directory"), 0755);
	const char *bad[] = { "zero", "null", "directory" };
	for (size_t i = 0; i < 3; i++) {
		use_files(bad[i], "group");
		CHECK(resolve("alice", &u, err) < 0 && contains(err, "is not a regular file"), "%s: %s",
		      bad[i], err);
		use_files("passwd", bad[i]);
		CHECK(resolve("alice", &u, err) < 0 && contains(err, "is not a regular file"), "%s: %s",
		      bad[i], err);
	}

	/* Too large: refused, not truncated; at the limit: read whole. */
	FILE *f = fopen(path_in("big"), "w");
	fputs(good_passwd, f);
	for (long n = (long)strlen(good_passwd); n < (long)UNTRUSTED_FILE_MAX; n += 64)
		fprintf(f, "#%062ld\n", n);
	fclose(f);
	truncate(path_in("big"), UNTRUSTED_FILE_MAX);
	use_files("big", "group");
	CHECK(resolve("alice", &u, err) == 0 && u.uid == 1000, "%s", err);
	truncate(path_in("big"), UNTRUSTED_FILE_MAX + 1);
	CHECK(resolve("alice", &u, err) < 0 && contains(err, "big is larger than 4 MiB"), "%s", err);
	/* Sparse and huge: refused from its size, nothing read. */
	truncate(path_in("big"), 1LL << 40);
	CHECK(resolve("alice", &u, err) < 0 && contains(err, "larger than 4 MiB"), "%s", err);
	unlink(path_in("big"));

	/* A NUL byte. */
	f = fopen(path_in("nul"), "w");
	fputs("root:x:0:0:root:/root:/bin/sh\n", f);
	fwrite("alice\0:x:0:0::/:\n", 1, 17, f);
	fclose(f);
	use_files("nul", "group");
	CHECK(resolve("alice", &u, err) < 0 && contains(err, "contains a NUL byte"), "%s", err);
}

static void test_users_long_lines(void)
{
	struct user u;
	char err[512];
	size_t n = 200000;
	char *line = malloc(n + 200);

	/* fgets(4096) would have cut this line in two and found "mallory" with
	 * uid 0 in its tail: one line is one entry, however long. */
	memset(line, 'x', 4095);
	strcpy(line + 4095, "mallory:x:0:0::/root:/bin/sh\n");
	FILE *f = fopen(path_in("long"), "w");
	fputs(line, f);
	fputs(good_passwd, f);
	/* A legitimate entry with a 200 KB comment field. */
	fputs("carol:x:1001:1001:", f);
	for (size_t i = 0; i < n; i++)
		fputc('c', f);
	fputs(":/home/carol:/bin/sh", f); /* and no final newline */
	fclose(f);
	write_text("group", good_group);
	use_files("long", "group");
	CHECK(resolve("mallory", &u, err) < 0 && contains(err, "no matching entries"), "%s", err);
	CHECK(resolve("alice", &u, err) == 0 && u.uid == 1000);
	CHECK(resolve("carol", &u, err) == 0 && u.uid == 1001 && strcmp(u.home, "/home/carol") == 0,
	      "%s", err);

	/* A home directory longer than PATH_MAX: an error, not a truncated HOME. */
	f = fopen(path_in("longhome"), "w");
	fputs("dave:x:1002:1002::/", f);
	for (int i = 0; i < MAX_HOME; i++)
		fputc('h', f);
	fputs(":/bin/sh\n", f);
	fclose(f);
	use_files("longhome", "group");
	CHECK(resolve("dave", &u, err) < 0 && contains(err, "home directory longer than"), "%s", err);

	/* A huge user spec: not found, no overflow. */
	memset(line, 'u', n);
	line[n] = '\0';
	CHECK(resolve(line, &u, err) < 0 && contains(err, "unable to find user uuu"));
	line[n / 2] = ':';
	CHECK(resolve(line, &u, err) < 0);

	/* Supplementary groups: MAX_GROUPS at most, more is an error. */
	for (int extra = 0; extra < 2; extra++) {
		f = fopen(path_in("manygroups"), "w");
		for (int i = 0; i < MAX_GROUPS - 1 + extra; i++)
			fprintf(f, "g%d:x:%d:alice\n", i, 2000 + i);
		fputs("last:x:9999:bob,alice,carol\n", f);
		fclose(f);
		write_text("passwd", good_passwd);
		use_files("passwd", "manygroups");
		if (!extra)
			CHECK(resolve("alice", &u, err) == 0 && u.ngroups == MAX_GROUPS &&
			      u.groups[MAX_GROUPS - 1] == 9999, "%s", err);
		else
			CHECK(resolve("alice", &u, err) < 0 && contains(err, "supplementary groups"), "%s",
			      err);
	}
	free(line);
}

static void test_read_untrusted(void)
{
	char *data, err[256];
	size_t len;

	write_text("ten", "0123456789");
	CHECK(read_untrusted(path_in("ten"), 10, &data, &len, err, sizeof err) == 0 && len == 10 &&
	      strcmp(data, "0123456789") == 0, "%s", err);
	free(data);
	CHECK(read_untrusted(path_in("ten"), 9, &data, &len, err, sizeof err) < 0 && !data &&
	      contains(err, "larger than 9 bytes"), "%s", err);
	CHECK(read_untrusted(path_in("none"), 9, &data, &len, err, sizeof err) == 1 && !data);
	/* Sizes that lie: /proc files say 0 and have content. */
	CHECK(read_untrusted("/proc/self/status", 1 << 20, &data, &len, err, sizeof err) == 0 &&
	      len > 100 && contains(data, "Name:"), "%s", err);
	free(data);
	CHECK(read_untrusted("/proc/self/status", 16, &data, &len, err, sizeof err) < 0, "%s", err);
}

/* --- main ------------------------------------------------------------------------------------------------ */

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
#define T(name) { #name, test_##name }
	T(frames_split_anywhere),
	T(frame_over_limit),
	T(ctl_frame_of_max_size),
	T(records),
	T(malformed_records),
	T(numbers),
	T(exec_valid),
	T(exec_refused),
	T(exec_caps),
	T(exec_limits),
	T(container_requests),
	T(container_network),
	T(container_mounts),
	T(winsize_signal_requests),
	T(dispatch_replies),
	T(log_is_bounded_and_clean),
	T(io_frames),
	T(users_good_files),
	T(users_hostile_files),
	T(users_long_lines),
	T(read_untrusted),
#undef T
};

static void remove_dir(void)
{
	char cmd[128];

	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "test-parser: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
	int ran = 0, failed_tests = 0;

	setup_pipes();
	reset_procs();
	if ((proc_dir_fd = open("/proc", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		perror("open /proc");
		return 2;
	}
	snprintf(dir, sizeof dir, "/tmp/hyperrun-test-parser.XXXXXX");
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 2;
	}
	for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
		if (argc > 1 && !strstr(tests[i].name, argv[1]))
			continue;
		int before = failures;
		current = tests[i].name;
		alarm(20); /* anything that blocks fails the run */
		tests[i].fn();
		alarm(0);
		ran++;
		if (failures > before)
			failed_tests++;
		printf("%s %s\n", failures > before ? "FAIL" : "ok  ", tests[i].name);
		fflush(stdout);
	}
	remove_dir();
	printf("%d tests, %d checks, %d failed checks, %d failed tests\n", ran, checks, failures,
	       failed_tests);
	return failures ? 1 : 0;
}
