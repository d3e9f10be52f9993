/*
 * h2.c - the client side of an HTTP/2 connection (RFC 9113) without I/O.
 */
#include <errno.h>
#include <string.h>

#include "h2.h"

/* ------------------------------------------------------------------------ */
/* Output                                                                   */
/* ------------------------------------------------------------------------ */

static int queue_frame(struct fdi_h2 *h2, uint8_t type, uint8_t flags, uint32_t sid,
		       const void *payload, size_t len)
{
	int ret = fdi_buf_reserve(&h2->out, h2->alloc, FDI_FRAME_HDLEN + len);

	if (ret)
		return ret;
	fdi_frame_hd_pack(h2->out.data + h2->out.len, (uint32_t)len, type, flags, sid);
	h2->out.len += FDI_FRAME_HDLEN;
	if (len)
		memcpy(h2->out.data + h2->out.len, payload, len);
	h2->out.len += len;
	return 0;
}

static int queue_u32(struct fdi_h2 *h2, uint8_t type, uint32_t sid, uint32_t v)
{
	uint8_t p[4];

	fdi_put_be32(p, v);
	return queue_frame(h2, type, 0, sid, p, sizeof(p));
}

void fdi_h2_out_consume(struct fdi_h2 *h2, size_t n)
{
	h2->out_off += n;
	if (h2->out_off == h2->out.len) {
		h2->out_off = h2->out.len = 0;
	} else if (h2->out_off >= 65536) {
		memmove(h2->out.data, h2->out.data + h2->out_off, h2->out.len - h2->out_off);
		h2->out.len -= h2->out_off;
		h2->out_off = 0;
	}
}

int fdi_h2_goaway(struct fdi_h2 *h2)
{
	uint8_t p[8];

	fdi_put_be32(p, 0);
	fdi_put_be32(p + 4, FDI_H2_NO_ERROR);
	return queue_frame(h2, FDI_GOAWAY, 0, 0, p, sizeof(p));
}

/* ------------------------------------------------------------------------ */
/* Set-up                                                                   */
/* ------------------------------------------------------------------------ */

static void put_setting(uint8_t *p, uint16_t id, uint32_t v)
{
	p[0] = (uint8_t)(id >> 8);
	p[1] = (uint8_t)id;
	fdi_put_be32(p + 2, v);
}

int fdi_h2_init(struct fdi_h2 *h2, const struct fdi_alloc *a)
{
	uint8_t settings[12];
	int ret;

	memset(h2, 0, sizeof(*h2));
	h2->alloc = a;
	h2->peer_max_frame = FDI_FRAME_SIZE_MIN;
	h2->peer_init_win = 65535;
	h2->conn_send_win = 65535;
	h2->conn_recv_win = FDI_H2_LOCAL_WINDOW;
	h2->next_sid = 1;
	ret = fdi_hpack_init(&h2->hpack, a, FDI_HPACK_TABLE_SIZE);
	if (ret)
		return ret;
	put_setting(settings, FDI_SETTINGS_ENABLE_PUSH, 0);
	put_setting(settings + 6, FDI_SETTINGS_INITIAL_WINDOW_SIZE, FDI_H2_LOCAL_WINDOW);
	ret = fdi_buf_append(&h2->out, a, FDI_PREFACE, FDI_PREFACE_LEN);
	if (!ret)
		ret = queue_frame(h2, FDI_SETTINGS, 0, 0, settings, sizeof(settings));
	if (!ret)
		ret = queue_u32(h2, FDI_WINDOW_UPDATE, 0, FDI_H2_LOCAL_WINDOW - 65535);
	if (ret)
		fdi_h2_free(h2);
	return ret;
}

void fdi_h2_free(struct fdi_h2 *h2)
{
	fdi_hpack_free(&h2->hpack);
	fdi_buf_free(&h2->out, h2->alloc);
	fdi_buf_free(&h2->hblock, h2->alloc);
}

/* ------------------------------------------------------------------------ */
/* Streams                                                                  */
/* ------------------------------------------------------------------------ */

