/*
 * grpc.h - gRPC over HTTP/2 for unary calls: request headers, the 5-byte
 * message framing, response header and trailer checks, status.
 */
#ifndef FINDERD_GRPC_H
#define FINDERD_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include "h2.h"
#include "internal.h"

/** Bytes before each gRPC message: compressed flag and big-endian length. */
#define FDI_GRPC_PREFIX 5u

/** The response of one call as it arrives. */
struct fdi_grpc_call {
	const struct fdi_alloc *alloc;
	uint32_t max_message;
	uint8_t blocks;        /* complete non-informational header blocks */
	uint8_t informational; /* current block carries a 1xx :status */
	uint8_t content_type_ok;
	int http_status;       /* -1: none yet in the current block */
	int grpc_status;       /* -1: none */
	struct fdi_buf message; /* grpc-message as received (percent-encoded) */
	struct fdi_buf body;    /* DATA: prefix and message */
	uint32_t msg_len;       /* from the prefix, once body.len >= 5 */
};

/** Callbacks for fdi_h2_submit(), with a struct fdi_grpc_call as @ud. */
extern const struct fdi_h2_cb fdi_grpc_cb;

void fdi_grpc_call_init(struct fdi_grpc_call *c, const struct fdi_alloc *a, uint32_t max_message);
void fdi_grpc_call_free(struct fdi_grpc_call *c);

/**
 * fdi_grpc_call_finish() - check the complete response.
 * @msg, @len: receive the message (inside c->body) on success.
 * Return: 0; FINDERD_EGRPC for a non-zero grpc-status; FINDERD_EBADREPLY
 * when the status is missing, the message is missing, truncated, or
 * followed by another.
 */
int fdi_grpc_call_finish(struct fdi_grpc_call *c, const uint8_t **msg, size_t *len);

/**
 * fdi_grpc_headers() - the request's HPACK block for method @path
 * ("/package.Service/Method"), with a grpc-timeout of @timeout_us.
 * Return: 0 or -ENOMEM.
 */
int fdi_grpc_headers(struct fdi_buf *b, const struct fdi_alloc *a, const char *path,
		     uint32_t timeout_us);

/**
 * fdi_grpc_percent_decode() - decode grpc-message in place (%XX sequences;
 * malformed ones are kept as they are). Return: the new length.
 */
size_t fdi_grpc_percent_decode(uint8_t *s, size_t len);

#endif /* FINDERD_GRPC_H */
