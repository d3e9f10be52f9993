/*
 * resolver.c - struct finderd_client: stat()/listdir() answers from listings.
 *
 * The client keeps every directory the daemon sent, keyed by path, and a
 * read-only mapping of the daemon's generation file. A held directory is
 * trusted while the file's epoch is the one it was answered under, the
 * daemon read its change queue dry less than a lease ago, and its slot still
 * holds its generation (see docs/architecture.md, "Freshness"). Checking
 * that is three memory reads and a vDSO clock read: no system call.
 *
 * What it cannot trust it revalidates in one batched Lookup carrying the
 * generations it holds; what it does not hold it asks for (one Lookup) when
 * a held parent listing says the path is a directory; everything else is
 * FINDERD_ENOTSERVED and the caller asks the filesystem. After a transport
 * error the client answers FINDERD_ENOTSERVED forever: a process never
 * depends on a daemon that went away.
 *
 * This file answers (stat, listdir) and holds the client's life cycle; the
 * other parts are listed in client.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "finderd.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "client.h"
#include "resolver.h"

/* ------------------------------------------------------------------------ */
/* Paths with "." components                                                */
/* ------------------------------------------------------------------------ */

/*
 * Python 3.9 and 3.10 key the current directory as "CWD/." and stat
 * "CWD/./name". A "." component names the directory before it, provided
 * that is a directory; where the client holds that prefix as a served
 * directory, dropping the component keys the path as the daemon does.
 * Anything else ("..", empty components, a prefix not held) stays with the
 * filesystem. Returns the new length in @buf, or 0.
 */
static size_t strip_dot_components(struct finderd_client *c, const char *path, size_t len,
				   char *buf, size_t size)
{
	size_t i = 0, out = 0;

	if (len == 0 || path[0] != '/' || len >= size)
		return 0;
	while (i < len) {
		size_t start = i + 1, end = start;

		while (end < len && path[end] != '/')
			end++;
		if (end - start == 1 && path[start] == '.') {
			struct dir_rec *held = out ? table_get(c, buf, out) : NULL;

			if (!held || held->status != FINDERD_DIR_SERVED)
				return 0;
		} else {
			memcpy(buf + out, path + i, end - i);
			out += end - i;
		}
		i = end;
	}
	return fdi_path_is_canonical(buf, out) ? out : 0;
}

/*
 * Point (*path, *len) at the form the daemon keys: the path itself when
 * canonical, else its copy in @buf without "." components. Returns 0 when
 * the path is not one the client can answer for.
 */
static int key_path(struct finderd_client *c, const char **path, size_t *len, char *buf,
		    size_t size)
{
	size_t stripped;

	if (fdi_path_is_canonical(*path, *len))
		return 1;
	stripped = strip_dot_components(c, *path, *len, buf, size);
	if (stripped == 0)
		return 0;
	*path = buf;
	*len = stripped;
	return 1;
}

/* ------------------------------------------------------------------------ */
/* Answers                                                                  */
/* ------------------------------------------------------------------------ */

static void stat_from_entry(struct finderd_stat *st, const struct finderd_entry *e)
{
	st->mode = e->mode;
	st->kind = e->kind;
	st->mtime_ns = e->mtime_ns;
	st->size = e->size;
}

/* What a record of a missing directory says about paths below it. */
static int absent_error(const struct dir_rec *r)
{
	return r->error == ENOTDIR ? -ENOTDIR : -ENOENT;
}

/* Most directory levels one Lookup fetches below the nearest held one. */
#define FETCH_LEVELS 16

/*
 * May the component of @path after @plen bytes be a directory, by the
 * listing of its parent @parent (held and trusted)? Return: 0 yes, 1 the
 * filesystem must say (not served, or neither a directory nor a file),
 * -ENOENT or -ENOTDIR when it cannot be one.
 */
