/*
 * fuzz_pb.c - libFuzzer target: the input as a SnapshotReply and as a
 * LookupReply (every directory's entries decoded), a StatsReply and a
 * HealthCheckResponse.
 */
#include <stdint.h>

#include "finderd.h"
#include "pb.h"
#include "reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void reply(const struct fdi_alloc *a, const uint8_t *data, size_t size,
		  enum fdi_reply_kind kind)
{
	struct finderd_reply *r;
	const struct finderd_entry *e;
	size_t i, j, n, sum = 0;

	if (fdi_reply_decode(a, NULL, data, size, kind, &r))
		return;
	for (i = 0; i < finderd_reply_dir_count(r); i++) {
		const struct finderd_dir *d = finderd_reply_dir(r, i);

		sum += d->path.len ? (uint8_t)d->path.data[d->path.len - 1] : 0;
		if (finderd_dir_entries(r, i, &e, &n) == 0)
			for (j = 0; j < n; j++)
				sum += e[j].name.len ? (uint8_t)e[j].name.data[0] : 0;
	}
	(void)sum;
	finderd_reply_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fdi_alloc a;
	struct finderd_stats st;
	int status;

	fdi_alloc_libc(&a);
	reply(&a, data, size, FDI_REPLY_SNAPSHOT);
	reply(&a, data, size, FDI_REPLY_LOOKUP);
	fdi_pb_decode_stats(data, size, &st);
	fdi_pb_decode_health(data, size, &status);
	return 0;
}
