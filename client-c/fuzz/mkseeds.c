/*
 * mkseeds.c - writes the seed corpora in fuzz/corpus/ (make fuzz-seeds).
 * The seeds are committed; this program documents how they were made.
 */
#include <stdio.h>

#include "../tests/wire.h"

static void save(const char *target, const char *name, const struct fdi_buf *b)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "fuzz/corpus/%s/%s", target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b->data, 1, b->len, f) != b->len) {
		perror(path);
		exit(1);
	}
	fclose(f);
}

static void response(struct fdi_buf *out, uint32_t sid, const struct fdi_buf *msg, int split)
{
	struct fdi_buf blk = { NULL, 0, 0 }, data = { NULL, 0, 0 };
	uint8_t pad[64];
	size_t i;

	w_resp_headers(&blk, 1);
	if (split) {
		w_frame(out, FDI_HEADERS, FDI_FLAG_PRIORITY, sid, "\0\0\0\0\0", 5);
		for (i = 0; i < blk.len; i++)
			w_frame(out, FDI_CONTINUATION, i + 1 == blk.len ? FDI_FLAG_END_HEADERS : 0,
				sid, blk.data + i, 1);
	} else {
		w_frame(out, FDI_HEADERS, FDI_FLAG_END_HEADERS, sid, blk.data, blk.len);
	}
	w_free(&blk);
	grpc_frame(&data, 0, msg);
	if (split) {
		for (i = 0; i < data.len; i++) {
			pad[0] = 3;
			pad[1] = data.data[i];
			memset(pad + 2, 0, 3);
			w_frame(out, FDI_DATA, FDI_FLAG_PADDED, sid, pad, 5);
		}
	} else {
		w_frame(out, FDI_DATA, 0, sid, data.data, data.len);
	}
	w_free(&data);
	w_trailers(&blk, 0, NULL, 1);
	w_frame(out, FDI_HEADERS, FDI_FLAG_END_HEADERS | FDI_FLAG_END_STREAM, sid, blk.data,
		blk.len);
	w_free(&blk);
}

static void snapshot(struct fdi_buf *m)
{
	struct fdi_buf d = { NULL, 0, 0 }, g = { NULL, 0, 0 };

	pb_u(m, 1, 1);
	pb_str(m, 2, "0.1.0");
	pb_str(&g, 1, "/run/finderd/finderd.sock.gen");
	pb_u(&g, 2, 77);
	pb_u(&g, 3, 1024);
	pb_u(&g, 4, 200000000);
	pb_msg(m, 3, &g);
	pb_str(&d, 1, "/usr/lib/python3.11");
	pb_u(&d, 2, 1);
	pb_u(&d, 5, 9);
	pb_u(&d, 6, 3);
	pb_u(&d, 7, 040755);
	pb_u(&d, 8, 1700000000000000000ull);
	pb_u(&d, 9, 4096);
	pb_entry(&d, "__future__.py", 0, 0100644, 1700000000000000000ll, 5218);
	pb_entry(&d, "asyncio", 1, 040755, 1700000000000000000ll, 4096);
	pb_entry(&d, "json", 2, 040755, 1, 4096);
	pb_msg(m, 4, &d);
	w_free(&d);
	pb_str(&d, 1, "/nope");
	pb_u(&d, 2, 3);
	pb_u(&d, 4, 2);
	pb_msg(m, 4, &d);
	w_free(&d);
	w_free(&g);
}

static void frame_seeds(void)
{
	struct fdi_buf out = { NULL, 0, 0 }, m = { NULL, 0, 0 }, blk = { NULL, 0, 0 };
	static const uint16_t ids[] = { FDI_SETTINGS_INITIAL_WINDOW_SIZE,
					FDI_SETTINGS_MAX_FRAME_SIZE, FDI_SETTINGS_HEADER_TABLE_SIZE };
	static const uint32_t vals[] = { 1 << 20, 32768, 4096 };

	pb_u(&m, 1, 1);
	w_settings(&out, NULL, NULL, 0);
	w_frame(&out, FDI_SETTINGS, FDI_FLAG_ACK, 0, NULL, 0);
	response(&out, 1, &m, 0);
	save("fuzz_frame", "simple", &out);
	w_free(&out);

	w_settings(&out, ids, vals, 3);
	w_frame(&out, FDI_PING, 0, 0, "pingpong", 8);
	response(&out, 1, &m, 1);
	w_resp_headers(&blk, 1);
	w_trailers(&blk, 3, "bad%20request", 1);
	w_frame(&out, FDI_HEADERS, FDI_FLAG_END_HEADERS | FDI_FLAG_END_STREAM, 3, blk.data,
		blk.len);
	w_frame_u32(&out, FDI_WINDOW_UPDATE, 0, 1000);
	w_frame(&out, 0xfa, 0, 5, "x", 1);
	w_frame_u32(&out, FDI_RST_STREAM, 5, 2);
	w_frame(&out, FDI_GOAWAY, 0, 0, "\0\0\0\x07\0\0\0\0", 8);
	response(&out, 7, &m, 0);
	save("fuzz_frame", "split", &out);
	w_free(&out);
	w_free(&m);
	w_free(&blk);

	snapshot(&m);
	w_settings(&out, NULL, NULL, 0);
	response(&out, 1, &m, 0);
	save("fuzz_frame", "snapshot", &out);
	w_free(&out);
	w_free(&m);
}

