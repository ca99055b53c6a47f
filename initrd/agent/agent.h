/*
 * hyperrun-agent: PID 1 of a hyperrun VM.
 *
 * It mounts the container's root disk, switches into it and then starts
 * processes for the host, carrying control messages over one virtio-serial
 * port and every process's stdio, multiplexed, over another. The wire format
 * is docs/protocol.md; these files follow it.
 *
 * One thread, one poll() loop over the two ports, a signalfd for SIGCHLD and
 * every process's pipes. Only writes to the ports may block (the host is
 * always reading them). Writes into a process's stdin never block: a process
 * that does not read its stdin must not stall the whole VM.
 *
 *   util.c       logging, dying, small helpers, the byte queue
 *   proto.c      ports, framing, control message decoding, replies
 *   request.c    control messages into validated requests
 *   users.c      user/group resolution from the container's /etc/passwd, /etc/group
 *   exec.c       the child's set-up, spawning a process
 *   ns.c         the container's PID, mount, IPC and UTS namespaces
 *   caps.c       the `caps` of EXEC; bounding, permitted and effective sets
 *   container.c  CONTAINER: mounting and preparing the container root
 *   net.c        CONTAINER: the network interfaces and the resolver's files
 *   mounts.c     CONTAINER: volumes, bind mounts and tmpfs in the container root
 *   proc.c       the process table, stdio pumping, EXEC, WINSIZE, SIGNAL
 *   main.c       start-up, control dispatch, the poll loop, power-off
 *
 * Built with: gcc -static -Os -Wall -Wextra -Werror (see initrd/build).
 */
#ifndef HYPERRUN_AGENT_H
#define HYPERRUN_AGENT_H

#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdnoreturn.h>
#include <sys/types.h>

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
#define MAX_GROUPS 1024   /* supplementary groups of one user; more is an error */
#define MAX_ARGS 65536    /* arg records in one EXEC */
#define MAX_ENV 65536     /* env records in one EXEC */
#define MAX_DEVICE_NAME 64
#define MAX_FSTYPE 64
#define MAX_NET_FILE (64u << 10) /* `hosts` and `resolv` of CONTAINER */
#define NET_DEVICE "eth0"
#define MAX_MOUNTS 16       /* `mount` records of CONTAINER */
#define MAX_MOUNT_TARGET 4096 /* a mount's target, with its NUL */
#define MAX_TMPFS_SIZE (1ull << 40)
#define MAX_COPY_DEPTH 64   /* directories deep, when an image's content fills a volume */
#define MAX_CAP 63        /* capability numbers in `caps` are 0 to MAX_CAP */
#define MAX_HOME 4096     /* a home directory in /etc/passwd, with its NUL */
#define UNTRUSTED_FILE_MAX (4u << 20) /* /etc/passwd, /etc/group */
#define LOG_BURST 20      /* log_limited: messages per kind before going quiet */
#define DEVICE_WAIT_MS 10000 /* virtio ports and the root disk */
#define PORT_RETRY_MS 20     /* re-poll a port whose host end is not connected */
#define STDIN_HIGH_WATER (1u << 20)
/* After a read shorter than SMALL_READ, leave that output alone for
 * BATCH_MS so a program writing line by line is sent in batches: under TCG
 * every frame is a VM exit, and per-line frames made `seq 200000` on a tty
 * 15x slower. The first bytes after a pause still go out at once. */
#define SMALL_READ 1024
#define BATCH_MS 2
/* After the main process's EXIT the agent waits for the host to hang up before it
 * powers off: what QEMU still holds for the sockets is lost at power-off, and a host
 * writing to a slow reader (a pipe into a pager) may take long to come back for it.
 * A host that dies takes the VM with it (libvirt's AUTODESTROY), so the wait is long. */
#define EXIT_GRACE_MS (10 * 60 * 1000)
/* After a CONTAINER or main EXEC that failed: ERROR is small, the host reads it at once. */
#define FAILURE_GRACE_MS 3000
#define NEWROOT "/newroot"
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* --- util.c: logging, dying, helpers ---------------------------------------- */

extern int log_fd;

void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* logmsg for things a peer can repeat at will: after LOG_BURST messages
 * counted by *count, stays quiet. */
void log_limited(unsigned *count, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Go-style lower-case error text, so our messages read like docker's. */
const char *errstr(int err);
/* The host reports the console tail when the VM ends without an EXIT. */
noreturn void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
long long now_ms(void);
/* CLOCK_BOOTTIME in ns: the boot stamps of OK and STARTED (docs/protocol.md). */
long long now_ns(void);
extern long long agent_ns, mounted_ns, request_ns;
void sleep_ms(long ms);
bool wait_for_path(const char *path, int timeout_ms);
int write_file(int dirfd, const char *path, const char *text);
void write_all(int fd, const void *data, size_t len, const char *what);
void put_be32(unsigned char *p, uint32_t v);
uint32_t get_be32(const unsigned char *p);
bool parse_uint(const char *s, unsigned long max, unsigned long *out);

/* Bytes live in data[off, len); consumed bytes are reclaimed lazily. */
struct buf {
	unsigned char *data;
	size_t off, len, cap;
};

size_t buf_size(const struct buf *b);
void buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);

