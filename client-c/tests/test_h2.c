/*
 * test_h2.c - the HTTP/2 session without sockets: server bytes in, client
 * frames out. CONTINUATION, padding, PING, SETTINGS, flow control in both
 * directions, RST_STREAM, GOAWAY, stream and connection errors.
 */
#include "finderd.h"
#include "grpc.h"
#include "h2.h"
#include "test.h"
#include "wire.h"

struct sess {
	struct fdi_h2 h2;
	struct fdi_grpc_call call;
	struct fdi_buf body;
};

struct outf {
	struct fdi_frame_hd hd;
	const uint8_t *p;
};

/* Feed @in (freed) to the session. */
static int feed(struct sess *s, struct fdi_buf *in)
{
	size_t used = 0;
	int ret = fdi_h2_recv(&s->h2, in->data, in->len, &used);

	if (!ret)
		CHECK_INT(used, in->len);
	w_free(in);
	return ret;
}

/* Parse the pending output into frames (a preface is skipped). */
static size_t out_frames(struct sess *s, struct outf *f, size_t max)
{
	const uint8_t *p = fdi_h2_out_data(&s->h2);
	size_t len = fdi_h2_out_len(&s->h2), n = 0;

	if (len >= FDI_PREFACE_LEN && memcmp(p, FDI_PREFACE, FDI_PREFACE_LEN) == 0) {
		p += FDI_PREFACE_LEN;
		len -= FDI_PREFACE_LEN;
	}
	while (len >= FDI_FRAME_HDLEN && n < max) {
		fdi_frame_hd_unpack(&f[n].hd, p);
		f[n].p = p + FDI_FRAME_HDLEN;
		CHECK(f[n].hd.length <= len - FDI_FRAME_HDLEN);
		p += FDI_FRAME_HDLEN + f[n].hd.length;
		len -= FDI_FRAME_HDLEN + f[n].hd.length;
		n++;
	}
	CHECK_INT(len, 0);
	return n;
}

static void out_clear(struct sess *s)
{
	fdi_h2_out_consume(&s->h2, fdi_h2_out_len(&s->h2));
}

static void server_settings(struct sess *s, const uint16_t *ids, const uint32_t *vals, size_t n)
{
	struct fdi_buf in = { NULL, 0, 0 };

	w_settings(&in, ids, vals, n);
	CHECK_INT(feed(s, &in), 0);
}

static void sess_init(struct sess *s)
{
	memset(s, 0, sizeof(*s));
	CHECK_INT(fdi_h2_init(&s->h2, wire_alloc()), 0);
	server_settings(s, NULL, NULL, 0);
	out_clear(s);
}

static void sess_free(struct sess *s)
{
	fdi_grpc_call_free(&s->call);
	w_free(&s->body);
	fdi_h2_free(&s->h2);
}

static int submit(struct sess *s, size_t body_len)
{
	struct fdi_buf hb = { NULL, 0, 0 };
	int ret;

	fdi_grpc_call_free(&s->call);
	fdi_grpc_call_init(&s->call, wire_alloc(), 1 << 20);
	w_free(&s->body);
	while (s->body.len < body_len)
		w_byte(&s->body, (uint8_t)s->body.len);
	CHECK_INT(fdi_grpc_headers(&hb, wire_alloc(), "/finderd.v1.Finder/Stats", 50000), 0);
	ret = fdi_h2_submit(&s->h2, hb.data, hb.len, s->body.data, s->body.len, &fdi_grpc_cb,
			    &s->call);
	w_free(&hb);
	return ret;
}

/* A complete response on @sid: headers, the message "hello", trailers. */
static void w_response(struct fdi_buf *in, uint32_t sid, int status)
{
	struct fdi_buf blk = { NULL, 0, 0 }, msg = { NULL, 0, 0 }, data = { NULL, 0, 0 };

	w_resp_headers(&blk, 1);
	w_frame(in, FDI_HEADERS, FDI_FLAG_END_HEADERS, sid, blk.data, blk.len);
	w_free(&blk);
	w_put(&msg, "hello", 5);
	grpc_frame(&data, 0, &msg);
	w_frame(in, FDI_DATA, 0, sid, data.data, data.len);
	w_trailers(&blk, status, NULL, 1);
	w_frame(in, FDI_HEADERS, FDI_FLAG_END_HEADERS | FDI_FLAG_END_STREAM, sid, blk.data,
		blk.len);
	w_free(&blk);
	w_free(&msg);
	w_free(&data);
}

