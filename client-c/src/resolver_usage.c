/*
 * resolver_usage.c - what a run used, for its Report: the directories whose
 * listings answered it, the compiled files it read on slow filesystems
 * (served from a reply while still current); and whether it differs from
 * the plan its start-up answer carried.
 */
#include <errno.h>
#include <string.h>

#include "client.h"
#include "resolver.h"

/*
 * After a snapshot: which held directories are the request's sys.path
 * entries (always asked for, never reported) and which came from the
 * program's learned plan (reported only when they go unused).
 */
void fdi_mark_snapshot_roles(struct finderd_client *c, const struct finderd_str *sys_path,
				size_t n_sys_path)
{
	size_t i;

	for (i = 0; i < c->dirs.size; i++) {
		struct dir_rec *r = table_at(c, i);

		if (r && r->held && r->held->seq == c->replies_absorbed - 1)
			r->planned = r->index >= n_sys_path &&
				     r->index < n_sys_path +
					     finderd_reply_planned_directories(r->held->reply);
	}
	for (i = 0; i < n_sys_path; i++) {
		struct dir_rec *r = table_get(c, sys_path[i].data, sys_path[i].len);

		if (r)
			r->entry = 1;
	}
}

/* Up to this many compiled files (and bytes of their names) are reported. */
#define MAX_REPORTED_READS 4096
#define MAX_REPORTED_READ_BYTES (1u << 20)

/* A compiled file @path under a slow filesystem was asked for: report it. */
static void note_read(struct finderd_client *c, const char *path, size_t len, int from_disk)
{
	static const char nul = '\0';

	c->read_from_disk |= from_disk;
	if (c->n_reads >= MAX_REPORTED_READS || c->reads.len + len + 1 > MAX_REPORTED_READ_BYTES)
		return;
	if (fdi_buf_append(&c->reads, &c->alloc, path, len) == 0 &&
	    fdi_buf_append(&c->reads, &c->alloc, &nul, 1) == 0)
		c->n_reads++;
}

/* Is the file at @path (whose directory is @plen bytes long) on a slow filesystem? */
static int on_slow_filesystem(struct finderd_client *c, const char *path, size_t plen)
{
	const struct dir_rec *dir = table_get(c, path, plen);
	size_t glen = parent_len(path, plen);
	const struct dir_rec *grand = glen ? table_get(c, path, glen) : NULL;

	return (dir && dir->slow) || (grand && grand->slow);
}

int finderd_client_cached_file(struct finderd_client *c, const char *path, size_t len,
			       struct finderd_str *data)
{
	const struct finderd_entry *entries, *e = NULL;
	const struct file_rec *f;
	struct dir_rec *dir = NULL;
	size_t n, plen;
	int err, slow;

	if (!c || c->dead || !fdi_path_is_canonical(path, len) || !data)
		return -ENOENT;
	plen = parent_len(path, len);
	if (plen == 0)
		return -ENOENT;
	slow = on_slow_filesystem(c, path, plen);
	f = (const struct file_rec *)fdi_pathmap_get(&c->files, path, len);
	if (f && table_get(c, path, plen))
		dir = fdi_get_trusted(c, path, plen, &err);
	if (dir && dir->status == FINDERD_DIR_SERVED && rec_entries(dir, &entries, &n) == 0)
		e = fdi_find_entry(entries, n, path + plen + 1, len - plen - 1);
	if (!e || e->kind != FINDERD_ENTRY_FILE || e->mtime_ns != f->file->mtime_ns ||
	    e->size != f->file->size) {
		if (slow)
			note_read(c, path, len, 1);
		return -ENOENT;
	}
	dir->used = 1;
	if (slow)
		note_read(c, path, len, 0);
	*data = f->file->data;
	return 0;
}

int fdi_client_reads_compiled_files(const struct finderd_client *c)
{
	size_t i;

	if (c->files.count)
		return 1;
	for (i = 0; i < c->dirs.size; i++)
		if (table_at(c, i) && table_at(c, i)->slow)
			return 1;
	return 0;
}

/*
 * Did this run use something its start-up answer did not plan for? A
 * directory fetched by a Lookup, a planned one left unused, a compiled file
 * read from disk, or a prefetched directory used (the daemon had no plan,
 * guessed, and guessed right: the plan it learns now replaces the guess, so
 * the next start gets exactly what was used instead of the whole guess).
 */
static int run_differs_from_plan(const struct finderd_client *c)
{
	size_t i;

	if (c->fetched || c->read_from_disk)
		return 1;
	for (i = 0; i < c->dirs.size; i++) {
		const struct dir_rec *r = table_at(c, i);

		if (r && r->planned && !r->used)
			return 1;
		if (r && r->used && !r->planned && !r->entry)
			return 1;
	}
	return 0;
}

/* Fill @out with this run's used directories; returns how many. */
static size_t used_directories(const struct finderd_client *c, struct finderd_str *out)
{
	size_t i, n = 0;

	for (i = 0; i < c->dirs.size; i++) {
		const struct dir_rec *r = table_at(c, i);

		if (r && r->used && !r->entry) {
			out[n].data = r->item.key;
			out[n].len = r->item.len;
			n++;
		}
	}
	return n;
}

/* Point @out at the NUL-separated names of c->reads. */
static void read_files(const struct finderd_client *c, struct finderd_str *out)
{
	const char *p = (const char *)c->reads.data;
	size_t i;

	for (i = 0; i < c->n_reads; i++) {
		out[i].data = p;
		out[i].len = strlen(p);
		p += out[i].len + 1;
	}
}

int finderd_client_report(struct finderd_client *c, const char *program_key, size_t len)
{
	struct finderd_report_request req;
	struct finderd_str *dirs, *files;
	int err;

	/* A run that lost its daemon knows only part of what it used. */
	if (!c || c->dead || c->offline || c->fallbacks || !run_differs_from_plan(c))
		return 0;
	dirs = fdi_calloc(&c->alloc, c->dirs.count + 1, sizeof(*dirs));
	files = fdi_calloc(&c->alloc, c->n_reads + 1, sizeof(*files));
	err = dirs && files ? fdi_ensure_conn(c) : -ENOMEM;
	if (!err) {
		memset(&req, 0, sizeof(req));
		req.program_key.data = program_key;
		req.program_key.len = len;
		req.directories = dirs;
		req.n_directories = used_directories(c, dirs);
		req.bytecode_files = files;
		req.n_bytecode_files = c->n_reads;
		read_files(c, files);
		err = finderd_report(c->conn, &req);
	}
	fdi_free(&c->alloc, dirs);
	fdi_free(&c->alloc, files);
	return err;
}
