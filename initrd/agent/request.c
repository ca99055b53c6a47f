/*
 * Control messages into validated requests. Everything here comes from the
 * host and is checked before anything acts on it: a request that is not
 * exactly understood is refused as a whole (docs/protocol.md, "What the agent
 * does with malformed input").
 */
#include "agent.h"

#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static bool fail(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

/* Keys that name one value must not repeat: which one would count? */
static bool once(const struct msg *m, const char *const *keys, const char *what, char *err,
		 size_t errlen)
{
	for (; *keys; keys++)
		if (msg_list(m, *keys, NULL) > 1)
			return fail(err, errlen, "%s with more than one %s", what, *keys);
	return true;
}

/* Numbers: `key` absent or empty is dflt. */
static bool number(const struct msg *m, const char *key, unsigned long dflt, unsigned long max,
		   unsigned long *out, const char *what, char *err, size_t errlen)
{
	if (msg_uint(m, key, dflt, max, out))
		return true;
	return fail(err, errlen, "%s with a malformed %s (want 0 to %lu)", what, key, max);
}

void exec_req_free(struct exec_req *r)
{
	free(r->argv);
	free(r->envp);
	r->argv = r->envp = NULL;
}

bool decode_exec(const struct msg *m, struct exec_req *r, char *err, size_t errlen)
{
	static const char *const scalars[] = { "id",   "cwd",   "user", "tty",  "rows",
					       "cols", "stdin", "main", "caps", "tool", NULL };
	unsigned long id, v;

	/* Without `caps`, every capability: what a host from before the key expects. */
	*r = (struct exec_req){ .cwd = "/", .user = "", .caps = UINT64_MAX, .all_caps = true };
	/* Best effort first, for the reply: its id, and whether a failure must
	 * end the VM (a main process that never runs). */
	if (msg_list(m, "id", NULL) == 1 && msg_uint(m, "id", 0, MAX_ID, &id))
		r->id = (uint32_t)id;
	if (msg_list(m, "main", NULL) == 1 && msg_uint(m, "main", 0, 1, &v))
		r->main = v;

	if (m->error[0])
		return fail(err, errlen, "malformed EXEC: %s", m->error);
	if (!once(m, scalars, "EXEC", err, errlen))
		return false;
	if (r->id == 0)
		return fail(err, errlen, "EXEC without a valid id (want 1 to %lu)",
			    (unsigned long)MAX_ID);
	if (!number(m, "tty", 0, 1, &v, "EXEC", err, errlen))
		return false;
	r->tty = v;
	if (!number(m, "stdin", 0, 1, &v, "EXEC", err, errlen))
		return false;
	r->want_stdin = v;
	if (!number(m, "main", 0, 1, &v, "EXEC", err, errlen))
		return false;
	if (!number(m, "rows", 0, 0xffff, &v, "EXEC", err, errlen))
		return false;
	r->rows = (unsigned short)v;
	if (!number(m, "cols", 0, 0xffff, &v, "EXEC", err, errlen))
		return false;
	r->cols = (unsigned short)v;

	const char *cwd = msg_get(m, "cwd");
	if (cwd && *cwd)
		r->cwd = cwd;
	if (strlen(r->cwd) >= PATH_MAX)
		return fail(err, errlen, "EXEC with a cwd longer than %d bytes", PATH_MAX - 1);
	const char *user = msg_get(m, "user");
	if (user)
		r->user = user;
	const char *caps = msg_get(m, "caps");
	if (caps && *caps && !parse_caps(caps, &r->caps, &r->all_caps))
		return fail(err, errlen,
			    "EXEC with malformed caps (want all, none or numbers 0 to %d joined by ',')",
			    MAX_CAP);

	/* A program of the agent's own, for images without one (`top`, `cp`). */
	const char *tool = msg_get(m, "tool");
	if (tool && *tool) {
		if (strcmp(tool, TOOL_BUSYBOX) != 0)
			return fail(err, errlen, "EXEC with an unknown tool (want %s)", TOOL_BUSYBOX);
		r->tool = true;
	}

	r->argc = msg_list(m, "arg", NULL);
	r->envc = msg_list(m, "env", NULL);
	if (r->argc == 0)
		return fail(err, errlen, "EXEC without a command");
	if (r->argc > MAX_ARGS)
		return fail(err, errlen, "EXEC with %zu arguments (at most %d)", r->argc, MAX_ARGS);
	if (r->envc > MAX_ENV)
		return fail(err, errlen, "EXEC with %zu environment variables (at most %d)",
			    r->envc, MAX_ENV);
	r->argv = calloc(r->argc + 1, sizeof *r->argv);
	r->envp = calloc(r->envc + 2, sizeof *r->envp); /* + HOME + NULL */
	if (!r->argv || !r->envp)
		die("out of memory");
	msg_list(m, "arg", r->argv);
	msg_list(m, "env", r->envp);
	return true;
}

