/*
 * wire.h - test-side encoders: HTTP/2 frames, HPACK fields (optionally
 * Huffman-coded), protobuf fields and gRPC framing. Aborts on ENOMEM.
 */
#ifndef FINDERD_TEST_WIRE_H
#define FINDERD_TEST_WIRE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "hpack.h"
#include "huffman.h"
#include "internal.h"

static inline const struct fdi_alloc *wire_alloc(void)
{
	static struct fdi_alloc a;

	if (!a.alloc)
		fdi_alloc_libc(&a);
	return &a;
}

static inline void w_put(struct fdi_buf *b, const void *p, size_t n)
{
	if (fdi_buf_append(b, wire_alloc(), p, n))
		abort();
}

static inline void w_byte(struct fdi_buf *b, uint8_t v)
{
	w_put(b, &v, 1);
}

static inline void w_free(struct fdi_buf *b)
{
	fdi_buf_free(b, wire_alloc());
}

/* ------------------------------------------------------------- frames */

static inline void w_frame(struct fdi_buf *b, uint8_t type, uint8_t flags, uint32_t sid,
			   const void *p, size_t n)
{
	uint8_t hd[FDI_FRAME_HDLEN];

	fdi_frame_hd_pack(hd, (uint32_t)n, type, flags, sid);
	w_put(b, hd, sizeof(hd));
	w_put(b, p, n);
}

static inline void w_frame_u32(struct fdi_buf *b, uint8_t type, uint32_t sid, uint32_t v)
{
	uint8_t p[4];

	fdi_put_be32(p, v);
	w_frame(b, type, 0, sid, p, 4);
}

static inline void w_settings(struct fdi_buf *b, const uint16_t *ids, const uint32_t *vals,
			      size_t n)
{
	uint8_t p[6 * 16];
	size_t i;

	for (i = 0; i < n; i++) {
		p[i * 6] = (uint8_t)(ids[i] >> 8);
		p[i * 6 + 1] = (uint8_t)ids[i];
		fdi_put_be32(p + i * 6 + 2, vals[i]);
	}
	w_frame(b, FDI_SETTINGS, 0, 0, p, n * 6);
}

/* -------------------------------------------------------------- HPACK */

static inline void w_hint(struct fdi_buf *b, unsigned prefix, uint8_t flags, uint32_t v)
{
	uint8_t tmp[6];

	w_put(b, tmp, fdi_hpack_encode_int(tmp, prefix, flags, v));
}

static inline void w_hstr(struct fdi_buf *b, const char *s, int huff)
{
	size_t n = strlen(s);

	if (huff) {
		uint8_t *tmp = malloc(n * 4 + 1);
		size_t hl;

		if (!tmp)
			abort();
		hl = fdi_huffman_encode((const uint8_t *)s, n, tmp);
		w_hint(b, 7, 0x80, (uint32_t)hl);
		w_put(b, tmp, hl);
		free(tmp);
	} else {
		w_hint(b, 7, 0, (uint32_t)n);
		w_put(b, s, n);
	}
}

/* A literal field: @prefix 6 (incremental indexing, flags 0x40) or 4
 * (without indexing 0x00, never indexed 0x10); name by @index or literal. */
static inline void w_lit(struct fdi_buf *b, unsigned prefix, uint8_t flags, unsigned index,
			 const char *name, const char *value, int huff)
{
	w_hint(b, prefix, flags, index);
	if (!index)
		w_hstr(b, name, huff);
	w_hstr(b, value, huff);
}

/* ":status: 200" and "content-type: application/grpc" as tonic sends them:
 * indexed, and a Huffman-coded literal with incremental indexing. */
static inline void w_resp_headers(struct fdi_buf *blk, int huff)
{
	w_byte(blk, 0x88);
	w_lit(blk, 6, 0x40, 31, NULL, "application/grpc", huff);
}

static inline void w_trailers(struct fdi_buf *blk, int status, const char *msg, int huff)
{
	char s[16];

	snprintf(s, sizeof(s), "%d", status);
	w_lit(blk, 4, 0x00, 0, "grpc-status", s, huff);
	if (msg)
		w_lit(blk, 4, 0x00, 0, "grpc-message", msg, huff);
}

/* ----------------------------------------------------------- protobuf */

static inline void pb_varint(struct fdi_buf *b, uint64_t v)
{
	while (v >= 0x80) {
		w_byte(b, (uint8_t)(v | 0x80));
		v >>= 7;
	}
	w_byte(b, (uint8_t)v);
}

static inline void pb_tag(struct fdi_buf *b, uint32_t num, unsigned wt)
{
	pb_varint(b, (uint64_t)num << 3 | wt);
}

static inline void pb_u(struct fdi_buf *b, uint32_t num, uint64_t v)
{
	pb_tag(b, num, 0);
	pb_varint(b, v);
}

static inline void pb_bytes(struct fdi_buf *b, uint32_t num, const void *p, size_t n)
{
	pb_tag(b, num, 2);
	pb_varint(b, n);
	w_put(b, p, n);
}

static inline void pb_str(struct fdi_buf *b, uint32_t num, const char *s)
{
	pb_bytes(b, num, s, strlen(s));
}

static inline void pb_msg(struct fdi_buf *b, uint32_t num, const struct fdi_buf *sub)
{
	pb_bytes(b, num, sub->data, sub->len);
}

/* One Entry. */
static inline void pb_entry(struct fdi_buf *dir, const char *name, uint32_t kind,
			    uint32_t mode, int64_t mtime, uint64_t size)
{
	struct fdi_buf e = { NULL, 0, 0 };

	pb_str(&e, 1, name);
	if (kind)
		pb_u(&e, 2, kind);
	pb_u(&e, 3, mode);
	pb_u(&e, 4, (uint64_t)mtime);
	pb_u(&e, 5, size);
	pb_msg(dir, 10, &e);
	w_free(&e);
}

/* The 5-byte gRPC prefix and @msg. */
static inline void grpc_frame(struct fdi_buf *b, uint8_t flag, const struct fdi_buf *msg)
{
	uint8_t p[5];

	p[0] = flag;
	fdi_put_be32(p + 1, (uint32_t)msg->len);
	w_put(b, p, 5);
	w_put(b, msg->data, msg->len);
}

#endif /* FINDERD_TEST_WIRE_H */
