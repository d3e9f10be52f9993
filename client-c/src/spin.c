/*
 * spin.c - wait for a reply by polling briefly before sleeping (see spin.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* sched_getaffinity(), CPU_COUNT() */
#endif
#include <errno.h>
#include <sched.h>
#include <stdlib.h>

#include "sock.h"
#include "spin.h"

void fdi_spin_init(struct fdi_spin *s)
{
	cpu_set_t cpus;
	const char *off = getenv("FINDERD_NO_SPIN");

	s->avg_wait_us = 0;
	s->enabled = (!off || !*off) && sched_getaffinity(0, sizeof(cpus), &cpus) == 0 &&
		     CPU_COUNT(&cpus) > 1;
}

void fdi_spin_note(struct fdi_spin *s, int64_t waited_us)
{
	uint32_t sample = waited_us < 0         ? 0
			  : waited_us > 1000000 ? 1000000
						: (uint32_t)waited_us;

	s->avg_wait_us = s->avg_wait_us - s->avg_wait_us / 8 + sample / 8;
}

long fdi_spin_poll(const struct fdi_spin *s, int fd, void *p, size_t n, int64_t limit_us)
{
	int64_t start, now;
	long r;

	if (!s->enabled || s->avg_wait_us > FDI_SPIN_MAX_US / 2)
		return -EAGAIN;
	if (limit_us > FDI_SPIN_MAX_US)
		limit_us = FDI_SPIN_MAX_US;
	start = now = fdi_now_us();
	do {
		r = fdi_sock_recv(fd, p, n);
		if (r != -EAGAIN)
			return r;
		sched_yield();
		now = fdi_now_us();
	} while (now - start < limit_us);
	return -EAGAIN;
}