static int child_may_be_dir(struct dir_rec *parent, const char *path, size_t plen, size_t clen)
{
	const struct finderd_entry *entries, *e;
	size_t n, skip = plen > 1; /* the '/' after the parent, unless it is "/" */
	int err;

	if (parent->status == FINDERD_DIR_ABSENT)
		return absent_error(parent);
	if (parent->status != FINDERD_DIR_SERVED)
		return 1;
	err = rec_entries(parent, &entries, &n);
	if (err)
		return err;
	e = fdi_find_entry(entries, n, path + plen + skip, clen - plen - skip);
	if (!e)
		return -ENOENT;
	if (e->kind == FINDERD_ENTRY_FILE)
		return -ENOTDIR;
	return e->kind == FINDERD_ENTRY_DIR || e->kind == FINDERD_ENTRY_SYMLINK_DIR ? 0 : 1;
}

/*
 * The record of directory @path. When the client does not hold it but holds
 * an ancestor (at most FETCH_LEVELS up) whose trusted listing says the next
 * component is a directory, one Lookup fetches every level from there down
 * to @path: a package directory not in the snapshot costs one round trip,
 * and so does a nested one ("a/b/c.lua" under a held root). NULL with *@err
 * 0 when the filesystem must answer.
 */
static struct dir_rec *get_dir(struct finderd_client *c, const char *path, size_t len, int *err)
{
	struct finderd_str want[FETCH_LEVELS];
	size_t ends[FETCH_LEVELS];
	size_t n = 0, alen = len, i;
	struct dir_rec *anc;

	*err = 0;
	if (table_get(c, path, len))
		return fdi_get_trusted(c, path, len, err);
	do {
		if (n == FETCH_LEVELS)
			return NULL;
		ends[n++] = alen;
		alen = parent_len(path, alen);
	} while (alen && !table_get(c, path, alen));
	if (alen == 0)
		return NULL;
	anc = fdi_get_trusted(c, path, alen, err);
	if (!anc || *err)
		return NULL;
	*err = child_may_be_dir(anc, path, alen, ends[n - 1]);
	if (*err) {
		if (*err == 1)
			*err = 0;
		else if (*err != -ENOENT && *err != -ENOTDIR && *err != -ENOMEM)
			*err = fdi_client_fail(c, *err); /* a malformed listing */
		return NULL;
	}
	for (i = 0; i < n; i++) {
		want[i].data = path;
		want[i].len = ends[n - 1 - i];
	}
	*err = fdi_lookup_paths(c, want, NULL, n);
	if (*err)
		return NULL;
	return fdi_get_trusted(c, path, len, err);
}

static int not_served(struct finderd_client *c)
{
	c->counters.not_served++;
	return FINDERD_ENOTSERVED;
}

static int answered(struct finderd_client *c, int result)
{
	c->counters.answered++;
	return result;
}

/* An answer from @r's listing: @r is part of what this run used. */
static int answered_from(struct finderd_client *c, struct dir_rec *r, int result)
{
	r->used = 1;
	return answered(c, result);
}

/* A listing that cannot be decoded: malformed, the daemon is not to be
 * trusted again; out of memory, only this question goes to the filesystem. */
static int entries_failed(struct finderd_client *c, int err)
{
	if (err != -ENOMEM)
		c->dead = 1;
	return not_served(c);
}

/* Map an internal result: transport errors become "ask the filesystem". */
static int settle(struct finderd_client *c, int err)
{
	if (err == -ENOENT || err == -ENOTDIR)
		return answered(c, err);
	return not_served(c);
}

/*
 * The listing of @r for an answer: 0 with @entries/@n set, or (non-zero)
 * the answer to give instead: absent, not served, a listing that cannot be
 * decoded.
 */
static int listing_for_answer(struct finderd_client *c, struct dir_rec *r,
			      const struct finderd_entry **entries, size_t *n)
{
	int err;

	if (r->status == FINDERD_DIR_ABSENT)
		return answered_from(c, r, absent_error(r));
	if (r->status != FINDERD_DIR_SERVED)
		return not_served(c);
	err = rec_entries(r, entries, n);
	return err ? entries_failed(c, err) : 0;
}

