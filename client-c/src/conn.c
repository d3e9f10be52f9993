/*
 * conn.c - connections and calls: the public wire API over sock, h2, grpc,
 * pb and reply.
 */
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "grpc.h"
#include "h2.h"
#include "pb.h"
#include "reply.h"
#include "sock.h"
#include "spin.h"
#include "trust.h"

/* Holds one complete frame (9 + 16384 bytes) and then some. */
#define RBUF_SIZE 65536u

/*
 * A blocking recv() bounded by SO_RCVTIMEO replaces ppoll() + recv() while
 * the deadline is at least this much further than the timeout: the kernel
 * rounds SO_RCVTIMEO up to a jiffy, 10 ms at HZ=100.
 */
#define RCVTIMEO_SLACK_US 10000
/* Shorter timeouts than this are not worth a blocking recv(). */
#define RCVTIMEO_MIN_US 1000

struct finderd_conn {
	struct fdi_opts opts;
	int fd;
	int dead;     /* the error that broke the connection; 0 while healthy */
	int send_err; /* a write failed: output is dropped, reading goes on */
	int sent;     /* some output went out (the preface, at least) */
	uint32_t rcv_timeout_us; /* the socket's SO_RCVTIMEO; 0: ppoll() only */
	struct fdi_spin spin;    /* whether waits for the server poll first */
	int64_t hs_deadline;     /* the server's SETTINGS are due by then; 0: unset */
	int last_status;
	struct fdi_buf last_message; /* NUL-terminated */
	struct fdi_h2 h2;
	size_t rlen;
	uint8_t rbuf[RBUF_SIZE];
};

static const char empty[] = "";

/* ------------------------------------------------------------------------ */
/* I/O loop                                                                 */
/* ------------------------------------------------------------------------ */

/* Write what the socket takes now. After a write error the output is
 * dropped and reading goes on: the server may have said why it closed (a
 * GOAWAY, a response) before the error is reported. */
static int conn_send(struct finderd_conn *c)
{
	while (fdi_h2_out_len(&c->h2)) {
		long n = 0;

		if (!c->send_err)
			n = fdi_sock_send(c->fd, fdi_h2_out_data(&c->h2), fdi_h2_out_len(&c->h2));
		if (n < 0)
			c->send_err = (int)n;
		else if (n > 0)
			c->sent = 1;
		if (c->send_err)
			n = (long)fdi_h2_out_len(&c->h2);
		if (n == 0)
			break;
		fdi_h2_out_consume(&c->h2, (size_t)n);
	}
	return 0;
}

/* Feed @n received bytes (or the receive error) to the session. */
static int conn_input(struct finderd_conn *c, long n)
{
	size_t used;
	int ret;

	if (n == -EAGAIN)
		return 0;
	if (n < 0)
		return (int)n;
	if (n == 0) /* end of stream: inside a frame, the frame is truncated */
		return c->rlen ? FINDERD_EHTTP2 : c->send_err ? c->send_err : -ECONNRESET;
	c->rlen += (size_t)n;
	ret = fdi_h2_recv(&c->h2, c->rbuf, c->rlen, &used);
	memmove(c->rbuf, c->rbuf + used, c->rlen - used);
	c->rlen -= used;
	return ret;
}

/*
 * Sleep until input comes or @deadline and feed it to the session. With
 * nothing to write and a deadline further than the socket's SO_RCVTIMEO
 * (plus a jiffy), one blocking recv() does it; otherwise ppoll() and then
 * recv().
 */
static int conn_sleep(struct finderd_conn *c, int64_t deadline)
{
	short events = POLLIN, rev = 0;
	int64_t left = deadline - fdi_now_us();
	size_t room = sizeof(c->rbuf) - c->rlen;
	int ret;

	if (left <= 0)
		return -ETIMEDOUT;
	if (!fdi_h2_out_len(&c->h2) && c->rcv_timeout_us &&
	    (int64_t)c->rcv_timeout_us + RCVTIMEO_SLACK_US <= left)
		return conn_input(c, fdi_sock_recv_wait(c->fd, c->rbuf + c->rlen, room));
	if (fdi_h2_out_len(&c->h2))
		events |= POLLOUT;
	ret = fdi_sock_wait(c->fd, events, deadline, &rev);
	if (!ret && (rev & POLLNVAL))
		ret = -EBADF;
	if (!ret && (rev & (POLLIN | POLLHUP | POLLERR)))
		ret = conn_input(c, fdi_sock_recv(c->fd, c->rbuf + c->rlen, room));
	return ret;
}

