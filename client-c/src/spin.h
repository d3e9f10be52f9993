/*
 * spin.h - wait for a reply by polling briefly before sleeping.
 *
 * A thread asleep in recv() is woken by the daemon's reply. Where waking a
 * sleeping CPU is dear (a virtual machine whose idle vCPU halts: about
 * 30 us each way measured on a 2-vCPU guest), that wake-up is a large part
 * of a round trip that the daemon answers in tens of microseconds, and the
 * daemon pays for it too (the wake-up runs in its send()). So a call first
 * polls the socket without blocking for up to FDI_SPIN_MAX_US, as the
 * kernel's own halt-polling would, and only then sleeps. Each poll that
 * finds nothing yields the CPU (sched_yield()), so a daemon thread that is
 * runnable on this CPU runs at once instead of after this time slice.
 *
 * Polling only pays when the reply comes within the budget and another CPU
 * is there to produce it. So the waiter keeps a moving average of how long
 * its waits took and polls only while that average is within half the
 * budget (a loaded daemon, whose replies take longer, is never polled for:
 * its clients would take CPU from it), and never with a single usable CPU.
 */
#ifndef FINDERD_SPIN_H
#define FINDERD_SPIN_H

#include <stddef.h>
#include <stdint.h>

/* The longest a waiter polls before it sleeps, in microseconds. */
#define FDI_SPIN_MAX_US 200

struct fdi_spin {
	uint32_t avg_wait_us; /* moving average of waits, 1/8 weight per wait */
	uint8_t enabled;      /* more than one CPU to run on, and not turned off */
};

/** Start @s: polling allowed when this thread may run on more than one CPU
 * and $FINDERD_NO_SPIN is unset or empty. */
void fdi_spin_init(struct fdi_spin *s);

/**
 * fdi_spin_poll() - receive on @fd without sleeping, polling for at most
 * FDI_SPIN_MAX_US or @limit_us, when @s says it pays.
 * Return: bytes (0: end of stream), -errno, or -EAGAIN: nothing came (or
 * @s said not to poll); the caller then sleeps as it would have.
 */
long fdi_spin_poll(const struct fdi_spin *s, int fd, void *p, size_t n, int64_t limit_us);

/** fdi_spin_note() - count a wait for a reply that took @waited_us, however it waited. */
void fdi_spin_note(struct fdi_spin *s, int64_t waited_us);

#endif /* FINDERD_SPIN_H */
