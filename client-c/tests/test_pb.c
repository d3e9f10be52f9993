/*
 * test_pb.c - protobuf: varints, wire types, bounds, unknown fields, field
 * order, the reply decoders (eager directories, lazy sorted entries), and
 * the request encoders.
 */
#include <errno.h>

#include "finderd.h"
#include "pb.h"
#include "reply.h"
#include "test.h"
#include "wire.h"

static int varint_hex(const char *hex, uint64_t *v)
{
	unsigned char buf[32];
	size_t n = test_unhex(hex, buf);
	const uint8_t *p = buf;

	return fdi_pb_varint(&p, buf + n, v);
}

static void test_varints(void)
{
	uint64_t v;

	CHECK_INT(varint_hex("00", &v), 0);
	CHECK(v == 0);
	CHECK_INT(varint_hex("ac02", &v), 0);
	CHECK(v == 300);
	CHECK_INT(varint_hex("ffffffffffffffffff01", &v), 0);
	CHECK(v == UINT64_MAX);
	CHECK_INT(varint_hex("80808080808080808001", &v), 0);
	CHECK(v == 1ull << 63);
	CHECK_INT(varint_hex("ffffffffffffffffff02", &v), FINDERD_EPROTOBUF); /* bit 64 */
	CHECK_INT(varint_hex("ffffffffffffffffff81", &v), FINDERD_EPROTOBUF); /* 11 bytes */
	CHECK_INT(varint_hex("8080808080808080808000", &v), FINDERD_EPROTOBUF);
	CHECK_INT(varint_hex("ff", &v), FINDERD_EPROTOBUF);
	CHECK_INT(varint_hex("", &v), FINDERD_EPROTOBUF);
}

static int next_hex(const char *hex, struct fdi_pb_field *f)
{
	static unsigned char buf[64];
	size_t n = test_unhex(hex, buf);
	const uint8_t *p = buf;

	return fdi_pb_next(&p, buf + n, f);
}

static void test_fields(void)
{
	struct fdi_pb_field f;

	CHECK_INT(next_hex("", &f), 0);
	CHECK_INT(next_hex("0801", &f), 1);
	CHECK(f.num == 1 && f.wt == 0 && f.v == 1);
	CHECK_INT(next_hex("0a03616263", &f), 1);
	CHECK(f.num == 1 && f.wt == 2 && f.len == 3 && memcmp(f.p, "abc", 3) == 0);
	CHECK_INT(next_hex("0d01020304", &f), 1);
	CHECK(f.wt == 5 && f.v == 0x04030201);
	CHECK_INT(next_hex("090102030405060708", &f), 1);
	CHECK(f.wt == 1 && f.v == 0x0807060504030201ull);
	CHECK_INT(next_hex("0a0461", &f), FINDERD_EPROTOBUF);    /* length past end */
	CHECK_INT(next_hex("0affffffff0f61", &f), FINDERD_EPROTOBUF);
	CHECK_INT(next_hex("0d0102", &f), FINDERD_EPROTOBUF);    /* fixed32 cut */
	CHECK_INT(next_hex("09010203", &f), FINDERD_EPROTOBUF);  /* fixed64 cut */
	CHECK_INT(next_hex("0b", &f), FINDERD_EPROTOBUF);        /* start group */
	CHECK_INT(next_hex("0c", &f), FINDERD_EPROTOBUF);        /* end group */
	CHECK_INT(next_hex("0e", &f), FINDERD_EPROTOBUF);        /* wire type 6 */
	CHECK_INT(next_hex("0f", &f), FINDERD_EPROTOBUF);        /* wire type 7 */
	CHECK_INT(next_hex("0001", &f), FINDERD_EPROTOBUF);      /* field 0 */
	CHECK_INT(next_hex("08", &f), FINDERD_EPROTOBUF);        /* value missing */
	CHECK_INT(next_hex("f8ffffff0f01", &f), 1);              /* 2^29 - 1 */
	CHECK_INT(next_hex("8080808010 01", &f), FINDERD_EPROTOBUF); /* 2^29 */
}

/* ------------------------------------------------------------ replies */

