/*
 * hpack.c - HPACK decoder (RFC 7541).
 *
 * Every read is bounded by the block's end; every decoded string lives either
 * in the block, the static table, a dynamic table entry, or the scratch
 * buffer sized for the block before the first Huffman string is decoded.
 */
#include <errno.h>
#include <string.h>

#include "hpack.h"
#include "huffman.h"

struct fdi_hpack_entry {
	uint32_t nlen;
	uint32_t vlen;
	uint8_t data[]; /* name, then value */
};

/* RFC 7541 4.1: an entry's size is its name and value lengths plus 32. */
#define ENTRY_OVERHEAD 32u

struct static_entry {
	const char *name;
	const char *value;
	uint8_t nlen;
	uint8_t vlen;
};

#define FDI_STATIC(n, v) { n, v, sizeof(n) - 1, sizeof(v) - 1 }

/* RFC 7541 Appendix A, index 1 first. */
static const struct static_entry static_table[FDI_HPACK_STATIC_LEN] = {
	FDI_STATIC(":authority", ""),
	FDI_STATIC(":method", "GET"),
	FDI_STATIC(":method", "POST"),
	FDI_STATIC(":path", "/"),
	FDI_STATIC(":path", "/index.html"),
	FDI_STATIC(":scheme", "http"),
	FDI_STATIC(":scheme", "https"),
	FDI_STATIC(":status", "200"),
	FDI_STATIC(":status", "204"),
	FDI_STATIC(":status", "206"),
	FDI_STATIC(":status", "304"),
	FDI_STATIC(":status", "400"),
	FDI_STATIC(":status", "404"),
	FDI_STATIC(":status", "500"),
	FDI_STATIC("accept-charset", ""),
	FDI_STATIC("accept-encoding", "gzip, deflate"),
	FDI_STATIC("accept-language", ""),
	FDI_STATIC("accept-ranges", ""),
	FDI_STATIC("accept", ""),
	FDI_STATIC("access-control-allow-origin", ""),
	FDI_STATIC("age", ""),
	FDI_STATIC("allow", ""),
	FDI_STATIC("authorization", ""),
	FDI_STATIC("cache-control", ""),
	FDI_STATIC("content-disposition", ""),
	FDI_STATIC("content-encoding", ""),
	FDI_STATIC("content-language", ""),
	FDI_STATIC("content-length", ""),
	FDI_STATIC("content-location", ""),
	FDI_STATIC("content-range", ""),
	FDI_STATIC("content-type", ""),
	FDI_STATIC("cookie", ""),
	FDI_STATIC("date", ""),
	FDI_STATIC("etag", ""),
	FDI_STATIC("expect", ""),
	FDI_STATIC("expires", ""),
	FDI_STATIC("from", ""),
	FDI_STATIC("host", ""),
	FDI_STATIC("if-match", ""),
	FDI_STATIC("if-modified-since", ""),
	FDI_STATIC("if-none-match", ""),
	FDI_STATIC("if-range", ""),
	FDI_STATIC("if-unmodified-since", ""),
	FDI_STATIC("last-modified", ""),
	FDI_STATIC("link", ""),
	FDI_STATIC("location", ""),
	FDI_STATIC("max-forwards", ""),
	FDI_STATIC("proxy-authenticate", ""),
	FDI_STATIC("proxy-authorization", ""),
	FDI_STATIC("range", ""),
	FDI_STATIC("referer", ""),
	FDI_STATIC("refresh", ""),
	FDI_STATIC("retry-after", ""),
	FDI_STATIC("server", ""),
	FDI_STATIC("set-cookie", ""),
	FDI_STATIC("strict-transport-security", ""),
	FDI_STATIC("transfer-encoding", ""),
	FDI_STATIC("user-agent", ""),
	FDI_STATIC("vary", ""),
	FDI_STATIC("via", ""),
	FDI_STATIC("www-authenticate", ""),
};

/* ------------------------------------------------------------------------ */
/* Table                                                                    */
/* ------------------------------------------------------------------------ */

int fdi_hpack_init(struct fdi_hpack *h, const struct fdi_alloc *a, size_t limit)
{
	memset(h, 0, sizeof(*h));
	h->alloc = a;
	h->limit = limit;
	h->max_size = limit;
	/* Every entry takes at least 32 bytes of the table. */
	h->ring_cap = limit / ENTRY_OVERHEAD + 1;
	h->ring = fdi_calloc(a, h->ring_cap, sizeof(*h->ring));
	return h->ring ? 0 : -ENOMEM;
}

static size_t ring_pos(const struct fdi_hpack *h, size_t i)
{
	return (h->first + i) % h->ring_cap;
}

static void evict_oldest(struct fdi_hpack *h)
{
	struct fdi_hpack_entry *e = h->ring[h->first];

	h->size -= e->nlen + e->vlen + ENTRY_OVERHEAD;
	fdi_free(h->alloc, e);
	h->ring[h->first] = NULL;
	h->first = ring_pos(h, 1);
	h->count--;
}

