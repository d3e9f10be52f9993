/*
 * test_hostile.c - a small HTTP/2 server on a temporary Unix socket that
 * misbehaves in one way per case; the client must return the exact error,
 * never read out of bounds and never wait past its deadline. A few cases
 * are well-formed but awkward (every frame split, flow control in both
 * directions) and must succeed.
 *
 * Each case forks a server process that accepts one connection. Every case
 * runs twice: with finderd_connect() waiting for the server's SETTINGS, and
 * with FINDERD_CONNECT_LAZY, where the first call carries the handshake and
 * must report what connect would have.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "finderd.h"
#include "sock.h"
#include "failalloc.h"
#include "test.h"
#include "wire.h"

/* FINDERD_CONNECT_LAZY for the second run of every case: the handshake's
 * errors then come from the first call. */
static uint32_t connect_flags;

static char sock_dir[] = "/tmp/finderd-hostile-XXXXXX";
static char sock_path[128];
static int listen_fd = -1;

/* ------------------------------------------------------------ server side */

static int rd_exact(int fd, void *p, size_t n)
{
	uint8_t *b = p;

	while (n) {
		ssize_t r = read(fd, b, n);

		if (r <= 0)
			return -1;
		b += r;
		n -= (size_t)r;
	}
	return 0;
}

static void wr_all(int fd, const void *p, size_t n)
{
	const uint8_t *b = p;

	while (n) {
		ssize_t r = send(fd, b, n, MSG_NOSIGNAL);

		if (r <= 0)
			return;
		b += r;
		n -= (size_t)r;
	}
}

static void send_buf(int fd, struct fdi_buf *b)
{
	wr_all(fd, b->data, b->len);
	w_free(b);
}

struct frame {
	struct fdi_frame_hd hd;
	uint8_t p[1 << 16];
};

static int rd_frame(int fd, struct frame *f)
{
	uint8_t hd[9];

	if (rd_exact(fd, hd, 9))
		return -1;
	fdi_frame_hd_unpack(&f->hd, hd);
	if (f->hd.length > sizeof(f->p))
		return -1;
	return rd_exact(fd, f->p, f->hd.length);
}

/* The client's preface; then our SETTINGS with @n values. */
static int handshake(int fd, const uint16_t *ids, const uint32_t *vals, size_t n)
{
	char pre[FDI_PREFACE_LEN];
	struct fdi_buf b = { NULL, 0, 0 };

	if (rd_exact(fd, pre, sizeof(pre)) || memcmp(pre, FDI_PREFACE, FDI_PREFACE_LEN))
		return -1;
	w_settings(&b, ids, vals, n);
	send_buf(fd, &b);
	return 0;
}

/* Read until a request ends; with @credit, return every DATA byte as window
 * (the case announced a small window). Returns the stream id, 0 on EOF. */
static uint32_t read_request(int fd, int credit, size_t *data_len, uint32_t max_frame)
{
	static struct frame f;

	if (data_len)
		*data_len = 0;
	while (rd_frame(fd, &f) == 0) {
		if (f.hd.type == FDI_DATA) {
			if (f.hd.length > max_frame)
				return 0;
			if (data_len)
				*data_len += f.hd.length;
			if (credit && f.hd.length) {
				struct fdi_buf b = { NULL, 0, 0 };

				w_frame_u32(&b, FDI_WINDOW_UPDATE, 0, f.hd.length);
				w_frame_u32(&b, FDI_WINDOW_UPDATE, f.hd.stream_id, f.hd.length);
				send_buf(fd, &b);
			}
		}
		if ((f.hd.type == FDI_DATA || f.hd.type == FDI_HEADERS) &&
		    (f.hd.flags & FDI_FLAG_END_STREAM))
			return f.hd.stream_id;
	}
	return 0;
}

/* Half-close and wait for the client to go away: a clean end of stream. */
static void finish(int fd)
{
	char buf[4096];

	shutdown(fd, SHUT_WR);
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	close(fd);
}

static void headers_frame(struct fdi_buf *out, uint32_t sid, uint8_t flags,
			  const struct fdi_buf *blk)
{
	w_frame(out, FDI_HEADERS, flags | FDI_FLAG_END_HEADERS, sid, blk->data, blk->len);
}

/* A whole response: headers, @msg (if any) as one gRPC message in DATA
 * frames of at most 16384 bytes, trailers with @status and @text. */
