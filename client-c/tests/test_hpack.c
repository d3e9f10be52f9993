/*
 * test_hpack.c - RFC 7541 Appendix C (C.1 to C.6, with the dynamic table
 * after each block) and malformed blocks.
 */
#include <errno.h>
#include <stdlib.h>

#include "finderd.h"
#include "hpack.h"
#include "test.h"

struct field {
	const char *name;
	const char *value;
};

struct vector {
	const char *id;
	const char *hex;
	struct field headers[8];
	struct field table[8]; /* newest first */
	size_t table_size;
};

/* Collected header list of one block. */
struct got {
	char name[8][80];
	char value[8][80];
	size_t n;
};

static int collect(void *ud, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
	struct got *g = ud;

	if (g->n >= 8 || nlen >= 80 || vlen >= 80)
		return -E2BIG;
	memcpy(g->name[g->n], name, nlen);
	g->name[g->n][nlen] = '\0';
	memcpy(g->value[g->n], value, vlen);
	g->value[g->n][vlen] = '\0';
	g->n++;
	return 0;
}

static struct fdi_alloc alloc;

static int decode_hex(struct fdi_hpack *h, const char *hex, struct got *g)
{
	unsigned char buf[512];
	size_t n = test_unhex(hex, buf);

	memset(g, 0, sizeof(*g));
	return fdi_hpack_decode(h, buf, n, collect, g);
}

static void check_vector(struct fdi_hpack *h, const struct vector *v)
{
	struct got g;
	size_t i, n = 0;

	CHECK_INT(decode_hex(h, v->hex, &g), 0);
	for (i = 0; v->headers[i].name; i++) {
		CHECK(i < g.n && strcmp(g.name[i], v->headers[i].name) == 0);
		CHECK(i < g.n && strcmp(g.value[i], v->headers[i].value) == 0);
	}
	CHECK_INT(g.n, i);
	for (i = 0; v->table[i].name; i++) {
		const uint8_t *name, *value;
		size_t nl, vl;

		CHECK_INT(fdi_hpack_table_get(h, i, &name, &nl, &value, &vl), 0);
		CHECK_BYTES(name, nl, v->table[i].name);
		CHECK_BYTES(value, vl, v->table[i].value);
		n++;
	}
	CHECK_INT(fdi_hpack_table_len(h), n);
	CHECK_INT(h->size, v->table_size);
	if (test_failures)
		fprintf(stderr, "  (in %s)\n", v->id);
}

static void run_sequence(const struct vector *vs, size_t n, size_t table)
{
	struct fdi_hpack h;
	size_t i;

	CHECK_INT(fdi_hpack_init(&h, &alloc, table), 0);
	for (i = 0; i < n; i++)
		check_vector(&h, &vs[i]);
	fdi_hpack_free(&h);
}

#define AUTH { ":authority", "www.example.com" }
#define DATE1 "Mon, 21 Oct 2013 20:13:21 GMT"
#define DATE2 "Mon, 21 Oct 2013 20:13:22 GMT"
#define LOC "https://www.example.com"
#define COOKIE "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1"

static const struct vector c2[] = {
	{ "C.2.1", "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
	  { { "custom-key", "custom-header" } }, { { "custom-key", "custom-header" } }, 55 },
	{ "C.2.2", "040c 2f73 616d 706c 652f 7061 7468",
	  { { ":path", "/sample/path" } }, { { NULL, NULL } }, 0 },
	{ "C.2.3", "1008 7061 7373 776f 7264 0673 6563 7265 74",
	  { { "password", "secret" } }, { { NULL, NULL } }, 0 },
	{ "C.2.4", "82", { { ":method", "GET" } }, { { NULL, NULL } }, 0 },
};

#define REQ1 { ":method", "GET" }, { ":scheme", "http" }, { ":path", "/" }, AUTH
static const struct vector c3[] = {
	{ "C.3.1", "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
	  { REQ1 }, { AUTH }, 57 },
	{ "C.3.2", "8286 84be 5808 6e6f 2d63 6163 6865",
	  { REQ1, { "cache-control", "no-cache" } },
	  { { "cache-control", "no-cache" }, AUTH }, 110 },
	{ "C.3.3", "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
	  { { ":method", "GET" }, { ":scheme", "https" }, { ":path", "/index.html" }, AUTH,
	    { "custom-key", "custom-value" } },
	  { { "custom-key", "custom-value" }, { "cache-control", "no-cache" }, AUTH }, 164 },
};

static const struct vector c4[] = {
	{ "C.4.1", "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff", { REQ1 }, { AUTH }, 57 },
	{ "C.4.2", "8286 84be 5886 a8eb 1064 9cbf",
	  { REQ1, { "cache-control", "no-cache" } },
	  { { "cache-control", "no-cache" }, AUTH }, 110 },
	{ "C.4.3", "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
	  { { ":method", "GET" }, { ":scheme", "https" }, { ":path", "/index.html" }, AUTH,
	    { "custom-key", "custom-value" } },
	  { { "custom-key", "custom-value" }, { "cache-control", "no-cache" }, AUTH }, 164 },
};

