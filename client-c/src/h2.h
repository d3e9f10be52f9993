/*
 * h2.h - the client side of an HTTP/2 connection (RFC 9113) without I/O.
 *
 * Bytes received from the server go in through fdi_h2_recv(); bytes to send
 * accumulate in an output buffer the transport drains. One stream is open
 * at a time (unary calls); its response is delivered through callbacks.
 *
 * Errors returned by fdi_h2_recv() are connection errors: the session is
 * then unusable. Errors of the active stream (a callback rejected the
 * response, RST_STREAM from the server) end that stream only and are
 * returned by fdi_h2_stream_finish().
 */
#ifndef FINDERD_H2_H
#define FINDERD_H2_H

#include <stddef.h>
#include <stdint.h>

#include "frame.h"
#include "hpack.h"
#include "internal.h"

/** Our SETTINGS_INITIAL_WINDOW_SIZE and connection window. */
#define FDI_H2_LOCAL_WINDOW (16u << 20)
/** Our SETTINGS_MAX_FRAME_SIZE (the protocol default). */
#define FDI_H2_LOCAL_MAX_FRAME FDI_FRAME_SIZE_MIN
/** Largest header block (HEADERS + CONTINUATION) accepted. */
#define FDI_H2_MAX_HEADER_BLOCK (256u << 10)
/** DATA frames are queued while less than this much output is pending. */
#define FDI_H2_OUT_HIGH_WATER (256u << 10)

/**
 * Response callbacks. A non-zero return is a stream error: the stream is
 * reset (RST_STREAM CANCEL), no further callbacks are made, and the value
 * is what fdi_h2_stream_finish() returns.
 */
struct fdi_h2_cb {
	int (*on_header)(void *ud, const uint8_t *name, size_t nlen, const uint8_t *value,
			 size_t vlen);
	int (*on_headers_end)(void *ud, int end_stream);
	int (*on_data)(void *ud, const uint8_t *data, size_t len);
};

struct fdi_h2_stream {
	uint32_t id; /* 0: no active stream */
	int64_t send_win;
	int64_t recv_win;
	uint8_t local_closed;  /* END_STREAM or RST_STREAM sent */
	uint8_t remote_closed; /* END_STREAM received */
	uint8_t reset;         /* RST_STREAM sent or received */
	uint8_t regular_seen;  /* a regular field came in the current block */
	int err;               /* first stream error */
	const uint8_t *body;
	size_t body_len;
	size_t body_off;
	const struct fdi_h2_cb *cb;
	void *ud;
};

struct fdi_h2 {
	const struct fdi_alloc *alloc;
	struct fdi_hpack hpack;
	struct fdi_buf out; /* pending output, from out_off */
	size_t out_off;
	struct fdi_buf hblock; /* header block being reassembled */
	uint32_t hblock_sid;
	uint8_t hblock_end_stream;
	uint8_t in_hblock;    /* waiting for CONTINUATION */
	uint8_t blk_active;   /* the block being decoded is the active stream's */
	uint8_t got_settings; /* the server's first SETTINGS arrived */
	uint8_t settings_acked;
	uint8_t goaway;
	uint32_t goaway_last;
	uint32_t goaway_code;
	uint32_t peer_max_frame;
	uint32_t peer_init_win;
	int64_t conn_send_win;
	int64_t conn_recv_win;
	uint32_t next_sid;
	uint32_t last_sid; /* highest stream id opened */
	int err;           /* sticky connection error */
	struct fdi_h2_stream st;
};

/** Initialise and queue the preface, SETTINGS and the window update. */
int fdi_h2_init(struct fdi_h2 *h2, const struct fdi_alloc *a);
void fdi_h2_free(struct fdi_h2 *h2);

/**
 * fdi_h2_recv() - process every complete frame in @in.
 * @consumed: receives the bytes used; the rest is an incomplete frame.
 * Return: 0 or a connection error (FINDERD_EHTTP2, FINDERD_EHPACK,
 * FINDERD_EHUFFMAN, FINDERD_EGOAWAY, -ENOMEM), also kept in @h2->err.
 */
int fdi_h2_recv(struct fdi_h2 *h2, const uint8_t *in, size_t len, size_t *consumed);

/**
 * fdi_h2_submit() - open the next stream: queue HEADERS with @hblock (an
 * HPACK block) and as much of @body as the windows allow. @body must stay
 * valid until fdi_h2_stream_finish().
 * Return: 0, the connection error, FINDERD_EGOAWAY after a GOAWAY,
 * FINDERD_ECLOSED when stream ids are exhausted, -ENOMEM.
 */
int fdi_h2_submit(struct fdi_h2 *h2, const uint8_t *hblock, size_t hlen, const uint8_t *body,
		  size_t blen, const struct fdi_h2_cb *cb, void *ud);

/** Queue DATA of the active stream within the flow-control windows. */
int fdi_h2_pump(struct fdi_h2 *h2);

/** True when the active stream needs nothing more from the server. */
int fdi_h2_stream_done(const struct fdi_h2 *h2);

/**
 * fdi_h2_stream_finish() - detach the active stream; reset it when it is
 * still open. Return: 0 or the stream error.
 */
int fdi_h2_stream_finish(struct fdi_h2 *h2);

/** Queue GOAWAY (NO_ERROR). */
int fdi_h2_goaway(struct fdi_h2 *h2);

/** Pending output. */
static inline size_t fdi_h2_out_len(const struct fdi_h2 *h2)
{
	return h2->out.len - h2->out_off;
}

static inline const uint8_t *fdi_h2_out_data(const struct fdi_h2 *h2)
{
	return h2->out.data + h2->out_off;
}

/** Mark @n bytes of pending output as sent. */
void fdi_h2_out_consume(struct fdi_h2 *h2, size_t n);

#endif /* FINDERD_H2_H */