static void evict_to(struct fdi_hpack *h, size_t size)
{
	while (h->count && h->size > size)
		evict_oldest(h);
}

void fdi_hpack_free(struct fdi_hpack *h)
{
	if (!h->ring)
		return;
	while (h->count)
		evict_oldest(h);
	fdi_free(h->alloc, h->ring);
	fdi_buf_free(&h->scratch, h->alloc);
	h->ring = NULL;
}

size_t fdi_hpack_table_len(const struct fdi_hpack *h)
{
	return h->count;
}

int fdi_hpack_table_get(const struct fdi_hpack *h, size_t i, const uint8_t **name,
			size_t *nlen, const uint8_t **value, size_t *vlen)
{
	const struct fdi_hpack_entry *e;

	if (i >= h->count)
		return -ERANGE;
	e = h->ring[ring_pos(h, h->count - 1 - i)];
	*name = e->data;
	*nlen = e->nlen;
	*value = e->data + e->nlen;
	*vlen = e->vlen;
	return 0;
}

/* RFC 7541 4.4: evict to make room, then add; an entry larger than the
 * table empties it and is not added. The name may point into an entry that
 * is evicted, so it is copied first. */
static int table_add(struct fdi_hpack *h, const uint8_t *name, size_t nlen,
		     const uint8_t *value, size_t vlen)
{
	struct fdi_hpack_entry *e;
	size_t esize = nlen + vlen + ENTRY_OVERHEAD;

	if (nlen > h->limit || vlen > h->limit || esize > h->max_size) {
		evict_to(h, 0);
		return 0;
	}
	e = fdi_malloc(h->alloc, sizeof(*e) + nlen + vlen);
	if (!e)
		return -ENOMEM;
	e->nlen = (uint32_t)nlen;
	e->vlen = (uint32_t)vlen;
	memcpy(e->data, name, nlen);
	memcpy(e->data + nlen, value, vlen);
	evict_to(h, h->max_size - esize);
	/* max_size <= limit, so at most ring_cap - 1 entries remain. */
	h->ring[ring_pos(h, h->count)] = e;
	h->count++;
	h->size += esize;
	return 0;
}

