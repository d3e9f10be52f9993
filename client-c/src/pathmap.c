/*
 * pathmap.c - the path-keyed hash table of the resolver (directories held,
 * compiled files held): linear probing, grown at 3/4 full, never shrunk.
 */
#include <errno.h>
#include <string.h>

#include "pathmap.h"

uint64_t fdi_pathmap_hash(const char *key, size_t len)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)key[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

static struct fdi_pathmap_item **slot_of(const struct fdi_pathmap *m, const char *key, size_t len,
					 uint64_t hash)
{
	size_t mask = m->size - 1;
	size_t i = (size_t)hash & mask;

	for (;;) {
		struct fdi_pathmap_item **slot = &m->slots[i];
		const struct fdi_pathmap_item *it = *slot;

		if (!it || (it->hash == hash && it->len == len && memcmp(it->key, key, len) == 0))
			return slot;
		i = (i + 1) & mask;
	}
}

struct fdi_pathmap_item *fdi_pathmap_get(const struct fdi_pathmap *m, const char *key, size_t len)
{
	if (m->count == 0)
		return NULL;
	return *slot_of(m, key, len, fdi_pathmap_hash(key, len));
}

static int grow(struct fdi_pathmap *m, const struct fdi_alloc *a)
{
	size_t old_size = m->size, i;
	struct fdi_pathmap_item **old = m->slots;
	size_t new_size = old_size ? old_size * 2 : 64;
	struct fdi_pathmap_item **fresh = fdi_calloc(a, new_size, sizeof(*fresh));

	if (!fresh)
		return -ENOMEM;
	m->slots = fresh;
	m->size = new_size;
	for (i = 0; i < old_size; i++)
		if (old[i])
			*slot_of(m, old[i]->key, old[i]->len, old[i]->hash) = old[i];
	fdi_free(a, old);
	return 0;
}

int fdi_pathmap_put(struct fdi_pathmap *m, const struct fdi_alloc *a, struct fdi_pathmap_item *item,
		    struct fdi_pathmap_item **replaced)
{
	struct fdi_pathmap_item **slot;

	if ((m->count + 1) * 4 > m->size * 3) {
		int err = grow(m, a);

		if (err)
			return err;
	}
	item->hash = fdi_pathmap_hash(item->key, item->len);
	slot = slot_of(m, item->key, item->len, item->hash);
	*replaced = *slot;
	if (!*slot)
		m->count++;
	*slot = item;
	return 0;
}

void fdi_pathmap_free(struct fdi_pathmap *m, const struct fdi_alloc *a)
{
	fdi_free(a, m->slots);
	memset(m, 0, sizeof(*m));
}