static void respond(int fd, uint32_t sid, const struct fdi_buf *msg, int status,
		    const char *text)
{
	struct fdi_buf out = { NULL, 0, 0 }, blk = { NULL, 0, 0 }, data = { NULL, 0, 0 };
	size_t off;

	w_resp_headers(&blk, 1);
	headers_frame(&out, sid, 0, &blk);
	w_free(&blk);
	if (msg) {
		grpc_frame(&data, 0, msg);
		for (off = 0; off < data.len; off += 16384)
			w_frame(&out, FDI_DATA, 0, sid, data.data + off,
				FDI_MIN((size_t)16384, data.len - off));
		w_free(&data);
	}
	w_trailers(&blk, status, text, 1);
	headers_frame(&out, sid, FDI_FLAG_END_STREAM, &blk);
	w_free(&blk);
	send_buf(fd, &out);
}

static void health_msg(struct fdi_buf *m, int status)
{
	pb_u(m, 1, (uint64_t)status);
}

/* ------------------------------------------------------------ harness */

typedef void (*server_fn)(int fd);

/* The view message every connection starts with (FDVIEW\0\1 and the
 * client's root in SCM_RIGHTS), taken as the daemon takes it: one recvmsg
 * of 8 bytes. 0 when it came whole, with a directory. */
static int take_view(int fd)
{
	static const char magic[8] = { 'F', 'D', 'V', 'I', 'E', 'W', 0, 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} control;
	char got[8];
	struct iovec iov = { got, sizeof(got) };
	struct msghdr msg;
	struct cmsghdr *cmsg;
	struct stat st;
	int root = -1, ok;

	memset(&msg, 0, sizeof(msg));
	msg.msg_iov = &iov;
	msg.msg_iovlen = 1;
	msg.msg_control = control.buf;
	msg.msg_controllen = sizeof(control.buf);
	if (recvmsg(fd, &msg, 0) != (ssize_t)sizeof(got) || memcmp(got, magic, sizeof(got)))
		return -1;
	cmsg = CMSG_FIRSTHDR(&msg);
	if (cmsg && cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS)
		memcpy(&root, CMSG_DATA(cmsg), sizeof(int));
	ok = root >= 0 && fstat(root, &st) == 0 && S_ISDIR(st.st_mode);
	if (root >= 0)
		close(root);
	return ok ? 0 : -1;
}

static pid_t serve(server_fn fn)
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = accept(listen_fd, NULL, NULL);

		if (fd >= 0 && take_view(fd) == 0) {
			fn(fd);
			finish(fd);
		}
		_exit(0);
	}
	return pid;
}

/* Stop the server. A connection the client made and closed unused (a lazy
 * client does after an allocation failure) may still wait in the backlog:
 * drop it, or the next case's server would accept it instead of its own
 * client's. */
static void reap(pid_t pid)
{
	struct pollfd p = { listen_fd, POLLIN, 0 };
	int st;

	kill(pid, SIGTERM);
	waitpid(pid, &st, 0);
	while (poll(&p, 1, 0) == 1 && (p.revents & POLLIN)) {
		int fd = accept(listen_fd, NULL, NULL);

		if (fd < 0)
			break;
		close(fd);
	}
}

static int connect_opts(struct finderd_conn **c, uint32_t connect_us, uint32_t call_us,
			uint32_t max_msg)
{
	struct finderd_options o;

	finderd_options_init(&o);
	o.socket_path = sock_path;
	o.connect_timeout_us = connect_us ? connect_us : 2000000;
	o.call_timeout_us = call_us ? call_us : 2000000;
	o.max_message_bytes = max_msg;
	o.flags = connect_flags;
	*c = NULL;
	return finderd_connect(&o, c);
}

/* Connect, run one health call, return its result. */
static int one_health(server_fn fn, uint32_t call_us, uint32_t max_msg, int *second)
{
	struct finderd_conn *c;
	pid_t pid = serve(fn);
	int status = -1, ret = connect_opts(&c, 0, call_us, max_msg);

	CHECK_INT(ret, 0);
	if (!ret) {
		ret = finderd_health(c, NULL, &status);
		if (second)
			*second = finderd_health(c, "finderd.v1.Finder", &status);
		finderd_close(c);
	}
	reap(pid);
	return ret;
}

/* The handshake's outcome: finderd_connect()'s, or with a lazy connection,
 * the first call's. */
static int connect_only(server_fn fn, uint32_t connect_us)
{
	struct finderd_conn *c;
	pid_t pid = serve(fn);
	int status, ret = connect_opts(&c, connect_us, 0, 0);

	if (!ret && connect_flags & FINDERD_CONNECT_LAZY) {
		ret = finderd_health(c, NULL, &status);
		/* The connection is dead after a handshake error. */
		CHECK(ret == 0 || finderd_health(c, NULL, &status) == FINDERD_ECLOSED);
	}
	finderd_close(c);
	reap(pid);
	return ret;
}