static void check_hello(struct sess *s)
{
	const uint8_t *m = NULL;
	size_t n = 0;

	CHECK(fdi_h2_stream_done(&s->h2));
	CHECK_INT(fdi_h2_stream_finish(&s->h2), 0);
	CHECK_INT(fdi_grpc_call_finish(&s->call, &m, &n), 0);
	CHECK_BYTES(m, n, "hello");
}

static void test_init_output(void)
{
	struct sess s;
	struct outf f[4];

	memset(&s, 0, sizeof(s));
	CHECK_INT(fdi_h2_init(&s.h2, wire_alloc()), 0);
	CHECK(memcmp(fdi_h2_out_data(&s.h2), FDI_PREFACE, FDI_PREFACE_LEN) == 0);
	CHECK_INT(out_frames(&s, f, 4), 2);
	CHECK(f[0].hd.type == FDI_SETTINGS && f[0].hd.length == 12 && f[0].hd.flags == 0);
	CHECK(f[0].p[1] == FDI_SETTINGS_ENABLE_PUSH && fdi_get_be32(f[0].p + 2) == 0);
	CHECK(f[0].p[7] == FDI_SETTINGS_INITIAL_WINDOW_SIZE &&
	      fdi_get_be32(f[0].p + 8) == FDI_H2_LOCAL_WINDOW);
	CHECK(f[1].hd.type == FDI_WINDOW_UPDATE && f[1].hd.stream_id == 0 &&
	      fdi_get_be32(f[1].p) == FDI_H2_LOCAL_WINDOW - 65535);
	out_clear(&s);
	/* The server's SETTINGS is acknowledged. */
	server_settings(&s, NULL, NULL, 0);
	CHECK(s.h2.got_settings);
	CHECK_INT(out_frames(&s, f, 4), 1);
	CHECK(f[0].hd.type == FDI_SETTINGS && f[0].hd.flags == FDI_FLAG_ACK);
	sess_free(&s);
}

static void test_preface_must_be_settings(void)
{
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 };

	memset(&s, 0, sizeof(s));
	CHECK_INT(fdi_h2_init(&s.h2, wire_alloc()), 0);
	w_frame(&in, FDI_PING, 0, 0, "12345678", 8);
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	/* The error is sticky. */
	w_settings(&in, NULL, NULL, 0);
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);

	memset(&s, 0, sizeof(s));
	CHECK_INT(fdi_h2_init(&s.h2, wire_alloc()), 0);
	w_frame(&in, FDI_SETTINGS, FDI_FLAG_ACK, 0, NULL, 0);
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);
}

struct fields {
	char text[1024];
	size_t len;
};

static int collect(void *ud, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
	struct fields *g = ud;
	int n = snprintf(g->text + g->len, sizeof(g->text) - g->len, "%.*s=%.*s\n", (int)nlen,
			 (const char *)name, (int)vlen, (const char *)value);

	g->len += (size_t)n;
	return g->len < sizeof(g->text) ? 0 : -1;
}

static void test_request_frames(void)
{
	struct sess s;
	struct outf f[8];
	size_t n;

	sess_init(&s);
	CHECK_INT(submit(&s, 100), 0);
	n = out_frames(&s, f, 8);
	CHECK_INT(n, 2);
	CHECK(f[0].hd.type == FDI_HEADERS && f[0].hd.stream_id == 1 &&
	      f[0].hd.flags == FDI_FLAG_END_HEADERS);
	CHECK(f[1].hd.type == FDI_DATA && f[1].hd.length == 100 &&
	      f[1].hd.flags == FDI_FLAG_END_STREAM);
	/* The request block is HPACK that our own decoder reads back. */
	{
		struct fdi_hpack h;
		struct fields got = { { 0 }, 0 };
		char want[512];

		snprintf(want, sizeof(want), ":method=POST\n:scheme=http\n"
			 ":path=/finderd.v1.Finder/Stats\n:authority=localhost\n"
			 "content-type=application/grpc\nte=trailers\n"
			 "grpc-timeout=50000u\nuser-agent=finderd-c/%s\n", finderd_version());
		CHECK_INT(fdi_hpack_init(&h, wire_alloc(), 4096), 0);
		CHECK_INT(fdi_hpack_decode(&h, f[0].p, f[0].hd.length, collect, &got), 0);
		CHECK_INT(fdi_hpack_table_len(&h), 0);
		CHECK(strcmp(got.text, want) == 0);
		fdi_hpack_free(&h);
	}
	sess_free(&s);
}

