/*
 * trust.c - who may listen on the daemon's socket.
 *
 * A client that took answers from any listener would import what whoever
 * bound the socket path first chose to tell it (listings, and on slow
 * filesystems the bytes of compiled files). So before a connection sends
 * anything, the listener's credentials (SO_PEERCRED: those it had when it
 * called listen(), root for a socket systemd passes) must be root's, the
 * caller's, or the configured daemon user's.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* struct ucred */
#endif
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sock.h"
#include "trust.h"

/* "1234" as a uid; (uid_t)-1 is no one's. */
static int parse_uid(const char *s, uint32_t *uid)
{
	unsigned long long v = 0;

	if (!*s)
		return 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return 0;
		v = v * 10 + (unsigned long long)(*s - '0');
		if (v >= UINT32_MAX)
			return 0;
	}
	*uid = (uint32_t)v;
	return 1;
}

static int lookup_user(const char *name, uint32_t *uid)
{
	struct passwd pw, *found = NULL;
	char buf[4096];

	if (getpwnam_r(name, &pw, buf, sizeof(buf), &found) != 0 || !found)
		return 0;
	*uid = (uint32_t)found->pw_uid;
	return 1;
}

int fdi_daemon_uid(const char *spec, uint32_t *uid)
{
	if (!spec)
		spec = getenv("FINDERD_DAEMON_USER");
	if (!spec || !*spec)
		return 0;
	return parse_uid(spec, uid) || lookup_user(spec, uid);
}

int fdi_check_listener(int fd, const char *daemon_user)
{
	struct finderd_peer peer;
	uint32_t daemon;
	int ret = fdi_sock_peer(fd, &peer);

	if (ret)
		return ret;
	if (peer.uid == 0 || peer.uid == (uint32_t)geteuid())
		return 0;
	if (fdi_daemon_uid(daemon_user, &daemon) && peer.uid == daemon)
		return 0;
	return FINDERD_EUNTRUSTED;
}