enum stream_class { S_IDLE, S_CLOSED, S_ACTIVE };

static enum stream_class classify(const struct fdi_h2 *h2, uint32_t sid)
{
	if (sid && sid == h2->st.id && !h2->st.reset)
		return S_ACTIVE;
	if ((sid & 1) && sid <= h2->last_sid)
		return S_CLOSED;
	return S_IDLE;
}

/* A stream error: remember the first, reset the stream unless it is closed
 * on both sides or already reset. */
static int stream_fail(struct fdi_h2 *h2, int err, uint32_t code)
{
	struct fdi_h2_stream *st = &h2->st;

	if (!st->err)
		st->err = err;
	if (st->reset || (st->local_closed && st->remote_closed))
		return 0;
	st->reset = 1;
	st->local_closed = 1;
	return queue_u32(h2, FDI_RST_STREAM, st->id, code);
}

int fdi_h2_stream_done(const struct fdi_h2 *h2)
{
	const struct fdi_h2_stream *st = &h2->st;

	return st->id && (st->err || st->reset || st->remote_closed);
}

int fdi_h2_stream_finish(struct fdi_h2 *h2)
{
	struct fdi_h2_stream *st = &h2->st;
	int err = st->err;

	if (st->id && !st->reset && !(st->local_closed && st->remote_closed))
		queue_u32(h2, FDI_RST_STREAM, st->id, FDI_H2_CANCEL);
	memset(st, 0, sizeof(*st));
	return err;
}

int fdi_h2_pump(struct fdi_h2 *h2)
{
	struct fdi_h2_stream *st = &h2->st;

	if (!st->id || st->local_closed || st->reset || st->remote_closed || h2->err)
		return 0;
	while (fdi_h2_out_len(h2) < FDI_H2_OUT_HIGH_WATER) {
		size_t left = st->body_len - st->body_off;
		int64_t n = (int64_t)FDI_MIN(left, (size_t)h2->peer_max_frame);
		uint8_t flags;
		int ret;

		n = FDI_MIN(n, h2->conn_send_win);
		n = FDI_MIN(n, st->send_win);
		if (left && n <= 0)
			break;
		if (n < 0)
			n = 0;
		flags = (size_t)n == left ? FDI_FLAG_END_STREAM : 0;
		ret = queue_frame(h2, FDI_DATA, flags, st->id, n ? st->body + st->body_off : NULL,
				  (size_t)n);
		if (ret)
			return ret;
		st->body_off += (size_t)n;
		h2->conn_send_win -= n;
		st->send_win -= n;
		if (flags) {
			st->local_closed = 1;
			break;
		}
	}
	return 0;
}

int fdi_h2_submit(struct fdi_h2 *h2, const uint8_t *hblock, size_t hlen, const uint8_t *body,
		  size_t blen, const struct fdi_h2_cb *cb, void *ud)
{
	struct fdi_h2_stream *st = &h2->st;
	uint8_t type = FDI_HEADERS;
	int ret;

	if (h2->err)
		return h2->err;
	if (h2->goaway)
		return FINDERD_EGOAWAY;
	if (st->id)
		return -EBUSY;
	if (h2->next_sid > 0x7fffffffu)
		return FINDERD_ECLOSED;
	memset(st, 0, sizeof(*st));
	st->id = h2->next_sid;
	h2->next_sid += 2;
	h2->last_sid = st->id;
	st->send_win = h2->peer_init_win;
	st->recv_win = FDI_H2_LOCAL_WINDOW;
	st->body = body;
	st->body_len = blen;
	st->cb = cb;
	st->ud = ud;
	/* HEADERS, then CONTINUATION frames if the block exceeds a frame. */
	do {
		size_t n = FDI_MIN(hlen, (size_t)h2->peer_max_frame);
		uint8_t flags = n == hlen ? FDI_FLAG_END_HEADERS : 0;

		ret = queue_frame(h2, type, flags, st->id, hblock, n);
		if (ret)
			return ret;
		hblock += n;
		hlen -= n;
		type = FDI_CONTINUATION;
	} while (hlen);
	return fdi_h2_pump(h2);
}

