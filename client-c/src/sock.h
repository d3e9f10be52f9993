/*
 * sock.h - the transport: a non-blocking AF_UNIX stream socket and
 * deadline-bounded waits. Times are CLOCK_MONOTONIC microseconds.
 */
#ifndef FINDERD_SOCK_H
#define FINDERD_SOCK_H

#include <stddef.h>
#include <stdint.h>

#include "finderd.h"

/** CLOCK_MONOTONIC now, in microseconds. */
int64_t fdi_now_us(void);

/**
 * fdi_sock_connect() - connect a close-on-exec, non-blocking socket to @path.
 * Return: 0 with *@fdp set; -ENOENT (no socket file), -ECONNREFUSED (nobody
 * listening), -ETIMEDOUT past @deadline, -ENAMETOOLONG, another -errno.
 */
int fdi_sock_connect(const char *path, int64_t deadline, int *fdp);

/**
 * fdi_sock_send_view() - pass the caller's view to the daemon on @fd: the
 * 8 bytes "FDVIEW\0\1" with an O_PATH descriptor of "/" in SCM_RIGHTS, in
 * one sendmsg(), before anything else is sent (daemon/src/connection/
 * handshake.rs). The descriptor is closed here once sent.
 * Return: 0 or -errno.
 */
int fdi_sock_send_view(int fd);

/**
 * fdi_sock_wait() - poll @fd for @events until @deadline (EINTR retried).
 * Return: 0 with *@revents set, -ETIMEDOUT, or -errno.
 */
int fdi_sock_wait(int fd, short events, int64_t deadline, short *revents);

/**
 * fdi_sock_peer() - the credentials of the process listening behind
 * connected socket @fd (SO_PEERCRED).
 * Return: 0 or -errno.
 */
int fdi_sock_peer(int fd, struct finderd_peer *peer);

/** Send without blocking or SIGPIPE. Return: bytes sent (0: would block) or -errno. */
long fdi_sock_send(int fd, const void *p, size_t n);

/** Receive without blocking. Return: bytes (0: end of stream), -EAGAIN, or -errno. */
long fdi_sock_recv(int fd, void *p, size_t n);

/**
 * fdi_sock_set_recv_timeout() - make @fd block in recv() for at most @us
 * microseconds (SO_RCVTIMEO), for fdi_sock_recv_wait(). Sends stay
 * non-blocking (MSG_DONTWAIT). The kernel rounds the timeout up to a
 * jiffy (at most 10 ms).
 * Return: 0 or -errno (the socket is then left non-blocking).
 */
int fdi_sock_set_recv_timeout(int fd, uint32_t us);

/**
 * fdi_sock_recv_wait() - receive, waiting at most the SO_RCVTIMEO of @fd.
 * Return: bytes (0: end of stream), -EAGAIN (timed out or interrupted:
 * check the deadline and wait again), or -errno.
 */
long fdi_sock_recv_wait(int fd, void *p, size_t n);

#endif /* FINDERD_SOCK_H */
