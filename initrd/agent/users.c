/* Resolving a docker `user` spec from the container's /etc/passwd and /etc/group. */
#include "agent.h"

#include <stdio.h>
#include <stdlib.h>

/* --- EXEC: user resolution --------------------------------------------------------- */

/* Splits a passwd/group line at ':' in place; returns the number of fields. */
static int split_fields(char *line, char **fields, int max)
{
	int n = 0;

	fields[n++] = line;
	for (char *p = line; *p && n < max; p++) {
		if (*p == ':') {
			*p = '\0';
			fields[n++] = p + 1;
		}
	}
	return n;
}

static bool list_has(char *list, const char *name)
{
	char *save = NULL;

	for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		if (strcmp(tok, name) == 0)
			return true;
	return false;
}

const char *passwd_path = "/etc/passwd", *group_path = "/etc/group";

/*
 * Loads one of the container's account files whole (see read_untrusted: the
 * workload may have replaced it by a FIFO, a device or something huge), so a
 * long line is one line, never several bogus entries. *data is NULL if the
 * file does not exist, which is no error (as in runc).
 */
static int load(const char *path, char **data, char *why, size_t whylen)
{
	size_t len;
	int r = read_untrusted(path, UNTRUSTED_FILE_MAX, data, &len, why, whylen);

	if (r != 0)
		return r > 0 ? 0 : -1;
	if (memchr(*data, '\0', len)) {
		snprintf(why, whylen, "%s contains a NUL byte", path);
		free(*data);
		*data = NULL;
		return -1;
	}
	return 0;
}

struct lines {
	char *next, *end;
};

static struct lines lines_of(char *data)
{
	return (struct lines){ data, data ? data + strlen(data) : NULL };
}

/* The next line, NUL-terminated in place (without its newline), or NULL. */
static char *next_line(struct lines *it)
{
	char *line = it->next;

	if (!line || line >= it->end)
		return NULL;
	char *nl = memchr(line, '\n', (size_t)(it->end - line));
	if (nl) {
		*nl = '\0';
		it->next = nl + 1;
	} else {
		it->next = it->end;
	}
	return line;
}

/*
 * Resolves a docker `user` spec inside the container root, the way runc's
 * GetExecUser does: "" is uid 0; a numeric part is always an id, a name is
 * looked up in /etc/passwd (/etc/group); a numeric uid need not exist. With an
 * explicit group there are no supplementary groups; otherwise they are the
 * /etc/group entries listing the user. Hand-parsed: static glibc has no NSS.
 * A file that exists but cannot be read safely is an error, as in runc.
 */
int resolve_user(const char *spec, struct user *u, char *err, size_t errlen)
{
	char why[512], *fields[7], *line;
	char *want = strdup(spec ? spec : ""), *passwd = NULL, *groups = NULL;
	const char *matched = NULL;
	unsigned long num, gnum;
	int ret = -1;

	if (!want)
		die("out of memory");
	char *group = strchr(want, ':');
	if (group)
		*group++ = '\0';
	if (group && !*group)
		group = NULL;
	const char *name = want[0] ? want : "0";
	bool numeric = parse_uint(name, UINT32_MAX - 1, &num);
	bool gnumeric = group && parse_uint(group, UINT32_MAX - 1, &gnum);

	*u = (struct user){ .uid = 0, .gid = 0, .home = "/" };

	if (load(passwd_path, &passwd, why, sizeof why) < 0) {
		snprintf(err, errlen, "unable to find user %s: %s", name, why);
		goto out;
	}
	for (struct lines it = lines_of(passwd); (line = next_line(&it));) {
		unsigned long uid, gid;
		int n = split_fields(line, fields, 7);
		if (n < 4 || !parse_uint(fields[2], UINT32_MAX, &uid) ||
		    !parse_uint(fields[3], UINT32_MAX, &gid))
			continue;
		if (numeric ? uid != num : strcmp(fields[0], name) != 0)
			continue;
		/* First match wins, as in runc. */
		matched = fields[0];
		u->uid = (uid_t)uid;
		u->gid = (gid_t)gid;
		if (n >= 6 && fields[5][0]) {
			if (strlen(fields[5]) >= sizeof u->home) {
				snprintf(err, errlen, "unable to find user %s: home directory longer than %zu bytes",
					 name, sizeof u->home - 1);
				goto out;
			}
			strcpy(u->home, fields[5]);
		}
		break;
	}
	if (!matched || !*matched) {
		if (!numeric) {
			snprintf(err, errlen, "unable to find user %s: no matching entries in passwd file",
				 name);
			goto out;
		}
		u->uid = (uid_t)num;
		if (!group) {
			ret = 0;
			goto out;
		}
	}

	if (load(group_path, &groups, why, sizeof why) < 0) {
		if (group)
			snprintf(err, errlen, "unable to find group %s: %s", group, why);
		else
			snprintf(err, errlen, "unable to find groups for user %s: %s", matched, why);
		goto out;
	}
	bool group_found = false;
	for (struct lines it = lines_of(groups); (line = next_line(&it));) {
		unsigned long gid;
		int n = split_fields(line, fields, 4);
		if (n < 3 || !parse_uint(fields[2], UINT32_MAX, &gid))
			continue;
		if (group) {
			if (gnumeric ? gid == gnum : strcmp(fields[0], group) == 0) {
				u->gid = (gid_t)gid;
				group_found = true;
				break;
			}
		} else if (n == 4 && list_has(fields[3], matched)) {
			if (u->ngroups == MAX_GROUPS) {
				snprintf(err, errlen,
					 "unable to find groups for user %s: more than %d supplementary groups",
					 matched, MAX_GROUPS);
				goto out;
			}
			u->groups[u->ngroups++] = (gid_t)gid;
		}
	}
	if (group && !group_found) {
		if (!gnumeric) {
			snprintf(err, errlen, "unable to find group %s: no matching entries in group file",
				 group);
			goto out;
		}
		u->gid = (gid_t)gnum;
	}
	ret = 0;
out:
	free(want);
	free(passwd);
	free(groups);
	return ret;
}
