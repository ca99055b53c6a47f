/*
 * hyperrun-monitor: one per container, on the host, for the VM's whole life.
 *
 * QEMU serves each virtio-serial chardev socket to ONE client at a time and
 * drops what the guest writes while none is connected. So this process holds
 * both sockets from the VM's creation to its end, and lets any number of
 * short-lived hyperrun commands talk to the guest through it: each gets a
 * fresh pair of sockets that speak the guest protocol (docs/protocol.md)
 * unchanged. It also writes the main process's output to rotated log files
 * and its exit status to CONTAINER_DIR/exit.
 *
 * The guest is not trusted (docs/protocol.md "The host trusts no frame");
 * clients are (they are root). One thread, one poll() loop, nonblocking
 * sockets, every queue bounded.
 *
 *   buf.c      byte queues, big-endian and strict decimal helpers, stderr lines
 *   frame.c    reading frames off a socket, control payload records
 *   logfile.c  log records and rotation, the exit file
 *   route.c    clients, the process table, client -> guest
 *   guest.c    guest -> clients, the untrusted direction
 *   main.c     arguments, daemonizing, connecting to QEMU
 *   loop.c     the poll loop, back-pressure, the end
 *
 * Built with: gcc -static -Os -Wall -Wextra -Werror (see monitor/build).
 */
#ifndef HYPERRUN_MONITOR_H
#define HYPERRUN_MONITOR_H

#define _GNU_SOURCE
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdnoreturn.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

/* --- protocol (docs/protocol.md) ------------------------------------------ */

#define HEADER_SIZE 8
#define CTL_MAX (1u << 20)
#define IO_MAX (1u << 16)
#define MAX_ID ((1u << 30) - 1) /* stream = id * 4 + kind fits a u32 */

enum msg_type {
	MSG_CONTAINER = 1,
	MSG_EXEC = 2,
	MSG_WINSIZE = 3,
	MSG_SIGNAL = 4,
	MSG_ATTACH = 16, /* monitor-only: subscribe to a process's output */
	MSG_PS = 17,     /* monitor-only: list the process table */
	MSG_OK = 64,
	MSG_ERROR = 65,
	MSG_STARTED = 66,
	MSG_EXIT = 67,
};

enum stream_kind { KIND_STDIN = 0, KIND_STDOUT = 1, KIND_STDERR = 2 };

#define STATUS_AGENT 125
#define STATUS_VM_GONE 137

/* --- tunables ------------------------------------------------------------- */

#define MAX_CLIENTS 64     /* a bit each in a uint64_t subscriber mask */
#define MAX_PROCS 256      /* live processes plus recently exited ones */
#define QUEUE_MAX (4u << 20) /* each outgoing queue, to a client or to the guest */
#define MAX_DROPS 1000     /* anomalous guest frames before we call it hostile */
#define STDERR_LINES 100   /* lines to the diagnostics file in a lifetime */
#define EXIT_LINGER_MS 5000 /* after main's EXIT, connected clients get this long */
#define CONNECT_RETRY_MS 10
#define MESSAGE_MAX 512    /* of an ERROR message copied into the exit file */
#define READ_CHUNK (64u << 10)

/* --- buf.c ------------------------------------------------------------------ */

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

void put_be32(unsigned char *p, uint32_t v);
uint32_t get_be32(const unsigned char *p);
/* 1 to 10 ASCII digits, no sign or space, at most max. */
bool parse_dec(const char *s, uint32_t max, uint32_t *out);
long long now_ms(void);
/* A short line on stderr (the caller's diagnostics file), at most
 * STDERR_LINES in a lifetime so a hostile guest cannot fill a disk. */
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void *xmalloc(size_t n);

/* --- frame.c ------------------------------------------------------------------ */

typedef void frame_fn(void *ctx, uint32_t first, const unsigned char *frame, uint32_t len);

/* Reads bytes into in; hands complete frames (header included) to fn.
 * Returns 1 on progress, 0 if nothing to read now, -1 on EOF or error,
 * -2 if a header announced more than max (the stream is out of sync). */
