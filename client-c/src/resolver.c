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
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "finderd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "pathmap.h"
#include "reply.h"
#include "resolver.h"

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

/* A reply shared by the directories that point into it. */
struct held_reply {
	struct finderd_reply *reply;
	size_t refs;
	uint64_t seq;    /* order of arrival, to save replies oldest first */
};

/* A compiled file a reply carried, keyed by its path (inside the reply). */
struct file_rec {
	struct fdi_pathmap_item item;
	struct held_reply *held;
	const struct finderd_cached_file *file;
};

/* One held directory, keyed by its path (an own NUL-terminated copy). */
struct dir_rec {
	struct fdi_pathmap_item item;  /* first: the map's view of it */
	struct held_reply *held;   /* NULL for records without a listing */
	size_t index;              /* directory index inside held->reply */
	uint32_t status;           /* enum finderd_dir_status */
	int32_t error;
	uint64_t generation;
	uint32_t slot;
	uint64_t epoch;            /* generation file epoch it was answered under */
	uint64_t checked_seq;      /* invalidation sequence it was last validated in */
	int touched;               /* the process changed it since: revalidate before use */
	int slow;                  /* on a filesystem the daemon found slow */
	int used;                  /* answered a question of this run */
	int entry;                 /* a sys.path entry of the snapshot (always asked for) */
	int planned;               /* the snapshot carried it from the program's plan */
	struct finderd_stat self;  /* the directory's own stat */
};

struct genfile_map {
	const volatile struct genfile_header *header;
	const volatile uint64_t *slots;
	size_t map_bytes;
	uint64_t epoch;
	uint64_t lease_ns;
	uint32_t nslots;
};

struct finderd_client {
	struct fdi_alloc alloc;
	struct finderd_conn *conn;       /* NULL after fork until the next round trip */
	struct finderd_options connect;  /* to connect again after fork */
	char *socket_path;               /* connect.socket_path, owned */
	struct fdi_pathmap dirs;   /* struct dir_rec by path */
	struct fdi_pathmap files;  /* struct file_rec by path */
	/* What this run used, for finderd_client_report(). */
	uint64_t fetched;          /* directories fetched (not revalidated) by Lookups */
	struct fdi_buf reads;      /* compiled files asked for on slow filesystems, NUL-separated */
	size_t n_reads;
	int read_from_disk;        /* one of them was not held, or no longer current */
	struct genfile_map gen;
	uint64_t invalidate_seq;
	uint64_t replies_absorbed;
	int dead;                  /* a transport error happened: serve nothing */
	int offline;               /* no connection, ever (fdi_client_new_offline) */
	uint32_t flags;            /* FINDERD_CLIENT_*: finderd_client_set_flags() */
	int trust_all;             /* replaying a recording: no freshness checks */
	struct finderd_client_counters counters;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t monotonic_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * UINT64_C(1000000000) + (uint64_t)ts.tv_nsec;
}

static uint64_t load_u64(const volatile uint64_t *p)
{
#if defined(__GNUC__) || defined(__clang__)
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#else
	return *p;
#endif
}

/*
 * The resolver answers only for paths the daemon would key the same way:
 * absolute, no empty, "." or ".." component, no trailing slash, no NUL.
 */
static int path_is_canonical(const char *path, size_t len)
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

/* Length of the parent of a canonical path ("/a/b" -> 2, "/a" -> 1, "/" -> 0). */
static size_t parent_len(const char *path, size_t len)
{
	size_t i = len;

	if (len <= 1)
		return 0;
	while (i > 0 && path[i - 1] != '/')
		i--;
	return i == 1 ? 1 : i - 1;
}

static int compare_names(const char *a, size_t alen, const char *b, size_t blen)
{
	size_t n = alen < blen ? alen : blen;
	int c = memcmp(a, b, n);

	if (c != 0)
		return c;
	return (alen > blen) - (alen < blen);
}