/* ------------------------------------------------------------ cases */

/* Two calls; the second response refers to the dynamic table entries the
 * first one added (Huffman-coded, incremental indexing, as tonic does). */
static void srv_health_twice(int fd)
{
	struct fdi_buf m = { NULL, 0, 0 }, out = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	struct fdi_buf data = { NULL, 0, 0 };
	uint32_t sid;

	if (handshake(fd, NULL, NULL, 0) || !(sid = read_request(fd, 0, NULL, 16384)))
		return;
	health_msg(&m, FINDERD_HEALTH_SERVING);
	respond(fd, sid, &m, 0, NULL);
	if (!(sid = read_request(fd, 0, NULL, 16384)))
		return;
	w_byte(&blk, 0x88);
	w_byte(&blk, 0xbe); /* content-type: application/grpc, added by call 1 */
	headers_frame(&out, sid, 0, &blk);
	w_free(&blk);
	grpc_frame(&data, 0, &m);
	w_frame(&out, FDI_DATA, 0, sid, data.data, data.len);
	w_trailers(&blk, 0, NULL, 0);
	headers_frame(&out, sid, FDI_FLAG_END_STREAM, &blk);
	send_buf(fd, &out);
	w_free(&blk);
	w_free(&data);
	w_free(&m);
}

static void case_ok(void)
{
	int second = 1;

	CHECK_INT(one_health(srv_health_twice, 0, 0, &second), 0);
	CHECK_INT(second, 0);
}

/* A snapshot reply where every frame is split as small as it gets. */
static void snapshot_msg(struct fdi_buf *m)
{
	struct fdi_buf d = { NULL, 0, 0 };

	pb_u(m, 1, 1);
	pb_str(m, 2, "finderd-test");
	pb_str(&d, 1, "/a");
	pb_u(&d, 2, FINDERD_DIR_SERVED);
	pb_entry(&d, "__init__.py", 0, 0100644, 1000000007, 12);
	pb_entry(&d, "pkg", 1, 040755, 5, 4096);
	pb_msg(m, 4, &d);
	w_free(&d);
	pb_str(&d, 1, "/b");
	pb_u(&d, 2, FINDERD_DIR_ABSENT);
	pb_u(&d, 4, ENOENT);
	pb_msg(m, 4, &d);
	w_free(&d);
}

static void srv_split(int fd)
{
	struct fdi_buf m = { NULL, 0, 0 }, out = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	struct fdi_buf data = { NULL, 0, 0 };
	uint8_t pad[300];
	size_t i, n;
	uint32_t sid;

	if (handshake(fd, NULL, NULL, 0) || !(sid = read_request(fd, 0, NULL, 16384)))
		return;
	w_resp_headers(&blk, 1);
	w_frame(&out, FDI_HEADERS, FDI_FLAG_PRIORITY, sid, "\0\0\0\0\0", 5);
	for (i = 0; i < blk.len; i++)
		w_frame(&out, FDI_CONTINUATION, i + 1 == blk.len ? FDI_FLAG_END_HEADERS : 0, sid,
			blk.data + i, 1);
	w_free(&blk);
	snapshot_msg(&m);
	grpc_frame(&data, 0, &m);
	for (i = 0; i < data.len; i += n) {
		n = FDI_MIN(data.len - i, (size_t)(i % 7 + 1));
		if (i % 3 == 0) {
			pad[0] = 200;
			memcpy(pad + 1, data.data + i, n);
			memset(pad + 1 + n, 0, 200);
			w_frame(&out, FDI_DATA, FDI_FLAG_PADDED, sid, pad, 1 + n + 200);
		} else {
			w_frame(&out, FDI_DATA, 0, sid, data.data + i, n);
		}
		if (i % 5 == 0)
			w_frame(&out, FDI_PING, 0, 0, "abcdefgh", 8);
		if (i % 11 == 0)
			w_frame(&out, 0xee, 0x3, sid, "unknown", 7);
	}
	w_trailers(&blk, 0, NULL, 1);
	w_frame(&out, FDI_HEADERS, FDI_FLAG_END_STREAM, sid, blk.data, 1);
	for (i = 1; i < blk.len; i++)
		w_frame(&out, FDI_CONTINUATION, i + 1 == blk.len ? FDI_FLAG_END_HEADERS : 0, sid,
			blk.data + i, 1);
	send_buf(fd, &out);
	w_free(&blk);
	w_free(&data);
	w_free(&m);
}

