/*
 * resolver_record.c - recordings of the replies a client holds, and offline
 * clients that answer from one, trusting it all: for benchmarks (the
 * client's own cost with no daemon), never for real use.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "client.h"
#include "resolver.h"

static const char recording_magic[8] = { 'F', 'I', 'N', 'D', 'R', 'E', 'C', '1' };

static int write_all(int fd, const void *data, size_t len)
{
	const char *p = data;

	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int save_reply(int fd, const struct finderd_reply *reply)
{
	enum fdi_reply_kind kind;
	const uint8_t *msg;
	unsigned char head[5];
	size_t len;
	int err;

	fdi_reply_message(reply, &msg, &len, &kind);
	if (len > UINT32_MAX)
		return -EFBIG;
	head[0] = (unsigned char)kind;
	head[1] = (unsigned char)len;
	head[2] = (unsigned char)(len >> 8);
	head[3] = (unsigned char)(len >> 16);
	head[4] = (unsigned char)(len >> 24);
	err = write_all(fd, head, sizeof(head));
	return err ? err : write_all(fd, msg, len);
}

int fdi_client_save(struct finderd_client *c, int fd)
{
	int err = write_all(fd, recording_magic, sizeof(recording_magic));
	uint64_t next = 0;
	size_t i;

	/* Replies in arrival order: the oldest one not saved yet, repeatedly. */
	while (!err) {
		const struct held_reply *oldest = NULL;

		for (i = 0; i < c->dirs.size; i++) {
			const struct held_reply *h = table_at(c, i) ? table_at(c, i)->held : NULL;

			if (h && h->seq >= next && (!oldest || h->seq < oldest->seq))
				oldest = h;
		}
		if (!oldest)
			break;
		err = save_reply(fd, oldest->reply);
		next = oldest->seq + 1;
	}
	return err;
}

static int read_all(int fd, struct fdi_buf *b, const struct fdi_alloc *a)
{
	for (;;) {
		ssize_t n;
		int err = fdi_buf_reserve(b, a, 65536);

		if (err)
			return err;
		n = read(fd, b->data + b->len, b->cap - b->len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return 0;
		b->len += (size_t)n;
	}
}

static int replay_one(struct finderd_client *c, const uint8_t *p, size_t len,
		      enum fdi_reply_kind kind)
{
	struct finderd_reply *reply;
	uint8_t *copy = fdi_malloc(&c->alloc, len);
	int err;

	if (!copy)
		return -ENOMEM;
	if (len)
		memcpy(copy, p, len);
	err = fdi_reply_decode(&c->alloc, copy, copy, len, kind, &reply);
	if (err) {
		fdi_free(&c->alloc, copy);
		return err;
	}
	return fdi_absorb_reply(c, reply);
}

int fdi_client_replay(const struct fdi_alloc *a, int fd, struct finderd_client **clientp)
{
	struct fdi_buf b = { NULL, 0, 0 };
	struct finderd_client *c;
	size_t at = sizeof(recording_magic);
	int err = fdi_client_new_offline(a, &c);

	if (err)
		return err;
	c->trust_all = 1;
	err = read_all(fd, &b, a);
	if (!err && (b.len < at || memcmp(b.data, recording_magic, at) != 0))
		err = -EINVAL;
	while (!err && at < b.len) {
		size_t len;

		if (b.len - at < 5 || b.data[at] > FDI_REPLY_LOOKUP) {
			err = -EINVAL;
			break;
		}
		len = (size_t)b.data[at + 1] | (size_t)b.data[at + 2] << 8 |
		      (size_t)b.data[at + 3] << 16 | (size_t)b.data[at + 4] << 24;
		if (len > b.len - at - 5) {
			err = -EINVAL;
			break;
		}
		err = replay_one(c, b.data + at + 5, len, (enum fdi_reply_kind)b.data[at]);
		at += 5 + len;
	}
	fdi_buf_free(&b, a);
	if (err) {
		finderd_client_free(c);
		return err;
	}
	*clientp = c;
	return 0;
}