static const struct finderd_entry *find_entry(const struct finderd_entry *entries, size_t n,
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

/* ------------------------------------------------------------------------ */
/* Held replies and records                                                 */
/* ------------------------------------------------------------------------ */

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

static void rec_free(struct finderd_client *c, struct dir_rec *r)
{
	if (!r)
		return;
	held_unref(c, r->held);
	fdi_free(&c->alloc, (char *)r->item.key);
	fdi_free(&c->alloc, r);
}

static struct dir_rec *table_get(struct finderd_client *c, const char *path, size_t len)
{
	return (struct dir_rec *)fdi_pathmap_get(&c->dirs, path, len);
}

/* The held record in slot @i of the map, or NULL (for walks over all). */
static struct dir_rec *table_at(const struct finderd_client *c, size_t i)
{
	return (struct dir_rec *)c->dirs.slots[i];
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
	rec_free(c, (struct dir_rec *)replaced);
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

/* ------------------------------------------------------------------------ */
/* Generation file                                                          */
/* ------------------------------------------------------------------------ */

static void genfile_unmap(struct genfile_map *g)
{
	if (g->header)
		munmap((void *)g->header, g->map_bytes);
	memset(g, 0, sizeof(*g));
}

static int genfile_map(struct genfile_map *g, const struct finderd_genfile_info *info)
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
	genfile_unmap(g);
	g->header = map;
	g->slots = (const volatile uint64_t *)((const char *)map + GENFILE_HEADER_BYTES);
	g->map_bytes = bytes;
	g->epoch = info->epoch;
	g->lease_ns = info->lease_ns;
	g->nslots = info->slots;
	return 0;
}

/* Is the daemon's view of the filesystem recent enough to trust slots? */
static int genfile_live(const struct genfile_map *g)
{
	uint64_t now, dry;

	if (!g->header || load_u64(&g->header->epoch) != g->epoch)
		return 0;
	dry = load_u64(&g->header->dry_ns);
	now = monotonic_ns();
	return now >= dry && now - dry < g->lease_ns;
}

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

static int rec_trusted(const struct finderd_client *c, const struct dir_rec *r, int live)
{
	if (!rec_needs_slot(r) || c->trust_all)
		return 1;
	if (r->touched || r->checked_seq != c->invalidate_seq || !live || r->epoch != c->gen.epoch)
		return 0;
	if (rec_unvouched(c, r))
		return 0;
	return load_u64(&c->gen.slots[r->slot]) == r->generation;
}

/* ------------------------------------------------------------------------ */
/* Talking to the daemon                                                    */
/* ------------------------------------------------------------------------ */

static int client_fail(struct finderd_client *c, int err)
{
	c->dead = 1;
	return err;
}

static void file_free(struct finderd_client *c, struct file_rec *f)
{
	if (!f)
		return;
	held_unref(c, f->held);
	fdi_free(&c->alloc, f);
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
		file_free(c, (struct file_rec *)replaced);
	}
	return 0;
}

/* Keep every directory of @reply; the reply is owned by the client after. */
static int absorb_reply(struct finderd_client *c, struct finderd_reply *reply)
{
	const struct finderd_genfile_info *info = finderd_reply_genfile(reply);
	struct held_reply *held;
	size_t i, n = finderd_reply_dir_count(reply);
	int err;

	err = info && info->path.len && !c->offline ? genfile_map(&c->gen, info) : 0;
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

/* The connection, made again (lazily) if fork() left the client without one. */
static int ensure_conn(struct finderd_client *c)
{
	return c->conn ? 0 : finderd_connect(&c->connect, &c->conn);
}

static int lookup_paths(struct finderd_client *c, const struct finderd_str *paths,
			const uint64_t *known, size_t n)
{
	struct finderd_reply *reply = NULL;
	int err;

	if (c->offline || (c->flags & FINDERD_CLIENT_NO_ROUND_TRIPS))
		return FINDERD_ENOTSERVED; /* only this question goes to the filesystem */
	c->counters.lookups++;
	if (!known)
		c->fetched += n;
	err = ensure_conn(c);
	if (!err)
		err = finderd_lookup(c->conn, paths, known, known ? c->gen.epoch : 0, n, &reply);
	if (!err)
		err = absorb_reply(c, reply);
	return err ? client_fail(c, err) : 0;
}

/*
 * Revalidate, in one Lookup, every held record that is not trusted now.
 * Records answered unchanged keep their listing.
 */
static int revalidate_untrusted(struct finderd_client *c)
{
	int live = genfile_live(&c->gen);
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

		if (!r || rec_trusted(c, r, live) || rec_unvouched(c, r))
			continue;
		paths[n].data = r->item.key;
		paths[n].len = r->item.len;
		known[n] = r->epoch == c->gen.epoch ? r->generation : 0;
		n++;
	}
	c->counters.revalidations += n;
	err = n ? lookup_paths(c, paths, known, n) : 0;
	fdi_free(&c->alloc, paths);
	fdi_free(&c->alloc, known);
	return err;
}