static void test_continuation_and_padding(void)
{
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 }, blk = { NULL, 0, 0 }, msg = { NULL, 0, 0 };
	struct fdi_buf data = { NULL, 0, 0 };
	uint8_t padded[64];
	size_t i;

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	/* Headers in a HEADERS and two CONTINUATION frames. */
	w_resp_headers(&blk, 1);
	w_frame(&in, FDI_HEADERS, 0, 1, blk.data, 2);
	w_frame(&in, FDI_CONTINUATION, 0, 1, blk.data + 2, 3);
	w_frame(&in, FDI_CONTINUATION, FDI_FLAG_END_HEADERS, 1, blk.data + 5, blk.len - 5);
	w_free(&blk);
	/* The message one byte per DATA frame, every other one padded. */
	w_put(&msg, "hello", 5);
	grpc_frame(&data, 0, &msg);
	for (i = 0; i < data.len; i++) {
		if (i % 2) {
			padded[0] = 3;
			padded[1] = data.data[i];
			memset(padded + 2, 0, 3);
			w_frame(&in, FDI_DATA, FDI_FLAG_PADDED, 1, padded, 5);
		} else {
			w_frame(&in, FDI_DATA, 0, 1, data.data + i, 1);
		}
	}
	/* Trailers with PRIORITY and PADDED, split in two. */
	w_trailers(&blk, 0, NULL, 1);
	padded[0] = 2;
	memset(padded + 1, 0, 5);
	memcpy(padded + 6, blk.data, 3);
	padded[9] = padded[10] = 0;
	w_frame(&in, FDI_HEADERS, FDI_FLAG_PADDED | FDI_FLAG_PRIORITY | FDI_FLAG_END_STREAM, 1,
		padded, 11);
	w_frame(&in, FDI_CONTINUATION, FDI_FLAG_END_HEADERS, 1, blk.data + 3, blk.len - 3);
	CHECK_INT(feed(&s, &in), 0);
	check_hello(&s);
	w_free(&blk);
	w_free(&msg);
	w_free(&data);
	sess_free(&s);
}

static void test_ping(void)
{
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 };
	struct outf f[4];

	sess_init(&s);
	w_frame(&in, FDI_PING, 0, 0, "pingpong", 8);
	w_frame(&in, FDI_PING, FDI_FLAG_ACK, 0, "ignoreme", 8);
	CHECK_INT(feed(&s, &in), 0);
	CHECK_INT(out_frames(&s, f, 4), 1);
	CHECK(f[0].hd.type == FDI_PING && f[0].hd.flags == FDI_FLAG_ACK &&
	      memcmp(f[0].p, "pingpong", 8) == 0);
	sess_free(&s);
}

static void test_header_block_interleaving(void)
{
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 };

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	w_frame(&in, FDI_HEADERS, 0, 1, "\x88", 1);
	w_frame(&in, FDI_PING, 0, 0, "pingpong", 8);
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	w_frame(&in, FDI_CONTINUATION, FDI_FLAG_END_HEADERS, 1, "\x88", 1);
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);
}

static void test_recv_window_updates(void)
{
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	uint8_t chunk[16384];
	struct outf f[8];
	size_t i, n, updates = 0;
	uint8_t prefix[5] = { 0, 0x00, 0x90, 0x00, 0x00 }; /* 9 MiB message */

	sess_init(&s);
	s.call.max_message = 0;
	CHECK_INT(submit(&s, 10), 0);
	s.call.max_message = 16 << 20;
	out_clear(&s);
	w_resp_headers(&blk, 0);
	w_frame(&in, FDI_HEADERS, FDI_FLAG_END_HEADERS, 1, blk.data, blk.len);
	w_frame(&in, FDI_DATA, 0, 1, prefix, 5);
	CHECK_INT(feed(&s, &in), 0);
	memset(chunk, 'x', sizeof(chunk));
	for (i = 0; i < (9u << 20) / sizeof(chunk); i++) {
		w_frame(&in, FDI_DATA, 0, 1, chunk, sizeof(chunk));
		CHECK_INT(feed(&s, &in), 0);
	}
	n = out_frames(&s, f, 8);
	for (i = 0; i < n; i++)
		if (f[i].hd.type == FDI_WINDOW_UPDATE)
			updates |= f[i].hd.stream_id ? 2 : 1;
	CHECK_INT(updates, 3); /* the connection's and the stream's */
	CHECK_INT(s.call.body.len, 5 + (9u << 20));
	w_free(&blk);
	sess_free(&s);
}