/* Our own /proc (O_PATH), opened before the switch into the container root. */
extern int proc_dir_fd;
/* Reads a file the container controls: 0 with *out (NUL-terminated, free it)
 * and *outlen, 1 if it does not exist, -1 with err if it is not a regular
 * file, is larger than cap or cannot be read. Never blocks. */
int read_untrusted(const char *path, size_t cap, char **out, size_t *outlen, char *err,
		   size_t errlen);

/* --- proto.c: ports, framing, messages, replies ------------------------------- */

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

/* Defined in main.c (the unit tests bring their own). */
extern struct port ctl_port, io_port;

void send_frame(struct port *port, uint32_t first, unsigned char *frame, uint32_t len);
int port_dispatch(struct port *port);
void read_port(struct port *port);
void open_port(struct port *port);

/* An incoming control message; payload[len] is a NUL we added, so every
 * record, even a truncated last one, is a C string. */
struct msg {
	uint32_t type;
	const char *payload;
	size_t len;
	char error[96]; /* empty, or why the payload is malformed (msg_decode) */
};

#define FOR_EACH_RECORD(m, rec)                                        \
	for (const char *rec = (m)->payload; rec < (m)->payload + (m)->len; \
	     rec += strlen(rec) + 1)

bool msg_decode(uint32_t type, const unsigned char *payload, uint32_t len, struct msg *m);
void msg_free(struct msg *m);
const char *msg_get(const struct msg *m, const char *key);
size_t msg_list(const struct msg *m, const char *key, const char **out);
bool msg_uint(const struct msg *m, const char *key, unsigned long dflt, unsigned long max,
	      unsigned long *out);

/* Decodes a control frame and hands it to its handler. */
frame_fn on_ctl_frame;