/*
 * Wait for input until @deadline and feed it to the session. A wait for
 * the server (nothing left to write) polls briefly before it sleeps when
 * that pays (see spin.h).
 */
static int conn_wait(struct finderd_conn *c, int64_t deadline)
{
	int64_t start = fdi_now_us();
	int for_server = !fdi_h2_out_len(&c->h2);
	int ret;

	if (for_server && start < deadline) {
		long got = fdi_spin_poll(&c->spin, c->fd, c->rbuf + c->rlen,
					 sizeof(c->rbuf) - c->rlen, deadline - start);

		if (got != -EAGAIN) {
			fdi_spin_note(&c->spin, fdi_now_us() - start);
			return conn_input(c, got);
		}
	}
	ret = conn_sleep(c, deadline);
	if (for_server && !ret)
		fdi_spin_note(&c->spin, fdi_now_us() - start);
	return ret;
}

typedef int (*done_fn)(const struct finderd_conn *c);

static int handshake_done(const struct finderd_conn *c)
{
	return c->h2.got_settings && !fdi_h2_out_len(&c->h2);
}

static int stream_done(const struct finderd_conn *c)
{
	return fdi_h2_stream_done(&c->h2);
}

/* Until the server's SETTINGS arrive, they bound the wait too. */
static int64_t wait_deadline(const struct finderd_conn *c, int64_t deadline)
{
	if (!c->h2.got_settings && c->hs_deadline && c->hs_deadline < deadline)
		return c->hs_deadline;
	return deadline;
}

/* Send and receive until @done or @deadline. Output is written before
 * waiting (the socket usually takes it at once: no poll() for it). */
static int conn_run(struct finderd_conn *c, int64_t deadline, done_fn done)
{
	for (;;) {
		int ret = fdi_h2_pump(&c->h2);

		if (!ret && fdi_h2_out_len(&c->h2))
			ret = conn_send(c);
		if (ret)
			return ret;
		if (done(c))
			return 0;
		ret = conn_wait(c, wait_deadline(c, deadline));
		if (ret)
			return ret;
	}
}

/* ------------------------------------------------------------------------ */
/* Connections                                                              */
/* ------------------------------------------------------------------------ */

static void conn_free(struct finderd_conn *c)
{
	struct fdi_alloc a = c->opts.alloc;

	if (c->fd >= 0)
		close(c->fd);
	fdi_h2_free(&c->h2);
	fdi_buf_free(&c->last_message, &a);
	fdi_free(&a, c);
}

/*
 * Let calls wait with one blocking recv() (see conn_wait()). SO_RCVTIMEO is
 * (call timeout - slack) / 2: a call waits that way during the first half
 * of its time (in practice the whole call: replies take microseconds), and
 * a timeout plus the kernel's rounding still ends before the deadline, which
 * ppoll() then meets exactly. Without it (call timeouts under 12 ms, or a
 * failure here) every wait is ppoll() and a non-blocking recv().
 */
static void conn_tune(struct finderd_conn *c)
{
	uint32_t call = c->opts.call_timeout_us, rcv;

	if (call < RCVTIMEO_SLACK_US + 2 * RCVTIMEO_MIN_US)
		return;
	rcv = (call - RCVTIMEO_SLACK_US) / 2;
	if (fdi_sock_set_recv_timeout(c->fd, rcv) == 0)
		c->rcv_timeout_us = rcv;
}

/* Load @opts into @o, its socket path resolved into @path when unset. */
static int load_opts(const struct finderd_options *opts, struct fdi_opts *o, char *path,
		     size_t size)
{
	int ret = fdi_opts_load(o, opts);

	if (!ret && !o->socket_path) {
		ret = finderd_socket_path(path, size);
		o->socket_path = path;
	}
	return ret;
}

