/*
 * fuzz_frame.c - libFuzzer target: the input is what a server sends. It is
 * fed to the HTTP/2 client session (frame parser, HPACK, gRPC response
 * checks) the way the transport does, in chunks with an incomplete frame
 * carried over, with calls opened one after the other. The pure frame
 * functions also see every frame.
 */
#include <stdint.h>
#include <string.h>

#include "frame.h"
#include "grpc.h"
#include "h2.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void pure_frames(const uint8_t *data, size_t size)
{
	struct fdi_frame_hd hd;
	const uint8_t *payload, *out;
	size_t off = 0, n;
	long len;

	while ((len = fdi_frame_next(data + off, size - off, 16384, &hd, &payload)) > 0) {
		off += (size_t)len;
		if (fdi_frame_check(&hd))
			continue;
		if (hd.type == FDI_DATA)
			fdi_frame_data_payload(&hd, payload, &out, &n);
		else if (hd.type == FDI_HEADERS)
			fdi_frame_headers_payload(&hd, payload, &out, &n);
	}
}

static int open_call(struct fdi_h2 *h2, struct fdi_grpc_call *call, const struct fdi_alloc *a)
{
	static const uint8_t hb[] = { 0x83, 0x86, 0x44, 0x01, 0x2f };
	static const uint8_t body[] = { 0, 0, 0, 0, 2, 0x08, 0x01 };

	fdi_grpc_call_free(call);
	fdi_grpc_call_init(call, a, 1 << 20);
	return fdi_h2_submit(h2, hb, sizeof(hb), body, sizeof(body), &fdi_grpc_cb, call);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t rbuf[65536];
	struct fdi_alloc a;
	struct fdi_h2 h2;
	struct fdi_grpc_call call;
	size_t off = 0, rlen = 0, chunk = 1 + (size ? data[0] % 97 : 0) * 61;
	int calls = 0;

	pure_frames(data, size);
	fdi_alloc_libc(&a);
	if (fdi_h2_init(&h2, &a))
		return 0;
	fdi_grpc_call_init(&call, &a, 1 << 20);
	if (open_call(&h2, &call, &a))
		goto out;
	while (off < size) {
		size_t n = size - off < chunk ? size - off : chunk, used;

		if (n > sizeof(rbuf) - rlen)
			n = sizeof(rbuf) - rlen;
		memcpy(rbuf + rlen, data + off, n);
		off += n;
		rlen += n;
		if (fdi_h2_recv(&h2, rbuf, rlen, &used))
			break;
		memmove(rbuf, rbuf + used, rlen - used);
		rlen -= used;
		if (fdi_h2_pump(&h2))
			break;
		fdi_h2_out_consume(&h2, fdi_h2_out_len(&h2));
		if (fdi_h2_stream_done(&h2)) {
			const uint8_t *msg;
			size_t len;

			if (fdi_h2_stream_finish(&h2) == 0)
				fdi_grpc_call_finish(&call, &msg, &len);
			if (++calls == 4 || open_call(&h2, &call, &a))
				break;
		}
	}
out:
	fdi_grpc_call_free(&call);
	fdi_h2_free(&h2);
	return 0;
}
