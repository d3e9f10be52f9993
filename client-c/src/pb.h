/*
 * pb.h - protobuf wire format (proto3) for the finderd.v1 and
 * grpc.health.v1 messages: a field reader that cannot read past its input,
 * and request encoders.
 */
#ifndef FINDERD_PB_H
#define FINDERD_PB_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

enum fdi_pb_wire {
	FDI_PB_VARINT = 0,
	FDI_PB_I64 = 1,
	FDI_PB_LEN = 2,
	FDI_PB_I32 = 5,
};

/** One field: @v holds VARINT, I64 and I32 values, @p/@len a LEN field. */
struct fdi_pb_field {
	uint32_t num;
	uint8_t wt;
	uint64_t v;
	const uint8_t *p;
	size_t len;
};

/**
 * fdi_pb_varint() - decode a varint at *@pp (at most 10 bytes, the tenth
 * holding one bit). Return: 0 or FINDERD_EPROTOBUF.
 */
int fdi_pb_varint(const uint8_t **pp, const uint8_t *end, uint64_t *v);

/**
 * fdi_pb_next() - read the field at *@pp.
 * Return: 1 with @f filled, 0 at the end of input, or FINDERD_EPROTOBUF
 * (truncated, field number 0 or too large, a group or an unknown wire type,
 * a length past the end).
 */
int fdi_pb_next(const uint8_t **pp, const uint8_t *end, struct fdi_pb_field *f);

/** Typed reads of a known field: FINDERD_EPROTOBUF on a wrong wire type. */
int fdi_pb_get_u64(const struct fdi_pb_field *f, uint64_t *out);
int fdi_pb_get_u32(const struct fdi_pb_field *f, uint32_t *out);
int fdi_pb_get_i32(const struct fdi_pb_field *f, int32_t *out);
int fdi_pb_get_i64(const struct fdi_pb_field *f, int64_t *out);
int fdi_pb_get_str(const struct fdi_pb_field *f, struct finderd_str *out);

/** Decoders of the small replies. Unknown fields are skipped. */
int fdi_pb_decode_stats(const uint8_t *p, size_t len, struct finderd_stats *out);
int fdi_pb_decode_health(const uint8_t *p, size_t len, int *status);

/**
 * Request encoders: each appends the message to @b.
 * Return: 0, -ENOMEM, -EINVAL (a NULL array or string with a length),
 * FINDERD_ETOOBIG (beyond a gRPC message's 4 GiB).
 */
int fdi_pb_encode_snapshot(struct fdi_buf *b, const struct fdi_alloc *a,
			   const struct finderd_snapshot_request *req, uint64_t mount_namespace);
/** A LookupRequest's fields. */
struct fdi_lookup_args {
	const struct finderd_str *paths;
	const uint64_t *known;     /* NULL, or one generation per path */
	uint64_t epoch;
	size_t n;
	uint64_t mount_namespace;
};

int fdi_pb_encode_lookup(struct fdi_buf *b, const struct fdi_alloc *a,
			 const struct fdi_lookup_args *l);
int fdi_pb_encode_report(struct fdi_buf *b, const struct fdi_alloc *a,
			 const struct finderd_report_request *req, uint64_t mount_namespace);
int fdi_pb_encode_health(struct fdi_buf *b, const struct fdi_alloc *a, const char *service);

#endif /* FINDERD_PB_H */