int finderd_socket_peer(const struct finderd_options *opts, struct finderd_peer *peer)
{
	struct fdi_opts o;
	char path[4096];
	int fd, ret;

	if (!peer)
		return -EINVAL;
	ret = load_opts(opts, &o, path, sizeof(path));
	if (!ret)
		ret = fdi_sock_connect(o.socket_path, fdi_now_us() + o.connect_timeout_us, &fd);
	if (ret)
		return ret;
	ret = fdi_sock_peer(fd, peer);
	close(fd);
	return ret;
}

int finderd_connect(const struct finderd_options *opts, struct finderd_conn **connp)
{
	struct finderd_conn *c;
	struct fdi_opts o;
	char path[4096];
	int64_t deadline = fdi_now_us();
	int ret;

	if (!connp)
		return -EINVAL;
	ret = load_opts(opts, &o, path, sizeof(path));
	if (ret)
		return ret;
	deadline += o.connect_timeout_us;
	c = fdi_calloc(&o.alloc, 1, sizeof(*c) - sizeof(c->rbuf) + RBUF_SIZE);
	if (!c)
		return -ENOMEM;
	c->opts = o;
	c->opts.socket_path = NULL; /* the caller's; not kept */
	c->opts.daemon_user = NULL;
	c->fd = -1;
	c->last_status = -1;
	ret = fdi_h2_init(&c->h2, &c->opts.alloc);
	if (ret) {
		fdi_free(&o.alloc, c);
		return ret;
	}
	ret = fdi_sock_connect(o.socket_path, deadline, &c->fd);
	if (!ret)
		ret = fdi_check_listener(c->fd, o.daemon_user);
	if (!ret) {
		conn_tune(c);
		fdi_spin_init(&c->spin);
	}
	/*
	 * The view before the HTTP/2 preface (the daemon reads it first), and
	 * only to a listener that passed the trust check: the descriptor gives
	 * whoever listens this process's view of its files.
	 */
	if (!ret && !(o.flags & FINDERD_CONNECT_NO_VIEW))
		ret = fdi_sock_send_view(c->fd);
	if (!ret && !(o.flags & FINDERD_CONNECT_LAZY)) {
		c->hs_deadline = deadline;
		ret = conn_run(c, deadline, handshake_done);
		if (!ret)
			ret = c->send_err;
	}
	if (ret) {
		conn_free(c);
		return ret;
	}
	*connp = c;
	return 0;
}

void finderd_close(struct finderd_conn *c)
{
	if (!c)
		return;
	if (c->fd >= 0 && c->sent && !c->dead && !c->send_err && !c->h2.goaway &&
	    fdi_h2_goaway(&c->h2) == 0)
		conn_send(c);
	conn_free(c);
}

void fdi_conn_abandon(struct finderd_conn *c)
{
	if (c)
		conn_free(c);
}

void fdi_conn_set_mount_namespace(struct finderd_conn *c, uint64_t mount_namespace)
{
	c->opts.mount_namespace = mount_namespace;
}

int finderd_last_status(const struct finderd_conn *conn, const char **message)
{
	if (message)
		*message = conn->last_message.len ? (const char *)conn->last_message.data : empty;
	return conn->last_status;
}

/* ------------------------------------------------------------------------ */
/* Calls                                                                    */
/* ------------------------------------------------------------------------ */

static void set_status(struct finderd_conn *c, const struct fdi_grpc_call *call)
{
	struct fdi_buf *m = &c->last_message;

	m->len = 0;
	c->last_status = call->grpc_status;
	if (call->grpc_status < 0 || !call->message.len)
		return;
	if (fdi_buf_reserve(m, &c->opts.alloc, call->message.len + 1))
		return;
	memcpy(m->data, call->message.data, call->message.len);
	m->len = fdi_grpc_percent_decode(m->data, call->message.len);
	m->data[m->len] = '\0';
}

/* An empty gRPC message prefix, to be completed by finish_request(). */
static int start_request(struct fdi_buf *b, const struct fdi_alloc *a)
{
	static const uint8_t prefix[FDI_GRPC_PREFIX];

	return fdi_buf_append(b, a, prefix, sizeof(prefix));
}

static void finish_request(struct fdi_buf *b)
{
	fdi_put_be32(b->data + 1, (uint32_t)(b->len - FDI_GRPC_PREFIX));
}

/* One unary call: @req holds the framed request; on success @call->body
 * holds the response and *@msg, *@len the message inside it. */
