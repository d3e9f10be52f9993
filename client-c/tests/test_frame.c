/*
 * test_frame.c - the pure frame functions: framing, per-type layout rules,
 * padding, settings values, window increments.
 */
#include "finderd.h"
#include "frame.h"
#include "test.h"

static int check(uint8_t type, uint8_t flags, uint32_t sid, uint32_t len)
{
	struct fdi_frame_hd hd = { len, type, flags, sid };

	return fdi_frame_check(&hd);
}

static void test_next(void)
{
	uint8_t buf[9 + 20] = { 0 };
	struct fdi_frame_hd hd;
	const uint8_t *payload = NULL;

	fdi_frame_hd_pack(buf, 20, FDI_DATA, FDI_FLAG_END_STREAM, 0x80000001u);
	CHECK_INT(fdi_frame_next(buf, 8, 16384, &hd, &payload), 0);
	CHECK_INT(fdi_frame_next(buf, 28, 16384, &hd, &payload), 0);
	CHECK_INT(fdi_frame_next(buf, 29, 16384, &hd, &payload), 29);
	CHECK(payload == buf + 9);
	CHECK_INT(hd.length, 20);
	CHECK_INT(hd.type, FDI_DATA);
	CHECK_INT(hd.flags, FDI_FLAG_END_STREAM);
	CHECK_INT(hd.stream_id, 1); /* reserved bit dropped */
	/* Oversized: an error from the header alone, before any payload. */
	fdi_frame_hd_pack(buf, 16385, FDI_DATA, 0, 1);
	CHECK_INT(fdi_frame_next(buf, 9, 16384, &hd, &payload), FINDERD_EHTTP2);
	fdi_frame_hd_pack(buf, 0xffffff, FDI_HEADERS, 0, 1);
	CHECK_INT(fdi_frame_next(buf, 9, 16384, &hd, &payload), FINDERD_EHTTP2);
	fdi_frame_hd_pack(buf, 16384, FDI_DATA, 0, 1);
	CHECK_INT(fdi_frame_next(buf, 9, 16384, &hd, &payload), 0);
}

static void test_check(void)
{
	CHECK_INT(check(FDI_DATA, 0, 0, 1), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_HEADERS, 0, 0, 1), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_CONTINUATION, 0, 0, 1), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_RST_STREAM, 0, 0, 4), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_RST_STREAM, 0, 1, 5), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_RST_STREAM, 0, 1, 4), 0);
	CHECK_INT(check(FDI_PRIORITY, 0, 1, 4), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_PRIORITY, 0, 1, 5), 0);
	CHECK_INT(check(FDI_SETTINGS, 0, 1, 6), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_SETTINGS, 0, 0, 5), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_SETTINGS, 0, 0, 12), 0);
	CHECK_INT(check(FDI_SETTINGS, FDI_FLAG_ACK, 0, 6), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_SETTINGS, FDI_FLAG_ACK, 0, 0), 0);
	CHECK_INT(check(FDI_PING, 0, 0, 7), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_PING, 0, 3, 8), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_PING, 0, 0, 8), 0);
	CHECK_INT(check(FDI_GOAWAY, 0, 0, 7), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_GOAWAY, 0, 1, 8), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_GOAWAY, 0, 0, 100), 0);
	CHECK_INT(check(FDI_WINDOW_UPDATE, 0, 0, 3), FINDERD_EHTTP2);
	CHECK_INT(check(FDI_WINDOW_UPDATE, 0, 7, 4), 0);
	CHECK_INT(check(0xfa, 0xff, 0, 1000), 0); /* unknown: anything goes */
}

static int data(uint8_t flags, const uint8_t *p, uint32_t len, size_t *outlen,
		const uint8_t **out)
{
	struct fdi_frame_hd hd = { len, FDI_DATA, flags, 1 };

	return fdi_frame_data_payload(&hd, p, out, outlen);
}

static int headers(uint8_t flags, const uint8_t *p, uint32_t len, size_t *outlen,
		   const uint8_t **out)
{
	struct fdi_frame_hd hd = { len, FDI_HEADERS, flags, 1 };

	return fdi_frame_headers_payload(&hd, p, out, outlen);
}