static size_t data_bytes(struct sess *s, int *end_stream)
{
	struct outf f[64];
	size_t i, n = out_frames(s, f, 64), total = 0;

	for (i = 0; i < n; i++) {
		if (f[i].hd.type != FDI_DATA)
			continue;
		CHECK(f[i].hd.length <= s->h2.peer_max_frame);
		total += f[i].hd.length;
		if (f[i].hd.flags & FDI_FLAG_END_STREAM)
			*end_stream = 1;
	}
	out_clear(s);
	return total;
}

static void test_send_flow_control(void)
{
	static const uint16_t win_id[] = { FDI_SETTINGS_INITIAL_WINDOW_SIZE };
	uint32_t win;
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 };
	int end = 0;

	sess_init(&s);
	win = 10;
	server_settings(&s, win_id, &win, 1);
	out_clear(&s);
	CHECK_INT(submit(&s, 100), 0);
	CHECK_INT(data_bytes(&s, &end), 10);
	CHECK(!end);
	w_frame_u32(&in, FDI_WINDOW_UPDATE, 1, 30);
	CHECK_INT(feed(&s, &in), 0);
	CHECK_INT(fdi_h2_pump(&s.h2), 0);
	CHECK_INT(data_bytes(&s, &end), 30);
	/* A larger INITIAL_WINDOW_SIZE opens the stream by the difference. */
	win = 100;
	server_settings(&s, win_id, &win, 1);
	CHECK_INT(fdi_h2_pump(&s.h2), 0);
	CHECK_INT(data_bytes(&s, &end), 60);
	CHECK(end);
	sess_free(&s);

	/* The connection window (65535) and frame size bound a large body. */
	sess_init(&s);
	win = 1 << 20;
	server_settings(&s, win_id, &win, 1);
	out_clear(&s);
	end = 0;
	CHECK_INT(submit(&s, 100000), 0);
	CHECK_INT(data_bytes(&s, &end), 65535);
	w_frame_u32(&in, FDI_WINDOW_UPDATE, 0, 100000);
	CHECK_INT(feed(&s, &in), 0);
	CHECK_INT(fdi_h2_pump(&s.h2), 0);
	CHECK_INT(data_bytes(&s, &end), 100000 - 65535);
	CHECK(end);
	/* Overflowing the connection window is a connection error. */
	w_frame_u32(&in, FDI_WINDOW_UPDATE, 0, 0x7fffffff);
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);
}

static void test_rst_stream(void)
{
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 };
	struct outf f[4];

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	out_clear(&s);
	w_frame_u32(&in, FDI_RST_STREAM, 1, FDI_H2_INTERNAL_ERROR);
	CHECK_INT(feed(&s, &in), 0);
	CHECK(fdi_h2_stream_done(&s.h2));
	CHECK_INT(fdi_h2_stream_finish(&s.h2), FINDERD_ERESET);
	CHECK_INT(out_frames(&s, f, 4), 0); /* no RST_STREAM back */
	/* Late frames of that stream are ignored; the next stream works. */
	w_response(&in, 1, 0);
	CHECK_INT(feed(&s, &in), 0);
	CHECK_INT(submit(&s, 10), 0);
	w_response(&in, 3, 0);
	w_frame_u32(&in, FDI_RST_STREAM, 3, FDI_H2_NO_ERROR); /* after a full response */
	CHECK_INT(feed(&s, &in), 0);
	check_hello(&s);
	/* RST_STREAM of an idle stream. */
	w_frame_u32(&in, FDI_RST_STREAM, 7, FDI_H2_CANCEL);
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);
}

static void test_goaway(void)
{
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 };
	uint8_t g[8] = { 0 };

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	w_frame(&in, FDI_GOAWAY, 0, 0, g, 8); /* last stream 0: ours is not processed */
	CHECK_INT(feed(&s, &in), FINDERD_EGOAWAY);
	sess_free(&s);

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	g[3] = 1; /* graceful: stream 1 completes */
	w_frame(&in, FDI_GOAWAY, 0, 0, g, 8);
	w_response(&in, 1, 0);
	CHECK_INT(feed(&s, &in), 0);
	check_hello(&s);
	CHECK_INT(submit(&s, 10), FINDERD_EGOAWAY);
	sess_free(&s);
}