static int conn_call(struct finderd_conn *c, const char *path, uint32_t timeout_us,
		     const struct fdi_buf *req, struct fdi_grpc_call *call, const uint8_t **msg,
		     size_t *len)
{
	const struct fdi_alloc *a = &c->opts.alloc;
	struct fdi_buf hb = { NULL, 0, 0 };
	int64_t deadline = fdi_now_us() + timeout_us;
	int ret, sret;

	if (c->dead || c->send_err)
		return FINDERD_ECLOSED;
	c->last_status = -1;
	c->last_message.len = 0;
	ret = fdi_grpc_headers(&hb, a, path, timeout_us);
	if (!ret)
		ret = fdi_h2_submit(&c->h2, hb.data, hb.len, req->data, req->len, &fdi_grpc_cb, call);
	fdi_buf_free(&hb, a);
	if (!ret && !c->hs_deadline) /* a lazy connection's first call */
		c->hs_deadline = fdi_now_us() + c->opts.connect_timeout_us;
	if (!ret)
		ret = conn_run(c, deadline, stream_done);
	sret = fdi_h2_stream_finish(&c->h2);
	if (ret) {
		c->dead = ret;
		return ret;
	}
	/* Window updates, ACKs, a reset: sent now if the socket takes them. */
	conn_send(c);
	set_status(c, call);
	return sret ? sret : fdi_grpc_call_finish(call, msg, len);
}

/* Frame @req, call @path within @timeout_us, and leave the response in @call. */
typedef int (*encode_fn)(struct fdi_buf *b, const struct fdi_alloc *a, const void *arg);

static int call_method_within(struct finderd_conn *c, const char *path, uint32_t timeout_us,
			      encode_fn enc, const void *arg, struct fdi_grpc_call *call,
			      const uint8_t **msg, size_t *len)
{
	const struct fdi_alloc *a = &c->opts.alloc;
	struct fdi_buf req = { NULL, 0, 0 };
	int ret;

	fdi_grpc_call_init(call, a, c->opts.max_message_bytes);
	ret = start_request(&req, a);
	if (!ret)
		ret = enc(&req, a, arg);
	if (!ret) {
		finish_request(&req);
		ret = conn_call(c, path, timeout_us, &req, call, msg, len);
	}
	fdi_buf_free(&req, a);
	return ret;
}

/* call_method_within() the call deadline (every call but a Snapshot). */
static int call_method(struct finderd_conn *c, const char *path, encode_fn enc, const void *arg,
		       struct fdi_grpc_call *call, const uint8_t **msg, size_t *len)
{
	return call_method_within(c, path, c->opts.call_timeout_us, enc, arg, call, msg, len);
}

/* The first @n directories answer @paths, in order. */
static int check_paths(const struct finderd_reply *r, const struct finderd_str *paths, size_t n)
{
	size_t i;

	if (finderd_reply_dir_count(r) < n)
		return FINDERD_EBADREPLY;
	for (i = 0; i < n; i++) {
		const struct finderd_dir *d = finderd_reply_dir(r, i);

		if (fdi_bytes_cmp(d->path.data, d->path.len, paths[i].data, paths[i].len))
			return FINDERD_EBADREPLY;
	}
	return 0;
}

/* Turn the response of @call into a reply that owns its buffer. */
static int make_reply(struct finderd_conn *c, struct fdi_grpc_call *call, const uint8_t *msg,
		      size_t len, enum fdi_reply_kind kind, struct finderd_reply **replyp)
{
	int ret = fdi_reply_decode(&c->opts.alloc, call->body.data, msg, len, kind, replyp);

	if (!ret)
		memset(&call->body, 0, sizeof(call->body)); /* now the reply's */
	return ret;
}

/* Hand @r to the caller on success; *@replyp is NULL on failure. */
static int give_reply(struct finderd_reply *r, int ret, struct finderd_reply **replyp)
{
	if (ret) {
		finderd_reply_free(r);
		r = NULL;
	}
	*replyp = r;
	return ret;
}

/* A request and the connection's mount namespace, for the encoders. */
struct request_args {
	const void *req;
	uint64_t mount_namespace;
};

static int enc_snapshot(struct fdi_buf *b, const struct fdi_alloc *a, const void *arg)
{
	const struct request_args *r = arg;

	return fdi_pb_encode_snapshot(b, a, r->req, r->mount_namespace);
}

