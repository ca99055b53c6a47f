/*
 * The container's namespaces. The main process is cloned into new PID, mount,
 * IPC and UTS namespaces, so the workload sees itself as PID 1 and nothing of
 * the agent (which it therefore cannot signal or ptrace); a later process
 * (main=0) joins those of the main process. The VM stays the real boundary:
 * this is defence in depth, and what a docker container looks like inside.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#define NEW_NAMESPACES (CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS)

/* The order a joining process enters them in (the PID namespace is the
 * agent's business, see fork_joined); the mount namespace last, since it moves
 * our root and working directory. */
static const struct {
	const char *name;
	int type;
} namespaces[NS_COUNT] = {
	{ "pid", CLONE_NEWPID },
	{ "ipc", CLONE_NEWIPC },
	{ "uts", CLONE_NEWUTS },
	{ "mnt", CLONE_NEWNS },
};

void ns_close(struct ns_fds *ns)
{
	close_fds(ns->fd, NS_COUNT);
}

/* Through our own /proc: the container's shows only its own PID namespace. */
int ns_open(pid_t main_pid, struct ns_fds *ns, char *err, size_t errlen)
{
	char path[64];

	for (int i = 0; i < NS_COUNT; i++) {
		snprintf(path, sizeof path, "%d/ns/%s", (int)main_pid, namespaces[i].name);
		if ((ns->fd[i] = openat(proc_dir_fd, path, O_RDONLY | O_CLOEXEC)) < 0) {
			snprintf(err, errlen, "open the container's %s namespace: %s",
				 namespaces[i].name, errstr(errno));
			ns_close(ns);
			return -1;
		}
	}
	return 0;
}

/*
 * fork() for the main process, into new namespaces. A raw clone without a
 * new stack returns twice like fork; glibc's fork cannot take the flags.
 */
pid_t fork_isolated(void)
{
	return (pid_t)syscall(SYS_clone, NEW_NAMESPACES | SIGCHLD, NULL, NULL, NULL, NULL);
}

/*
 * fork() into the main process's PID namespace. setns on a PID namespace
 * only places our future children there, so we switch, fork, and switch
 * back at once: a later main process must get a namespace of its own, not
 * one nested in the container's.
 */
pid_t fork_joined(const struct ns_fds *ns)
{
	static int own_pid_ns = -1;

	if (own_pid_ns < 0 &&
	    (own_pid_ns = openat(proc_dir_fd, "self/ns/pid", O_RDONLY | O_CLOEXEC)) < 0)
		return -1;
	if (setns(ns->fd[0], CLONE_NEWPID) < 0)
		return -1;
	pid_t pid = fork();
	if (pid == 0)
		return 0;
	int saved = errno;
	if (setns(own_pid_ns, CLONE_NEWPID) < 0)
		die("return to the agent's PID namespace: %s", errstr(errno));
	errno = saved;
	return pid;
}

/* In the main process, the first in its new namespaces. */
static int fresh_proc(char *err, size_t errlen)
{
	/* Nothing done in this mount namespace may propagate to the agent's. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		snprintf(err, errlen, "make the container's mounts private: %s", errstr(errno));
		return -1;
	}
	/* The /proc CONTAINER mounted shows every process of the VM; replace it
	 * (not cover it) by one of the new PID namespace. */
	if (umount2("/proc", MNT_DETACH) < 0 && errno != EINVAL) {
		snprintf(err, errlen, "unmount the agent's /proc: %s", errstr(errno));
		return -1;
	}
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
		snprintf(err, errlen, "mount /proc: %s", errstr(errno));
		return -1;
	}
	return 0;
}

/* Runs in the child before anything else touches the container root. */
int enter_namespaces(const struct exec_spec *s, char *err, size_t errlen)
{
	if (s->main)
		return fresh_proc(err, errlen);
	for (int i = 1; i < NS_COUNT; i++) {
		if (setns(s->ns.fd[i], namespaces[i].type) < 0) {
			snprintf(err, errlen, "join the container's %s namespace: %s",
				 namespaces[i].name, errstr(errno));
			return -1;
		}
	}
	return 0;
}
