/*
 * fuzz_hpack.c - libFuzzer target: the first byte picks the table size,
 * then blocks follow, each preceded by its length (one byte), decoded on one
 * decoder so that the dynamic table carries over. The whole input is also
 * Huffman-decoded into a buffer of exactly the documented bound.
 */
#include <stdint.h>
#include <stdlib.h>

#include "hpack.h"
#include "huffman.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int sink(void *ud, const uint8_t *name, size_t nlen, const uint8_t *value, size_t vlen)
{
	size_t *total = ud;

	/* Touch every byte so the sanitizer checks the pointers. */
	while (nlen--)
		*total += name[nlen];
	while (vlen--)
		*total += value[vlen];
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fdi_alloc a;
	struct fdi_hpack h;
	size_t off = 1, total = 0, out;
	uint8_t *dst;

	dst = malloc(fdi_huffman_decoded_max(size));
	if (dst) {
		fdi_huffman_decode(data, size, dst, &out);
		free(dst);
	}
	if (size < 1)
		return 0;
	fdi_alloc_libc(&a);
	if (fdi_hpack_init(&h, &a, (size_t)data[0] * 32))
		return 0;
	while (off < size) {
		size_t n = data[off++];

		if (n > size - off)
			n = size - off;
		if (fdi_hpack_decode(&h, data + off, n, sink, &total))
			break;
		off += n;
	}
	fdi_hpack_free(&h);
	return 0;
}