static void dir_header(struct fdi_buf *d, const char *path, uint32_t status, uint64_t gen)
{
	pb_str(d, 1, path);
	pb_u(d, 2, status);
	pb_u(d, 5, gen);
	pb_u(d, 6, 7);
	pb_u(d, 7, 040755);
	pb_u(d, 8, (uint64_t)-5); /* mtime before the epoch */
	pb_u(d, 9, 4096);
}

static int decode(const struct fdi_buf *m, enum fdi_reply_kind kind, struct finderd_reply **r)
{
	return fdi_reply_decode(wire_alloc(), NULL, m->data, m->len, kind, r);
}

static void test_snapshot_reply(void)
{
	struct fdi_buf m = { NULL, 0, 0 }, d1 = { NULL, 0, 0 }, d2 = { NULL, 0, 0 };
	struct fdi_buf g = { NULL, 0, 0 };
	struct finderd_reply *r = NULL;
	const struct finderd_entry *e;
	const struct finderd_dir *d;
	size_t n;

	/* Directory 1: entries interleaved with header fields, out of order. */
	pb_entry(&d1, "a.py", 0, 0100644, 1700000000123456789ll, 10);
	dir_header(&d1, "/lib", 1, 42);
	pb_entry(&d1, "b", 1, 040755, 1, 0);
	pb_u(&d1, 99, 5);                      /* unknown varint */
	pb_bytes(&d1, 98, "zz", 2);            /* unknown bytes */
	w_put(&d1, "\x95\x06\x01\x02\x03\x04", 6); /* unknown fixed32, field 98 */
	w_put(&d1, "\x91\x06" "12345678", 10);      /* unknown fixed64, field 98 */
	pb_entry(&d1, "c\xff", 3, 0, 0, 0);
	/* Directory 2: absent, with an error. */
	pb_str(&d2, 1, "/nope");
	pb_u(&d2, 2, 3);
	pb_u(&d2, 4, ENOENT);
	pb_str(&d2, 3, "gone");
	/* Generation file. */
	pb_str(&g, 1, "/run/finderd/finderd.sock.gen");
	pb_u(&g, 2, 0x1234);
	pb_u(&g, 3, 1024);
	pb_u(&g, 4, 200000000);
	/* Reply, fields out of order, directories not contiguous. */
	pb_msg(&m, 4, &d1);
	pb_str(&m, 2, "finderd 0.1.0");
	pb_u(&m, 1, 1);
	pb_u(&m, 77, 1);
	pb_msg(&m, 3, &g);
	pb_msg(&m, 4, &d2);
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), 0);
	CHECK_INT(finderd_reply_dir_count(r), 2);
	{
		struct finderd_str v = finderd_reply_daemon_version(r);

		CHECK_BYTES(v.data, v.len, "finderd 0.1.0");
	}
	CHECK_BYTES(finderd_reply_genfile(r)->path.data, finderd_reply_genfile(r)->path.len,
		    "/run/finderd/finderd.sock.gen");
	CHECK(finderd_reply_genfile(r)->epoch == 0x1234 && finderd_reply_genfile(r)->slots == 1024 &&
	      finderd_reply_genfile(r)->lease_ns == 200000000);
	d = finderd_reply_dir(r, 0);
	CHECK_BYTES(d->path.data, d->path.len, "/lib");
	CHECK(d->status == FINDERD_DIR_SERVED && d->generation == 42 && d->slot == 7 &&
	      d->mode == 040755 && d->mtime_ns == -5 && d->size == 4096);
	CHECK_INT(finderd_dir_entries(r, 0, &e, &n), 0);
	CHECK_INT(n, 3);
	CHECK_BYTES(e[0].name.data, e[0].name.len, "a.py");
	CHECK(e[0].kind == 0 && e[0].mode == 0100644 && e[0].mtime_ns == 1700000000123456789ll &&
	      e[0].size == 10);
	CHECK_BYTES(e[1].name.data, e[1].name.len, "b");
	CHECK(e[1].kind == FINDERD_ENTRY_DIR);
	CHECK(e[2].name.len == 2 && (unsigned char)e[2].name.data[1] == 0xff);
	/* Second call: the same array. */
	{
		const struct finderd_entry *e2;
		size_t n2;

		CHECK_INT(finderd_dir_entries(r, 0, &e2, &n2), 0);
		CHECK(e2 == e && n2 == n);
	}
	d = finderd_reply_dir(r, 1);
	CHECK_BYTES(d->path.data, d->path.len, "/nope");
	CHECK_BYTES(d->reason.data, d->reason.len, "gone");
	CHECK(d->status == FINDERD_DIR_ABSENT && d->error == ENOENT);
	CHECK_INT(finderd_dir_entries(r, 1, &e, &n), 0);
	CHECK_INT(n, 0);
	CHECK(finderd_reply_dir(r, 2) == NULL);
	CHECK_INT(finderd_dir_entries(r, 2, &e, &n), -ERANGE);
	finderd_reply_free(r);
	finderd_reply_free(NULL);

	/* The same bytes read as a LookupReply: field 3 is generations there,
	 * and 4 is unknown, so the wrong kind finds no directories. */
	CHECK_INT(decode(&m, FDI_REPLY_LOOKUP, &r), FINDERD_EPROTOBUF);
	w_free(&m);
	w_free(&d1);
	w_free(&d2);
	w_free(&g);
}