/* Strict dotted quad: four numbers 0 to 255 in decimal, no leading zeros. */
bool parse_ipv4(const char *text, uint32_t *out)
{
	uint32_t ip = 0;
	const char *p = text;

	for (int part = 0; part < 4; part++) {
		unsigned v = 0;
		if (part > 0 && *p++ != '.')
			return false;
		const char *start = p;
		while (*p >= '0' && *p <= '9' && p - start < 3)
			v = v * 10 + (unsigned)(*p++ - '0');
		if (p == start || v > 255 || (*start == '0' && p - start > 1))
			return false;
		ip = ip << 8 | v;
	}
	if (*p)
		return false;
	*out = ip;
	return true;
}

bool parse_ipv4_cidr(const char *text, uint32_t *ip, unsigned *prefix)
{
	char addr[sizeof "255.255.255.255"];
	const char *slash = strchr(text, '/');
	unsigned long len;

	if (!slash || (size_t)(slash - text) >= sizeof addr)
		return false;
	memcpy(addr, text, (size_t)(slash - text));
	addr[slash - text] = '\0';
	if (!parse_ipv4(addr, ip) || !parse_uint(slash + 1, 32, &len) || len == 0)
		return false;
	*prefix = (unsigned)len;
	return true;
}

/* net=user|none (missing: none, what a host from before the key expects), and for
 * user eth0's ip=A.B.C.D/N, gw (inside that network) and mtu; hosts and resolv are
 * files to write, either way. */
static bool decode_network(const struct msg *m, struct container_req *r, char *err,
			   size_t errlen)
{
	const char *net = msg_get(m, "net"), *ip = msg_get(m, "ip"), *gw = msg_get(m, "gw");
	const char *mtu_text = msg_get(m, "mtu");
	unsigned long mtu;

	if (net && *net && strcmp(net, "user") != 0 && strcmp(net, "none") != 0)
		return fail(err, errlen, "CONTAINER with an unknown net (want user or none)");
	r->net_user = net && strcmp(net, "user") == 0;
	if (!r->net_user && ((ip && *ip) || (gw && *gw) || (mtu_text && *mtu_text)))
		return fail(err, errlen, "CONTAINER with ip, gw or mtu but no net=user");
	if (r->net_user) {
		if (!ip || !parse_ipv4_cidr(ip, &r->ip, &r->prefix))
			return fail(err, errlen, "CONTAINER with net=user needs ip=A.B.C.D/N");
		uint32_t mask = r->prefix == 32 ? UINT32_MAX : ~(UINT32_MAX >> r->prefix);
		if (gw && *gw && (!parse_ipv4(gw, &r->gw) || r->gw == r->ip ||
				  (r->gw & mask) != (r->ip & mask)))
			return fail(err, errlen,
				    "CONTAINER with a malformed gw (want an address in ip's network)");
		if (!number(m, "mtu", 1500, 65535, &mtu, "CONTAINER", err, errlen))
			return false;
		if (mtu < 68)
			return fail(err, errlen, "CONTAINER with an mtu below 68");
		r->mtu = (unsigned)mtu;
	}
	r->hosts = msg_get(m, "hosts");
	r->resolv = msg_get(m, "resolv");
	if ((r->hosts && strlen(r->hosts) > MAX_NET_FILE) ||
	    (r->resolv && strlen(r->resolv) > MAX_NET_FILE))
		return fail(err, errlen, "CONTAINER with hosts or resolv longer than %u bytes",
			    MAX_NET_FILE);
	return true;
}