/* ------------------------------------------------------------------------ */
/* Receiving: header blocks                                                 */
/* ------------------------------------------------------------------------ */

static int has_upper(const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (p[i] >= 'A' && p[i] <= 'Z')
			return 1;
	return 0;
}

/* One decoded field: checked (RFC 9113 8.2) and passed to the active
 * stream's callback. Other streams' blocks are decoded for the table only. */
static int emit_field(void *ud, const uint8_t *name, size_t nlen, const uint8_t *value,
		      size_t vlen)
{
	struct fdi_h2 *h2 = ud;
	struct fdi_h2_stream *st = &h2->st;
	int ret;

	if (!h2->blk_active || st->err)
		return 0;
	if (nlen == 0 || has_upper(name, nlen) || (name[0] == ':' && st->regular_seen))
		return stream_fail(h2, FINDERD_EHTTP2, FDI_H2_PROTOCOL_ERROR);
	if (name[0] != ':')
		st->regular_seen = 1;
	ret = st->cb->on_header(st->ud, name, nlen, value, vlen);
	return ret ? stream_fail(h2, ret, FDI_H2_CANCEL) : 0;
}

static int process_block(struct fdi_h2 *h2)
{
	struct fdi_h2_stream *st = &h2->st;
	int ret;

	h2->blk_active = classify(h2, h2->hblock_sid) == S_ACTIVE;
	st->regular_seen = 0;
	ret = fdi_hpack_decode(&h2->hpack, h2->hblock.data, h2->hblock.len, emit_field, h2);
	h2->hblock.len = 0;
	if (ret || !h2->blk_active)
		return ret;
	if (h2->hblock_end_stream)
		st->remote_closed = 1;
	if (!st->err) {
		ret = st->cb->on_headers_end(st->ud, h2->hblock_end_stream);
		if (ret)
			return stream_fail(h2, ret, FDI_H2_CANCEL);
	}
	return 0;
}

static int add_fragment(struct fdi_h2 *h2, const uint8_t *p, size_t n, uint8_t flags)
{
	int ret;

	if (n > FDI_H2_MAX_HEADER_BLOCK - h2->hblock.len)
		return FINDERD_EHTTP2;
	ret = fdi_buf_append(&h2->hblock, h2->alloc, p, n);
	if (ret)
		return ret;
	if (!(flags & FDI_FLAG_END_HEADERS)) {
		h2->in_hblock = 1;
		return 0;
	}
	h2->in_hblock = 0;
	return process_block(h2);
}

static int on_headers(struct fdi_h2 *h2, const struct fdi_frame_hd *hd, const uint8_t *payload)
{
	enum stream_class cls = classify(h2, hd->stream_id);
	const uint8_t *block;
	size_t len;
	int ret;

	if (cls == S_IDLE || (cls == S_ACTIVE && h2->st.remote_closed))
		return FINDERD_EHTTP2;
	ret = fdi_frame_headers_payload(hd, payload, &block, &len);
	if (ret)
		return ret;
	h2->hblock.len = 0;
	h2->hblock_sid = hd->stream_id;
	h2->hblock_end_stream = hd->flags & FDI_FLAG_END_STREAM;
	return add_fragment(h2, block, len, hd->flags);
}

static int on_continuation(struct fdi_h2 *h2, const struct fdi_frame_hd *hd,
			   const uint8_t *payload)
{
	if (!h2->in_hblock || hd->stream_id != h2->hblock_sid)
		return FINDERD_EHTTP2;
	return add_fragment(h2, payload, hd->length, hd->flags);
}

/* ------------------------------------------------------------------------ */
/* Receiving: DATA and flow control                                         */
/* ------------------------------------------------------------------------ */

static int replenish(struct fdi_h2 *h2, uint32_t sid, int64_t *win)
{
	uint32_t inc;

	if (*win >= FDI_H2_LOCAL_WINDOW / 2)
		return 0;
	inc = (uint32_t)(FDI_H2_LOCAL_WINDOW - *win);
	*win = FDI_H2_LOCAL_WINDOW;
	return queue_u32(h2, FDI_WINDOW_UPDATE, sid, inc);
}