static void test_lookup_reply(void)
{
	struct fdi_buf m = { NULL, 0, 0 }, d = { NULL, 0, 0 }, g = { NULL, 0, 0 };
	struct finderd_reply *r = NULL;

	pb_str(&d, 1, "/x");
	pb_u(&d, 2, 4);
	pb_u(&g, 2, 9);
	pb_u(&m, 1, 1);
	pb_msg(&m, 2, &g);
	pb_msg(&m, 3, &d);
	pb_msg(&m, 3, &d);
	CHECK_INT(decode(&m, FDI_REPLY_LOOKUP, &r), 0);
	CHECK_INT(finderd_reply_dir_count(r), 2);
	CHECK(finderd_reply_genfile(r)->epoch == 9);
	CHECK(finderd_reply_dir(r, 1)->status == FINDERD_DIR_UNCHANGED);
	CHECK_INT(finderd_reply_daemon_version(r).len, 0);
	finderd_reply_free(r);
	w_free(&m);
	w_free(&d);
	w_free(&g);
}

static int one_dir_entries(const char *a, const char *b)
{
	struct fdi_buf m = { NULL, 0, 0 }, d = { NULL, 0, 0 };
	struct finderd_reply *r = NULL;
	const struct finderd_entry *e;
	size_t n;
	int ret;

	pb_str(&d, 1, "/d");
	pb_entry(&d, a, 0, 0, 0, 0);
	if (b)
		pb_entry(&d, b, 0, 0, 0, 0);
	pb_u(&m, 1, 1);
	pb_msg(&m, 4, &d);
	ret = decode(&m, FDI_REPLY_SNAPSHOT, &r);
	if (!ret) {
		ret = finderd_dir_entries(r, 0, &e, &n);
		/* An error is not cached: the same answer again. */
		if (ret)
			CHECK_INT(finderd_dir_entries(r, 0, &e, &n), ret);
		finderd_reply_free(r);
	}
	w_free(&m);
	w_free(&d);
	return ret;
}

static void test_entry_order(void)
{
	CHECK_INT(one_dir_entries("a", "b"), 0);
	CHECK_INT(one_dir_entries("a", "a"), FINDERD_EBADREPLY);   /* duplicate */
	CHECK_INT(one_dir_entries("b", "a"), FINDERD_EBADREPLY);
	CHECK_INT(one_dir_entries("ab", "a"), FINDERD_EBADREPLY);  /* prefix first */
	CHECK_INT(one_dir_entries("a", "ab"), 0);
	CHECK_INT(one_dir_entries("Z", "a"), 0);
	CHECK_INT(one_dir_entries("z", "\xc3\xa9"), 0);            /* unsigned order */
	CHECK_INT(one_dir_entries("\xc3\xa9", "z"), FINDERD_EBADREPLY);
	CHECK_INT(one_dir_entries("", NULL), FINDERD_EBADREPLY);
	CHECK_INT(one_dir_entries(".", NULL), FINDERD_EBADREPLY);
	CHECK_INT(one_dir_entries("..", NULL), FINDERD_EBADREPLY);
	CHECK_INT(one_dir_entries("a/b", NULL), FINDERD_EBADREPLY);
	CHECK_INT(one_dir_entries("...", NULL), 0);
}