static void case_split(void)
{
	static const struct finderd_str sp[] = { { "/a", 2 }, { "/b", 2 } };
	struct finderd_snapshot_request req = { NULL, sp, 2, { NULL, 0 }, 0, 0 };
	struct finderd_reply *r = NULL;
	const struct finderd_entry *e;
	struct finderd_conn *c;
	pid_t pid = serve(srv_split);
	size_t n;

	CHECK_INT(connect_opts(&c, 0, 0, 0), 0);
	CHECK_INT(finderd_snapshot(c, &req, &r), 0);
	if (r) {
		struct finderd_str v = finderd_reply_daemon_version(r);

		CHECK_BYTES(v.data, v.len, "finderd-test");
		CHECK_INT(finderd_reply_dir_count(r), 2);
		CHECK_INT(finderd_dir_entries(r, 0, &e, &n), 0);
		CHECK_INT(n, 2);
		CHECK_BYTES(e[1].name.data, e[1].name.len, "pkg");
		CHECK(e[0].mtime_ns == 1000000007 && e[0].size == 12);
		CHECK(finderd_reply_dir(r, 1)->error == ENOENT);
		finderd_reply_free(r);
	}
	CHECK_INT(finderd_last_status(c, NULL), 0);
	finderd_close(c);
	reap(pid);
}

/* -- malformed handshakes */

static void srv_http1(int fd)
{
	static const char resp[] = "HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n";
	char pre[FDI_PREFACE_LEN];

	rd_exact(fd, pre, sizeof(pre));
	wr_all(fd, resp, sizeof(resp) - 1);
}

static void srv_settings_len5(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 };
	char pre[FDI_PREFACE_LEN];

	rd_exact(fd, pre, sizeof(pre));
	w_frame(&b, FDI_SETTINGS, 0, 0, "\0\x04\0\0\0", 5);
	send_buf(fd, &b);
}

static void srv_push(int fd)
{
	static const uint16_t id = FDI_SETTINGS_ENABLE_PUSH;
	static const uint32_t v = 1;

	handshake(fd, &id, &v, 1);
}

static void srv_small_frames(int fd)
{
	static const uint16_t id = FDI_SETTINGS_MAX_FRAME_SIZE;
	static const uint32_t v = 1000;

	handshake(fd, &id, &v, 1);
}

static void srv_ping_first(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 };
	char pre[FDI_PREFACE_LEN];

	rd_exact(fd, pre, sizeof(pre));
	w_frame(&b, FDI_PING, 0, 0, "abcdefgh", 8);
	send_buf(fd, &b);
}

static void srv_silent(int fd)
{
	char buf[256];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

static void srv_close_at_once(int fd)
{
	(void)fd;
}

static void case_handshakes(void)
{
	int64_t t0;
	int ret;

	CHECK_INT(connect_only(srv_http1, 0), FINDERD_EHTTP2);
	CHECK_INT(connect_only(srv_settings_len5, 0), FINDERD_EHTTP2);
	CHECK_INT(connect_only(srv_push, 0), FINDERD_EHTTP2);
	CHECK_INT(connect_only(srv_small_frames, 0), FINDERD_EHTTP2);
	CHECK_INT(connect_only(srv_ping_first, 0), FINDERD_EHTTP2);
	CHECK_INT(connect_only(srv_close_at_once, 0), -ECONNRESET);
	t0 = fdi_now_us();
	ret = connect_only(srv_silent, 100000);
	CHECK_INT(ret, -ETIMEDOUT);
	/* Bounded: the deadline, not the server, ends the wait. */
	CHECK(fdi_now_us() - t0 >= 100000 && fdi_now_us() - t0 < 2000000);
}

/* -- malformed responses: one call each, then the connection */

static uint32_t setup(int fd)
{
	if (handshake(fd, NULL, NULL, 0))
		return 0;
	return read_request(fd, 0, NULL, 16384);
}

static void srv_truncated(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	w_resp_headers(&blk, 1);
	headers_frame(&b, sid, 0, &blk);
	wr_all(fd, b.data, b.len - 3); /* the block's last bytes never come */
	w_free(&b);
	w_free(&blk);
}

static void srv_oversized(int fd)
{
	uint8_t hd[9];
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	fdi_frame_hd_pack(hd, 16385, FDI_DATA, 0, sid);
	wr_all(fd, hd, 9);
}

static void srv_eof(int fd)
{
	setup(fd);
}

static void srv_never(int fd)
{
	if (setup(fd))
		srv_silent(fd);
}

static void bad_headers(int fd, const uint8_t *blk, size_t n)
{
	struct fdi_buf b = { NULL, 0, 0 };
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	w_frame(&b, FDI_HEADERS, FDI_FLAG_END_HEADERS, sid, blk, n);
	send_buf(fd, &b);
}

static void srv_bad_huffman(int fd)
{
	/* :status 200, content-type Huffman-coded as one zero byte: '0' and
	 * three bits of zero padding. */
	bad_headers(fd, (const uint8_t *)"\x88\x0f\x10\x81\x00", 5);
}

static void srv_bad_index(int fd)
{
	bad_headers(fd, (const uint8_t *)"\x88\xbe", 2);
}

static void srv_data_idle(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 };

	if (!setup(fd))
		return;
	w_frame(&b, FDI_DATA, 0, 3, "x", 1);
	send_buf(fd, &b);
}