int finderd_client_stat(struct finderd_client *c, const char *path, size_t len,
			struct finderd_stat *st)
{
	const struct finderd_entry *entries, *e;
	char stripped[4096];
	struct dir_rec *r;
	size_t n, plen;
	int err;

	if (!c || c->dead || !key_path(c, &path, &len, stripped, sizeof(stripped)))
		return c ? not_served(c) : FINDERD_ENOTSERVED;
	if (table_get(c, path, len)) {
		r = fdi_get_trusted(c, path, len, &err);
		if (r && r->status == FINDERD_DIR_SERVED) {
			*st = r->self;
			return answered_from(c, r, 0);
		}
		if (r && r->status == FINDERD_DIR_ABSENT)
			return answered_from(c, r, absent_error(r));
		/*
		 * Not served (unreadable, being indexed, a filesystem that
		 * fails): its entry in the parent's listing says what the path
		 * was when the parent was read, which for a mount point whose
		 * filesystem died since (ENOTCONN, EIO) is not what stat() says
		 * now, and no inotify event on the parent tells. stat() it.
		 */
		return settle(c, err);
	}
	plen = parent_len(path, len);
	if (plen == 0)
		return not_served(c);
	r = get_dir(c, path, plen, &err);
	if (!r)
		return settle(c, err);
	err = listing_for_answer(c, r, &entries, &n);
	if (err)
		return err;
	e = fdi_find_entry(entries, n, path + plen + (plen > 1), len - plen - (plen > 1));
	if (!e)
		return answered_from(c, r, -ENOENT);
	if (e->kind == FINDERD_ENTRY_OTHER && e->mode == 0)
		return not_served(c); /* dangling or looping: let stat() say which */
	stat_from_entry(st, e);
	return answered_from(c, r, 0);
}

