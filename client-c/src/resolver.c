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
 * FINDERD_ENOTSERVED and the caller asks the filesystem. When it loses the
 * daemon it falls back (FINDERD_ENOTSERVED, no calls) and comes back at a
 * later question, with a bounded backoff between attempts, by dropping all
 * it held and asking the new daemon its last Snapshot again.
 *
 * This file answers (stat, listdir) and holds the client's life cycle,
 * losing the daemon and coming back included; the other parts are listed
 * in client.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "finderd.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "request.h"
#include "resolver.h"
#include "sock.h"

/* ------------------------------------------------------------------------ */
/* Snapshots, losing the daemon and coming back                             */
/* ------------------------------------------------------------------------ */

/* Keep a copy of @req, the Snapshot a reconnect sends again. */
static int remember_snapshot(struct finderd_client *c, const struct finderd_snapshot_request *req)
{
	struct fdi_saved_snapshot copy;
	int err;

	if (c->has_snapshot && req == &c->last_snapshot.req)
		return 0;
	err = fdi_snapshot_save(&c->alloc, req, &copy);
	if (err)
		return err;
	fdi_snapshot_release(&c->alloc, &c->last_snapshot);
	c->last_snapshot = copy;
	c->last_snapshot.req.interpreter = req->interpreter ? &c->last_snapshot.interpreter : NULL;
	c->has_snapshot = 1;
	return 0;
}

/* Ask @req on the connection and keep the answer. */
static int fetch_snapshot(struct finderd_client *c, const struct finderd_snapshot_request *req)
{
	struct finderd_reply *reply = NULL;
	const struct finderd_genfile_info *info;
	int err = fdi_ensure_conn(c);

	if (!err)
		err = finderd_snapshot(c->conn, req, &reply);
	if (err)
		return err;
	info = finderd_reply_genfile(reply);
	if (!info || info->path.len == 0) {
		finderd_reply_free(reply);
		return FINDERD_EGENFILE;
	}
	err = fdi_absorb_reply(c, reply);
	if (!err)
		fdi_mark_snapshot_roles(c, req->sys_path, req->n_sys_path);
	return err;
}

/* Forget all the lost daemon said (listings, compiled files, its generation
 * file) and the connection to it. */
static void drop_held(struct finderd_client *c)
{
	size_t i;

	for (i = 0; i < c->files.size; i++)
		fdi_file_free(c, (struct file_rec *)c->files.slots[i]);
	fdi_pathmap_free(&c->files, &c->alloc);
	for (i = 0; i < c->dirs.size; i++)
		fdi_rec_free(c, table_at(c, i));
	fdi_pathmap_free(&c->dirs, &c->alloc);
	fdi_genfile_unmap(&c->gen);
	finderd_close(c->conn);
	c->conn = NULL;
}

/* A number below @bound (at least 1), for the random part of pauses. */
static uint32_t random_below(struct finderd_client *c, uint32_t bound)
{
	c->random = c->random * UINT64_C(6364136223846793005) + UINT64_C(1442695040888963407);
	return (uint32_t)((c->random >> 33) % (bound ? bound : 1));
}

static void seed_random(struct finderd_client *c)
{
	c->random = (uint64_t)fdi_now_us() ^ ((uint64_t)getpid() << 32);
}

/* An attempt failed with @err: the next one waits a pause, and the pause
 * after it doubles, up to the maximum. */
static int schedule_retry(struct finderd_client *c, int err)
{
	uint32_t pause = c->pause_us;

	c->error = err;
	c->retry_at_us = fdi_now_us() + pause - random_below(c, pause / 2 + 1);
	c->pause_us = pause > c->reconnect_max_us / 2 ? c->reconnect_max_us : pause * 2;
	return err;
}

static int reconnect_due(const struct finderd_client *c)
{
	return !c->offline && fdi_now_us() >= c->retry_at_us;
}

/*
 * One reconnect attempt: drop everything held, connect (lazily: the
 * Snapshot carries the handshake), and ask the last Snapshot again, or
 * @req when given (it becomes the one asked again later).
 */
static int reconnect(struct finderd_client *c, const struct finderd_snapshot_request *req)
{
	int err = 0;

	drop_held(c);
	c->attempts++;
	if (req)
		err = remember_snapshot(c, req);
	if (!err)
		err = finderd_connect(&c->connect, &c->conn);
	if (!err && c->has_snapshot)
		err = fetch_snapshot(c, &c->last_snapshot.req);
	if (err) {
		drop_held(c);
		return schedule_retry(c, err);
	}
	c->dead = 0;
	c->error = 0;
	c->reconnects++;
	c->pause_us = c->reconnect_min_us;
	return 0;
}

/* May @c answer from the daemon now? One that fell back tries to come back
 * when an attempt is due. */
static int serving(struct finderd_client *c)
{
	return !c->dead || (reconnect_due(c) && reconnect(c, NULL) == 0);
}

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
 * trusted (until a reconnect); out of memory, only this question goes to
 * the filesystem. */
