/*
 * pathmap.h - an open-addressing hash table of items keyed by a path.
 *
 * Items embed struct fdi_pathmap_item as their first member; the map owns
 * neither the items nor their keys, only its slot array.
 */
#ifndef FINDERD_PATHMAP_H
#define FINDERD_PATHMAP_H

#include <stddef.h>
#include <stdint.h>

#include "internal.h"

struct fdi_pathmap_item {
	const char *key;  /* not NUL-terminated as far as the map cares */
	size_t len;
	uint64_t hash;    /* fdi_pathmap_hash(key, len), set by fdi_pathmap_put() */
};

struct fdi_pathmap {
	struct fdi_pathmap_item **slots; /* power-of-two size, at most 3/4 full */
	size_t size;
	size_t count;
};

/** FNV-1a of @len bytes at @key. */
uint64_t fdi_pathmap_hash(const char *key, size_t len);

/** The item keyed @key, or NULL. */
struct fdi_pathmap_item *fdi_pathmap_get(const struct fdi_pathmap *m, const char *key, size_t len);

/**
 * fdi_pathmap_put() - insert @item, replacing an item with the same key.
 * @replaced: receives the item replaced (the caller frees it), or NULL.
 * Return: 0 or -ENOMEM (nothing changed).
 */
int fdi_pathmap_put(struct fdi_pathmap *m, const struct fdi_alloc *a, struct fdi_pathmap_item *item,
		    struct fdi_pathmap_item **replaced);

/** Free the slot array (not the items: walk m->slots first). */
void fdi_pathmap_free(struct fdi_pathmap *m, const struct fdi_alloc *a);

#endif /* FINDERD_PATHMAP_H */
