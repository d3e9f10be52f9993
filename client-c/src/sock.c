/*
 * sock.c - AF_UNIX transport with deadlines.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* ppoll(): deadlines to the microsecond; struct ucred */
#endif
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sock.h"

int64_t fdi_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int fdi_sock_wait(int fd, short events, int64_t deadline, short *revents)
{
	for (;;) {
		struct pollfd pfd;
		struct timespec ts;
		int64_t left = deadline - fdi_now_us();
		int n;

		if (left <= 0)
			return -ETIMEDOUT;
		ts.tv_sec = (time_t)(left / 1000000);
		ts.tv_nsec = (long)(left % 1000000) * 1000;
		pfd.fd = fd;
		pfd.events = events;
		pfd.revents = 0;
		n = ppoll(&pfd, 1, &ts, NULL);
		if (n < 0 && errno != EINTR)
			return -errno;
		if (n > 0) {
			*revents = pfd.revents;
			return 0;
		}
	}
}

/* A non-blocking connect() in progress: wait, then read its outcome. */
static int finish_connect(int fd, int64_t deadline)
{
	short rev;
	int err = 0;
	socklen_t len = sizeof(err);
	int ret = fdi_sock_wait(fd, POLLOUT, deadline, &rev);

	if (ret)
		return ret;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return -errno;
	return -err;
}

/* The listen backlog is full (EAGAIN on AF_UNIX): retry every 200 us. */
static int backoff(int64_t deadline)
{
	int64_t left = deadline - fdi_now_us();
	struct timespec ts = { 0, 200000 };

	if (left <= 0)
		return -ETIMEDOUT;
	if (left < 200)
		ts.tv_nsec = (long)left * 1000;
	nanosleep(&ts, NULL);
	return 0;
}

static int connect_fd(int fd, const struct sockaddr_un *sa, int64_t deadline)
{
	for (;;) {
		int ret;

		if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
			return 0;
		if (errno == EINPROGRESS || errno == EINTR)
			return finish_connect(fd, deadline);
		if (errno != EAGAIN)
			return -errno;
		ret = backoff(deadline);
		if (ret)
			return ret;
	}
}

int fdi_sock_connect(const char *path, int64_t deadline, int *fdp)
{
	struct sockaddr_un sa;
	size_t n = strlen(path);
	int fd, ret;

	if (n == 0)
		return -EINVAL;
	if (n >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, path, n);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	ret = connect_fd(fd, &sa, deadline);
	if (ret) {
		close(fd);
		return ret;
	}
	*fdp = fd;
	return 0;
}

int fdi_sock_peer(int fd, struct finderd_peer *peer)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
		return -errno;
	peer->pid = (int32_t)cred.pid;
	peer->uid = (uint32_t)cred.uid;
	peer->gid = (uint32_t)cred.gid;
	return 0;
}

int fdi_sock_send_view(int fd)
{
	static const char magic[8] = { 'F', 'D', 'V', 'I', 'E', 'W', 0, 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	struct iovec iov;
	struct msghdr msg;
	struct cmsghdr *cmsg;
	ssize_t sent;
	int root, err = 0;

	root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (root < 0)
		return -errno;
	memset(&control, 0, sizeof(control));
	memset(&msg, 0, sizeof(msg));
	iov.iov_base = (void *)magic;
	iov.iov_len = sizeof(magic);
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof(control.buf);
	cmsg = CMSG_FIRSTHDR(&msg);
	cmsg->cmsg_level = SOL_SOCKET;
	cmsg->cmsg_type = SCM_RIGHTS;
	cmsg->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cmsg), &root, sizeof(int));
	do
		sent = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (sent < 0 && errno == EINTR);
	if (sent < 0)
		err = -errno;
	else if ((size_t)sent != sizeof(magic))
		err = -EPROTO; /* a fresh socket's buffer takes 8 bytes whole */
	close(root);
	return err;
}

long fdi_sock_send(int fd, const void *p, size_t n)
{
	for (;;) {
		ssize_t r = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (r >= 0)
			return (long)r;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		if (errno != EINTR)
			return -errno;
	}
}

long fdi_sock_recv(int fd, void *p, size_t n)
{
	for (;;) {
		ssize_t r = recv(fd, p, n, MSG_DONTWAIT);

		if (r >= 0)
			return (long)r;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return -EAGAIN;
		if (errno != EINTR)
			return -errno;
	}
}

int fdi_sock_set_recv_timeout(int fd, uint32_t us)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(us / 1000000);
	tv.tv_usec = (suseconds_t)(us % 1000000);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0)
		return -errno;
	/* Clears O_NONBLOCK (F_SETFL ignores the access mode bits). */
	if (fcntl(fd, F_SETFL, 0) != 0)
		return -errno;
	return 0;
}

long fdi_sock_recv_wait(int fd, void *p, size_t n)
{
	ssize_t r = recv(fd, p, n, 0);

	if (r >= 0)
		return (long)r;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return -EAGAIN;
	return -errno;
}