static int data_active(struct fdi_h2 *h2, const struct fdi_frame_hd *hd, const uint8_t *data,
		       size_t len)
{
	struct fdi_h2_stream *st = &h2->st;
	int ret;

	if (st->remote_closed)
		return FINDERD_EHTTP2; /* STREAM_CLOSED */
	if (hd->length > st->recv_win)
		return FINDERD_EHTTP2; /* FLOW_CONTROL_ERROR */
	st->recv_win -= hd->length;
	if (hd->flags & FDI_FLAG_END_STREAM)
		st->remote_closed = 1;
	if (!st->err && len) {
		ret = st->cb->on_data(st->ud, data, len);
		if (ret)
			return stream_fail(h2, ret, FDI_H2_CANCEL);
	}
	if (st->remote_closed || st->err)
		return 0;
	return replenish(h2, st->id, &st->recv_win);
}

static int on_data(struct fdi_h2 *h2, const struct fdi_frame_hd *hd, const uint8_t *payload)
{
	enum stream_class cls = classify(h2, hd->stream_id);
	const uint8_t *data;
	size_t len;
	int ret;

	if (cls == S_IDLE)
		return FINDERD_EHTTP2;
	/* The whole payload, padding included, counts against the windows. */
	if (hd->length > h2->conn_recv_win)
		return FINDERD_EHTTP2; /* FLOW_CONTROL_ERROR */
	h2->conn_recv_win -= hd->length;
	ret = fdi_frame_data_payload(hd, payload, &data, &len);
	if (ret)
		return ret;
	if (cls == S_ACTIVE) {
		ret = data_active(h2, hd, data, len);
		if (ret)
			return ret;
	}
	return replenish(h2, 0, &h2->conn_recv_win);
}

static int add_window(int64_t *win, uint32_t inc)
{
	*win += inc;
	return *win > FDI_WINDOW_MAX ? FINDERD_EHTTP2 : 0;
}

