/*
 * The main process's output in CONTAINER_DIR/container.log, and its status in
 * CONTAINER_DIR/exit.
 *
 * One record per output line: a header `SECONDS.NANOSECONDS STREAM LENGTH\n`,
 * exactly LENGTH bytes of data, then `\n`. The length makes it binary safe (a
 * reader never has to trust the data to find the next record). A frame's last
 * piece without a newline is a record of its own.
 *
 * Rotation renames container.log to container.log.1 and so on, never
 * rewriting a file in place: `hyperrun logs -f` keeps its fd open and finds
 * the next file by inode.
 */
#include "monitor.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define LOG_NAME "container.log"

bool exit_written;

static int open_current(struct logfile *lg)
{
	struct stat st;

	lg->fd = openat(lg->dirfd, LOG_NAME,
			O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (lg->fd < 0)
		return -1;
	lg->size = fstat(lg->fd, &st) == 0 ? st.st_size : 0;
	return 0;
}

int log_open(struct logfile *lg, int dirfd, off_t max_size, unsigned max_files)
{
	*lg = (struct logfile){ .dirfd = dirfd, .fd = -1, .max_size = max_size,
				.max_files = max_files };
	return open_current(lg);
}

void log_close(struct logfile *lg)
{
	if (lg->fd >= 0)
		close(lg->fd);
	lg->fd = -1;
}

static void log_failed(struct logfile *lg, const char *what)
{
	/* A full disk must not stop the container: say it once, keep forwarding. */
	if (lg->errors++ == 0)
		note("%s %s: %s (further log errors are counted, not shown)", what, LOG_NAME,
		     strerror(errno));
}

static void rotate(struct logfile *lg)
{
	char from[64], to[64];

	if (lg->max_files <= 1) {
		if (ftruncate(lg->fd, 0) < 0)
			log_failed(lg, "truncate");
		lg->size = 0;
		return;
	}
	snprintf(to, sizeof to, LOG_NAME ".%u", lg->max_files - 1);
	if (unlinkat(lg->dirfd, to, 0) < 0 && errno != ENOENT)
		log_failed(lg, "remove an old");
	for (unsigned k = lg->max_files - 2; k >= 1; k--) {
		snprintf(from, sizeof from, LOG_NAME ".%u", k);
		snprintf(to, sizeof to, LOG_NAME ".%u", k + 1);
		if (renameat(lg->dirfd, from, lg->dirfd, to) < 0 && errno != ENOENT)
			log_failed(lg, "rotate");
	}
	if (renameat(lg->dirfd, LOG_NAME, lg->dirfd, LOG_NAME ".1") < 0)
		log_failed(lg, "rotate");
	log_close(lg);
	if (open_current(lg) < 0)
		log_failed(lg, "reopen");
}

size_t log_header(char *out, size_t cap, const struct timespec *ts, enum stream_kind kind,
		  size_t len)
{
	int n = snprintf(out, cap, "%lld.%09ld %s %zu\n", (long long)ts->tv_sec, ts->tv_nsec,
			 kind == KIND_STDERR ? "stderr" : "stdout", len);
	return n < 0 ? 0 : (size_t)n;
}

static void write_record(struct logfile *lg, const struct timespec *ts, enum stream_kind kind,
			 const unsigned char *data, size_t len)
{
	char header[96];
	size_t hlen = log_header(header, sizeof header, ts, kind, len);
	off_t total = (off_t)(hlen + len + 1);

	if (lg->fd >= 0 && lg->size > 0 && lg->size + total > lg->max_size)
		rotate(lg);
	if (lg->fd < 0 && open_current(lg) < 0)
		return; /* counted when it failed; retried at the next record */
	struct iovec iov[3] = {
		{ header, hlen }, { (void *)data, len }, { "\n", 1 },
	};
	/* One writev per record: a reader never sees half a header. A short write
	 * is finished piece by piece. */
	size_t done = 0;
	while (done < (size_t)total) {
		struct iovec part[3];
		int n = 0;
		size_t skip = done;
		for (int i = 0; i < 3; i++) {
			if (skip >= iov[i].iov_len) {
				skip -= iov[i].iov_len;
				continue;
			}
			part[n].iov_base = (char *)iov[i].iov_base + skip;
			part[n++].iov_len = iov[i].iov_len - skip;
			skip = 0;
		}
		ssize_t w = writev(lg->fd, part, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			log_failed(lg, "write");
			break;
		}
		done += (size_t)w;
	}
	lg->size += (off_t)done;
}

void log_output(struct logfile *lg, enum stream_kind kind, const unsigned char *data,
		size_t len)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	while (len > 0) {
		const unsigned char *nl = memchr(data, '\n', len);
		size_t n = nl ? (size_t)(nl - data) + 1 : len;
		write_record(lg, &ts, kind, data, n);
		data += n;
		len -= n;
	}
}

/* Printable ASCII only: the message is shown to users, and came from the guest. */
void sanitize(const char *in, char *out)
{
	size_t n = 0;

	for (; in && *in && n < MESSAGE_MAX; in++)
		out[n++] = (*in >= 0x20 && *in < 0x7f) ? *in : '?';
	out[n] = '\0';
}

static int write_exit_tmp(int dirfd, const char *text)
{
	int fd = openat(dirfd, "exit.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
			0600);
	size_t len = strlen(text), done = 0;

	if (fd < 0)
		return -1;
	while (done < len) {
		ssize_t w = write(fd, text + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			close(fd);
			return -1;
		}
		done += (size_t)w;
	}
	if (fsync(fd) < 0) {
		close(fd);
		return -1;
	}
	return close(fd);
}

void exit_file(int dirfd, unsigned status, const char *message)
{
	char text[MESSAGE_MAX + 32];

	if (exit_written)
		return;
	exit_written = true;
	snprintf(text, sizeof text, "%u\n%s\n", status, message ? message : "");
	if (write_exit_tmp(dirfd, text) < 0 || renameat(dirfd, "exit.tmp", dirfd, "exit") < 0) {
		note("cannot write the exit file: %s", strerror(errno));
		return;
	}
	/* The rename itself must survive a host crash too. */
	fsync(dirfd);
}
