/*
 * resolver.h - internal entry points of the resolver (struct
 * finderd_client), for the fuzz target and tests: a client without a
 * connection, fed replies directly.
 */
#ifndef FINDERD_RESOLVER_H
#define FINDERD_RESOLVER_H

#include "internal.h"

/**
 * fdi_client_new_offline() - a client with no connection, fed replies with
 * fdi_client_absorb(): a question that would need a Lookup is
 * FINDERD_ENOTSERVED (the filesystem answers) and the generation files the
 * replies name are not mapped.
 * Return: 0 or -ENOMEM.
 */
int fdi_client_new_offline(const struct fdi_alloc *a, struct finderd_client **clientp);

/**
 * fdi_client_absorb() - keep every directory of @reply, as after a Snapshot
 * or Lookup; the client owns @reply from the call on, whatever it returns.
 * Return: 0, FINDERD_EGENFILE (the generation file it names cannot be
 * mapped), -ENOMEM; any failure leaves the client dead.
 */
int fdi_client_absorb(struct finderd_client *c, struct finderd_reply *reply);

/**
 * fdi_client_save() - write every reply @c holds to @fd, oldest first, as
 * "FINDREC1" then per reply a kind byte, a 32-bit little-endian length and
 * the encoded message. For benchmarks: fdi_client_replay() answers from it.
 * Return: 0 or -errno.
 */
int fdi_client_save(struct finderd_client *c, int fd);

/**
 * fdi_client_replay() - an offline client holding the replies saved in @fd
 * and trusting them all: the "bound" of a benchmark, the client's own cost
 * with no daemon and no freshness checks. Never for real use.
 * Return: 0, -errno, -EINVAL for a file that is not a recording, or a decoding
 * error of a reply.
 */
int fdi_client_replay(const struct fdi_alloc *a, int fd, struct finderd_client **clientp);

/**
 * fdi_client_reads_compiled_files() - does it matter to @c which compiled
 * files the run reads? True when a reply carried compiled files, or named a
 * directory on a slow filesystem (whose reads the run then reports).
 */
int fdi_client_reads_compiled_files(const struct finderd_client *c);

/** Has @c fallen back (a transport error, a broken reply), until it reconnects? */
int fdi_client_dead(const struct finderd_client *c);

/**
 * fdi_client_last_conn() - @c's connection as it is, also after the client
 * fell back and until its next reconnect attempt: for the gRPC status of
 * the call that failed (finderd_last_status()). NULL when it has none.
 */
struct finderd_conn *fdi_client_last_conn(struct finderd_client *c);

#endif /* FINDERD_RESOLVER_H */