void reply_ok(void);
/* id 0 means "not about a process" (ids start at 1). */
void reply_error(uint32_t id, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void reply_started(uint32_t id, pid_t pid, long long exec_ns);
void reply_exit(uint32_t id, int status);

/* --- request.c --------------------------------------------------------------- */

/* Each decode_* returns false with err set when the request is malformed. */

struct exec_req {
	uint32_t id;                  /* 0 if the message has no valid id */
	bool main, tty, want_stdin;
	unsigned short rows, cols;
	size_t argc, envc;
	const char **argv;            /* argc + 1 entries, NULL-terminated */
	const char **envp;            /* envc + 2 entries (room for HOME), NULL-terminated */
	const char *cwd, *user;       /* never NULL; they point into the message */
	uint64_t caps;                /* bit N: capability N; UINT64_MAX with all_caps */
	bool all_caps;                /* `caps` missing or "all": every one the kernel has */
	bool tool;                    /* tool=busybox: argv[0] names an applet of our busybox */
};

/* id and main are filled in even when it fails (for the reply, and to end
 * the VM after a main EXEC that never ran). Free with exec_req_free. */
bool decode_exec(const struct msg *m, struct exec_req *r, char *err, size_t errlen);
void exec_req_free(struct exec_req *r);

/* One `mount` record: text holds the record split in place (docs/protocol.md). */
struct mount_req {
	char text[MAX_MOUNT_TARGET + 32];
	const char *fstype;  /* virtiofs, 9p or tmpfs */
	const char *source;  /* the share's tag, or "tmpfs" */
	const char *target;  /* absolute, inside the container root */
	char data[96];       /* mount options we built (never the host's text) */
	bool readonly, copy; /* copy: fill an empty volume with the image's content */
};

struct container_req {
	size_t nmounts;
	struct mount_req mounts[MAX_MOUNTS];
	const char *rootfs, *fstype, *hostname;
	bool net_user;      /* net=user: eth0 configured; otherwise only lo */
	uint32_t ip, gw;    /* eth0's address and default gateway (host order; gw 0: none) */
	unsigned prefix;    /* eth0's netmask length */
	unsigned mtu;
	const char *hosts, *resolv; /* /etc/hosts and /etc/resolv.conf to write, or NULL */
};

bool decode_container(const struct msg *m, struct container_req *r, char *err, size_t errlen);
/* The `mount` records (mounts.c); decode_container calls it. */
bool decode_mounts(const struct msg *m, struct container_req *r, char *err, size_t errlen);
/* In the container root, after the network: mounts every share and tmpfs. */
int setup_mounts(const struct container_req *r, char *err, size_t errlen);
/* Dotted-quad IPv4 (no leading zeros, no spaces), host order; with a /prefix for cidr. */
bool parse_ipv4(const char *text, uint32_t *out);
bool parse_ipv4_cidr(const char *text, uint32_t *ip, unsigned *prefix);

struct winsize_req {
	uint32_t id;
	unsigned short rows, cols;
};

bool decode_winsize(const struct msg *m, struct winsize_req *r, char *err, size_t errlen);

struct signal_req {
	uint32_t id;
	int signal;
};

bool decode_signal(const struct msg *m, struct signal_req *r, char *err, size_t errlen);

/* --- users.c ------------------------------------------------------------------ */

struct user {
	uid_t uid;
	gid_t gid;
	char home[MAX_HOME];
	size_t ngroups;
	gid_t groups[MAX_GROUPS];
};

/* Where resolve_user looks (the unit tests point them elsewhere). */
extern const char *passwd_path, *group_path;
int resolve_user(const char *spec, struct user *u, char *err, size_t errlen);

/* --- ns.c, caps.c ---------------------------------------------------------------- */

#define NS_COUNT 4 /* pid, ipc, uts, mnt */

/* The main process's namespaces, for a process that joins them; -1 if unused. */
struct ns_fds {
	int fd[NS_COUNT];
};

struct exec_spec;

void ns_close(struct ns_fds *ns);
int ns_open(pid_t main_pid, struct ns_fds *ns, char *err, size_t errlen);
pid_t fork_isolated(void);
pid_t fork_joined(const struct ns_fds *ns);
int enter_namespaces(const struct exec_spec *s, char *err, size_t errlen);

/* Returns false if text is not "all", "none" or numbers 0..MAX_CAP joined by ','. */
bool parse_caps(const char *text, uint64_t *set, bool *all);
uint64_t caps_known(void);
int drop_bounding_set(uint64_t keep, char *err, size_t errlen);
int apply_caps(uint64_t set, bool root, char *err, size_t errlen);

/* --- exec.c -------------------------------------------------------------------- */

struct exec_spec {
	uint32_t id;
	bool main;      /* new namespaces; otherwise it joins ns */
	bool tty;
	uint64_t caps;  /* already limited to caps_known() */
	struct ns_fds ns;
	const char **argv;
	const char **envp;
	const char *cwd;
	struct user user;
	int child_fd[3]; /* the child's stdin (-1: /dev/null), stdout, stderr; a tty's slave */
	int exe_fd;      /* >= 0: exec this file (the agent's busybox), not argv[0]'s path */
	long long exec_ns; /* set by spawn: when the agent saw execve succeed */
};

/* The agent's /dev/null, opened at start-up: a child's stdin with stdin=0. */
extern int null_fd;
/* The devpts instance CONTAINER mounted (O_PATH): ptys come from there. */
extern int pts_fd;
/* The initrd's static busybox (O_RDONLY, for execveat), opened at start-up from
 * BUSYBOX_PATH, which the container never sees; -1 if the initrd has none. */
extern int busybox_fd;
#define BUSYBOX_PATH "/hyperrun/busybox"
#define TOOL_BUSYBOX "busybox"
const char *env_get(const char **envp, const char *key);
void close_fds(int *fds, size_t n);
int make_stdio(struct exec_spec *s, bool want_stdin, unsigned short rows, unsigned short cols,
	       int ours[3]);
void close_child_fds(struct exec_spec *s);
pid_t spawn(struct exec_spec *s);

/* --- container.c ---------------------------------------------------------------- */

extern bool container_ready;
/* Control message handlers return whether the VM must end (see on_ctl_frame). */
bool handle_container(const struct msg *m);

/* --- net.c: lo, eth0, /etc/hosts, /etc/resolv.conf ------------------------------------ */

/* In the container root (our root by then). */
int setup_network(const struct container_req *r, char *err, size_t errlen);

/* --- proc.c ----------------------------------------------------------------------- */

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

extern struct proc procs[MAX_PROCS];

void proc_release(struct proc *p);
void pump_output(struct proc *p, int *fd, long long *quiet_until, enum stream_kind kind);
void flush_stdin(struct proc *p);
bool stdin_backlogged(void);
frame_fn on_io_frame;
void reap_children(int sigfd);
void finish_processes(void);
bool handle_exec(const struct msg *m);
bool handle_winsize(const struct msg *m);
bool handle_signal(const struct msg *m);

/* --- main.c ------------------------------------------------------------------------ */

noreturn void power_off(void);
/* After main's EXIT (or a failed CONTAINER / main EXEC). */
noreturn void shutdown_vm(long long grace_ms);

#endif