#define RESP1 { ":status", "302" }, { "cache-control", "private" }, { "date", DATE1 }, \
	{ "location", LOC }
#define TABLE1 { "location", LOC }, { "date", DATE1 }, { "cache-control", "private" }, \
	{ ":status", "302" }
#define RESP2 { ":status", "307" }, { "cache-control", "private" }, { "date", DATE1 }, \
	{ "location", LOC }
#define TABLE2 { ":status", "307" }, { "location", LOC }, { "date", DATE1 }, \
	{ "cache-control", "private" }
#define RESP3 { ":status", "200" }, { "cache-control", "private" }, { "date", DATE2 }, \
	{ "location", LOC }, { "content-encoding", "gzip" }, { "set-cookie", COOKIE }
#define TABLE3 { "set-cookie", COOKIE }, { "content-encoding", "gzip" }, { "date", DATE2 }

static const struct vector c5[] = {
	{ "C.5.1",
	  "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133"
	  "2032 303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70"
	  "6c65 2e63 6f6d",
	  { RESP1 }, { TABLE1 }, 222 },
	{ "C.5.2", "4803 3330 37c1 c0bf", { RESP2 }, { TABLE2 }, 222 },
	{ "C.5.3",
	  "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d"
	  "54c0 5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049"
	  "5541 5851 5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e"
	  "3d31",
	  { RESP3 }, { TABLE3 }, 215 },
};

static const struct vector c6[] = {
	{ "C.6.1",
	  "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6"
	  "2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
	  { RESP1 }, { TABLE1 }, 222 },
	{ "C.6.2", "4883 640e ffc1 c0bf", { RESP2 }, { TABLE2 }, 222 },
	{ "C.6.3",
	  "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab"
	  "77ad 94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f"
	  "9587 3160 65c0 03ed 4ee5 b106 3d50 07",
	  { RESP3 }, { TABLE3 }, 215 },
};

static void test_appendix_c(void)
{
	size_t i;

	for (i = 0; i < 4; i++)
		run_sequence(&c2[i], 1, 4096);
	run_sequence(c3, 3, 4096);
	run_sequence(c4, 3, 4096);
	run_sequence(c5, 3, 256);
	run_sequence(c6, 3, 256);
}

static int int_hex(const char *hex, unsigned prefix, uint32_t *v, size_t *used)
{
	unsigned char buf[32];
	size_t n = test_unhex(hex, buf);
	const uint8_t *p = buf;
	int ret = fdi_hpack_decode_int(&p, buf + n, prefix, v);

	*used = (size_t)(p - buf);
	return ret;
}

static void test_integers(void)
{
	uint8_t out[8];
	uint32_t v;
	size_t used;

	/* C.1.1 to C.1.3 */
	CHECK_INT(int_hex("0a", 5, &v, &used), 0);
	CHECK_INT(v, 10);
	CHECK_INT(int_hex("1f9a0a", 5, &v, &used), 0);
	CHECK_INT(v, 1337);
	CHECK_INT(used, 3);
	CHECK_INT(int_hex("2a", 8, &v, &used), 0);
	CHECK_INT(v, 42);
	CHECK_INT(fdi_hpack_encode_int(out, 5, 0, 1337), 3);
	CHECK(out[0] == 0x1f && out[1] == 0x9a && out[2] == 0x0a);
	/* The largest value round-trips; one more overflows. */
	CHECK_INT(fdi_hpack_encode_int(out, 5, 0, UINT32_MAX), 6);
	CHECK_INT(int_hex("1fe0ffffff0f", 5, &v, &used), 0);
	CHECK(v == UINT32_MAX);
	CHECK_INT(int_hex("1fe1ffffff0f", 5, &v, &used), FINDERD_EHPACK);
	CHECK_INT(int_hex("1fffffffff7f", 5, &v, &used), FINDERD_EHPACK);
	/* Too many continuation bytes, even of zeros. */
	CHECK_INT(int_hex("1f808080808000", 5, &v, &used), FINDERD_EHPACK);
	/* Truncated. */
	CHECK_INT(int_hex("1f", 5, &v, &used), FINDERD_EHPACK);
	CHECK_INT(int_hex("1f80", 5, &v, &used), FINDERD_EHPACK);
	CHECK_INT(int_hex("", 5, &v, &used), FINDERD_EHPACK);
}

static int decode_err(const char *hex, size_t table)
{
	struct fdi_hpack h;
	struct got g;
	int ret;

	CHECK_INT(fdi_hpack_init(&h, &alloc, table), 0);
	ret = decode_hex(&h, hex, &g);
	fdi_hpack_free(&h);
	return ret;
}

