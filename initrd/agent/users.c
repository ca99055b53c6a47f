/* Resolving a docker `user` spec from the container's /etc/passwd and /etc/group. */
#include "agent.h"

#include <stdio.h>

/* --- EXEC: user resolution --------------------------------------------------------- */

/* Splits a passwd/group line at ':' in place; returns the number of fields. */
static int split_fields(char *line, char **fields, int max)
{
	int n = 0;

	line[strcspn(line, "\n")] = '\0';
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

/*
 * Resolves a docker `user` spec inside the container root, the way runc's
 * GetExecUser does: "" is uid 0; a numeric part is always an id, a name is
 * looked up in /etc/passwd (/etc/group); a numeric uid need not exist. With an
 * explicit group there are no supplementary groups; otherwise they are the
 * /etc/group entries listing the user. Hand-parsed: static glibc has no NSS.
 */
int resolve_user(const char *spec, struct user *u, char *err, size_t errlen)
{
	char want[256], line[4096], matched_name[256] = "";
	char *fields[7];
	unsigned long num, gnum;

	snprintf(want, sizeof want, "%s", spec ? spec : "");
	char *group = strchr(want, ':');
	if (group)
		*group++ = '\0';
	const char *name = want[0] ? want : "0";
	bool numeric = parse_uint(name, UINT32_MAX - 1, &num);
	bool gnumeric = group && parse_uint(group, UINT32_MAX - 1, &gnum);

	*u = (struct user){ .uid = 0, .gid = 0, .home = "/" };

	FILE *f = fopen("/etc/passwd", "re");
	while (f && fgets(line, sizeof line, f)) {
		unsigned long uid, gid;
		int n = split_fields(line, fields, 7);
		if (n < 4 || !parse_uint(fields[2], UINT32_MAX, &uid) ||
		    !parse_uint(fields[3], UINT32_MAX, &gid))
			continue;
		if (numeric ? uid != num : strcmp(fields[0], name) != 0)
			continue;
		/* First match wins, as in runc. */
		snprintf(matched_name, sizeof matched_name, "%s", fields[0]);
		u->uid = (uid_t)uid;
		u->gid = (gid_t)gid;
		if (n >= 6 && fields[5][0])
			snprintf(u->home, sizeof u->home, "%s", fields[5]);
		break;
	}
	if (f)
		fclose(f);
	if (!matched_name[0]) {
		if (!numeric) {
			snprintf(err, errlen, "unable to find user %s: no matching entries in passwd file",
				 name);
			return -1;
		}
		u->uid = (uid_t)num;
	}

	if (!(group && *group) && !matched_name[0])
		return 0;
	bool group_found = false;
	f = fopen("/etc/group", "re");
	while (f && fgets(line, sizeof line, f)) {
		unsigned long gid;
		int n = split_fields(line, fields, 4);
		if (n < 3 || !parse_uint(fields[2], UINT32_MAX, &gid))
			continue;
		if (group && *group) {
			if (gnumeric ? gid == gnum : strcmp(fields[0], group) == 0) {
				u->gid = (gid_t)gid;
				group_found = true;
				break;
			}
		} else if (n == 4 && list_has(fields[3], matched_name) && u->ngroups < MAX_GROUPS) {
			u->groups[u->ngroups++] = (gid_t)gid;
		}
	}
	if (f)
		fclose(f);
	if (group && *group && !group_found) {
		if (!gnumeric) {
			snprintf(err, errlen, "unable to find group %s: no matching entries in group file",
				 group);
			return -1;
		}
		u->gid = (gid_t)gnum;
	}
	return 0;
}

