/*
 * Capabilities of a container process: the `caps` key of EXEC, the kernel's
 * own list, and applying a set in the child with raw syscalls (the agent is
 * static; no libcap).
 */
#include "agent.h"

#include <errno.h>
#include <linux/capability.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* "all", "none" or decimal numbers separated by commas, e.g. "0,1,5". */
bool parse_caps(const char *text, uint64_t *set, bool *all)
{
	*set = 0;
	*all = false;
	if (strcmp(text, "all") == 0) {
		*all = true;
		*set = UINT64_MAX;
		return true;
	}
	if (strcmp(text, "none") == 0)
		return true;
	for (const char *p = text;;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		char num[4];
		unsigned long cap;

		/* Empty items (",,", a trailing comma) are malformed, not skipped. */
		if (len == 0 || len >= sizeof num)
			return false;
		memcpy(num, p, len);
		num[len] = '\0';
		if (!parse_uint(num, MAX_CAP, &cap))
			return false;
		*set |= UINT64_C(1) << cap;
		if (!end)
			return true;
		p = end + 1;
	}
}

/* Every capability the running kernel knows: PR_CAPBSET_READ says EINVAL past
 * the last one. The agent (PID 1, root) still has the full bounding set. */
uint64_t caps_known(void)
{
	static uint64_t known;

	if (!known)
		for (int cap = 0; cap <= MAX_CAP && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
			known |= UINT64_C(1) << cap;
	return known;
}

/* Before changing user: dropping needs CAP_SETPCAP, which root still has. */
int drop_bounding_set(uint64_t keep, char *err, size_t errlen)
{
	uint64_t known = caps_known();

	for (int cap = 0; cap <= MAX_CAP; cap++) {
		uint64_t bit = UINT64_C(1) << cap;
		if (!(known & bit) || (keep & bit))
			continue;
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			snprintf(err, errlen, "drop capability %d from the bounding set: %s", cap,
				 errstr(errno));
			return -1;
		}
	}
	return 0;
}

/*
 * After changing user: permitted and effective become `set` for root and stay
 * empty for anyone else (setuid cleared them, and execve would clear them for
 * a non-root program anyway, as under docker). Inheritable is left empty, as
 * docker does since CVE-2022-24769, and ambient is cleared.
 */
int apply_caps(uint64_t set, bool root, char *err, size_t errlen)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = { { 0 } };
	uint64_t want = root ? set & caps_known() : 0;

	for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++)
		data[i].effective = data[i].permitted = (uint32_t)(want >> (32 * i));
	if (syscall(SYS_capset, &hdr, data) < 0) {
		snprintf(err, errlen, "set capabilities: %s", errstr(errno));
		return -1;
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL) {
		snprintf(err, errlen, "clear ambient capabilities: %s", errstr(errno));
		return -1;
	}
	return 0;
}