static void test_malformed(void)
{
	CHECK_INT(decode_err("80", 4096), FINDERD_EHPACK);        /* index 0 */
	CHECK_INT(decode_err("be", 4096), FINDERD_EHPACK);        /* 62, table empty */
	CHECK_INT(decode_err("ff80 01", 4096), FINDERD_EHPACK);   /* index 255 */
	CHECK_INT(decode_err("7e00", 4096), FINDERD_EHPACK);      /* name index 62 */
	CHECK_INT(decode_err("40", 4096), FINDERD_EHPACK);        /* name missing */
	CHECK_INT(decode_err("4005 61", 4096), FINDERD_EHPACK);   /* past the block */
	CHECK_INT(decode_err("04", 4096), FINDERD_EHPACK);        /* value missing */
	CHECK_INT(decode_err("047f", 4096), FINDERD_EHPACK);      /* truncated length */
	CHECK_INT(decode_err("0484 ffff ffff", 4096), FINDERD_EHUFFMAN); /* EOS */
	CHECK_INT(decode_err("0481 00", 4096), FINDERD_EHUFFMAN); /* zero padding */
	CHECK_INT(decode_err("0482 1fff", 4096), FINDERD_EHUFFMAN); /* 11-bit padding */
	CHECK_INT(decode_err("8220", 4096), FINDERD_EHPACK);      /* update after field */
	CHECK_INT(decode_err("3fe2 1f", 4096), FINDERD_EHPACK);   /* 4097 > limit */
	CHECK_INT(decode_err("3fe1 1f82", 4096), 0);              /* 4096 is fine */
	CHECK_INT(decode_err("2020 82", 4096), 0);                /* two updates */
	CHECK_INT(decode_err("3fe2 1f", 8192), 0);
	CHECK_INT(decode_err("", 4096), 0);
	{
		/* An empty block with no buffer at all (found by fuzz_frame). */
		struct fdi_hpack h;

		CHECK_INT(fdi_hpack_init(&h, &alloc, 4096), 0);
		CHECK_INT(fdi_hpack_decode(&h, NULL, 0, collect, NULL), 0);
		fdi_hpack_free(&h);
	}
}

static void test_size_updates(void)
{
	struct fdi_hpack h;
	struct got g;

	CHECK_INT(fdi_hpack_init(&h, &alloc, 4096), 0);
	CHECK_INT(decode_hex(&h, c3[0].hex, &g), 0);
	CHECK_INT(fdi_hpack_table_len(&h), 1);
	/* Size 0 empties the table; then 62 is out of range. */
	CHECK_INT(decode_hex(&h, "20", &g), 0);
	CHECK_INT(fdi_hpack_table_len(&h), 0);
	CHECK_INT(h.size, 0);
	CHECK_INT(decode_hex(&h, "be", &g), FINDERD_EHPACK);
	/* With max size 0 an insertion adds nothing. */
	CHECK_INT(decode_hex(&h, "4001 6101 62", &g), 0);
	CHECK_INT(fdi_hpack_table_len(&h), 0);
	CHECK(g.n == 1 && strcmp(g.name[0], "a") == 0 && strcmp(g.value[0], "b") == 0);
	/* Back to 4096: entries are added again. */
	CHECK_INT(decode_hex(&h, "3fe1 1f 4001 6101 62", &g), 0);
	CHECK_INT(fdi_hpack_table_len(&h), 1);
	CHECK_INT(h.size, 34);
	fdi_hpack_free(&h);
}

#define B10 "62626262626262626262"
#define B60 B10 B10 B10 B10 B10 B10

static void test_eviction_keeps_name(void)
{
	struct fdi_hpack h;
	struct got g;
	char hex[512];

	/* Table of 80 bytes: "aaaa...: x" (40 + 1 + 32 = 73) fills it. The next
	 * entry names it by index 62 with a 6-byte value: 40 + 6 + 32 = 78, so
	 * the entry it names must be evicted while it is being copied. */
	CHECK_INT(fdi_hpack_init(&h, &alloc, 80), 0);
	strcpy(hex, "4028");
	while (strlen(hex) < 4 + 80)
		strcat(hex, "61");
	strcat(hex, "0178");
	CHECK_INT(decode_hex(&h, hex, &g), 0);
	CHECK_INT(h.size, 73);
	CHECK_INT(decode_hex(&h, "7e06 7676 7676 7676", &g), 0);
	CHECK_INT(fdi_hpack_table_len(&h), 1);
	CHECK_INT(h.size, 78);
	CHECK(g.n == 1 && strlen(g.name[0]) == 40 && g.name[0][0] == 'a' &&
	      strcmp(g.value[0], "vvvvvv") == 0);
	/* An entry larger than the table empties it and is not added. */
	CHECK_INT(decode_hex(&h, "4001 613c " B60, &g), 0);
	CHECK_INT(fdi_hpack_table_len(&h), 0);
	CHECK_INT(h.size, 0);
	fdi_hpack_free(&h);
}

int main(void)
{
	fdi_alloc_libc(&alloc);
	test_appendix_c();
	test_integers();
	test_malformed();
	test_size_updates();
	test_eviction_keeps_name();
	TEST_MAIN_END("test_hpack");
}
