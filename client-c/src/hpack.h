/*
 * hpack.h - HPACK header block decoder (RFC 7541) and the few encoder
 * primitives the client needs for its request headers.
 */
#ifndef FINDERD_HPACK_H
#define FINDERD_HPACK_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

/** SETTINGS_HEADER_TABLE_SIZE default, and the value this client keeps. */
#define FDI_HPACK_TABLE_SIZE 4096u
/** Number of entries in the static table (Appendix A). */
#define FDI_HPACK_STATIC_LEN 61u

struct fdi_hpack_entry;

/** Decoder state: the dynamic table and scratch space. Not thread-safe. */
struct fdi_hpack {
	const struct fdi_alloc *alloc;
	struct fdi_hpack_entry **ring; /* oldest at @first */
	size_t ring_cap;
	size_t first;
	size_t count;
	size_t size;     /* sum of entry sizes (name + value + 32) */
	size_t max_size; /* current limit, set by dynamic table size updates */
	size_t limit;    /* SETTINGS_HEADER_TABLE_SIZE: max_size never exceeds it */
	struct fdi_buf scratch; /* Huffman-decoded strings of one field */
};

/**
 * Called for each decoded header field; @name and @value are valid only
 * during the call. A negative return stops decoding and is returned by
 * fdi_hpack_decode() (the table may then be out of step with the peer's).
 */
typedef int (*fdi_hpack_emit_fn)(void *ud, const uint8_t *name, size_t nlen,
				 const uint8_t *value, size_t vlen);

/**
 * fdi_hpack_init() - a decoder whose table may grow to @limit bytes.
 * Return: 0 or -ENOMEM.
 */
int fdi_hpack_init(struct fdi_hpack *h, const struct fdi_alloc *a, size_t limit);
void fdi_hpack_free(struct fdi_hpack *h);

/**
 * fdi_hpack_decode() - decode one complete header block.
 * Return: 0; FINDERD_EHPACK (bad index, truncated or overflowing integer,
 * string past the block, size update not at the start or above the limit);
 * FINDERD_EHUFFMAN; -ENOMEM; or what @emit returned.
 */
int fdi_hpack_decode(struct fdi_hpack *h, const uint8_t *block, size_t len,
		     fdi_hpack_emit_fn emit, void *ud);

/**
 * fdi_hpack_decode_int() - decode an integer with an @prefix-bit prefix
 * (RFC 7541 5.1) starting at *@pp; advances *@pp.
 * Return: 0, or FINDERD_EHPACK when truncated or above UINT32_MAX.
 */
int fdi_hpack_decode_int(const uint8_t **pp, const uint8_t *end, unsigned prefix,
			 uint32_t *out);

/** Number of dynamic table entries. */
size_t fdi_hpack_table_len(const struct fdi_hpack *h);
/** The dynamic entry @i (0 = newest); 0, or -ERANGE. */
int fdi_hpack_table_get(const struct fdi_hpack *h, size_t i, const uint8_t **name,
			size_t *nlen, const uint8_t **value, size_t *vlen);

/**
 * fdi_hpack_encode_int() - write @v with an @prefix-bit prefix; the bits
 * above the prefix in the first byte are @flags. @out needs 6 bytes.
 * Return: bytes written.
 */
size_t fdi_hpack_encode_int(uint8_t *out, unsigned prefix, uint8_t flags, uint32_t v);

/**
 * fdi_hpack_encode_literal() - append a "literal header field without
 * indexing" (RFC 7541 6.2.2): name by static index @name_index, or a literal
 * @name when @name_index is 0; value not Huffman-coded.
 * Return: 0 or -ENOMEM.
 */
int fdi_hpack_encode_literal(struct fdi_buf *b, const struct fdi_alloc *a,
			     unsigned name_index, const char *name, const void *value,
			     size_t vlen);

#endif /* FINDERD_HPACK_H */