static void test_bad_replies(void)
{
	struct fdi_buf m = { NULL, 0, 0 }, d = { NULL, 0, 0 }, e = { NULL, 0, 0 };
	struct finderd_reply *r = NULL;
	const struct finderd_entry *ents;
	size_t n;

	/* Protocol version 2, or none at all. */
	pb_u(&m, 1, 2);
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), FINDERD_EVERSION);
	w_free(&m);
	pb_str(&m, 2, "x");
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), FINDERD_EVERSION);
	w_free(&m);
	/* Wrong wire types for known fields. */
	pb_str(&m, 1, "1");
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), FINDERD_EPROTOBUF);
	w_free(&m);
	pb_u(&m, 1, 1);
	pb_u(&m, 4, 5); /* directories as a varint */
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), FINDERD_EPROTOBUF);
	w_free(&m);
	pb_u(&d, 1, 5); /* path as a varint */
	pb_u(&m, 1, 1);
	pb_msg(&m, 4, &d);
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), FINDERD_EPROTOBUF);
	w_free(&m);
	w_free(&d);
	/* Messages sent as varints (found by fuzz_pb): generations, and a
	 * histogram of StatsReply. */
	pb_u(&m, 1, 1);
	pb_u(&m, 3, 7);
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), FINDERD_EPROTOBUF);
	w_free(&m);
	{
		struct finderd_stats st;

		pb_u(&m, 22, 7);
		CHECK_INT(fdi_pb_decode_stats(m.data, m.len, &st), FINDERD_EPROTOBUF);
		w_free(&m);
	}
	/* A truncated directory. */
	pb_u(&m, 1, 1);
	pb_tag(&m, 4, 2);
	pb_varint(&m, 10);
	w_put(&m, "\x0a\x08/abc", 5);
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), FINDERD_EPROTOBUF);
	w_free(&m);
	/* A malformed entry: found lazily. */
	pb_str(&e, 1, "x");
	pb_bytes(&e, 2, "y", 1); /* kind as bytes */
	pb_str(&d, 1, "/d");
	pb_msg(&d, 10, &e);
	pb_u(&m, 1, 1);
	pb_msg(&m, 4, &d);
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), 0);
	CHECK_INT(finderd_dir_entries(r, 0, &ents, &n), FINDERD_EPROTOBUF);
	finderd_reply_free(r);
	w_free(&m);
	w_free(&d);
	w_free(&e);
	/* Group wire type in a directory. */
	pb_str(&d, 1, "/d");
	pb_tag(&d, 12, 3);
	pb_u(&m, 1, 1);
	pb_msg(&m, 4, &d);
	CHECK_INT(decode(&m, FDI_REPLY_SNAPSHOT, &r), FINDERD_EPROTOBUF);
	w_free(&m);
	w_free(&d);
}

static void test_stats_health(void)
{
	struct fdi_buf m = { NULL, 0, 0 }, h = { NULL, 0, 0 };
	struct finderd_stats st;
	int status = -1;
	char longv[100];

	memset(longv, 'v', sizeof(longv) - 1);
	longv[99] = '\0';
	pb_u(&h, 1, 3);
	pb_u(&h, 5, 99);
	pb_str(&m, 1, longv);
	pb_u(&m, 2, 1234);
	pb_u(&m, 3, 42);
	pb_u(&m, 6, 1000000);
	pb_u(&m, 21, 7);
	pb_msg(&m, 24, &h);
	pb_u(&m, 100, 1);
	CHECK_INT(fdi_pb_decode_stats(m.data, m.len, &st), 0);
	CHECK_INT(strlen(st.daemon_version), 63);
	CHECK(st.uptime_ms == 1234 && st.pid == 42 && st.entries == 1000000 &&
	      st.crawls_uring == 7);
	CHECK(st.request_latency.count == 3 && st.request_latency.p99_us == 99);
	CHECK(st.barrier_latency.count == 0);
	w_free(&m);
	pb_str(&m, 3, "x"); /* pid as bytes */
	CHECK_INT(fdi_pb_decode_stats(m.data, m.len, &st), FINDERD_EPROTOBUF);
	w_free(&m);
	pb_u(&m, 1, 1);
	CHECK_INT(fdi_pb_decode_health(m.data, m.len, &status), 0);
	CHECK_INT(status, FINDERD_HEALTH_SERVING);
	CHECK_INT(fdi_pb_decode_health(m.data, 0, &status), 0);
	CHECK_INT(status, FINDERD_HEALTH_UNKNOWN);
	w_free(&m);
	w_free(&h);
}