static int on_window_update(struct fdi_h2 *h2, const struct fdi_frame_hd *hd,
			    const uint8_t *payload)
{
	enum stream_class cls = classify(h2, hd->stream_id);
	uint32_t inc;
	int ret = fdi_frame_window_update(payload, &inc);

	if (hd->stream_id == 0)
		return ret ? ret : add_window(&h2->conn_send_win, inc);
	if (cls == S_IDLE)
		return FINDERD_EHTTP2;
	if (cls == S_CLOSED)
		return 0;
	if (ret || add_window(&h2->st.send_win, inc))
		return stream_fail(h2, FINDERD_EHTTP2, FDI_H2_FLOW_CONTROL_ERROR);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Receiving: control frames                                                */
/* ------------------------------------------------------------------------ */

static int apply_setting(struct fdi_h2 *h2, uint16_t id, uint32_t v)
{
	int ret = fdi_frame_setting_check(id, v);

	if (ret)
		return ret;
	switch (id) {
	case FDI_SETTINGS_INITIAL_WINDOW_SIZE:
		/* RFC 9113 6.9.2: adjust open streams by the difference. */
		if (h2->st.id) {
			h2->st.send_win += (int64_t)v - h2->peer_init_win;
			if (h2->st.send_win > FDI_WINDOW_MAX)
				return FINDERD_EHTTP2;
		}
		h2->peer_init_win = v;
		break;
	case FDI_SETTINGS_MAX_FRAME_SIZE:
		h2->peer_max_frame = v;
		break;
	}
	/* HEADER_TABLE_SIZE needs nothing: the client never indexes. */
	return 0;
}

static int on_settings(struct fdi_h2 *h2, const struct fdi_frame_hd *hd, const uint8_t *payload)
{
	size_t i;
	int ret;

	if (hd->flags & FDI_FLAG_ACK) {
		h2->settings_acked = 1;
		return 0;
	}
	for (i = 0; i < hd->length / 6; i++) {
		uint16_t id;
		uint32_t v;

		fdi_frame_settings_get(payload, i, &id, &v);
		ret = apply_setting(h2, id, v);
		if (ret)
			return ret;
	}
	h2->got_settings = 1;
	return queue_frame(h2, FDI_SETTINGS, FDI_FLAG_ACK, 0, NULL, 0);
}

static int on_rst_stream(struct fdi_h2 *h2, const struct fdi_frame_hd *hd,
			 const uint8_t *payload)
{
	struct fdi_h2_stream *st = &h2->st;
	enum stream_class cls = classify(h2, hd->stream_id);
	uint32_t code = fdi_frame_rst_stream(payload);

	if (cls == S_IDLE)
		return FINDERD_EHTTP2;
	if (cls == S_CLOSED)
		return 0;
	st->reset = 1;
	st->local_closed = 1;
	/* RFC 9113 8.1: NO_ERROR after a complete response only stops the
	 * request body. */
	if (!st->err && !(st->remote_closed && code == FDI_H2_NO_ERROR))
		st->err = FINDERD_ERESET;
	return 0;
}

static int on_goaway(struct fdi_h2 *h2, const uint8_t *payload)
{
	const struct fdi_h2_stream *st = &h2->st;

	fdi_frame_goaway(payload, &h2->goaway_last, &h2->goaway_code);
	h2->goaway = 1;
	/* The active stream survives a graceful GOAWAY that covers it. */
	if (st->id && !st->remote_closed && !st->reset &&
	    (st->id > h2->goaway_last || h2->goaway_code != FDI_H2_NO_ERROR))
		return FINDERD_EGOAWAY;
	return 0;
}

static int on_ping(struct fdi_h2 *h2, const struct fdi_frame_hd *hd, const uint8_t *payload)
{
	if (hd->flags & FDI_FLAG_ACK)
		return 0;
	return queue_frame(h2, FDI_PING, FDI_FLAG_ACK, 0, payload, 8);
}

static int on_frame(struct fdi_h2 *h2, const struct fdi_frame_hd *hd, const uint8_t *payload)
{
	int ret = fdi_frame_check(hd);

	if (ret)
		return ret;
	/* RFC 9113 6.10: nothing may interleave with a header block. */
	if (h2->in_hblock && hd->type != FDI_CONTINUATION)
		return FINDERD_EHTTP2;
	/* RFC 9113 3.4: the server's preface is a SETTINGS frame. */
	if (!h2->got_settings && (hd->type != FDI_SETTINGS || (hd->flags & FDI_FLAG_ACK)))
		return FINDERD_EHTTP2;
	switch (hd->type) {
	case FDI_DATA:
		return on_data(h2, hd, payload);
	case FDI_HEADERS:
		return on_headers(h2, hd, payload);
	case FDI_PRIORITY:
		return 0;
	case FDI_RST_STREAM:
		return on_rst_stream(h2, hd, payload);
	case FDI_SETTINGS:
		return on_settings(h2, hd, payload);
	case FDI_PUSH_PROMISE:
		return FINDERD_EHTTP2; /* push is disabled */
	case FDI_PING:
		return on_ping(h2, hd, payload);
	case FDI_GOAWAY:
		return on_goaway(h2, payload);
	case FDI_WINDOW_UPDATE:
		return on_window_update(h2, hd, payload);
	case FDI_CONTINUATION:
		return on_continuation(h2, hd, payload);
	}
	return 0; /* unknown frame types are ignored */
}

int fdi_h2_recv(struct fdi_h2 *h2, const uint8_t *in, size_t len, size_t *consumed)
{
	size_t off = 0;
	int ret = h2->err;

	while (!ret) {
		struct fdi_frame_hd hd;
		const uint8_t *payload = NULL;
		long n = fdi_frame_next(in + off, len - off, FDI_H2_LOCAL_MAX_FRAME, &hd, &payload);

		if (n == 0)
			break;
		if (n < 0) {
			ret = (int)n;
			break;
		}
		ret = on_frame(h2, &hd, payload);
		off += (size_t)n;
	}
	*consumed = off;
	h2->err = ret;
	return ret;
}
