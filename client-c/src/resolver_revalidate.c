/*
 * resolver_revalidate.c - whether a held directory can be used now (its
 * epoch, a live lease, its slot still holding its generation, nothing the
 * process changed), and revalidation of everything that cannot in one
 * Lookup.
 */
#include <errno.h>

#include "client.h"

/* Records that carry a listing or an absence need a live slot to be used. */
static int rec_needs_slot(const struct dir_rec *r)
{
	return r->status == FINDERD_DIR_SERVED || r->status == FINDERD_DIR_ABSENT;
}

/*
 * A listing the generation file cannot vouch for (the daemon ran out of
 * slots: slot 0). Every use would need its own Lookup, which costs more
 * than the stat() it saves, so it is left to the filesystem and never
 * revalidated.
 */
static int rec_unvouched(const struct finderd_client *c, const struct dir_rec *r)
{
	return rec_needs_slot(r) && (r->slot == 0 || r->slot >= c->gen.nslots);
}

int fdi_rec_trusted(const struct finderd_client *c, const struct dir_rec *r, int live)
{
	if (!rec_needs_slot(r) || c->trust_all)
		return 1;
	if (r->touched || r->checked_seq != c->invalidate_seq || !live || r->epoch != c->gen.epoch)
		return 0;
	if (rec_unvouched(c, r))
		return 0;
	return load_u64(&c->gen.slots[r->slot]) == r->generation;
}

int fdi_client_fail(struct finderd_client *c, int err)
{
	if (!c->dead) {
		c->dead = 1;
		c->fallbacks++;
		c->lost_error = err;
		c->retry_at_us = 0;
		c->pause_us = c->reconnect_min_us;
	}
	c->error = err;
	return err;
}

int fdi_ensure_conn(struct finderd_client *c)
{
	return c->conn ? 0 : finderd_connect(&c->connect, &c->conn);
}

int fdi_lookup_paths(struct finderd_client *c, const struct finderd_str *paths,
			const uint64_t *known, size_t n)
{
	struct finderd_reply *reply = NULL;
	int err;

	if (c->offline || (c->flags & FINDERD_CLIENT_NO_ROUND_TRIPS))
		return FINDERD_ENOTSERVED; /* only this question goes to the filesystem */
	c->counters.lookups++;
	if (!known)
		c->fetched += n;
	err = fdi_ensure_conn(c);
	if (!err)
		err = finderd_lookup(c->conn, paths, known, known ? c->gen.epoch : 0, n, &reply);
	if (!err)
		err = fdi_absorb_reply(c, reply);
	return err ? fdi_client_fail(c, err) : 0;
}

/*
 * Revalidate, in one Lookup, every held record that is not trusted now.
 * Records answered unchanged keep their listing.
 */
static int revalidate_untrusted(struct finderd_client *c)
{
	int live = fdi_genfile_live(&c->gen);
	struct finderd_str *paths;
	uint64_t *known;
	size_t i, n = 0;
	int err;

	if (c->flags & FINDERD_CLIENT_NO_ROUND_TRIPS)
		return FINDERD_ENOTSERVED; /* only this question goes to the filesystem */
	paths = fdi_malloc(&c->alloc, (c->dirs.count + 1) * sizeof(*paths));
	known = fdi_malloc(&c->alloc, (c->dirs.count + 1) * sizeof(*known));
	if (!paths || !known) {
		fdi_free(&c->alloc, paths);
		fdi_free(&c->alloc, known);
		return -ENOMEM;
	}
	for (i = 0; i < c->dirs.size; i++) {
		struct dir_rec *r = table_at(c, i);

		if (!r || fdi_rec_trusted(c, r, live) || rec_unvouched(c, r))
			continue;
		paths[n].data = r->item.key;
		paths[n].len = r->item.len;
		known[n] = r->epoch == c->gen.epoch ? r->generation : 0;
		n++;
	}
	c->counters.revalidations += n;
	err = n ? fdi_lookup_paths(c, paths, known, n) : 0;
	fdi_free(&c->alloc, paths);
	fdi_free(&c->alloc, known);
	return err;
}

struct dir_rec *fdi_get_trusted(struct finderd_client *c, const char *path, size_t len,
				   int *err)
{
	struct dir_rec *r = table_get(c, path, len);

	*err = 0;
	if (!r || fdi_rec_trusted(c, r, fdi_genfile_live(&c->gen)))
		return r;
	if (rec_unvouched(c, r))
		return NULL; /* the filesystem answers */
	*err = revalidate_untrusted(c);
	if (*err)
		return NULL;
	if (!fdi_genfile_live(&c->gen)) {
		/*
		 * The Lookup's barrier refreshes dry_ns, so a daemon that
		 * answered yet is not live cannot be trusted at all (its clock
		 * is not ours, or it is broken): stop asking it.
		 */
		*err = fdi_client_fail(c, FINDERD_EGENFILE);
		return NULL;
	}
	r = table_get(c, path, len);
	if (r && !fdi_rec_trusted(c, r, 1))
		r = NULL; /* the daemon cannot vouch for it: ask the filesystem */
	return r;
}

void finderd_client_touch(struct finderd_client *c, const char *path, size_t len)
{
	struct dir_rec *r;
	size_t plen;

	if (!c || c->dirs.count == 0)
		return;
	if (!fdi_path_is_canonical(path, len)) {
		finderd_client_invalidate(c);
		return;
	}
	r = table_get(c, path, len);
	if (r)
		r->touched = 1;
	plen = parent_len(path, len);
	r = plen ? table_get(c, path, plen) : NULL;
	if (r)
		r->touched = 1;
}

/* Does the held, trusted listing of @path's directory name @path as a directory? */
static int held_as_directory(struct finderd_client *c, const char *path, size_t len)
{
	const struct finderd_entry *entries, *e;
	struct dir_rec *r;
	size_t n, plen;

	if (!fdi_path_is_canonical(path, len))
		return 0;
	plen = parent_len(path, len);
	r = plen ? table_get(c, path, plen) : NULL;
	if (!r || r->status != FINDERD_DIR_SERVED || !fdi_rec_trusted(c, r, fdi_genfile_live(&c->gen)) ||
	    rec_entries(r, &entries, &n) != 0)
		return 0;
	e = fdi_find_entry(entries, n, path + plen + 1, len - plen - 1);
	return e && (e->kind == FINDERD_ENTRY_DIR || e->kind == FINDERD_ENTRY_SYMLINK_DIR);
}

void finderd_client_touch_mkdir(struct finderd_client *c, const char *path, size_t len)
{
	if (c && c->dirs.count && held_as_directory(c, path, len))
		return; /* mkdir() fails with EEXIST: nothing changes */
	finderd_client_touch(c, path, len);
}

void finderd_client_invalidate(struct finderd_client *c)
{
	if (c)
		c->invalidate_seq++;
}