static void srv_goaway(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 };

	if (!setup(fd))
		return;
	w_frame(&b, FDI_GOAWAY, 0, 0, "\0\0\0\0\0\0\0\0", 8);
	send_buf(fd, &b);
}

static void check_dead_after(server_fn fn, int want, uint32_t call_us)
{
	int second = 0;

	CHECK_INT(one_health(fn, call_us, 0, &second), want);
	CHECK_INT(second, FINDERD_ECLOSED);
}

static void case_connection_errors(void)
{
	int64_t t0;

	check_dead_after(srv_truncated, FINDERD_EHTTP2, 0);
	check_dead_after(srv_oversized, FINDERD_EHTTP2, 0);
	check_dead_after(srv_eof, -ECONNRESET, 0);
	check_dead_after(srv_bad_huffman, FINDERD_EHUFFMAN, 0);
	check_dead_after(srv_bad_index, FINDERD_EHPACK, 0);
	check_dead_after(srv_data_idle, FINDERD_EHTTP2, 0);
	check_dead_after(srv_goaway, FINDERD_EGOAWAY, 0);
	t0 = fdi_now_us();
	check_dead_after(srv_never, -ETIMEDOUT, 100000);
	CHECK(fdi_now_us() - t0 >= 100000 && fdi_now_us() - t0 < 2000000);
}

/* -- stream errors: the call fails, the connection serves the next one */

static void then_ok(int fd)
{
	struct fdi_buf m = { NULL, 0, 0 };
	uint32_t sid = read_request(fd, 0, NULL, 16384);

	if (!sid)
		return;
	health_msg(&m, FINDERD_HEALTH_SERVING);
	respond(fd, sid, &m, 0, NULL);
	w_free(&m);
}

static void srv_compressed(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 }, blk = { NULL, 0, 0 }, m = { NULL, 0, 0 };
	struct fdi_buf data = { NULL, 0, 0 };
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	w_resp_headers(&blk, 1);
	headers_frame(&b, sid, 0, &blk);
	health_msg(&m, 1);
	grpc_frame(&data, 1, &m);
	w_frame(&b, FDI_DATA, 0, sid, data.data, data.len);
	send_buf(fd, &b);
	w_free(&blk);
	w_free(&m);
	w_free(&data);
	then_ok(fd);
}

static void srv_too_big(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	uint8_t prefix[5] = { 0, 0, 0, 0x03, 0xe8 }; /* 1000 bytes */
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	w_resp_headers(&blk, 1);
	headers_frame(&b, sid, 0, &blk);
	w_frame(&b, FDI_DATA, 0, sid, prefix, 5);
	send_buf(fd, &b);
	w_free(&blk);
	then_ok(fd);
}

static void srv_rst(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 };
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	w_frame_u32(&b, FDI_RST_STREAM, sid, FDI_H2_INTERNAL_ERROR);
	send_buf(fd, &b);
	then_ok(fd);
}

static void srv_grpc_error(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	/* Trailers-only. */
	w_resp_headers(&blk, 1);
	w_trailers(&blk, 3, "bad%20path%3A%20relative%ZZ", 1);
	headers_frame(&b, sid, FDI_FLAG_END_STREAM, &blk);
	send_buf(fd, &b);
	w_free(&blk);
	then_ok(fd);
}

static void srv_no_status(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	w_resp_headers(&blk, 1);
	headers_frame(&b, sid, 0, &blk);
	w_free(&blk);
	w_lit(&blk, 4, 0, 0, "grpc-message", "where is my status", 0);
	headers_frame(&b, sid, FDI_FLAG_END_STREAM, &blk);
	send_buf(fd, &b);
	w_free(&blk);
	then_ok(fd);
}

static void srv_html(int fd)
{
	struct fdi_buf b = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	w_byte(&blk, 0x88);
	w_lit(&blk, 4, 0, 31, NULL, "text/html", 1);
	headers_frame(&b, sid, 0, &blk);
	send_buf(fd, &b);
	w_free(&blk);
	then_ok(fd);
}

static void srv_version2(int fd)
{
	struct fdi_buf m = { NULL, 0, 0 };
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	pb_u(&m, 1, 2);
	respond(fd, sid, &m, 0, NULL);
	w_free(&m);
	then_ok(fd);
}

