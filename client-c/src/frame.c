/*
 * frame.c - HTTP/2 frame layout (RFC 9113): parsing and packing, no state.
 */
#include "finderd.h"
#include "frame.h"
#include "internal.h"

void fdi_frame_hd_unpack(struct fdi_frame_hd *hd, const uint8_t *p)
{
	hd->length = fdi_get_be24(p);
	hd->type = p[3];
	hd->flags = p[4];
	hd->stream_id = fdi_get_be32(p + 5) & 0x7fffffffu;
}

void fdi_frame_hd_pack(uint8_t *p, uint32_t length, uint8_t type, uint8_t flags,
		       uint32_t stream_id)
{
	fdi_put_be24(p, length);
	p[3] = type;
	p[4] = flags;
	fdi_put_be32(p + 5, stream_id & 0x7fffffffu);
}

long fdi_frame_next(const uint8_t *buf, size_t len, uint32_t max_frame,
		    struct fdi_frame_hd *hd, const uint8_t **payload)
{
	if (len < FDI_FRAME_HDLEN)
		return 0;
	fdi_frame_hd_unpack(hd, buf);
	if (hd->length > max_frame)
		return FINDERD_EHTTP2;
	if (len - FDI_FRAME_HDLEN < hd->length)
		return 0;
	*payload = buf + FDI_FRAME_HDLEN;
	return (long)(FDI_FRAME_HDLEN + hd->length);
}

/* Frames that belong to a stream, and those that belong to the connection. */
static int needs_stream(uint8_t type)
{
	switch (type) {
	case FDI_DATA:
	case FDI_HEADERS:
	case FDI_PRIORITY:
	case FDI_RST_STREAM:
	case FDI_PUSH_PROMISE:
	case FDI_CONTINUATION:
		return 1;
	}
	return 0;
}

static int needs_connection(uint8_t type)
{
	return type == FDI_SETTINGS || type == FDI_PING || type == FDI_GOAWAY;
}

int fdi_frame_check(const struct fdi_frame_hd *hd)
{
	if (needs_stream(hd->type) && hd->stream_id == 0)
		return FINDERD_EHTTP2;
	if (needs_connection(hd->type) && hd->stream_id != 0)
		return FINDERD_EHTTP2;
	switch (hd->type) {
	case FDI_PRIORITY:
		return hd->length == 5 ? 0 : FINDERD_EHTTP2;
	case FDI_RST_STREAM:
	case FDI_WINDOW_UPDATE:
		return hd->length == 4 ? 0 : FINDERD_EHTTP2;
	case FDI_PING:
		return hd->length == 8 ? 0 : FINDERD_EHTTP2;
	case FDI_GOAWAY:
		return hd->length >= 8 ? 0 : FINDERD_EHTTP2;
	case FDI_SETTINGS:
		if (hd->flags & FDI_FLAG_ACK)
			return hd->length == 0 ? 0 : FINDERD_EHTTP2;
		return hd->length % 6 == 0 ? 0 : FINDERD_EHTTP2;
	}
	return 0;
}

/* Strip the Pad Length byte and the padding; @skip more bytes (priority
 * fields) follow the Pad Length. */
static int unpad(const struct fdi_frame_hd *hd, const uint8_t *payload, size_t skip,
		 const uint8_t **out, size_t *len)
{
	size_t n = hd->length, pad = 0;

	if (hd->flags & FDI_FLAG_PADDED) {
		if (n < 1)
			return FINDERD_EHTTP2;
		pad = payload[0];
		payload++;
		n--;
	}
	/* RFC 9113 6.1: padding that fills the payload is a PROTOCOL_ERROR. */
	if (n < skip || pad > n - skip)
		return FINDERD_EHTTP2;
	*out = payload + skip;
	*len = n - skip - pad;
	return 0;
}

int fdi_frame_data_payload(const struct fdi_frame_hd *hd, const uint8_t *payload,
			   const uint8_t **data, size_t *len)
{
	return unpad(hd, payload, 0, data, len);
}

int fdi_frame_headers_payload(const struct fdi_frame_hd *hd, const uint8_t *payload,
			      const uint8_t **block, size_t *len)
{
	return unpad(hd, payload, (hd->flags & FDI_FLAG_PRIORITY) ? 5 : 0, block, len);
}

void fdi_frame_settings_get(const uint8_t *payload, size_t i, uint16_t *id, uint32_t *value)
{
	const uint8_t *p = payload + i * 6;

	*id = (uint16_t)(p[0] << 8 | p[1]);
	*value = fdi_get_be32(p + 2);
}

int fdi_frame_setting_check(uint16_t id, uint32_t value)
{
	switch (id) {
	case FDI_SETTINGS_ENABLE_PUSH:
		/* A server may only send 0 (RFC 9113 6.5.2). */
		return value == 0 ? 0 : FINDERD_EHTTP2;
	case FDI_SETTINGS_INITIAL_WINDOW_SIZE:
		return value <= FDI_WINDOW_MAX ? 0 : FINDERD_EHTTP2;
	case FDI_SETTINGS_MAX_FRAME_SIZE:
		return value >= FDI_FRAME_SIZE_MIN && value <= FDI_FRAME_SIZE_MAX
			       ? 0
			       : FINDERD_EHTTP2;
	}
	return 0;
}

int fdi_frame_window_update(const uint8_t *payload, uint32_t *increment)
{
	*increment = fdi_get_be32(payload) & 0x7fffffffu;
	return *increment ? 0 : FINDERD_EHTTP2;
}

uint32_t fdi_frame_rst_stream(const uint8_t *payload)
{
	return fdi_get_be32(payload);
}

void fdi_frame_goaway(const uint8_t *payload, uint32_t *last_stream_id, uint32_t *error_code)
{
	*last_stream_id = fdi_get_be32(payload) & 0x7fffffffu;
	*error_code = fdi_get_be32(payload + 4);
}