static int entries_failed(struct finderd_client *c, int err)
{
	if (err != -ENOMEM)
		fdi_client_fail(c, err);
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

	if (!c)
		return FINDERD_ENOTSERVED;
	if (!serving(c) || !key_path(c, &path, &len, stripped, sizeof(stripped)))
		return not_served(c);
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

	if (!c)
		return FINDERD_ENOTSERVED;
	if (!serving(c) || !key_path(c, &path, &len, stripped, sizeof(stripped)))
		return not_served(c);
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

/* A copy of @s owned by @c (NULL stays NULL); 0 or -ENOMEM. */
static int own_string(struct finderd_client *c, const char *s, char **out)
{
	size_t len = s ? strlen(s) : 0;

	*out = NULL;
	if (!s)
		return 0;
	*out = fdi_malloc(&c->alloc, len + 1);
	if (!*out)
		return -ENOMEM;
	memcpy(*out, s, len + 1);
	return 0;
}

/* The options every connect of @c uses (after fork() and reconnects too):
 * the caller's, lazily connecting, with the strings copied. */
static int keep_options(struct finderd_client *c, const struct finderd_options *opts,
			const struct fdi_opts *resolved, const char *socket_path)
{
	finderd_options_init(&c->connect);
	if (opts)
		memcpy(&c->connect, opts, FDI_MIN(opts->size, sizeof(c->connect)));
	c->connect.size = sizeof(c->connect);
	c->connect.flags |= FINDERD_CONNECT_LAZY;
	c->reconnect_min_us = resolved->reconnect_min_us;
	c->reconnect_max_us = resolved->reconnect_max_us;
	if (own_string(c, socket_path, &c->socket_path) ||
	    own_string(c, resolved->daemon_user, &c->daemon_user))
		return -ENOMEM;
	c->connect.socket_path = c->socket_path;
	c->connect.daemon_user = c->daemon_user;
	return 0;
}

int finderd_client_new(const struct finderd_options *opts, struct finderd_client **clientp)
{
	char path[4096];
	struct fdi_opts resolved;
	struct finderd_client *c;
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
	seed_random(c);
	err = keep_options(c, opts, &resolved, resolved.socket_path ? resolved.socket_path : path);
	if (!err)
		err = finderd_connect(&c->connect, &c->conn);
	if (err) {
		finderd_client_free(c);
		return err;
	}
	/* Only once connected: with no daemon, the connect() is all it costs. */
	if (!c->connect.mount_namespace) {
		c->connect.mount_namespace = own_mount_namespace();
		fdi_conn_set_mount_namespace(c->conn, c->connect.mount_namespace);
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

	if (!c)
		return;
	drop_held(c);
	fdi_buf_free(&c->reads, &c->alloc);
	fdi_snapshot_release(&c->alloc, &c->last_snapshot);
	fdi_free(&c->alloc, c->socket_path);
	fdi_free(&c->alloc, c->daemon_user);
	alloc = c->alloc;
	fdi_free(&alloc, c);
}

void finderd_client_after_fork(struct finderd_client *c)
{
	if (!c)
		return;
	fdi_conn_abandon(c->conn);
	c->conn = NULL;
	seed_random(c); /* the child's pauses are its own */
}

int finderd_client_snapshot(struct finderd_client *c, const struct finderd_snapshot_request *req)
{
	int err;

	if (!c || !req)
		return -EINVAL;
	if (c->dead)
		return reconnect_due(c) ? reconnect(c, req) : FINDERD_ECLOSED;
	err = remember_snapshot(c, req);
	if (!err)
		err = fetch_snapshot(c, req);
	return err ? fdi_client_fail(c, err) : 0;
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

struct finderd_conn *fdi_client_last_conn(struct finderd_client *c)
{
	return c->conn;
}

int finderd_client_set_flags(struct finderd_client *c, uint32_t flags)
{
	if (!c || (flags & ~FINDERD_CLIENT_NO_ROUND_TRIPS))
		return -EINVAL;
	c->flags = flags;
	return 0;
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
	if (!c || c->dead || fdi_ensure_conn(c) != 0)
		return NULL;
	return c->conn;
}

int finderd_client_status(const struct finderd_client *c, struct finderd_client_status *out)
{
	struct finderd_client_status s;
	int64_t now = fdi_now_us();

	if (!c || !out || out->size < sizeof(out->size))
		return -EINVAL;
	memset(&s, 0, sizeof(s));
	s.size = out->size;
	s.state = c->dead ? FINDERD_CLIENT_FELL_BACK : FINDERD_CLIENT_SERVED;
	s.error = c->dead ? c->error : 0;
	s.lost_error = c->lost_error;
	s.fallbacks = c->fallbacks;
	s.reconnects = c->reconnects;
	s.attempts = c->attempts;
	if (c->dead && c->retry_at_us > now)
		s.retry_in_us = (uint64_t)(c->retry_at_us - now);
	memcpy(out, &s, FDI_MIN(out->size, sizeof(s)));
	return 0;
}
