/*
 * test_spin.c - when a waiter polls before it sleeps (src/spin.c): only
 * with polling enabled and replies that usually come within half the
 * budget; what it polls is what the socket holds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "finderd.h"
#include "sock.h"
#include "spin.h"
#include "test.h"

static void test_poll_reads_what_is_there(void)
{
	struct fdi_spin s = { 0, 1 };
	char buf[8];
	int sv[2];

	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	/* Nothing sent: polls for at most its limit, then leaves it to sleep. */
	CHECK_INT(fdi_spin_poll(&s, sv[0], buf, sizeof(buf), 50), -EAGAIN);
	CHECK_INT(write(sv[1], "abc", 3), 3);
	CHECK_INT(fdi_spin_poll(&s, sv[0], buf, sizeof(buf), 50), 3);
	CHECK_BYTES(buf, 3, "abc");
	close(sv[1]);
	CHECK_INT(fdi_spin_poll(&s, sv[0], buf, sizeof(buf), 50), 0); /* end of stream */
	close(sv[0]);
}

static void test_polls_only_when_it_pays(void)
{
	struct fdi_spin s = { 0, 0 };
	char buf[8];
	int sv[2], i;

	CHECK_INT(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	CHECK_INT(write(sv[1], "abc", 3), 3);
	/* Disabled (one CPU, or FINDERD_NO_SPIN): never touches the socket. */
	CHECK_INT(fdi_spin_poll(&s, sv[0], buf, sizeof(buf), 50), -EAGAIN);
	/* Slow replies (a loaded daemon) turn polling off ... */
	s.enabled = 1;
	for (i = 0; i < 8; i++)
		fdi_spin_note(&s, 400);
	CHECK(s.avg_wait_us > FDI_SPIN_MAX_US / 2);
	CHECK_INT(fdi_spin_poll(&s, sv[0], buf, sizeof(buf), 50), -EAGAIN);
	/* ... and quick ones back on. */
	for (i = 0; i < 16; i++)
		fdi_spin_note(&s, 30);
	CHECK(s.avg_wait_us <= FDI_SPIN_MAX_US / 2);
	CHECK_INT(fdi_spin_poll(&s, sv[0], buf, sizeof(buf), 50), 3);
	/* Absurd samples are clamped, not wrapped. */
	fdi_spin_note(&s, -5);
	fdi_spin_note(&s, (int64_t)1 << 40);
	CHECK(s.avg_wait_us <= 1000000);
	close(sv[0]);
	close(sv[1]);
}

static void test_init_follows_the_environment(void)
{
	struct fdi_spin s;

	setenv("FINDERD_NO_SPIN", "1", 1);
	fdi_spin_init(&s);
	CHECK_INT(s.enabled, 0);
	unsetenv("FINDERD_NO_SPIN");
	fdi_spin_init(&s);
	CHECK_INT(s.avg_wait_us, 0);
}

int main(void)
{
	test_poll_reads_what_is_there();
	test_polls_only_when_it_pays();
	test_init_follows_the_environment();
	TEST_MAIN_END("test_spin");
}