static void srv_lookup_short(int fd)
{
	struct fdi_buf m = { NULL, 0, 0 }, d = { NULL, 0, 0 };
	uint32_t sid = setup(fd);

	if (!sid)
		return;
	pb_u(&m, 1, 1);
	pb_str(&d, 1, "/a");
	pb_msg(&m, 3, &d);
	respond(fd, sid, &m, 0, NULL);
	w_free(&m);
	w_free(&d);
	then_ok(fd);
}

/* One failing call of @fn's server, then a health call that must work. */
static void stream_case(server_fn fn, int want, int use_lookup, uint32_t max_msg)
{
	static const struct finderd_str paths[] = { { "/a", 2 }, { "/b", 2 } };
	struct finderd_reply *r = NULL;
	struct finderd_conn *c;
	pid_t pid = serve(fn);
	int status = -1, ret;

	CHECK_INT(connect_opts(&c, 0, 0, max_msg), 0);
	if (use_lookup) {
		ret = finderd_lookup(c, paths, NULL, 0, 2, &r);
		CHECK(r == NULL || ret == 0);
	} else {
		ret = finderd_health(c, NULL, &status);
	}
	CHECK_INT(ret, want);
	CHECK_INT(finderd_health(c, NULL, &status), 0);
	CHECK_INT(status, FINDERD_HEALTH_SERVING);
	finderd_close(c);
	reap(pid);
}

static void case_stream_errors(void)
{
	stream_case(srv_compressed, FINDERD_ECOMPRESSED, 0, 0);
	stream_case(srv_too_big, FINDERD_ETOOBIG, 0, 100);
	stream_case(srv_rst, FINDERD_ERESET, 0, 0);
	stream_case(srv_no_status, FINDERD_EBADREPLY, 0, 0);
	stream_case(srv_html, FINDERD_EBADREPLY, 0, 0);
	stream_case(srv_version2, FINDERD_EVERSION, 1, 0);
	stream_case(srv_lookup_short, FINDERD_EBADREPLY, 1, 0);
}

static void case_grpc_status(void)
{
	struct finderd_conn *c;
	pid_t pid = serve(srv_grpc_error);
	const char *msg = NULL;
	int status = -1;

	CHECK_INT(connect_opts(&c, 0, 0, 0), 0);
	CHECK_INT(finderd_last_status(c, &msg), -1);
	CHECK_INT(finderd_health(c, NULL, &status), FINDERD_EGRPC);
	CHECK_INT(finderd_last_status(c, &msg), 3);
	CHECK(msg && strcmp(msg, "bad path: relative%ZZ") == 0);
	CHECK_INT(finderd_health(c, NULL, &status), 0);
	CHECK_INT(finderd_last_status(c, &msg), 0);
	CHECK(msg && strcmp(msg, "") == 0);
	finderd_close(c);
	reap(pid);
}

/* -- deadlines: a Snapshot's is its own */

/* hpack emit: keeps the value of grpc-timeout in @ud (a char[32]). */
static int keep_timeout(void *ud, const uint8_t *name, size_t nlen, const uint8_t *value,
			size_t vlen)
{
	if (nlen == 12 && memcmp(name, "grpc-timeout", 12) == 0 && vlen < 32) {
		memcpy(ud, value, vlen);
		((char *)ud)[vlen] = 0;
	}
	return 0;
}

/* Answers two calls with UNKNOWN, each with the grpc-timeout it asked for
 * as the message. */
static void srv_echo_timeout(int fd)
{
	static struct frame f;
	struct fdi_hpack h;
	char timeout[32] = "none";
	int calls = 0;

	if (handshake(fd, NULL, NULL, 0) || fdi_hpack_init(&h, wire_alloc(), 4096))
		return;
	while (calls < 2 && rd_frame(fd, &f) == 0) {
		struct fdi_buf b = { NULL, 0, 0 }, blk = { NULL, 0, 0 };

		if (f.hd.type == FDI_HEADERS &&
		    fdi_hpack_decode(&h, f.p, f.hd.length, keep_timeout, timeout))
			break;
		if ((f.hd.type != FDI_DATA && f.hd.type != FDI_HEADERS) ||
		    !(f.hd.flags & FDI_FLAG_END_STREAM))
			continue;
		w_resp_headers(&blk, 1);
		w_trailers(&blk, 2, timeout, 0);
		headers_frame(&b, f.hd.stream_id, FDI_FLAG_END_STREAM, &blk);
		send_buf(fd, &b);
		w_free(&blk);
		calls++;
	}
	fdi_hpack_free(&h);
	finish(fd);
}

