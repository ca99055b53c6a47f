/* CONTAINER: mounting the root disk and preparing the container root. */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

/* --- CONTAINER ------------------------------------------------------------------ */

bool container_ready;

struct api_mount {
	const char *source, *target, *fstype;
	unsigned long flags;
	const char *data;
};

/* Targets are relative to the container root (our cwd); mounted in this order. */
static const struct api_mount api_mounts[] = {
	{ "proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
	{ "sysfs", "sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL },
	{ "devtmpfs", "dev", "devtmpfs", MS_NOSUID, NULL },
	{ "devpts", "dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
	  "newinstance,ptmxmode=0666,mode=0620,gid=5" },
	{ "shm", "dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777" },
	{ "tmpfs", "run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755" },
};

static const struct {
	const char *target, *path;
} dev_links[] = {
	{ "/proc/self/fd", "dev/fd" },
	{ "/proc/self/fd/0", "dev/stdin" },
	{ "/proc/self/fd/1", "dev/stdout" },
	{ "/proc/self/fd/2", "dev/stderr" },
};

/* Mounts the API filesystems inside the container root, which is already our
 * root: a mount point that is a symlink in the image resolves inside it, never
 * into the initramfs. Missing mount points are created on the container's own
 * disk. */
static int mount_api_filesystems(char *err, size_t errlen)
{
	for (size_t i = 0; i < sizeof api_mounts / sizeof api_mounts[0]; i++) {
		const struct api_mount *a = &api_mounts[i];
		if (mkdir(a->target, 0755) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "mkdir /%s: %s", a->target, errstr(errno));
			return -1;
		}
		if (mount(a->source, a->target, a->fstype, a->flags, a->data) < 0) {
			snprintf(err, errlen, "mount %s on /%s: %s", a->fstype, a->target,
				 errstr(errno));
			return -1;
		}
	}
	/* Our ptys come from this instance whatever the workload later does to
	 * /dev/ptmx or /dev/pts (see open_pty). */
	if ((pts_fd = open("dev/pts", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "open /dev/pts: %s", errstr(errno));
		return -1;
	}
	/* The devtmpfs node would open the initial devpts instance, not ours. */
	if (unlink("dev/ptmx") < 0 && errno != ENOENT) {
		snprintf(err, errlen, "unlink /dev/ptmx: %s", errstr(errno));
		return -1;
	}
	if (symlink("pts/ptmx", "dev/ptmx") < 0) {
		snprintf(err, errlen, "symlink /dev/ptmx: %s", errstr(errno));
		return -1;
	}
	for (size_t i = 0; i < sizeof dev_links / sizeof dev_links[0]; i++) {
		if (symlink(dev_links[i].target, dev_links[i].path) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "symlink /%s: %s", dev_links[i].path, errstr(errno));
			return -1;
		}
	}
	return 0;
}

/* Returns whether the container root is ready; otherwise ERROR has been sent. */
static bool setup_container(const struct msg *m)
{
	struct container_req r;
	char dev[sizeof "/dev/" + MAX_DEVICE_NAME], err[512];

	if (!decode_container(m, &r, err, sizeof err)) {
		reply_error(0, STATUS_AGENT, "%s", err);
		return false;
	}
	snprintf(dev, sizeof dev, "/dev/%s", r.rootfs);
	if (!wait_for_path(dev, DEVICE_WAIT_MS)) {
		reply_error(0, STATUS_AGENT, "root disk %s did not appear", dev);
		return false;
	}
	if (mount(dev, NEWROOT, r.fstype, 0, NULL) < 0) {
		reply_error(0, STATUS_AGENT, "mount %s (%s) on %s: %s", dev, r.fstype, NEWROOT,
			    errstr(errno));
		return false;
	}
	mounted_ns = now_ns();
	if (chdir(NEWROOT) < 0) {
		reply_error(0, STATUS_AGENT, "chdir %s: %s", NEWROOT, errstr(errno));
		return false;
	}
	/* switch_root without deleting the initramfs: we stay PID 1 and keep the
	 * port fds; the initramfs is a few hundred KiB. */
	if (mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0 || chdir("/") < 0) {
		reply_error(0, STATUS_AGENT, "switch root: %s", errstr(errno));
		return false;
	}
	if (mount_api_filesystems(err, sizeof err) < 0) {
		reply_error(0, STATUS_AGENT, "prepare the container root: %s", err);
		return false;
	}
	if (*r.hostname && sethostname(r.hostname, strlen(r.hostname)) < 0) {
		reply_error(0, STATUS_AGENT, "sethostname %s: %s", r.hostname, errstr(errno));
		return false;
	}
	if (setup_network(&r, err, sizeof err) < 0) {
		reply_error(0, STATUS_AGENT, "configure the network: %s", err);
		return false;
	}
	if (setup_mounts(&r, err, sizeof err) < 0) {
		reply_error(0, STATUS_AGENT, "mount the volumes: %s", err);
		return false;
	}
	return true;
}

bool handle_container(const struct msg *m)
{
	if (container_ready) {
		reply_error(0, STATUS_AGENT, "the container is already set up");
		return false;
	}
	/* Without a root there is nothing left to do: end the VM. */
	if (!setup_container(m))
		return true;
	container_ready = true;
	reply_ok();
	return false;
}
