/*
 * trust.h - who may listen on the daemon's socket.
 */
#ifndef FINDERD_TRUST_H
#define FINDERD_TRUST_H

#include <stdint.h>

#include "finderd.h"

/**
 * fdi_daemon_uid() - the uid of the configured daemon user.
 * @spec: a user name or decimal uid; "" for none; NULL for
 *        $FINDERD_DAEMON_USER.
 * Return: 1 with *@uid set, 0 when no user is configured or the name does
 * not resolve.
 */
int fdi_daemon_uid(const char *spec, uint32_t *uid);

/**
 * fdi_check_listener() - may the process listening behind connected socket
 * @fd be trusted? Root, the caller's effective uid and the daemon user
 * (@daemon_user, as for fdi_daemon_uid()) may.
 * Return: 0, FINDERD_EUNTRUSTED, or -errno when the credentials cannot be read.
 */
int fdi_check_listener(int fd, const char *daemon_user);

#endif /* FINDERD_TRUST_H */
