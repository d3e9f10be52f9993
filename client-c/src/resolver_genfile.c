/*
 * resolver_genfile.c - the read-only mapping of the daemon's generation
 * file (see the proto's GenerationFile): mapped once per epoch, its header
 * checked; a held directory's slot is read from it with no system call.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "client.h"

#define GENFILE_MAGIC UINT64_C(0x314E4547444E4946) /* "FINDGEN1" little-endian */
#define GENFILE_LAYOUT_VERSION 1u
#define GENFILE_HEADER_BYTES 64u
/* A sanity bound (2 GiB of slots; the daemon's default is 262144) that also
 * keeps the mapping's size within a 32-bit size_t. */
#define GENFILE_MAX_SLOTS (1u << 28)

/* The generation file header, as the daemon lays it out. */
struct genfile_header {
	uint64_t magic;
	uint32_t version;
	uint32_t slots;
	uint64_t epoch;
	uint64_t dry_ns;
	uint64_t lease_ns;
	uint64_t reserved[3];
};

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

void fdi_genfile_unmap(struct genfile_map *g)
{
	if (g->header)
		munmap((void *)g->header, g->map_bytes);
	memset(g, 0, sizeof(*g));
}

int fdi_genfile_map(struct genfile_map *g, const struct finderd_genfile_info *info)
{
	char path[4096];
	struct stat st;
	size_t bytes;
	void *map;
	const struct genfile_header *h;
	int fd;

	if (info->path.len == 0 || info->path.len >= sizeof(path) || info->slots == 0 ||
	    info->slots > GENFILE_MAX_SLOTS)
		return FINDERD_EGENFILE;
	if (g->header && g->epoch == info->epoch)
		return 0;
	if (memchr(info->path.data, '\0', info->path.len))
		return FINDERD_EGENFILE;
	memcpy(path, info->path.data, info->path.len);
	path[info->path.len] = '\0';
	bytes = GENFILE_HEADER_BYTES + (size_t)info->slots * sizeof(uint64_t);
	/* O_NONBLOCK: a FIFO named by a hostile peer must not block open(). */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return FINDERD_EGENFILE;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < 0 ||
	    (uint64_t)st.st_size < (uint64_t)bytes) {
		close(fd);
		return FINDERD_EGENFILE;
	}
	map = mmap(NULL, bytes, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (map == MAP_FAILED)
		return FINDERD_EGENFILE;
	h = map;
	if (h->magic != GENFILE_MAGIC || h->version != GENFILE_LAYOUT_VERSION ||
	    h->slots != info->slots || h->epoch != info->epoch) {
		munmap(map, bytes);
		return FINDERD_EGENFILE;
	}
	fdi_genfile_unmap(g);
	g->header = map;
	g->slots = (const volatile uint64_t *)((const char *)map + GENFILE_HEADER_BYTES);
	g->map_bytes = bytes;
	g->epoch = info->epoch;
	g->lease_ns = info->lease_ns;
	g->nslots = info->slots;
	return 0;
}

int fdi_genfile_live(const struct genfile_map *g)
{
	uint64_t now, dry;

	if (!g->header || load_u64(&g->header->epoch) != g->epoch)
		return 0;
	dry = load_u64(&g->header->dry_ns);
	now = monotonic_ns();
	return now >= dry && now - dry < g->lease_ns;
}