int finderd_client_listdir(struct finderd_client *c, const char *path, size_t len,
			   const struct finderd_entry **entries, size_t *n)
{
	struct finderd_str want;
	char stripped[4096];
	struct dir_rec *r;
	int err;

	if (!c || c->dead || !key_path(c, &path, &len, stripped, sizeof(stripped)))
		return c ? not_served(c) : FINDERD_ENOTSERVED;
	r = get_dir(c, path, len, &err);
	if (!r && !err && !table_get(c, path, len)) {
		/* Not below anything held (a new sys.path entry): ask once. */
		want.data = path;
		want.len = len;
		err = fdi_lookup_paths(c, &want, NULL, 1);
		r = err ? NULL : fdi_get_trusted(c, path, len, &err);
	}
	if (!r)
		return settle(c, err);
	err = listing_for_answer(c, r, entries, n);
	return err ? err : answered_from(c, r, 0);
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

static struct finderd_client *client_alloc(const struct fdi_alloc *a)
{
	struct finderd_client *c = fdi_calloc(a, 1, sizeof(*c));

	if (c)
		c->alloc = *a;
	return c;
}

/* The inode of this process's mount namespace, or 0 when /proc cannot say. */
static uint64_t own_mount_namespace(void)
{
	struct stat st;

	return stat("/proc/self/ns/mnt", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

int finderd_client_new(const struct finderd_options *opts, struct finderd_client **clientp)
{
	char path[4096];
	struct fdi_opts resolved;
	struct finderd_client *c;
	size_t len;
	int err;

	if (!clientp)
		return -EINVAL;
	err = fdi_opts_load(&resolved, opts);
	if (!err && !resolved.socket_path)
		err = finderd_socket_path(path, sizeof(path));
	if (err)
		return err;
	c = client_alloc(&resolved.alloc);
	if (!c)
		return -ENOMEM;
	/* Kept for connecting again after fork(); the first call (normally
	 * the snapshot) carries the HTTP/2 handshake. */
	finderd_options_init(&c->connect);
	if (opts)
		memcpy(&c->connect, opts, FDI_MIN(opts->size, sizeof(c->connect)));
	c->connect.size = sizeof(c->connect);
	c->connect.flags |= FINDERD_CONNECT_LAZY;
	if (!c->connect.mount_namespace)
		c->connect.mount_namespace = own_mount_namespace();
	len = strlen(resolved.socket_path ? resolved.socket_path : path);
	c->socket_path = fdi_malloc(&c->alloc, len + 1);
	if (!c->socket_path) {
		fdi_free(&c->alloc, c);
		return -ENOMEM;
	}
	memcpy(c->socket_path, resolved.socket_path ? resolved.socket_path : path, len + 1);
	c->connect.socket_path = c->socket_path;
	err = finderd_connect(&c->connect, &c->conn);
	if (err) {
		finderd_client_free(c);
		return err;
	}
	*clientp = c;
	return 0;
}

int fdi_client_new_offline(const struct fdi_alloc *a, struct finderd_client **clientp)
{
	*clientp = client_alloc(a);
	if (!*clientp)
		return -ENOMEM;
	(*clientp)->offline = 1;
	return 0;
}

int fdi_client_absorb(struct finderd_client *c, struct finderd_reply *reply)
{
	int err = fdi_absorb_reply(c, reply);

	return err ? fdi_client_fail(c, err) : 0;
}

void finderd_client_free(struct finderd_client *c)
{
	struct fdi_alloc alloc;
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->files.size; i++)
		fdi_file_free(c, (struct file_rec *)c->files.slots[i]);
	fdi_pathmap_free(&c->files, &c->alloc);
	for (i = 0; i < c->dirs.size; i++)
		fdi_rec_free(c, table_at(c, i));
	fdi_pathmap_free(&c->dirs, &c->alloc);
	fdi_buf_free(&c->reads, &c->alloc);
	fdi_genfile_unmap(&c->gen);
	finderd_close(c->conn);
	fdi_free(&c->alloc, c->socket_path);
	alloc = c->alloc;
	fdi_free(&alloc, c);
}

void finderd_client_after_fork(struct finderd_client *c)
{
	if (!c)
		return;
	fdi_conn_abandon(c->conn);
	c->conn = NULL;
}

int finderd_client_snapshot(struct finderd_client *c, const struct finderd_snapshot_request *req)
{
	struct finderd_reply *reply = NULL;
	const struct finderd_genfile_info *info;
	int err;

	if (c->dead)
		return FINDERD_ECLOSED;
	err = fdi_ensure_conn(c);
	if (!err)
		err = finderd_snapshot(c->conn, req, &reply);
	if (err)
		return fdi_client_fail(c, err);
	info = finderd_reply_genfile(reply);
	if (!info || info->path.len == 0) {
		finderd_reply_free(reply);
		return fdi_client_fail(c, FINDERD_EGENFILE);
	}
	err = fdi_absorb_reply(c, reply);
	if (err)
		return fdi_client_fail(c, err);
	fdi_mark_snapshot_roles(c, req->sys_path, req->n_sys_path);
	return 0;
}

int finderd_client_dir(struct finderd_client *c, const char *path, size_t len,
		       const struct finderd_dir **dirp)
{
	struct dir_rec *r = table_get(c, path, len);

	if (!r || !r->held)
		return -ENOENT;
	*dirp = finderd_reply_dir(r->held->reply, r->index);
	return *dirp ? 0 : -ENOENT;
}

int fdi_client_dead(const struct finderd_client *c)
{
	return c->dead;
}

void finderd_client_counters(const struct finderd_client *c, struct finderd_client_counters *out)
{
	if (c)
		*out = c->counters;
	else
		memset(out, 0, sizeof(*out));
}

struct finderd_conn *finderd_client_conn(struct finderd_client *c)
{
	if (!c || fdi_ensure_conn(c) != 0)
		return NULL;
	return c->conn;
}