/* Resolve a 1-based index over the static then the dynamic table. */
static int lookup(const struct fdi_hpack *h, uint32_t index, const uint8_t **name,
		  size_t *nlen, const uint8_t **value, size_t *vlen)
{
	if (index == 0)
		return FINDERD_EHPACK;
	if (index <= FDI_HPACK_STATIC_LEN) {
		const struct static_entry *s = &static_table[index - 1];

		*name = (const uint8_t *)s->name;
		*nlen = s->nlen;
		*value = (const uint8_t *)s->value;
		*vlen = s->vlen;
		return 0;
	}
	if (fdi_hpack_table_get(h, index - FDI_HPACK_STATIC_LEN - 1, name, nlen, value, vlen))
		return FINDERD_EHPACK;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Primitives                                                               */
/* ------------------------------------------------------------------------ */

int fdi_hpack_decode_int(const uint8_t **pp, const uint8_t *end, unsigned prefix,
			 uint32_t *out)
{
	const uint8_t *p = *pp;
	uint32_t mask = (1u << prefix) - 1;
	uint64_t v;
	unsigned shift = 0;

	if (p >= end)
		return FINDERD_EHPACK;
	v = *p++ & mask;
	if (v == mask) {
		for (;;) {
			uint8_t b;

			/* Five continuation bytes carry 35 bits: enough for 32. */
			if (p >= end || shift > 28)
				return FINDERD_EHPACK;
			b = *p++;
			v += (uint64_t)(b & 0x7f) << shift;
			if (v > UINT32_MAX)
				return FINDERD_EHPACK;
			shift += 7;
			if (!(b & 0x80))
				break;
		}
	}
	*out = (uint32_t)v;
	*pp = p;
	return 0;
}

/* A string literal (RFC 7541 5.2). Huffman-decoded strings go to the scratch
 * buffer at *@used, which the caller sized for the whole block. */
static int read_string(struct fdi_hpack *h, const uint8_t **pp, const uint8_t *end,
		       size_t *used, const uint8_t **s, size_t *slen)
{
	const uint8_t *p = *pp;
	uint32_t len;
	int huff, ret;

	if (p >= end)
		return FINDERD_EHPACK;
	huff = *p & 0x80;
	ret = fdi_hpack_decode_int(&p, end, 7, &len);
	if (ret)
		return ret;
	if (len > (size_t)(end - p))
		return FINDERD_EHPACK;
	if (!huff) {
		*s = p;
		*slen = len;
	} else {
		uint8_t *dst = h->scratch.data + *used;

		ret = fdi_huffman_decode(p, len, dst, slen);
		if (ret)
			return ret;
		*s = dst;
		*used += *slen;
	}
	*pp = p + len;
	return 0;
}

/* Scratch for every Huffman string of a block: each decodes to at most
 * fdi_huffman_decoded_max() of its length, and the lengths add up to less
 * than the block. */
static int reserve_scratch(struct fdi_hpack *h, size_t len)
{
	h->scratch.len = 0;
	return fdi_buf_reserve(&h->scratch, h->alloc, fdi_huffman_decoded_max(len) + 2);
}

/* ------------------------------------------------------------------------ */
/* Representations                                                          */
/* ------------------------------------------------------------------------ */

/* 6.3: Dynamic Table Size Update. */
static int size_update(struct fdi_hpack *h, const uint8_t **pp, const uint8_t *end)
{
	uint32_t size;
	int ret = fdi_hpack_decode_int(pp, end, 5, &size);

	if (ret)
		return ret;
	if (size > h->limit)
		return FINDERD_EHPACK;
	h->max_size = size;
	evict_to(h, size);
	return 0;
}

/* 6.2: literal header fields; @prefix 6 with incremental indexing, 4 without
 * or never indexed. */
static int literal(struct fdi_hpack *h, const uint8_t **pp, const uint8_t *end,
		   unsigned prefix, fdi_hpack_emit_fn emit, void *ud)
{
	const uint8_t *name, *value, *unused;
	size_t nlen, vlen, ulen, used = 0;
	uint32_t index;
	int ret;

	ret = fdi_hpack_decode_int(pp, end, prefix, &index);
	if (ret)
		return ret;
	if (index)
		ret = lookup(h, index, &name, &nlen, &unused, &ulen);
	else
		ret = read_string(h, pp, end, &used, &name, &nlen);
	if (ret)
		return ret;
	ret = read_string(h, pp, end, &used, &value, &vlen);
	if (ret)
		return ret;
	ret = emit(ud, name, nlen, value, vlen);
	/* Emitted first: adding may evict the entry @name points into. */
	if (ret || prefix != 6)
		return ret;
	return table_add(h, name, nlen, value, vlen);
}

static int indexed(struct fdi_hpack *h, const uint8_t **pp, const uint8_t *end,
		   fdi_hpack_emit_fn emit, void *ud)
{
	const uint8_t *name, *value;
	size_t nlen, vlen;
	uint32_t index;
	int ret;

	ret = fdi_hpack_decode_int(pp, end, 7, &index);
	if (ret)
		return ret;
	ret = lookup(h, index, &name, &nlen, &value, &vlen);
	if (ret)
		return ret;
	return emit(ud, name, nlen, value, vlen);
}

int fdi_hpack_decode(struct fdi_hpack *h, const uint8_t *block, size_t len,
		     fdi_hpack_emit_fn emit, void *ud)
{
	const uint8_t *p, *end;
	int seen_field = 0, ret;

	if (len == 0)
		return 0; /* an empty block is valid; @block may be NULL */
	p = block;
	end = block + len;
	ret = reserve_scratch(h, len);
	if (ret)
		return ret;
	while (p < end) {
		uint8_t b = *p;

		if ((b & 0xe0) == 0x20) {
			/* 4.2: size updates only at the start of a block. */
			if (seen_field)
				return FINDERD_EHPACK;
			ret = size_update(h, &p, end);
		} else {
			seen_field = 1;
			if (b & 0x80)
				ret = indexed(h, &p, end, emit, ud);
			else if (b & 0x40)
				ret = literal(h, &p, end, 6, emit, ud);
			else
				ret = literal(h, &p, end, 4, emit, ud);
		}
		if (ret)
			return ret;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Encoder primitives                                                       */
/* ------------------------------------------------------------------------ */

size_t fdi_hpack_encode_int(uint8_t *out, unsigned prefix, uint8_t flags, uint32_t v)
{
	uint32_t mask = (1u << prefix) - 1;
	size_t n = 0;

	if (v < mask) {
		out[n++] = (uint8_t)(flags | v);
		return n;
	}
	out[n++] = (uint8_t)(flags | mask);
	v -= mask;
	while (v >= 0x80) {
		out[n++] = (uint8_t)(0x80 | (v & 0x7f));
		v >>= 7;
	}
	out[n++] = (uint8_t)v;
	return n;
}

static int put_string(struct fdi_buf *b, const struct fdi_alloc *a, const void *s, size_t len)
{
	uint8_t hd[6];
	int ret;

	if (len > UINT32_MAX)
		return -EINVAL;
	ret = fdi_buf_append(b, a, hd, fdi_hpack_encode_int(hd, 7, 0, (uint32_t)len));
	return ret ? ret : fdi_buf_append(b, a, s, len);
}

int fdi_hpack_encode_literal(struct fdi_buf *b, const struct fdi_alloc *a,
			     unsigned name_index, const char *name, const void *value,
			     size_t vlen)
{
	uint8_t hd[6];
	int ret;

	ret = fdi_buf_append(b, a, hd, fdi_hpack_encode_int(hd, 4, 0, name_index));
	if (!ret && !name_index)
		ret = put_string(b, a, name, strlen(name));
	return ret ? ret : put_string(b, a, value, vlen);
}
