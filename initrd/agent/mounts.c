/* CONTAINER's `mount` records: volumes, bind mounts and tmpfs in the container root. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- decoding ------------------------------------------------------------------- */

static bool bad(char *err, size_t errlen, size_t i, const char *why)
{
	snprintf(err, errlen, "CONTAINER with a malformed mount #%zu: %s", i + 1, why);
	return false;
}

/* Cuts the next space-separated word off *rest (in place). */
static char *word(char **rest)
{
	char *w = *rest, *sp = strchr(w, ' ');
	if (!sp)
		return NULL;
	*sp = '\0';
	*rest = sp + 1;
	return w;
}

/* tmpfs options: size=BYTES (optional) then mode=OCTAL; rebuilt, never passed as given. */
static bool tmpfs_options(const char *text, struct mount_req *mr)
{
	unsigned long long size = 0;
	unsigned mode;
	int used = 0;
	char extra;

	if (strncmp(text, "size=", 5) == 0) {
		const char *p = text + 5;
		if (*p < '1' || *p > '9' || strspn(p, "0123456789") > 15)
			return false;
		size = strtoull(p, (char **)&p, 10);
		if (*p++ != ',')
			return false;
		text = p;
	}
	if (sscanf(text, "mode=%4o%n%c", &mode, &used, &extra) != 1 || used != (int)strlen(text) ||
	    strspn(text + 5, "01234567") != strlen(text + 5) || size > MAX_TMPFS_SIZE)
		return false;
	if (size)
		snprintf(mr->data, sizeof mr->data, "size=%llu,mode=%04o", size, mode);
	else
		snprintf(mr->data, sizeof mr->data, "mode=%04o", mode);
	return true;
}

bool decode_mounts(const struct msg *m, struct container_req *r, char *err, size_t errlen)
{
	const char *records[MAX_MOUNTS + 1];
	size_t n = msg_list(m, "mount", NULL);

	r->nmounts = 0;
	if (n > MAX_MOUNTS) {
		snprintf(err, errlen, "CONTAINER with %zu mounts (at most %d)", n, MAX_MOUNTS);
		return false;
	}
	msg_list(m, "mount", records);
	for (size_t i = 0; i < n; i++) {
		struct mount_req *mr = &r->mounts[i];
		char *rest, *kind, *tag, *mode, *opts;
		const char *source;

		*mr = (struct mount_req){ 0 };
		if (strlen(records[i]) >= sizeof mr->text)
			return bad(err, errlen, i, "longer than 4 KiB");
		memcpy(mr->text, records[i], strlen(records[i]) + 1);
		rest = mr->text;
		if (!(kind = word(&rest)) || !(tag = word(&rest)) || !(mode = word(&rest)) ||
		    !(opts = word(&rest)))
			return bad(err, errlen, i, "want KIND TAG MODE OPTIONS TARGET");
		source = tag;
		if (strcmp(kind, "virtiofs") == 0 || strcmp(kind, "9p") == 0) {
			if (strncmp(tag, "hr", 2) != 0 || !tag[2] || strlen(tag) > 4 ||
			    strspn(tag + 2, "0123456789") != strlen(tag + 2) || strcmp(opts, "-") != 0)
				return bad(err, errlen, i, "a share needs a tag hrN and options -");
			if (strcmp(kind, "9p") == 0)
				snprintf(mr->data, sizeof mr->data,
					 "trans=virtio,version=9p2000.L,msize=512000,cache=mmap");
		} else if (strcmp(kind, "tmpfs") == 0) {
			if (strcmp(tag, "-") != 0 || !tmpfs_options(opts, mr))
				return bad(err, errlen, i, "a tmpfs needs tag - and mode=OCTAL");
			source = "tmpfs";
		} else {
			return bad(err, errlen, i, "the kind is virtiofs, 9p or tmpfs");
		}
		if (strcmp(mode, "ro") == 0)
			mr->readonly = true;
		else if (strcmp(mode, "copy") == 0 && strcmp(kind, "tmpfs") != 0)
			mr->copy = true;
		else if (strcmp(mode, "rw") != 0)
			return bad(err, errlen, i, "the mode is ro, rw or copy");
		if (rest[0] != '/' || strcmp(rest, "/") == 0 || strlen(rest) >= MAX_MOUNT_TARGET)
			return bad(err, errlen, i, "the target must be an absolute path below /");
		for (const char *c = rest; *c; c++)
			if ((unsigned char)*c < 32)
				return bad(err, errlen, i, "the target has a control character");
		mr->fstype = kind;
		mr->source = source;
		mr->target = rest;
		r->nmounts++;
	}
	return true;
}

/* --- mounting --------------------------------------------------------------------- */

/* mkdir -p inside our root (the container's): symlinks and `..` resolve in it. */
static int make_dirs(const char *path, char *err, size_t errlen)
{
	char buf[MAX_MOUNT_TARGET];

	snprintf(buf, sizeof buf, "%s", path);
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "mkdir %s: %s", buf, errstr(errno));
			return -1;
		}
		if (!(*p = c))
			return 0;
	}
}