/* Make @path's record (if held) trustworthy; returns it, or NULL. */
static struct dir_rec *get_trusted(struct finderd_client *c, const char *path, size_t len,
				   int *err)
{
	struct dir_rec *r = table_get(c, path, len);

	*err = 0;
	if (!r || rec_trusted(c, r, genfile_live(&c->gen)))
		return r;
	if (rec_unvouched(c, r))
		return NULL; /* the filesystem answers */
	*err = revalidate_untrusted(c);
	if (*err)
		return NULL;
	if (!genfile_live(&c->gen)) {
		/*
		 * The Lookup's barrier refreshes dry_ns, so a daemon that
		 * answered yet is not live cannot be trusted at all (its clock
		 * is not ours, or it is broken): stop asking it.
		 */
		*err = client_fail(c, FINDERD_EGENFILE);
		return NULL;
	}
	r = table_get(c, path, len);
	if (r && !rec_trusted(c, r, 1))
		r = NULL; /* the daemon cannot vouch for it: ask the filesystem */
	return r;
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
	return path_is_canonical(buf, out) ? out : 0;
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

	if (path_is_canonical(*path, *len))
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

static int rec_entries(struct dir_rec *r, const struct finderd_entry **entries, size_t *n)
{
	return finderd_dir_entries(r->held->reply, r->index, entries, n);
}

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
	e = find_entry(entries, n, path + plen + skip, clen - plen - skip);
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
		return get_trusted(c, path, len, err);
	do {
		if (n == FETCH_LEVELS)
			return NULL;
		ends[n++] = alen;
		alen = parent_len(path, alen);
	} while (alen && !table_get(c, path, alen));
	if (alen == 0)
		return NULL;
	anc = get_trusted(c, path, alen, err);
	if (!anc || *err)
		return NULL;
	*err = child_may_be_dir(anc, path, alen, ends[n - 1]);
	if (*err) {
		if (*err == 1)
			*err = 0;
		else if (*err != -ENOENT && *err != -ENOTDIR && *err != -ENOMEM)
			*err = client_fail(c, *err); /* a malformed listing */
		return NULL;
	}
	for (i = 0; i < n; i++) {
		want[i].data = path;
		want[i].len = ends[n - 1 - i];
	}
	*err = lookup_paths(c, want, NULL, n);
	if (*err)
		return NULL;
	return get_trusted(c, path, len, err);
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
		r = get_trusted(c, path, len, &err);
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
	e = find_entry(entries, n, path + plen + (plen > 1), len - plen - (plen > 1));
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
		err = lookup_paths(c, &want, NULL, 1);
		r = err ? NULL : get_trusted(c, path, len, &err);
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

/* ------------------------------------------------------------------------ */
/* Recordings, for benchmarks                                               */
/* ------------------------------------------------------------------------ */

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
	return absorb_reply(c, reply);
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

int fdi_client_absorb(struct finderd_client *c, struct finderd_reply *reply)
{
	int err = absorb_reply(c, reply);

	return err ? client_fail(c, err) : 0;
}

void finderd_client_free(struct finderd_client *c)
{
	struct fdi_alloc alloc;
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->files.size; i++)
		file_free(c, (struct file_rec *)c->files.slots[i]);
	fdi_pathmap_free(&c->files, &c->alloc);
	for (i = 0; i < c->dirs.size; i++)
		rec_free(c, table_at(c, i));
	fdi_pathmap_free(&c->dirs, &c->alloc);
	fdi_buf_free(&c->reads, &c->alloc);
	genfile_unmap(&c->gen);
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

/*
 * After a snapshot: which held directories are the request's sys.path
 * entries (always asked for, never reported) and which came from the
 * program's learned plan (reported only when they go unused).
 */
static void mark_snapshot_roles(struct finderd_client *c, const struct finderd_str *sys_path,
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

int finderd_client_snapshot(struct finderd_client *c, const struct finderd_snapshot_request *req)
{
	struct finderd_reply *reply = NULL;
	const struct finderd_genfile_info *info;
	int err;

	if (c->dead)
		return FINDERD_ECLOSED;
	err = ensure_conn(c);
	if (!err)
		err = finderd_snapshot(c->conn, req, &reply);
	if (err)
		return client_fail(c, err);
	info = finderd_reply_genfile(reply);
	if (!info || info->path.len == 0) {
		finderd_reply_free(reply);
		return client_fail(c, FINDERD_EGENFILE);
	}
	err = absorb_reply(c, reply);
	if (err)
		return client_fail(c, err);
	mark_snapshot_roles(c, req->sys_path, req->n_sys_path);
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

void finderd_client_touch(struct finderd_client *c, const char *path, size_t len)
{
	struct dir_rec *r;
	size_t plen;

	if (!c || c->dirs.count == 0)
		return;
	if (!path_is_canonical(path, len)) {
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

	if (!path_is_canonical(path, len))
		return 0;
	plen = parent_len(path, len);
	r = plen ? table_get(c, path, plen) : NULL;
	if (!r || r->status != FINDERD_DIR_SERVED || !rec_trusted(c, r, genfile_live(&c->gen)) ||
	    rec_entries(r, &entries, &n) != 0)
		return 0;
	e = find_entry(entries, n, path + plen + 1, len - plen - 1);
	return e && (e->kind == FINDERD_ENTRY_DIR || e->kind == FINDERD_ENTRY_SYMLINK_DIR);
}

void finderd_client_touch_mkdir(struct finderd_client *c, const char *path, size_t len)
{
	if (c && c->dirs.count && held_as_directory(c, path, len))
		return; /* mkdir() fails with EEXIST: nothing changes */
	finderd_client_touch(c, path, len);
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

	if (!c || c->dead || !path_is_canonical(path, len) || !data)
		return -ENOENT;
	plen = parent_len(path, len);
	if (plen == 0)
		return -ENOENT;
	slow = on_slow_filesystem(c, path, plen);
	f = (const struct file_rec *)fdi_pathmap_get(&c->files, path, len);
	if (f && table_get(c, path, plen))
		dir = get_trusted(c, path, plen, &err);
	if (dir && dir->status == FINDERD_DIR_SERVED && rec_entries(dir, &entries, &n) == 0)
		e = find_entry(entries, n, path + plen + 1, len - plen - 1);
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

int fdi_client_dead(const struct finderd_client *c)
{
	return c->dead;
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

	if (!c || c->dead || c->offline || !run_differs_from_plan(c))
		return 0;
	dirs = fdi_calloc(&c->alloc, c->dirs.count + 1, sizeof(*dirs));
	files = fdi_calloc(&c->alloc, c->n_reads + 1, sizeof(*files));
	err = dirs && files ? ensure_conn(c) : -ENOMEM;
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

int finderd_client_set_flags(struct finderd_client *c, uint32_t flags)
{
	if (!c || (flags & ~FINDERD_CLIENT_NO_ROUND_TRIPS))
		return -EINVAL;
	c->flags = flags;
	return 0;
}

void finderd_client_invalidate(struct finderd_client *c)
{
	if (c)
		c->invalidate_seq++;
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
	if (!c || ensure_conn(c) != 0)
		return NULL;
	return c->conn;
}