bool decode_container(const struct msg *m, struct container_req *r, char *err, size_t errlen)
{
	static const char *const scalars[] = { "rootfs", "fstype", "hostname", "net", "ip",
					       "gw",     "mtu",    "hosts",    "resolv", NULL };

	memset(r, 0, sizeof *r);
	r->fstype = "ext4";
	r->hostname = "";
	r->mtu = 1500;
	if (m->error[0])
		return fail(err, errlen, "malformed CONTAINER: %s", m->error);
	if (!once(m, scalars, "CONTAINER", err, errlen))
		return false;
	r->rootfs = msg_get(m, "rootfs");
	if (!r->rootfs || !*r->rootfs || strchr(r->rootfs, '/') || strcmp(r->rootfs, ".") == 0 ||
	    strcmp(r->rootfs, "..") == 0 || strlen(r->rootfs) > MAX_DEVICE_NAME)
		return fail(err, errlen, "CONTAINER needs rootfs=<block device name>");
	const char *fstype = msg_get(m, "fstype");
	if (fstype && *fstype)
		r->fstype = fstype;
	if (strlen(r->fstype) > MAX_FSTYPE)
		return fail(err, errlen, "CONTAINER with an fstype longer than %d bytes", MAX_FSTYPE);
	const char *hostname = msg_get(m, "hostname");
	if (hostname)
		r->hostname = hostname;
	if (strlen(r->hostname) > HOST_NAME_MAX)
		return fail(err, errlen, "CONTAINER with a hostname longer than %d bytes",
			    HOST_NAME_MAX);
	return decode_network(m, r, err, errlen) && decode_mounts(m, r, err, errlen);
}

bool decode_winsize(const struct msg *m, struct winsize_req *r, char *err, size_t errlen)
{
	static const char *const scalars[] = { "id", "rows", "cols", NULL };
	unsigned long id, rows, cols;

	if (m->error[0])
		return fail(err, errlen, "malformed WINSIZE: %s", m->error);
	if (!once(m, scalars, "WINSIZE", err, errlen))
		return false;
	if (!msg_uint(m, "id", 0, MAX_ID, &id) || id == 0)
		return fail(err, errlen, "WINSIZE without a valid id");
	if (!number(m, "rows", 0, 0xffff, &rows, "WINSIZE", err, errlen) ||
	    !number(m, "cols", 0, 0xffff, &cols, "WINSIZE", err, errlen))
		return false;
	*r = (struct winsize_req){ (uint32_t)id, (unsigned short)rows, (unsigned short)cols };
	return true;
}

bool decode_signal(const struct msg *m, struct signal_req *r, char *err, size_t errlen)
{
	static const char *const scalars[] = { "id", "signal", NULL };
	unsigned long id, sig;

	if (m->error[0])
		return fail(err, errlen, "malformed SIGNAL: %s", m->error);
	if (!once(m, scalars, "SIGNAL", err, errlen))
		return false;
	if (!msg_uint(m, "id", 0, MAX_ID, &id) || id == 0)
		return fail(err, errlen, "SIGNAL without a valid id");
	if (!msg_uint(m, "signal", 0, NSIG - 1, &sig) || sig == 0)
		return fail(err, errlen, "SIGNAL without a valid signal (want 1 to %d)", NSIG - 1);
	*r = (struct signal_req){ (uint32_t)id, (int)sig };
	return true;
}