static void case_snapshot_deadline(void)
{
	static const struct finderd_str sp[] = { { "/a", 2 } };
	struct finderd_snapshot_request req = { NULL, sp, 1, { NULL, 0 }, 0, 0 };
	struct finderd_reply *r = NULL;
	struct finderd_conn *c;
	const char *msg = NULL;
	int status = -1;
	pid_t pid = serve(srv_echo_timeout);

	/* Twice the call deadline by default (FINDERD_SNAPSHOT_TIMEOUT_CALLS). */
	CHECK_INT(connect_opts(&c, 0, 30000, 0), 0);
	CHECK_INT(finderd_snapshot(c, &req, &r), FINDERD_EGRPC);
	CHECK_INT(finderd_last_status(c, &msg), 2);
	CHECK(msg && strcmp(msg, "60000u") == 0);
	CHECK_INT(finderd_health(c, NULL, &status), FINDERD_EGRPC);
	CHECK(finderd_last_status(c, &msg) == 2 && msg && strcmp(msg, "30000u") == 0);
	finderd_close(c);
	reap(pid);
}

/* -- flow control, both directions */

#define BIG_ENTRIES 100000
#define NAME_LEN 200

static void big_reply(struct fdi_buf *m)
{
	struct fdi_buf d = { NULL, 0, 0 };
	char name[NAME_LEN + 1];
	int i;

	pb_u(m, 1, 1);
	pb_str(&d, 1, "/big");
	pb_u(&d, 2, 1);
	for (i = 0; i < BIG_ENTRIES; i++) {
		snprintf(name, sizeof(name), "%0*d", NAME_LEN, i);
		pb_entry(&d, name, 0, 0100644, i, (uint64_t)i);
	}
	pb_msg(m, 4, &d);
	w_free(&d);
}

/* Send @data on @sid within the client's windows (16 MiB each, as it
 * announced), reading its WINDOW_UPDATEs when they run out. */
static int send_flow(int fd, uint32_t sid, const struct fdi_buf *data, size_t *updates)
{
	static struct frame f;
	int64_t conn = 16 << 20, stream = 16 << 20;
	size_t off = 0;

	while (off < data->len) {
		size_t n = FDI_MIN((size_t)16384, data->len - off);
		struct fdi_buf b = { NULL, 0, 0 };

		while ((int64_t)n > conn || (int64_t)n > stream) {
			if (rd_frame(fd, &f))
				return -1;
			if (f.hd.type != FDI_WINDOW_UPDATE)
				continue;
			(*updates)++;
			if (f.hd.stream_id == 0)
				conn += fdi_get_be32(f.p);
			else if (f.hd.stream_id == sid)
				stream += fdi_get_be32(f.p);
		}
		w_frame(&b, FDI_DATA, 0, sid, data->data + off, n);
		send_buf(fd, &b);
		conn -= (int64_t)n;
		stream -= (int64_t)n;
		off += n;
	}
	return 0;
}

static void srv_flow(int fd)
{
	static const uint16_t ids[] = { FDI_SETTINGS_INITIAL_WINDOW_SIZE };
	static const uint32_t vals[] = { 1000 };
	struct fdi_buf m = { NULL, 0, 0 }, out = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	struct fdi_buf data = { NULL, 0, 0 }, d = { NULL, 0, 0 };
	size_t got = 0, updates = 0;
	uint32_t sid;
	char path[128];
	int i;

	/* 1. A large request through a 1000-byte stream window. */
	if (handshake(fd, ids, vals, 1) || !(sid = read_request(fd, 1, &got, 16384)))
		return;
	pb_u(&m, 1, 1);
	for (i = 0; i < 3000; i++) {
		snprintf(path, sizeof(path), "/p/%0100d", i);
		w_free(&d);
		pb_str(&d, 1, path);
		pb_u(&d, 2, FINDERD_DIR_NOT_SERVED);
		pb_msg(&m, 3, &d);
	}
	/* The request's size comes back in the grpc-message of the reply. */
	snprintf(path, sizeof(path), "%zu", got);
	respond(fd, sid, &m, 0, path);
	w_free(&m);
	w_free(&d);
	/* 2. A 22 MB reply: more than the client's 16 MiB windows. */
	if (!(sid = read_request(fd, 1, NULL, 16384)))
		return;
	w_resp_headers(&blk, 1);
	headers_frame(&out, sid, 0, &blk);
	send_buf(fd, &out);
	w_free(&blk);
	big_reply(&m);
	grpc_frame(&data, 0, &m);
	if (send_flow(fd, sid, &data, &updates) == 0) {
		snprintf(path, sizeof(path), "%zu", updates);
		w_trailers(&blk, 0, path, 0);
		headers_frame(&out, sid, FDI_FLAG_END_STREAM, &blk);
		send_buf(fd, &out);
	}
	w_free(&blk);
	w_free(&m);
	w_free(&data);
}

