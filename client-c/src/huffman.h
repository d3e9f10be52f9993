/*
 * huffman.h - the HPACK Huffman code (RFC 7541 section 5.2, Appendix B).
 */
#ifndef FINDERD_HUFFMAN_H
#define FINDERD_HUFFMAN_H

#include <stddef.h>
#include <stdint.h>

/** One symbol's code, right-aligned in @code, @bits long. */
struct fdi_huff_code {
	uint32_t code;
	uint8_t bits;
};

/** Appendix B, indexed by symbol; [256] is EOS. */
extern const struct fdi_huff_code fdi_huff_codes[257];
/** Canonical decoding tables derived from fdi_huff_codes (index: length). */
extern const uint16_t fdi_huff_sorted[257];
extern const uint32_t fdi_huff_first[31];
extern const uint16_t fdi_huff_offset[31];
extern const uint64_t fdi_huff_limit[31];

/**
 * fdi_huffman_decoded_max() - an upper bound of the decoded length of
 * @len Huffman-coded bytes (the shortest code is 5 bits).
 */
static inline size_t fdi_huffman_decoded_max(size_t len)
{
	return len / 5 * 8 + (len % 5) * 8 / 5 + 1;
}

/**
 * fdi_huffman_decode() - decode a Huffman-coded string literal.
 * @src, @len: the coded bytes.
 * @dst: receives the decoded bytes; at least fdi_huffman_decoded_max(@len).
 * @outlen: receives the decoded length.
 *
 * Never reads past @src + @len or writes past the bound above.
 *
 * Return: 0, or FINDERD_EHUFFMAN when the padding is longer than 7 bits or
 * not a prefix of EOS (all ones), or when EOS appears in the string.
 */
int fdi_huffman_decode(const uint8_t *src, size_t len, uint8_t *dst, size_t *outlen);

/** Length in bytes of @len bytes at @src once Huffman-coded. */
size_t fdi_huffman_encoded_len(const uint8_t *src, size_t len);

/**
 * fdi_huffman_encode() - Huffman-code @len bytes into @dst, which has room
 * for fdi_huffman_encoded_len() bytes; pads with ones. Return: bytes written.
 */
size_t fdi_huffman_encode(const uint8_t *src, size_t len, uint8_t *dst);

#endif /* FINDERD_HUFFMAN_H */
