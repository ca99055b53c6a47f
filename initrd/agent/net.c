/*
 * CONTAINER's network: lo always up; with net=user eth0's address, netmask, MTU
 * and default route, set statically with ioctls (no DHCP, no tools from the
 * image); /etc/hosts and /etc/resolv.conf written into the container's own disk.
 */
#include "agent.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static struct sockaddr_in inet(uint32_t host_order)
{
	return (struct sockaddr_in){ .sin_family = AF_INET, .sin_addr.s_addr = htonl(host_order) };
}

static int if_ioctl(int sock, unsigned long req, const char *dev, struct ifreq *ifr,
		    const char *what, char *err, size_t errlen)
{
	snprintf(ifr->ifr_name, sizeof ifr->ifr_name, "%s", dev);
	if (ioctl(sock, req, ifr) == 0)
		return 0;
	snprintf(err, errlen, "%s of %s: %s", what, dev, errstr(errno));
	return -1;
}

static int set_up(int sock, const char *dev, char *err, size_t errlen)
{
	struct ifreq ifr = { 0 };

	if (if_ioctl(sock, SIOCGIFFLAGS, dev, &ifr, "read the flags", err, errlen) < 0)
		return -1;
	ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
	return if_ioctl(sock, SIOCSIFFLAGS, dev, &ifr, "bring up", err, errlen);
}

static int set_addr(int sock, unsigned long req, uint32_t addr, const char *what, char *err,
		    size_t errlen)
{
	struct ifreq ifr = { 0 };
	struct sockaddr_in sin = inet(addr);

	memcpy(&ifr.ifr_addr, &sin, sizeof sin);
	return if_ioctl(sock, req, NET_DEVICE, &ifr, what, err, errlen);
}

static int configure_eth0(int sock, const struct container_req *r, char *err, size_t errlen)
{
	struct ifreq ifr = { 0 };
	uint32_t mask = r->prefix == 32 ? UINT32_MAX : ~(UINT32_MAX >> r->prefix);

	/* virtio-net probes before PID 1 starts; the wait is for a slow probe. */
	for (long long until = now_ms() + DEVICE_WAIT_MS; !if_nametoindex(NET_DEVICE);) {
		if (now_ms() > until) {
			snprintf(err, errlen, "network device %s did not appear", NET_DEVICE);
			return -1;
		}
		sleep_ms(10);
	}
	if (set_addr(sock, SIOCSIFADDR, r->ip, "set the address", err, errlen) < 0 ||
	    set_addr(sock, SIOCSIFNETMASK, mask, "set the netmask", err, errlen) < 0)
		return -1;
	ifr.ifr_mtu = (int)r->mtu;
	if (if_ioctl(sock, SIOCSIFMTU, NET_DEVICE, &ifr, "set the MTU", err, errlen) < 0 ||
	    set_up(sock, NET_DEVICE, err, errlen) < 0)
		return -1;
	if (!r->gw)
		return 0;
	struct rtentry rt = { .rt_flags = RTF_UP | RTF_GATEWAY };
	struct sockaddr_in dst = inet(0), gw = inet(r->gw);
	memcpy(&rt.rt_dst, &dst, sizeof dst);
	memcpy(&rt.rt_genmask, &dst, sizeof dst);
	memcpy(&rt.rt_gateway, &gw, sizeof gw);
	if (ioctl(sock, SIOCADDRT, &rt) < 0) {
		snprintf(err, errlen, "add the default route: %s", errstr(errno));
		return -1;
	}
	return 0;
}

/* Replaces etc/NAME in the container root (our root) with text: written beside it
 * and renamed over it, so whatever the image has there (a symlink, a FIFO) is
 * replaced, never written through. */
static int replace_etc_file(const char *name, const char *text, char *err, size_t errlen)
{
	char tmp[64];
	int dir, fd = -1, saved;
	size_t len = strlen(text);

	if (mkdir("etc", 0755) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "mkdir /etc: %s", errstr(errno));
		return -1;
	}
	if ((dir = open("etc", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0) {
		snprintf(err, errlen, "open /etc: %s", errstr(errno));
		return -1;
	}
	snprintf(tmp, sizeof tmp, ".%s.hyperrun", name);
	if (unlinkat(dir, tmp, 0) < 0 && errno != ENOENT)
		goto fail;
	fd = openat(dir, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0 || fchmod(fd, 0644) < 0)
		goto fail;
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, text + off, len - off);
		if (n < 0 && errno != EINTR)
			goto fail;
		off += n > 0 ? (size_t)n : 0;
	}
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	fd = -1;
	if (renameat(dir, tmp, dir, name) < 0)
		goto fail;
	close(dir);
	return 0;
fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	unlinkat(dir, tmp, 0);
	close(dir);
	snprintf(err, errlen, "write /etc/%s: %s", name, errstr(saved));
	return -1;
}

int setup_network(const struct container_req *r, char *err, size_t errlen)
{
	int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (sock < 0) {
		snprintf(err, errlen, "socket: %s", errstr(errno));
		return -1;
	}
	/* Bringing lo up gives it 127.0.0.1/8 and ::1. */
	int rc = set_up(sock, "lo", err, errlen);
	if (rc == 0 && r->net_user)
		rc = configure_eth0(sock, r, err, errlen);
	close(sock);
	if (rc == 0 && r->hosts)
		rc = replace_etc_file("hosts", r->hosts, err, errlen);
	if (rc == 0 && r->resolv)
		rc = replace_etc_file("resolv.conf", r->resolv, err, errlen);
	return rc;
}
