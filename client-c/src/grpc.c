/*
 * grpc.c - gRPC over HTTP/2 (the PROTOCOL-HTTP2 document of grpc/grpc) for
 * unary calls.
 */
#include <errno.h>
#include <string.h>

#include "grpc.h"
#include "hpack.h"

/* ------------------------------------------------------------------------ */
/* Request                                                                  */
/* ------------------------------------------------------------------------ */

/* RFC 7541 Appendix A indexes. */
#define IDX_AUTHORITY 1
#define IDX_METHOD_POST 3
#define IDX_PATH 4
#define IDX_SCHEME_HTTP 6
#define IDX_CONTENT_TYPE 31
#define IDX_USER_AGENT 58

/* "50000u": at most 8 digits and a unit (gRPC's Timeout rule). */
static size_t format_timeout(char *out, uint32_t us)
{
	char unit = 'u';
	char tmp[12];
	size_t n = 0, i;

	if (us > 99999999u) {
		us = us / 1000 + (us % 1000 != 0);
		unit = 'm';
	}
	do {
		tmp[n++] = (char)('0' + us % 10);
		us /= 10;
	} while (us);
	for (i = 0; i < n; i++)
		out[i] = tmp[n - 1 - i];
	out[n++] = unit;
	return n;
}

int fdi_grpc_headers(struct fdi_buf *b, const struct fdi_alloc *a, const char *path,
		     uint32_t timeout_us)
{
	static const uint8_t indexed[] = { 0x80 | IDX_METHOD_POST, 0x80 | IDX_SCHEME_HTTP };
	static const char ua[] = "finderd-c/";
	char timeout[12];
	size_t tlen = format_timeout(timeout, timeout_us);
	const char *ver = finderd_version();
	char agent[32];
	size_t ualen = sizeof(ua) - 1, vlen = strlen(ver);
	int ret;

	memcpy(agent, ua, ualen);
	memcpy(agent + ualen, ver, FDI_MIN(vlen, sizeof(agent) - ualen));
	ret = fdi_buf_append(b, a, indexed, sizeof(indexed));
	if (!ret)
		ret = fdi_hpack_encode_literal(b, a, IDX_PATH, NULL, path, strlen(path));
	if (!ret)
		ret = fdi_hpack_encode_literal(b, a, IDX_AUTHORITY, NULL, "localhost", 9);
	if (!ret)
		ret = fdi_hpack_encode_literal(b, a, IDX_CONTENT_TYPE, NULL, "application/grpc", 16);
	if (!ret)
		ret = fdi_hpack_encode_literal(b, a, 0, "te", "trailers", 8);
	if (!ret)
		ret = fdi_hpack_encode_literal(b, a, 0, "grpc-timeout", timeout, tlen);
	if (!ret)
		ret = fdi_hpack_encode_literal(b, a, IDX_USER_AGENT, NULL, agent,
					       FDI_MIN(ualen + vlen, sizeof(agent)));
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Response                                                                 */
/* ------------------------------------------------------------------------ */

void fdi_grpc_call_init(struct fdi_grpc_call *c, const struct fdi_alloc *a, uint32_t max_message)
{
	memset(c, 0, sizeof(*c));
	c->alloc = a;
	c->max_message = max_message;
	c->http_status = -1;
	c->grpc_status = -1;
}

void fdi_grpc_call_free(struct fdi_grpc_call *c)
{
	fdi_buf_free(&c->message, c->alloc);
	fdi_buf_free(&c->body, c->alloc);
}

/* A non-negative decimal integer of at most 9 digits, or -1. */
static int parse_decimal(const uint8_t *p, size_t n)
{
	int v = 0;
	size_t i;

	if (n == 0 || n > 9)
		return -1;
	for (i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return -1;
		v = v * 10 + (p[i] - '0');
	}
	return v;
}

/* "application/grpc", optionally followed by "+proto" or ";params". */
static int content_type_ok(const uint8_t *v, size_t n)
{
	static const char ct[] = "application/grpc";
	size_t ctl = sizeof(ct) - 1;

	if (n < ctl || memcmp(v, ct, ctl) != 0)
		return 0;
	return n == ctl || v[ctl] == '+' || v[ctl] == ';';
}

static int on_status_field(struct fdi_grpc_call *c, const uint8_t *name, size_t nlen,
			   const uint8_t *v, size_t vlen)
{
	if (fdi_bytes_eq(name, nlen, "grpc-status")) {
		c->grpc_status = parse_decimal(v, vlen);
		return c->grpc_status < 0 ? FINDERD_EBADREPLY : 0;
	}
	if (fdi_bytes_eq(name, nlen, "grpc-message")) {
		c->message.len = 0;
		return fdi_buf_append(&c->message, c->alloc, v, vlen);
	}
	return 0;
}

static int on_header(void *ud, const uint8_t *name, size_t nlen, const uint8_t *v, size_t vlen)
{
	struct fdi_grpc_call *c = ud;

	if (name[0] == ':') {
		/* Only the first block has pseudo-fields, and only :status. */
		if (c->blocks || !fdi_bytes_eq(name, nlen, ":status") || c->http_status >= 0)
			return FINDERD_EHTTP2;
		c->http_status = vlen == 3 ? parse_decimal(v, vlen) : -1;
		if (c->http_status < 100)
			return FINDERD_EHTTP2;
		c->informational = c->http_status < 200;
		return 0;
	}
	if (c->blocks == 0 && fdi_bytes_eq(name, nlen, "content-type"))
		c->content_type_ok = (uint8_t)content_type_ok(v, vlen);
	return on_status_field(c, name, nlen, v, vlen);
}

static int on_headers_end(void *ud, int end_stream)
{
	struct fdi_grpc_call *c = ud;

	if (c->blocks == 0) {
		if (c->http_status < 0)
			return FINDERD_EHTTP2; /* no :status */
		if (c->informational) {
			/* 1xx: the real response follows. */
			c->http_status = -1;
			c->informational = 0;
			return end_stream ? FINDERD_EHTTP2 : 0;
		}
		if (c->http_status != 200 || !c->content_type_ok)
			return FINDERD_EBADREPLY;
	} else if (c->blocks == 1) {
		/* Trailers end the stream. */
		if (!end_stream)
			return FINDERD_EHTTP2;
	} else {
		return FINDERD_EHTTP2;
	}
	c->blocks++;
	if (end_stream && c->grpc_status < 0)
		return FINDERD_EBADREPLY;
	return 0;
}

/* The prefix is complete: check it and reserve the whole message. */
static int on_prefix(struct fdi_grpc_call *c)
{
	uint8_t flag = c->body.data[0];

	if (flag & 1)
		return FINDERD_ECOMPRESSED;
	if (flag)
		return FINDERD_EBADREPLY;
	c->msg_len = fdi_get_be32(c->body.data + 1);
	if (c->msg_len > c->max_message)
		return FINDERD_ETOOBIG;
	return fdi_buf_reserve(&c->body, c->alloc, c->msg_len); /* body.len is 5 */
}

static int on_data(void *ud, const uint8_t *data, size_t len)
{
	struct fdi_grpc_call *c = ud;
	int ret;

	if (c->blocks != 1)
		return FINDERD_EHTTP2; /* DATA before headers or after trailers */
	while (len) {
		size_t want, n;

		if (c->body.len < FDI_GRPC_PREFIX)
			want = FDI_GRPC_PREFIX - c->body.len;
		else if (c->body.len - FDI_GRPC_PREFIX < c->msg_len)
			want = c->msg_len - (c->body.len - FDI_GRPC_PREFIX);
		else
			return FINDERD_EBADREPLY; /* a second message */
		n = FDI_MIN(want, len);
		ret = fdi_buf_append(&c->body, c->alloc, data, n);
		if (ret)
			return ret;
		data += n;
		len -= n;
		if (c->body.len == FDI_GRPC_PREFIX) {
			ret = on_prefix(c);
			if (ret)
				return ret;
		}
	}
	return 0;
}

const struct fdi_h2_cb fdi_grpc_cb = {
	.on_header = on_header,
	.on_headers_end = on_headers_end,
	.on_data = on_data,
};

int fdi_grpc_call_finish(struct fdi_grpc_call *c, const uint8_t **msg, size_t *len)
{
	if (c->grpc_status < 0)
		return FINDERD_EBADREPLY;
	if (c->grpc_status != 0)
		return FINDERD_EGRPC;
	if (c->body.len < FDI_GRPC_PREFIX || c->body.len - FDI_GRPC_PREFIX != c->msg_len)
		return FINDERD_EBADREPLY;
	*msg = c->body.data + FDI_GRPC_PREFIX;
	*len = c->msg_len;
	return 0;
}

static int hexval(uint8_t ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

size_t fdi_grpc_percent_decode(uint8_t *s, size_t len)
{
	size_t i = 0, o = 0;

	while (i < len) {
		int hi, lo;

		if (s[i] == '%' && len - i >= 3 && (hi = hexval(s[i + 1])) >= 0 &&
		    (lo = hexval(s[i + 2])) >= 0) {
			s[o++] = (uint8_t)(hi << 4 | lo);
			i += 3;
		} else {
			s[o++] = s[i++];
		}
	}
	return o;
}