/* ----------------------------------------------------------- requests */

static void test_encoders(void)
{
	static const struct finderd_str sp[] = { { "/usr/lib/python3.11", 19 }, { "", 0 } };
	static const struct finderd_str src[] = { { ".py", 3 } };
	struct finderd_interpreter in = { "cpython", "3.11.7", NULL, src, 1, NULL, 0, NULL, 0 };
	struct finderd_snapshot_request req = { &in, sp, 2, { "k", 1 }, 1 << 20, 0 };
	struct fdi_buf b = { NULL, 0, 0 };
	struct fdi_pb_field f;
	const uint8_t *p, *end;
	uint64_t known[2] = { 5, 0 }, v;
	int seen = 0;

	CHECK_INT(fdi_pb_encode_snapshot(&b, wire_alloc(), &req, 0), 0);
	p = b.data;
	end = b.data + b.len;
	while (fdi_pb_next(&p, end, &f) > 0) {
		if (f.num == 1) {
			CHECK(f.v == 1);
			seen |= 1;
		}
		if (f.num == 2) {
			const uint8_t *q = f.p;
			struct fdi_pb_field g;

			seen |= 2;
			CHECK_INT(fdi_pb_next(&q, f.p + f.len, &g), 1);
			CHECK(g.num == 1 && g.len == 7);
			CHECK_INT(fdi_pb_next(&q, f.p + f.len, &g), 1);
			CHECK(g.num == 2 && g.len == 6);
			CHECK_INT(fdi_pb_next(&q, f.p + f.len, &g), 1);
			CHECK(g.num == 4 && g.len == 3);
			CHECK_INT(fdi_pb_next(&q, f.p + f.len, &g), 0);
		}
		if (f.num == 3)
			seen |= f.len ? 4 : 8; /* the empty path is still sent */
		if (f.num == 4) {
			CHECK(f.len == 1);
			seen |= 16;
		}
		if (f.num == 5) {
			CHECK(f.v == 1 << 20);
			seen |= 32;
		}
	}
	CHECK_INT(seen, 63);
	w_free(&b);

	{
		struct fdi_lookup_args l = { sp, known, 77, 2, 0 };

		CHECK_INT(fdi_pb_encode_lookup(&b, wire_alloc(), &l), 0);
	}
	p = b.data;
	end = b.data + b.len;
	seen = 0;
	while (fdi_pb_next(&p, end, &f) > 0) {
		if (f.num == 3) {
			const uint8_t *q = f.p;

			CHECK(f.wt == FDI_PB_LEN && f.len == 2); /* packed */
			CHECK(fdi_pb_varint(&q, f.p + f.len, &v) == 0 && v == 5);
			CHECK(fdi_pb_varint(&q, f.p + f.len, &v) == 0 && v == 0);
			seen |= 1;
		}
		if (f.num == 4) {
			CHECK(f.v == 77);
			seen |= 2;
		}
	}
	CHECK_INT(seen, 3);
	w_free(&b);
	{
		struct fdi_lookup_args l = { NULL, NULL, 0, 1, 0 };

		CHECK_INT(fdi_pb_encode_lookup(&b, wire_alloc(), &l), -EINVAL);
	}
	CHECK_INT(fdi_pb_encode_health(&b, wire_alloc(), NULL), 0);
	CHECK_INT(b.len, 0);
	CHECK_INT(fdi_pb_encode_health(&b, wire_alloc(), "finderd.v1.Finder"), 0);
	CHECK_INT(b.len, 19);
	w_free(&b);
}

int main(void)
{
	test_varints();
	test_fields();
	test_snapshot_reply();
	test_lookup_reply();
	test_entry_order();
	test_bad_replies();
	test_stats_health();
	test_encoders();
	TEST_MAIN_END("test_pb");
}
