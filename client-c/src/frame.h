/*
 * frame.h - HTTP/2 frame layout (RFC 9113 section 4 and 6): pure functions
 * over a buffer and a length, each returning 0 or FINDERD_EHTTP2.
 */
#ifndef FINDERD_FRAME_H
#define FINDERD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FDI_FRAME_HDLEN 9u
/** SETTINGS_MAX_FRAME_SIZE bounds (RFC 9113 6.5.2). */
#define FDI_FRAME_SIZE_MIN 16384u
#define FDI_FRAME_SIZE_MAX 16777215u
/** Largest window (RFC 9113 6.9.1). */
#define FDI_WINDOW_MAX 2147483647

enum fdi_frame_type {
	FDI_DATA = 0x0,
	FDI_HEADERS = 0x1,
	FDI_PRIORITY = 0x2,
	FDI_RST_STREAM = 0x3,
	FDI_SETTINGS = 0x4,
	FDI_PUSH_PROMISE = 0x5,
	FDI_PING = 0x6,
	FDI_GOAWAY = 0x7,
	FDI_WINDOW_UPDATE = 0x8,
	FDI_CONTINUATION = 0x9,
};

enum fdi_frame_flag {
	FDI_FLAG_END_STREAM = 0x01,
	FDI_FLAG_ACK = 0x01,
	FDI_FLAG_END_HEADERS = 0x04,
	FDI_FLAG_PADDED = 0x08,
	FDI_FLAG_PRIORITY = 0x20,
};

enum fdi_settings_id {
	FDI_SETTINGS_HEADER_TABLE_SIZE = 0x1,
	FDI_SETTINGS_ENABLE_PUSH = 0x2,
	FDI_SETTINGS_MAX_CONCURRENT_STREAMS = 0x3,
	FDI_SETTINGS_INITIAL_WINDOW_SIZE = 0x4,
	FDI_SETTINGS_MAX_FRAME_SIZE = 0x5,
	FDI_SETTINGS_MAX_HEADER_LIST_SIZE = 0x6,
};

enum fdi_h2_error {
	FDI_H2_NO_ERROR = 0x0,
	FDI_H2_PROTOCOL_ERROR = 0x1,
	FDI_H2_INTERNAL_ERROR = 0x2,
	FDI_H2_FLOW_CONTROL_ERROR = 0x3,
	FDI_H2_STREAM_CLOSED = 0x5,
	FDI_H2_FRAME_SIZE_ERROR = 0x6,
	FDI_H2_CANCEL = 0x8,
	FDI_H2_COMPRESSION_ERROR = 0x9,
};

/** The 9-byte frame header. */
struct fdi_frame_hd {
	uint32_t length;
	uint8_t type;
	uint8_t flags;
	uint32_t stream_id; /* reserved bit cleared */
};

/** The client connection preface (RFC 9113 3.4). */
#define FDI_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define FDI_PREFACE_LEN 24u

void fdi_frame_hd_unpack(struct fdi_frame_hd *hd, const uint8_t *p);
void fdi_frame_hd_pack(uint8_t *p, uint32_t length, uint8_t type, uint8_t flags,
		       uint32_t stream_id);

/**
 * fdi_frame_next() - find the next complete frame in @buf.
 * @max_frame: our SETTINGS_MAX_FRAME_SIZE.
 * @payload: receives a pointer to the frame's payload in @buf.
 *
 * Return: the frame's total length (header included) when complete; 0 when
 * more input is needed; FINDERD_EHTTP2 as soon as the header announces more
 * than @max_frame bytes.
 */
long fdi_frame_next(const uint8_t *buf, size_t len, uint32_t max_frame,
		    struct fdi_frame_hd *hd, const uint8_t **payload);

/**
 * fdi_frame_check() - the type-specific layout rules that need no state:
 * stream 0 or not, fixed payload lengths.
 */
int fdi_frame_check(const struct fdi_frame_hd *hd);

/**
 * fdi_frame_data_payload() - DATA without its padding.
 * fdi_frame_headers_payload() - HEADERS' header block fragment, without
 * padding and priority fields.
 */
int fdi_frame_data_payload(const struct fdi_frame_hd *hd, const uint8_t *payload,
			   const uint8_t **data, size_t *len);
int fdi_frame_headers_payload(const struct fdi_frame_hd *hd, const uint8_t *payload,
			      const uint8_t **block, size_t *len);

/** The @i-th (identifier, value) pair of a SETTINGS payload. */
void fdi_frame_settings_get(const uint8_t *payload, size_t i, uint16_t *id, uint32_t *value);
/** Validate one setting's value (RFC 9113 6.5.2, as received by a client). */
int fdi_frame_setting_check(uint16_t id, uint32_t value);

/** WINDOW_UPDATE increment; 0 is FINDERD_EHTTP2. */
int fdi_frame_window_update(const uint8_t *payload, uint32_t *increment);
/** RST_STREAM error code. */
uint32_t fdi_frame_rst_stream(const uint8_t *payload);
/** GOAWAY last stream id and error code. */
void fdi_frame_goaway(const uint8_t *payload, uint32_t *last_stream_id, uint32_t *error_code);

#endif /* FINDERD_FRAME_H */
