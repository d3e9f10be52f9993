/*
 * test_huffman.c - the Huffman table against RFC 7541 Appendix B, the
 * canonical decoding tables derived from it, and malformed input.
 */
#include <stdlib.h>

#include "finderd.h"
#include "huffman.h"
#include "test.h"

/* Spot checks typed from the RFC's Appendix B, independent of the table. */
static void test_appendix_b_samples(void)
{
	static const struct { unsigned sym; uint32_t code; unsigned bits; } rfc[] = {
		{ 0, 0x1ff8, 13 },      { 1, 0x7fffd8, 23 },   { 9, 0xffffea, 24 },
		{ 10, 0x3ffffffc, 30 }, { 13, 0x3ffffffd, 30 }, { 22, 0x3ffffffe, 30 },
		{ ' ', 0x14, 6 },       { '%', 0x15, 6 },      { '/', 0x18, 6 },
		{ '0', 0x0, 5 },        { '9', 0x1f, 6 },      { ':', 0x5c, 7 },
		{ 'A', 0x21, 6 },       { 'Z', 0xfd, 8 },      { 'a', 0x3, 5 },
		{ 'z', 0x7b, 7 },       { '~', 0x1ffd, 13 },   { 127, 0xffffffc, 28 },
		{ 128, 0xfffe6, 20 },   { 254, 0x7fffff0, 27 },
		{ 255, 0x3ffffee, 26 }, { 256, 0x3fffffff, 30 },
	};
	size_t i;

	for (i = 0; i < sizeof(rfc) / sizeof(rfc[0]); i++) {
		CHECK_INT(fdi_huff_codes[rfc[i].sym].code, rfc[i].code);
		CHECK_INT(fdi_huff_codes[rfc[i].sym].bits, rfc[i].bits);
	}
}

/* The code is complete and canonical, and the decoding tables follow. */
static void test_canonical_tables(void)
{
	uint64_t kraft = 0;
	uint16_t sorted[257];
	unsigned count[31] = { 0 };
	uint32_t code = 0;
	unsigned l, s, k = 0;

	for (s = 0; s < 257; s++) {
		CHECK(fdi_huff_codes[s].bits >= 5 && fdi_huff_codes[s].bits <= 30);
		kraft += 1ull << (30 - fdi_huff_codes[s].bits);
		count[fdi_huff_codes[s].bits]++;
	}
	CHECK(kraft == 1ull << 30);
	for (l = 1; l <= 30; l++) {
		CHECK_INT(fdi_huff_first[l], code);
		CHECK_INT(fdi_huff_offset[l], k);
		CHECK(fdi_huff_limit[l] == (uint64_t)(code + count[l]) << (32 - l));
		for (s = 0; s < 257; s++) {
			if (fdi_huff_codes[s].bits != l)
				continue;
			/* Canonical: codes of a length run in symbol order. */
			CHECK_INT(fdi_huff_codes[s].code, code);
			sorted[k++] = (uint16_t)s;
			code++;
		}
		code <<= 1;
	}
	CHECK_INT(k, 257);
	CHECK(memcmp(sorted, fdi_huff_sorted, sizeof(sorted)) == 0);
}

static int decode(const uint8_t *in, size_t n, uint8_t *out, size_t *outlen)
{
	uint8_t *dst = malloc(fdi_huffman_decoded_max(n));
	int ret;

	/* Exactly the documented bound: ASan sees any write past it. */
	ret = fdi_huffman_decode(in, n, dst, outlen);
	if (!ret && out)
		memcpy(out, dst, *outlen);
	free(dst);
	return ret;
}

static void test_round_trip(void)
{
	uint8_t all[256], enc[1024], dec[1024];
	size_t n, m;
	unsigned s;

	for (s = 0; s < 256; s++) {
		uint8_t c = (uint8_t)s;

		n = fdi_huffman_encode(&c, 1, enc);
		CHECK_INT(n, fdi_huffman_encoded_len(&c, 1));
		CHECK_INT(decode(enc, n, dec, &m), 0);
		CHECK(m == 1 && dec[0] == c);
		all[s] = c;
	}
	n = fdi_huffman_encode(all, 256, enc);
	CHECK_INT(decode(enc, n, dec, &m), 0);
	CHECK(m == 256 && memcmp(dec, all, 256) == 0);
	/* The shortest codes: the bound must hold for the densest input. */
	memset(all, '0', 64);
	n = fdi_huffman_encode(all, 64, enc);
	CHECK_INT(n, 40);
	CHECK_INT(decode(enc, n, dec, &m), 0);
	CHECK_INT(m, 64);
}

static void test_rfc_strings(void)
{
	static const uint8_t www[] = { 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a,
				       0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff };
	static const uint8_t nocache[] = { 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf };
	uint8_t dec[64];
	size_t m;

	CHECK_INT(decode(www, sizeof(www), dec, &m), 0);
	CHECK_BYTES(dec, m, "www.example.com");
	CHECK_INT(decode(nocache, sizeof(nocache), dec, &m), 0);
	CHECK_BYTES(dec, m, "no-cache");
}

static void test_malformed(void)
{
	uint8_t dec[64];
	size_t m;
	static const uint8_t eos[] = { 0xff, 0xff, 0xff, 0xff };
	static const uint8_t zero_pad[] = { 0x00 };           /* '0' then 000 */
	static const uint8_t long_pad[] = { 0xff };           /* 8 ones */
	static const uint8_t long_pad2[] = { 0x1f, 0xff };    /* 'a', 11 ones */
	static const uint8_t cut[] = { 0xfe };                /* a 10-bit code, cut */
	static const uint8_t ok[] = { 0x18, 0x3f };           /* 'a' '0' 6 ones */
	/* 'a' (00011), EOS (30 ones), 'a' again, then padding: EOS inside. */
	static const uint8_t eos_inside[] = { 0x1f, 0xff, 0xff, 0xff, 0xf8, 0xff };

	CHECK_INT(decode(eos, sizeof(eos), dec, &m), FINDERD_EHUFFMAN);
	CHECK_INT(decode(zero_pad, 1, dec, &m), FINDERD_EHUFFMAN);
	CHECK_INT(decode(long_pad, 1, dec, &m), FINDERD_EHUFFMAN);
	CHECK_INT(decode(long_pad2, 2, dec, &m), FINDERD_EHUFFMAN);
	CHECK_INT(decode(cut, 1, dec, &m), FINDERD_EHUFFMAN);
	CHECK_INT(decode(eos_inside, sizeof(eos_inside), dec, &m), FINDERD_EHUFFMAN);
	CHECK_INT(decode(ok, 2, dec, &m), 0);
	CHECK_BYTES(dec, m, "a0");
	CHECK_INT(decode(ok, 0, dec, &m), 0);
	CHECK_INT(m, 0);
}

int main(void)
{
	test_appendix_b_samples();
	test_canonical_tables();
	test_round_trip();
	test_rfc_strings();
	test_malformed();
	TEST_MAIN_END("test_huffman");
}