int read_frames(int fd, struct buf *in, uint32_t max, frame_fn *fn, void *ctx);
int dispatch_frames(struct buf *in, uint32_t max, frame_fn *fn, void *ctx);

/* A control payload checked for shape: NUL-terminated key=value records. */
bool payload_ok(const unsigned char *p, uint32_t len);
/* Value of the one `key=` record, NULL if absent; *dup set if it repeats. */
const char *payload_get(const unsigned char *p, uint32_t len, const char *key, bool *dup);
/* payload_get + parse_dec: 1 found and valid, 0 absent, -1 malformed. */
int payload_num(const unsigned char *p, uint32_t len, const char *key, uint32_t max,
		uint32_t *out);
/* Appends a frame with records built from "key", "value" pairs (NULL-ended). */
void frame_build(struct buf *out, uint32_t type, ...);

/* --- logfile.c -------------------------------------------------------------- */

struct logfile {
	int dirfd;        /* CONTAINER_DIR */
	int fd;           /* container.log, -1 if it could not be opened */
	off_t size;
	off_t max_size;
	unsigned max_files;
	unsigned errors;
};

int log_open(struct logfile *lg, int dirfd, off_t max_size, unsigned max_files);
/* One record per line (see docs in logfile.c); never fails loudly. */
void log_output(struct logfile *lg, enum stream_kind kind, const unsigned char *data,
		size_t len);
/* Formats one record header into out (at least 64 bytes); returns its length. */
size_t log_header(char *out, size_t cap, const struct timespec *ts, enum stream_kind kind,
		  size_t len);
void log_close(struct logfile *lg);

/* Writes CONTAINER_DIR/exit atomically, once per lifetime; later calls do nothing. */
void exit_file(int dirfd, unsigned status, const char *message);
extern bool exit_written;
/* Printable ASCII only, at most MESSAGE_MAX bytes, into out (MESSAGE_MAX + 1). */
void sanitize(const char *in, char *out);

/* --- route.c ------------------------------------------------------------------ */

struct client {
	bool used;
	int ctl, io;                  /* our ends of the socket pairs */
	struct buf ctl_in, io_in;     /* partial frames from the client */
	struct buf ctl_out, io_out;   /* frames for the client */
};

struct proc {
	/* exited: kept until its slot is needed, so EOFs after EXIT still arrive */
	bool used, main, exited;
	uint32_t id;
	unsigned char streams;  /* bit per output kind the guest will end with EOF */
	unsigned char ended;    /* bit per kind whose EOF has arrived */
	int owner;             /* client slot, -1 once it is gone */
	uint64_t subscribers;  /* client slots (ATTACH) */
	unsigned long long seq; /* when it exited, to evict the oldest first */
};

struct guest {
	int ctl, io;
	struct buf ctl_in, io_in;
	struct buf ctl_out, io_out;   /* from every client, whole frames only */
	unsigned drops;
	bool hostile;
};

extern struct client clients[MAX_CLIENTS];
extern struct proc procs[MAX_PROCS];
extern struct guest guest;
extern struct logfile mainlog;
extern int container_dirfd;
extern char **on_exit_argv;      /* --on-exit: what to become at the end, or NULL */
extern bool main_done;         /* main's EXIT or ERROR has been handled */
extern bool main_output_done;  /* and every EOF of its output has arrived */
extern long long main_done_at;

void client_accept(int listen_fd);
void client_drop(int slot);
/* Marks a client to be dropped once the current dispatch is over. */
void client_doom(int slot);
bool client_doomed(int slot);
/* Appends a frame to a client's control queue; dooms it past QUEUE_MAX. */
void to_client_ctl(int slot, const void *frame, size_t len);
struct proc *find_proc(uint32_t id, bool with_exited);
extern int setup_waiter;
extern unsigned long long exit_seq;
size_t client_count(void);
frame_fn client_ctl_frame, client_io_frame;
frame_fn guest_ctl_frame, guest_io_frame;
/* Whether some process owner's io queue is full: then the guest io socket waits. */
bool owner_backlogged(void);
void guest_drop(const char *what);

/* --- loop.c ------------------------------------------------------------------ */

int monitor_loop(int listen_fd, int sig_fd);

#endif