int finderd_snapshot(struct finderd_conn *conn, const struct finderd_snapshot_request *req,
		     struct finderd_reply **replyp)
{
	struct finderd_reply *r = NULL;
	struct request_args args;
	struct fdi_grpc_call call;
	const uint8_t *msg;
	size_t len;
	int ret;

	if (!conn || !req || !replyp)
		return -EINVAL;
	args.req = req;
	args.mount_namespace = conn->opts.mount_namespace;
	ret = call_method_within(conn, "/finderd.v1.Finder/Snapshot", conn->opts.snapshot_timeout_us,
				 enc_snapshot, &args, &call, &msg, &len);
	if (!ret)
		ret = make_reply(conn, &call, msg, len, FDI_REPLY_SNAPSHOT, &r);
	if (!ret)
		ret = check_paths(r, req->sys_path, req->n_sys_path);
	fdi_grpc_call_free(&call);
	return give_reply(r, ret, replyp);
}

static int enc_lookup(struct fdi_buf *b, const struct fdi_alloc *a, const void *arg)
{
	return fdi_pb_encode_lookup(b, a, arg);
}

int finderd_lookup(struct finderd_conn *conn, const struct finderd_str *paths,
		   const uint64_t *known_generations, uint64_t known_epoch, size_t n,
		   struct finderd_reply **replyp)
{
	struct fdi_lookup_args l = { paths, known_generations, known_epoch, n, 0 };
	struct finderd_reply *r = NULL;
	struct fdi_grpc_call call;
	const uint8_t *msg;
	size_t len;
	int ret;

	if (!conn || !replyp || (n && !paths))
		return -EINVAL;
	l.mount_namespace = conn->opts.mount_namespace;
	ret = call_method(conn, "/finderd.v1.Finder/Lookup", enc_lookup, &l, &call, &msg, &len);
	if (!ret)
		ret = make_reply(conn, &call, msg, len, FDI_REPLY_LOOKUP, &r);
	if (!ret)
		ret = finderd_reply_dir_count(r) == n ? check_paths(r, paths, n) : FINDERD_EBADREPLY;
	fdi_grpc_call_free(&call);
	return give_reply(r, ret, replyp);
}

static int enc_empty(struct fdi_buf *b, const struct fdi_alloc *a, const void *arg)
{
	(void)b;
	(void)a;
	(void)arg;
	return 0;
}

int finderd_stats(struct finderd_conn *conn, struct finderd_stats *stats)
{
	struct fdi_grpc_call call;
	const uint8_t *msg;
	size_t len;
	int ret;

	if (!conn || !stats)
		return -EINVAL;
	ret = call_method(conn, "/finderd.v1.Finder/Stats", enc_empty, NULL, &call, &msg, &len);
	if (!ret)
		ret = fdi_pb_decode_stats(msg, len, stats);
	fdi_grpc_call_free(&call);
	return ret;
}

static int enc_report(struct fdi_buf *b, const struct fdi_alloc *a, const void *arg)
{
	const struct request_args *r = arg;

	return fdi_pb_encode_report(b, a, r->req, r->mount_namespace);
}

int finderd_report(struct finderd_conn *conn, const struct finderd_report_request *req)
{
	struct request_args args;
	struct fdi_grpc_call call;
	const uint8_t *msg;
	size_t len;
	int ret;

	if (!conn || !req)
		return -EINVAL;
	args.req = req;
	args.mount_namespace = conn->opts.mount_namespace;
	ret = call_method(conn, "/finderd.v1.Finder/Report", enc_report, &args, &call, &msg, &len);
	fdi_grpc_call_free(&call);
	return ret;
}

static int enc_health(struct fdi_buf *b, const struct fdi_alloc *a, const void *arg)
{
	return fdi_pb_encode_health(b, a, arg);
}

int finderd_health(struct finderd_conn *conn, const char *service, int *status)
{
	struct fdi_grpc_call call;
	const uint8_t *msg;
	size_t len;
	int ret;

	if (!conn || !status)
		return -EINVAL;
	ret = call_method(conn, "/grpc.health.v1.Health/Check", enc_health, service, &call, &msg,
			  &len);
	if (!ret)
		ret = fdi_pb_decode_health(msg, len, status);
	fdi_grpc_call_free(&call);
	return ret;
}
