/*
 * resolver_table.c - the directories the client holds: every reply is kept
 * whole and shared by the records of its directories (and compiled files),
 * keyed by path; the form of the paths it keys; entries of a listing by name.
 */
#include <errno.h>
#include <string.h>

#include "client.h"

int fdi_path_is_canonical(const char *path, size_t len)
{
	size_t i, start;

	if (len == 0 || path[0] != '/')
		return 0;
	if (len == 1)
		return 1;
	if (path[len - 1] == '/')
		return 0;
	start = 1;
	for (i = 1; i <= len; i++) {
		if (i < len && path[i] == '\0')
			return 0;
		if (i == len || path[i] == '/') {
			size_t clen = i - start;

			if (clen == 0)
				return 0;
			if (clen == 1 && path[start] == '.')
				return 0;
			if (clen == 2 && path[start] == '.' && path[start + 1] == '.')
				return 0;
			start = i + 1;
		}
	}
	return 1;
}

static int compare_names(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = memcmp(a, b, n);

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

const struct finderd_entry *fdi_find_entry(const struct finderd_entry *entries, size_t n,
					      const char *name, size_t len)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = compare_names(entries[mid].name.data, entries[mid].name.len, name, len);

		if (c == 0)
			return &entries[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static struct held_reply *held_new(struct finderd_client *c, struct finderd_reply *reply)
{
	struct held_reply *h = fdi_malloc(&c->alloc, sizeof(*h));

	if (!h)
		return NULL;
	h->reply = reply;
	h->refs = 0;
	return h;
}

static void held_unref(struct finderd_client *c, struct held_reply *h)
{
	if (!h || --h->refs > 0)
		return;
	finderd_reply_free(h->reply);
	fdi_free(&c->alloc, h);
}

void fdi_rec_free(struct finderd_client *c, struct dir_rec *r)
{
	if (!r)
		return;
	held_unref(c, r->held);
	fdi_free(&c->alloc, (char *)r->item.key);
	fdi_free(&c->alloc, r);
}

void fdi_file_free(struct finderd_client *c, struct file_rec *f)
{
	if (!f)
		return;
	held_unref(c, f->held);
	fdi_free(&c->alloc, f);
}

/* Insert or replace the record for @dir (index @index of @held's reply). */
static int table_put(struct finderd_client *c, struct held_reply *held, size_t index,
		     const struct finderd_dir *dir, uint64_t epoch)
{
	struct fdi_pathmap_item *replaced;
	struct dir_rec *r;
	char *path;
	int err;

	r = fdi_calloc(&c->alloc, 1, sizeof(*r));
	path = fdi_malloc(&c->alloc, dir->path.len + 1);
	if (!r || !path) {
		fdi_free(&c->alloc, r);
		fdi_free(&c->alloc, path);
		return -ENOMEM;
	}
	memcpy(path, dir->path.data, dir->path.len);
	path[dir->path.len] = '\0';
	r->item.key = path;
	r->item.len = dir->path.len;
	err = fdi_pathmap_put(&c->dirs, &c->alloc, &r->item, &replaced);
	if (err) {
		fdi_free(&c->alloc, path);
		fdi_free(&c->alloc, r);
		return err;
	}
	if (replaced) {
		/* A newer answer for the same path: what this run did with the
		 * path (for its report) carries over. */
		const struct dir_rec *old = (const struct dir_rec *)replaced;

		r->used = old->used;
		r->entry = old->entry;
		r->planned = old->planned;
	}
	fdi_rec_free(c, (struct dir_rec *)replaced);
	r->held = held;
	held->refs++;
	r->index = index;
	r->status = dir->status;
	r->error = dir->error;
	r->generation = dir->generation;
	r->slot = dir->slot;
	r->epoch = epoch;
	r->checked_seq = c->invalidate_seq;
	r->self.mode = dir->mode;
	r->self.kind = FINDERD_ENTRY_DIR;
	r->self.mtime_ns = dir->mtime_ns;
	r->self.size = dir->size;
	r->slow = dir->slow_filesystem != 0;
	return 0;
}

/* Keep the compiled files of @held's reply, replacing older copies. */
static int absorb_files(struct finderd_client *c, struct held_reply *held)
{
	size_t i, n = finderd_reply_file_count(held->reply);

	for (i = 0; i < n; i++) {
		const struct finderd_cached_file *file = finderd_reply_file(held->reply, i);
		struct fdi_pathmap_item *replaced;
		struct file_rec *f = fdi_calloc(&c->alloc, 1, sizeof(*f));
		int err;

		if (!f)
			return -ENOMEM;
		f->item.key = file->path.data;
		f->item.len = file->path.len;
		f->file = file;
		err = fdi_pathmap_put(&c->files, &c->alloc, &f->item, &replaced);
		if (err) {
			fdi_free(&c->alloc, f);
			return err;
		}
		f->held = held;
		held->refs++;
		fdi_file_free(c, (struct file_rec *)replaced);
	}
	return 0;
}

int fdi_absorb_reply(struct finderd_client *c, struct finderd_reply *reply)
{
	const struct finderd_genfile_info *info = finderd_reply_genfile(reply);
	struct held_reply *held;
	size_t i, n = finderd_reply_dir_count(reply);
	int err;

	err = info && info->path.len && !c->offline ? fdi_genfile_map(&c->gen, info) : 0;
	if (err) {
		finderd_reply_free(reply);
		return err;
	}
	held = held_new(c, reply);
	if (!held) {
		finderd_reply_free(reply);
		return -ENOMEM;
	}
	held->seq = c->replies_absorbed++;
	held->refs = 1; /* keep alive while absorbing */
	for (i = 0; i < n; i++) {
		const struct finderd_dir *d = finderd_reply_dir(reply, i);
		struct dir_rec *old;

		if (d->status == FINDERD_DIR_UNCHANGED) {
			old = table_get(c, d->path.data, d->path.len);
			if (old) {
				old->checked_seq = c->invalidate_seq;
				old->touched = 0;
			}
			continue;
		}
		err = table_put(c, held, i, d, c->gen.epoch);
		if (err) {
			held_unref(c, held);
			return err;
		}
	}
	err = absorb_files(c, held);
	held_unref(c, held);
	return err;
}