static void test_connection_errors(void)
{
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 };
	uint8_t p[8] = { 0 };

	sess_init(&s);
	w_frame(&in, FDI_PUSH_PROMISE, FDI_FLAG_END_HEADERS, 1, p, 4);
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	w_frame(&in, 0xfa, 0xff, 9, "whatever", 8); /* unknown: ignored */
	w_frame(&in, FDI_PRIORITY, 0, 9, "\0\0\0\0\0", 5);
	CHECK_INT(feed(&s, &in), 0);
	w_frame(&in, FDI_DATA, 0, 3, "x", 1); /* idle stream */
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	w_frame(&in, FDI_HEADERS, FDI_FLAG_END_HEADERS, 2, "\x88", 1); /* even: push */
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);

	sess_init(&s);
	w_frame_u32(&in, FDI_WINDOW_UPDATE, 0, 0);
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	w_response(&in, 1, 0);
	w_frame(&in, FDI_DATA, 0, 1, "late", 4); /* after END_STREAM */
	CHECK_INT(feed(&s, &in), FINDERD_EHTTP2);
	sess_free(&s);

	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	w_frame(&in, FDI_HEADERS, FDI_FLAG_END_HEADERS, 1, "\xbe", 1); /* index 62 */
	CHECK_INT(feed(&s, &in), FINDERD_EHPACK);
	sess_free(&s);
}

static void test_stream_errors(void)
{
	struct sess s;
	struct fdi_buf in = { NULL, 0, 0 }, blk = { NULL, 0, 0 }, msg = { NULL, 0, 0 };
	struct fdi_buf data = { NULL, 0, 0 };
	struct outf f[4];

	/* An uppercase field name: the stream is reset, the connection lives. */
	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	out_clear(&s);
	w_byte(&blk, 0x88);
	w_lit(&blk, 6, 0x40, 0, "X-Bad", "1", 0); /* indexed: must stay in step */
	w_frame(&in, FDI_HEADERS, FDI_FLAG_END_HEADERS, 1, blk.data, blk.len);
	w_free(&blk);
	CHECK_INT(feed(&s, &in), 0);
	CHECK(fdi_h2_stream_done(&s.h2));
	CHECK_INT(fdi_h2_stream_finish(&s.h2), FINDERD_EHTTP2);
	CHECK_INT(out_frames(&s, f, 4), 1);
	CHECK(f[0].hd.type == FDI_RST_STREAM && fdi_get_be32(f[0].p) == FDI_H2_PROTOCOL_ERROR);
	/* The rest of stream 1 arrives and is ignored; stream 3 refers to the
	 * entry stream 1's block added (index 62). */
	w_response(&in, 1, 0);
	CHECK_INT(submit(&s, 10), 0);
	w_byte(&blk, 0x88);
	w_byte(&blk, 0xbe); /* content-type, added by stream 1's late headers */
	w_frame(&in, FDI_HEADERS, FDI_FLAG_END_HEADERS, 3, blk.data, blk.len);
	w_free(&blk);
	w_put(&msg, "hello", 5);
	grpc_frame(&data, 0, &msg);
	w_frame(&in, FDI_DATA, 0, 3, data.data, data.len);
	w_trailers(&blk, 0, NULL, 0);
	w_frame(&in, FDI_HEADERS, FDI_FLAG_END_HEADERS | FDI_FLAG_END_STREAM, 3, blk.data,
		blk.len);
	w_free(&blk);
	CHECK_INT(feed(&s, &in), 0);
	check_hello(&s);
	sess_free(&s);

	/* A compressed message. */
	sess_init(&s);
	CHECK_INT(submit(&s, 10), 0);
	out_clear(&s);
	w_resp_headers(&blk, 0);
	w_frame(&in, FDI_HEADERS, FDI_FLAG_END_HEADERS, 1, blk.data, blk.len);
	w_free(&blk);
	w_free(&data);
	grpc_frame(&data, 1, &msg);
	w_frame(&in, FDI_DATA, 0, 1, data.data, data.len);
	CHECK_INT(feed(&s, &in), 0);
	CHECK_INT(fdi_h2_stream_finish(&s.h2), FINDERD_ECOMPRESSED);
	CHECK_INT(out_frames(&s, f, 4), 1);
	CHECK(f[0].hd.type == FDI_RST_STREAM && fdi_get_be32(f[0].p) == FDI_H2_CANCEL);
	w_free(&data);
	w_free(&msg);
	sess_free(&s);
}

int main(void)
{
	test_init_output();
	test_preface_must_be_settings();
	test_request_frames();
	test_continuation_and_padding();
	test_ping();
	test_header_block_interleaving();
	test_recv_window_updates();
	test_send_flow_control();
	test_rst_stream();
	test_goaway();
	test_connection_errors();
	test_stream_errors();
	TEST_MAIN_END("test_h2");
}
