/*
 * daemon.h - start the real daemon (FINDERD_BIN) on a socket in a
 * temporary directory, for the integration tests; it never outlives the
 * test (PR_SET_PDEATHSIG), even when a sanitizer aborts it.
 */
#ifndef FINDERD_TEST_DAEMON_H
#define FINDERD_TEST_DAEMON_H

#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "finderd.h"

struct test_daemon {
	pid_t pid;
	char sock[256];
};

static inline void test_sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	nanosleep(&ts, NULL);
}

/* Wait until the daemon on @d->sock answers the HTTP/2 handshake, trusting
 * @daemon_user (NULL: the environment's) as its user. */
static inline int test_daemon_wait(struct test_daemon *d, const char *daemon_user)
{
	struct finderd_options o;
	int i;

	finderd_options_init(&o);
	o.socket_path = d->sock;
	o.daemon_user = daemon_user;
	for (i = 0; i < 200; i++) {
		struct finderd_conn *c;

		if (finderd_connect(&o, &c) == 0) {
			finderd_close(c);
			return 0;
		}
		test_sleep_us(50000);
	}
	return -1;
}

/* Start @bin serving @d->sock (set by the caller), with @opt and @val as
 * one more option when not NULL; wait until it answers. */
static inline int test_daemon_start_with(struct test_daemon *d, const char *bin,
					 const char *opt, const char *val)
{
	d->pid = fork();
	if (d->pid < 0)
		return -1;
	if (d->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execl(bin, bin, "serve", "--socket", d->sock, "--log-level", "warn", opt, val,
		      (char *)NULL);
		_exit(127);
	}
	return test_daemon_wait(d, NULL);
}

/* Start @bin as user and group @uid (setpriv(1), which execs it: @d->pid
 * is the daemon's); wait until it answers. */
static inline int test_daemon_start_as(struct test_daemon *d, const char *bin, unsigned uid)
{
	char ids[2][32], user[16];

	snprintf(ids[0], sizeof(ids[0]), "--reuid=%u", uid);
	snprintf(ids[1], sizeof(ids[1]), "--regid=%u", uid);
	snprintf(user, sizeof(user), "%u", uid);
	d->pid = fork();
	if (d->pid < 0)
		return -1;
	if (d->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		execlp("setpriv", "setpriv", ids[0], ids[1], "--clear-groups", "--", bin, "serve",
		       "--socket", d->sock, "--log-level", "warn", (char *)NULL);
		_exit(127);
	}
	return test_daemon_wait(d, user);
}

static inline int test_daemon_start(struct test_daemon *d, const char *bin)
{
	return test_daemon_start_with(d, bin, NULL, NULL);
}

/* Send @sig and, unless it only stops the daemon, reap it. */
static inline void test_daemon_signal(struct test_daemon *d, int sig)
{
	int st;

	if (d->pid <= 0)
		return;
	kill(d->pid, sig);
	if (sig == SIGSTOP || sig == SIGCONT)
		return;
	waitpid(d->pid, &st, 0);
	d->pid = 0;
}

#endif /* FINDERD_TEST_DAEMON_H */