static void hpack_seeds(void)
{
	static const char *c4[] = { "828684418cf1e3c2e5f23a6ba0ab90f4ff", "828684be5886a8eb10649cbf",
				    "828785bf408825a849e95ba97d7f8925a849e95bb8e8b4bf" };
	static const char *c6[] = {
		"488264025885aec3771a4b6196d07abe941054d444a8200595040b8166e082a62d1bff6e919d29ad171863c78f0b97c8e9ae82ae43d3",
		"4883640effc1c0bf",
		"88c16196d07abe941054d444a8200595040b8166e084a62d1bffc05a839bd9ab77ad94e7821dd7f2e6c7b335dfdfcd5b3960d5af27087f3672c1ab270fb5291f9587316065c003ed4ee5b1063d5007",
	};
	struct fdi_buf b = { NULL, 0, 0 };
	uint8_t tmp[256];
	size_t i, n;

	w_byte(&b, 4096 / 32);
	for (i = 0; i < 3; i++) {
		n = 0;
		while (c4[i][2 * n]) {
			unsigned v;

			sscanf(c4[i] + 2 * n, "%2x", &v);
			tmp[n++] = (uint8_t)v;
		}
		w_byte(&b, (uint8_t)n);
		w_put(&b, tmp, n);
	}
	save("fuzz_hpack", "rfc7541-c4", &b);
	w_free(&b);
	w_byte(&b, 256 / 32);
	for (i = 0; i < 3; i++) {
		n = 0;
		while (c6[i][2 * n]) {
			unsigned v;

			sscanf(c6[i] + 2 * n, "%2x", &v);
			tmp[n++] = (uint8_t)v;
		}
		w_byte(&b, (uint8_t)n);
		w_put(&b, tmp, n);
	}
	save("fuzz_hpack", "rfc7541-c6", &b);
	w_free(&b);
	w_byte(&b, 128);
	w_resp_headers(&b, 1); /* the length byte is the first field's: fine */
	w_trailers(&b, 0, "ok", 1);
	save("fuzz_hpack", "grpc", &b);
	w_free(&b);
}

static void pb_seeds(void)
{
	struct fdi_buf m = { NULL, 0, 0 }, d = { NULL, 0, 0 }, h = { NULL, 0, 0 };

	snapshot(&m);
	save("fuzz_pb", "snapshot", &m);
	w_free(&m);
	pb_u(&m, 1, 1);
	pb_str(&d, 1, "/x");
	pb_u(&d, 2, 4);
	pb_u(&d, 5, 12);
	pb_msg(&m, 3, &d);
	pb_msg(&m, 3, &d);
	save("fuzz_pb", "lookup", &m);
	w_free(&m);
	pb_str(&m, 1, "0.1.0");
	pb_u(&m, 2, 1000);
	pb_u(&m, 3, 42);
	pb_u(&m, 17, 5);
	pb_u(&h, 1, 10);
	pb_u(&h, 5, 99);
	pb_msg(&m, 22, &h);
	save("fuzz_pb", "stats", &m);
	w_free(&m);
	w_free(&d);
	w_free(&h);
}

/* A listing of @path in @m (field 4), with a slot and a generation. */
static void dir_msg(struct fdi_buf *m, const char *path, uint32_t status, uint32_t slot,
		    uint64_t gen, int entries)
{
	struct fdi_buf d = { NULL, 0, 0 };

	pb_str(&d, 1, path);
	pb_u(&d, 2, status);
	if (status == 3)
		pb_u(&d, 4, 2);
	pb_u(&d, 5, gen);
	pb_u(&d, 6, slot);
	pb_u(&d, 7, 040755);
	pb_u(&d, 8, 1700000000000000000ull);
	pb_u(&d, 9, 4096);
	if (entries) {
		pb_entry(&d, "a.lua", 0, 0100644, 1700000000000000001ll, 12);
		pb_entry(&d, "dangling", 3, 0, 0, 0);
		pb_entry(&d, "fifo", 3, 010644, 5, 0);
		pb_entry(&d, "link", 2, 040755, 6, 4096);
		pb_entry(&d, "pkg", 1, 040755, 7, 4096);
		pb_entry(&d, "sub", 1, 040700, 8, 4096);
	}
	pb_msg(m, 4, &d);
	w_free(&d);
}

/* Snapshot replies for the resolver: held, absent, refused and unchanged
 * directories, a duplicate, a root, a non-canonical path. */
static void resolver_seeds(void)
{
	struct fdi_buf m = { NULL, 0, 0 };

	pb_u(&m, 1, 1);
	dir_msg(&m, "/r", 1, 1, 5, 1);
	dir_msg(&m, "/r/pkg", 1, 2, 6, 1);
	dir_msg(&m, "/r/gone", 3, 3, 7, 0);
	dir_msg(&m, "/r/no", 2, 0, 0, 0);
	save("fuzz_resolver", "tree", &m);
	dir_msg(&m, "/r", 4, 1, 5, 0);
	dir_msg(&m, "/r/pkg", 1, 9, 10, 1);
	dir_msg(&m, "/", 1, 4, 11, 1);
	dir_msg(&m, "/r/./x", 1, 5, 12, 1);
	dir_msg(&m, "/r/sub", 1, 0, 13, 1);
	save("fuzz_resolver", "duplicates", &m);
	w_free(&m);
}

int main(void)
{
	frame_seeds();
	hpack_seeds();
	pb_seeds();
	resolver_seeds();
	return 0;
}