static void test_padding(void)
{
	uint8_t p[16] = { 4, 'a', 'b', 0, 0, 0, 0 };
	const uint8_t *out;
	size_t n;

	CHECK_INT(data(FDI_FLAG_PADDED, p, 7, &n, &out), 0);
	CHECK(n == 2 && out == p + 1);
	CHECK_INT(data(FDI_FLAG_PADDED, p, 5, &n, &out), 0); /* all padding */
	CHECK_INT(n, 0);
	CHECK_INT(data(FDI_FLAG_PADDED, p, 4, &n, &out), FINDERD_EHTTP2);
	CHECK_INT(data(FDI_FLAG_PADDED, p, 0, &n, &out), FINDERD_EHTTP2);
	CHECK_INT(data(0, p, 7, &n, &out), 0);
	CHECK(n == 7 && out == p);
	/* HEADERS: pad length, 5 bytes of priority, block, padding. */
	p[0] = 2;
	CHECK_INT(headers(FDI_FLAG_PADDED | FDI_FLAG_PRIORITY, p, 11, &n, &out), 0);
	CHECK(n == 3 && out == p + 6);
	CHECK_INT(headers(FDI_FLAG_PADDED | FDI_FLAG_PRIORITY, p, 7, &n, &out), FINDERD_EHTTP2);
	CHECK_INT(headers(FDI_FLAG_PRIORITY, p, 4, &n, &out), FINDERD_EHTTP2);
	CHECK_INT(headers(FDI_FLAG_PRIORITY, p, 5, &n, &out), 0);
	CHECK_INT(n, 0);
}

static void test_settings_and_counters(void)
{
	uint8_t p[12] = { 0, 4, 0, 1, 0, 0, 0, 5, 0, 0, 0x40, 0 };
	uint16_t id;
	uint32_t v;

	fdi_frame_settings_get(p, 0, &id, &v);
	CHECK(id == 4 && v == 65536);
	fdi_frame_settings_get(p, 1, &id, &v);
	CHECK(id == 5 && v == 16384);
	CHECK_INT(fdi_frame_setting_check(FDI_SETTINGS_ENABLE_PUSH, 0), 0);
	CHECK_INT(fdi_frame_setting_check(FDI_SETTINGS_ENABLE_PUSH, 1), FINDERD_EHTTP2);
	CHECK_INT(fdi_frame_setting_check(FDI_SETTINGS_INITIAL_WINDOW_SIZE, 0x7fffffff), 0);
	CHECK_INT(fdi_frame_setting_check(FDI_SETTINGS_INITIAL_WINDOW_SIZE, 0x80000000u),
		  FINDERD_EHTTP2);
	CHECK_INT(fdi_frame_setting_check(FDI_SETTINGS_MAX_FRAME_SIZE, 16383), FINDERD_EHTTP2);
	CHECK_INT(fdi_frame_setting_check(FDI_SETTINGS_MAX_FRAME_SIZE, 16384), 0);
	CHECK_INT(fdi_frame_setting_check(FDI_SETTINGS_MAX_FRAME_SIZE, 16777215), 0);
	CHECK_INT(fdi_frame_setting_check(FDI_SETTINGS_MAX_FRAME_SIZE, 16777216), FINDERD_EHTTP2);
	CHECK_INT(fdi_frame_setting_check(0x99, 12345), 0);

	{
		uint8_t w[4] = { 0x80, 0, 0, 0 };
		uint32_t inc;

		CHECK_INT(fdi_frame_window_update(w, &inc), FINDERD_EHTTP2); /* 0 */
		w[3] = 9;
		CHECK_INT(fdi_frame_window_update(w, &inc), 0);
		CHECK_INT(inc, 9);
	}
	{
		uint8_t g[8] = { 0x80, 0, 0, 3, 0, 0, 0, 2 };
		uint32_t last, code;

		fdi_frame_goaway(g, &last, &code);
		CHECK(last == 3 && code == 2);
		CHECK_INT(fdi_frame_rst_stream(g + 4), 2);
	}
}

int main(void)
{
	test_next();
	test_check();
	test_padding();
	test_settings_and_counters();
	TEST_MAIN_END("test_frame");
}
