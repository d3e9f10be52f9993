/*
 * reply.h - decoding SnapshotReply and LookupReply into struct finderd_reply.
 */
#ifndef FINDERD_REPLY_H
#define FINDERD_REPLY_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

enum fdi_reply_kind {
	FDI_REPLY_SNAPSHOT, /* finderd.v1.SnapshotReply */
	FDI_REPLY_LOOKUP,   /* finderd.v1.LookupReply */
};

/**
 * fdi_reply_decode() - decode the reply message @msg (@len bytes).
 * @buf: the allocation that holds @msg (freed with the reply), or NULL when
 *       @msg outlives the reply.
 *
 * Directory headers are decoded now, pointing into @msg; entries when
 * finderd_dir_entries() asks for them.
 *
 * Return: 0 (the reply then owns @buf), FINDERD_EPROTOBUF,
 * FINDERD_EVERSION, -ENOMEM; on failure @buf stays the caller's.
 */
int fdi_reply_decode(const struct fdi_alloc *a, uint8_t *buf, const uint8_t *msg, size_t len,
		     enum fdi_reply_kind kind, struct finderd_reply **out);

/** The encoded message @r was decoded from, and its kind (to save it). */
void fdi_reply_message(const struct finderd_reply *r, const uint8_t **msg, size_t *len,
		       enum fdi_reply_kind *kind);

#endif /* FINDERD_REPLY_H */