/* write(2) until done; -1 on an error (a full volume must not end the agent). */
static int put(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno != EINTR)
			return -1;
		if (n > 0) {
			p += n;
			len -= (size_t)n;
		}
	}
	return 0;
}

static int keep_times(int fd, const struct stat *st)
{
	const struct timespec times[2] = { st->st_atim, st->st_mtim };
	return futimens(fd, times);
}

static int copy_file(int from, int to, const char *name, const struct stat *st)
{
	char buf[64 << 10];
	ssize_t n;
	int in = openat(from, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
	int out = in < 0 ? -1 : openat(to, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
					     O_CLOEXEC, 0600);
	int rc = in < 0 || out < 0 ? -1 : 0;

	while (rc == 0 && (n = read(in, buf, sizeof buf)) != 0)
		if (n < 0 || put(out, buf, (size_t)n) < 0)
			rc = -1;
	if (rc == 0 && (fchown(out, st->st_uid, st->st_gid) < 0 ||
			fchmod(out, st->st_mode & 07777) < 0 || keep_times(out, st) < 0))
		rc = -1;
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return rc;
}

/* Copies the tree under `from` into `to` (both directories we opened): regular files,
 * directories and symlinks with owners and modes; other kinds are skipped. The image's
 * content is the workload's, so depth is bounded and nothing is followed. */
static int copy_tree(int from, int to, int depth)
{
	int rc = 0, dup_fd = dup(from);
	DIR *d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
	struct dirent *e;

	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return -1;
	}
	while (rc == 0 && (e = readdir(d))) {
		struct stat st;
		const char *name = e->d_name;

		if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
			continue;
		if (fstatat(from, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = -1;
		} else if (S_ISDIR(st.st_mode)) {
			int a = -1, b = -1;
			if (depth >= MAX_COPY_DEPTH || mkdirat(to, name, 0700) < 0 ||
			    (a = openat(from, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
			    (b = openat(to, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
			    copy_tree(a, b, depth + 1) < 0 || fchown(b, st.st_uid, st.st_gid) < 0 ||
			    fchmod(b, st.st_mode & 07777) < 0 || keep_times(b, &st) < 0)
				rc = -1;
			if (a >= 0)
				close(a);
			if (b >= 0)
				close(b);
		} else if (S_ISREG(st.st_mode)) {
			rc = copy_file(from, to, name, &st);
		} else if (S_ISLNK(st.st_mode)) {
			char link[4096];
			ssize_t n = readlinkat(from, name, link, sizeof link - 1);
			if (n < 0)
				rc = -1;
			else if ((link[n] = '\0'), symlinkat(link, to, name) < 0 ||
				 fchownat(to, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) < 0)
				rc = -1;
		}
	}
	closedir(d);
	return rc;
}

static bool empty_dir(int fd)
{
	int dup_fd = dup(fd);
	DIR *d = dup_fd < 0 ? NULL : fdopendir(dup_fd);
	struct dirent *e;
	bool empty = true;

	if (!d) {
		if (dup_fd >= 0)
			close(dup_fd);
		return false;
	}
	while (empty && (e = readdir(d)))
		empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
	closedir(d);
	return empty;
}

/* Fills an empty volume with what the image has at its target, as docker does. `under`
 * is the image's directory, opened before the volume was mounted over it. */
static int fill_volume(int under, const char *target, char *err, size_t errlen)
{
	struct stat st;
	int vol = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (vol < 0) {
		snprintf(err, errlen, "open %s: %s", target, errstr(errno));
		return -1;
	}
	if (empty_dir(vol) && fstat(under, &st) == 0 &&
	    (copy_tree(under, vol, 0) < 0 || fchown(vol, st.st_uid, st.st_gid) < 0 ||
	     fchmod(vol, st.st_mode & 07777) < 0)) {
		snprintf(err, errlen, "copy the image's %s into its volume: %s", target,
			 errstr(errno));
		rc = -1;
	}
	close(vol);
	return rc;
}

int setup_mounts(const struct container_req *r, char *err, size_t errlen)
{
	for (size_t i = 0; i < r->nmounts; i++) {
		const struct mount_req *mr = &r->mounts[i];
		bool tmpfs = strcmp(mr->fstype, "tmpfs") == 0;
		unsigned long flags = (mr->readonly ? MS_RDONLY : 0) |
				      (tmpfs ? MS_NOSUID | MS_NODEV : 0);
		int under = -1;

		if (make_dirs(mr->target, err, errlen) < 0)
			return -1;
		if (mr->copy)
			under = open(mr->target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (mount(mr->source, mr->target, mr->fstype, flags,
			  mr->data[0] ? mr->data : NULL) < 0) {
			snprintf(err, errlen, "mount %s (%s) on %s: %s", mr->source, mr->fstype,
				 mr->target, errstr(errno));
			if (under >= 0)
				close(under);
			return -1;
		}
		if (under >= 0) {
			int rc = fill_volume(under, mr->target, err, errlen);
			close(under);
			if (rc < 0)
				return -1;
		}
	}
	return 0;
}