static void case_flow_control(void)
{
	pid_t pid = serve(srv_flow);
	struct finderd_str *paths = calloc(3000, sizeof(*paths));
	char *names = malloc(3000 * 128);
	struct finderd_reply *r = NULL;
	const struct finderd_entry *e;
	struct finderd_conn *c;
	const char *msg;
	size_t i, n;

	for (i = 0; i < 3000; i++) {
		paths[i].data = names + i * 128;
		paths[i].len = (size_t)snprintf(names + i * 128, 128, "/p/%0100zu", i);
	}
	CHECK_INT(connect_opts(&c, 0, 20000000, 0), 0);
	CHECK_INT(finderd_lookup(c, paths, NULL, 0, 3000, &r), 0);
	CHECK_INT(finderd_last_status(c, &msg), 0);
	/* 3000 paths of 103 bytes, each with a 2-byte tag and length: the
	 * whole request went through the small window. */
	CHECK_INT(atol(msg), 5 + 3000 * (2 + 103) + 2);
	if (r)
		CHECK_INT(finderd_reply_dir_count(r), 3000);
	finderd_reply_free(r);
	r = NULL;
	{
		struct finderd_snapshot_request req = { NULL, NULL, 0, { NULL, 0 }, 0, 0 };

		CHECK_INT(finderd_snapshot(c, &req, &r), 0);
	}
	CHECK_INT(finderd_last_status(c, &msg), 0);
	CHECK(atol(msg) > 0); /* the client sent WINDOW_UPDATEs */
	if (r) {
		CHECK_INT(finderd_dir_entries(r, 0, &e, &n), 0);
		CHECK_INT(n, BIG_ENTRIES);
		CHECK(n == BIG_ENTRIES && e[BIG_ENTRIES - 1].size == BIG_ENTRIES - 1);
		finderd_reply_free(r);
	}
	finderd_close(c);
	reap(pid);
	free(paths);
	free(names);
}

/* -- allocation failures: the Nth allocation fails, for every N */


static int snapshot_with(struct counting *k)
{
	static const struct finderd_str sp[] = { { "/a", 2 }, { "/b", 2 } };
	struct finderd_snapshot_request req = { NULL, sp, 2, { NULL, 0 }, 0, 0 };
	struct finderd_options o;
	struct finderd_reply *r = NULL;
	struct finderd_conn *c = NULL;
	const struct finderd_entry *e;
	pid_t pid = serve(srv_split);
	size_t n;
	int ret;

	finderd_options_init(&o);
	o.socket_path = sock_path;
	o.connect_timeout_us = o.call_timeout_us = 2000000;
	o.alloc = fail_alloc;
	o.realloc = fail_realloc;
	o.free = fail_free;
	o.alloc_ctx = k;
	o.flags = connect_flags;
	ret = finderd_connect(&o, &c);
	if (!ret)
		ret = finderd_snapshot(c, &req, &r);
	if (!ret)
		ret = finderd_dir_entries(r, 0, &e, &n);
	finderd_reply_free(r);
	finderd_close(c);
	reap(pid);
	return ret;
}

static void case_alloc_failures(void)
{
	struct counting k;
	long n;

	for (n = 1; n < 1000; n++) {
		int ret;

		memset(&k, 0, sizeof(k));
		k.fail_at = n;
		ret = snapshot_with(&k);
		CHECK(ret == 0 || ret == -ENOMEM);
		CHECK_INT(k.allocs, k.frees);
		if (k.calls < n) {
			CHECK_INT(ret, 0); /* no failure was injected */
			break;
		}
	}
	CHECK(n > 5 && n < 1000);
}

int main(void)
{
	struct sockaddr_un sa;

	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(sock_dir))
		return 2;
	snprintf(sock_path, sizeof(sock_path), "%s/s.sock", sock_dir);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, sock_path);
	listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(listen_fd, 16))
		return 2;
	for (connect_flags = 0; connect_flags <= FINDERD_CONNECT_LAZY;
	     connect_flags += FINDERD_CONNECT_LAZY) {
		case_ok();
		case_split();
		case_handshakes();
		case_connection_errors();
		case_stream_errors();
		case_grpc_status();
		case_snapshot_deadline();
		case_flow_control();
		case_alloc_failures();
	}
	close(listen_fd);
	unlink(sock_path);
	rmdir(sock_dir);
	TEST_MAIN_END("test_hostile");
}
