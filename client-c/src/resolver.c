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

#define GENFILE_MAGIC UINT64_C(0x314E4547444E4946) /* "FINDGEN1" little-endian */
#define GENFILE_LAYOUT_VERSION 1u
#define GENFILE_HEADER_BYTES 64u

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
};

/* One held directory. */
struct dir_rec {
	char *path;                /* own copy, NUL-terminated */
	size_t path_len;
	uint64_t hash;
	struct held_reply *held;   /* NULL for records without a listing */
	size_t index;              /* directory index inside held->reply */
	uint32_t status;           /* enum finderd_dir_status */
	int32_t error;
	uint64_t generation;
	uint32_t slot;
	uint64_t epoch;            /* generation file epoch it was answered under */
	uint64_t checked_seq;      /* invalidation sequence it was last validated in */
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
	struct finderd_conn *conn;
	struct dir_rec **table;    /* open addressing, power-of-two size */
	size_t table_size;
	size_t count;
	struct genfile_map gen;
	uint64_t invalidate_seq;
	int dead;                  /* a transport error happened: serve nothing */
	struct finderd_client_counters counters;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static uint64_t hash_bytes(const char *data, size_t len)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a */
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)data[i];
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

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
	fdi_free(&c->alloc, r->path);
	fdi_free(&c->alloc, r);
}

static struct dir_rec **table_slot(struct finderd_client *c, const char *path, size_t len,
				   uint64_t hash)
{
	size_t mask = c->table_size - 1;
	size_t i = (size_t)hash & mask;

	for (;;) {
		struct dir_rec **slot = &c->table[i];
		struct dir_rec *r = *slot;

		if (!r || (r->hash == hash && r->path_len == len && memcmp(r->path, path, len) == 0))
			return slot;
		i = (i + 1) & mask;
	}
}

static struct dir_rec *table_get(struct finderd_client *c, const char *path, size_t len)
{
	if (c->count == 0)
		return NULL;
	return *table_slot(c, path, len, hash_bytes(path, len));
}

static int table_grow(struct finderd_client *c)
{
	size_t old_size = c->table_size, i;
	struct dir_rec **old = c->table;
	size_t new_size = old_size ? old_size * 2 : 64;
	struct dir_rec **fresh = fdi_malloc(&c->alloc, new_size * sizeof(*fresh));

	if (!fresh)
		return -ENOMEM;
	memset(fresh, 0, new_size * sizeof(*fresh));
	c->table = fresh;
	c->table_size = new_size;
	for (i = 0; i < old_size; i++)
		if (old[i])
			*table_slot(c, old[i]->path, old[i]->path_len, old[i]->hash) = old[i];
	fdi_free(&c->alloc, old);
	return 0;
}

/* Insert or replace the record for @dir (index @index of @held's reply). */
static int table_put(struct finderd_client *c, struct held_reply *held, size_t index,
		     const struct finderd_dir *dir, uint64_t epoch)
{
	struct dir_rec **slot, *r;
	uint64_t hash = hash_bytes(dir->path.data, dir->path.len);

	if ((c->count + 1) * 4 > c->table_size * 3) {
		int err = table_grow(c);

		if (err)
			return err;
	}
	r = fdi_malloc(&c->alloc, sizeof(*r));
	if (!r)
		return -ENOMEM;
	memset(r, 0, sizeof(*r));
	r->path = fdi_malloc(&c->alloc, dir->path.len + 1);
	if (!r->path) {
		fdi_free(&c->alloc, r);
		return -ENOMEM;
	}
	memcpy(r->path, dir->path.data, dir->path.len);
	r->path[dir->path.len] = '\0';
	r->path_len = dir->path.len;
	r->hash = hash;
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

	slot = table_slot(c, r->path, r->path_len, hash);
	if (*slot)
		rec_free(c, *slot);
	else
		c->count++;
	*slot = r;
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

	if (info->path.len == 0 || info->path.len >= sizeof(path) || info->slots == 0)
		return FINDERD_EGENFILE;
	if (g->header && g->epoch == info->epoch)
		return 0;
	memcpy(path, info->path.data, info->path.len);
	path[info->path.len] = '\0';
	bytes = GENFILE_HEADER_BYTES + (size_t)info->slots * sizeof(uint64_t);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return FINDERD_EGENFILE;
	if (fstat(fd, &st) != 0 || st.st_size < 0 || (size_t)st.st_size < bytes) {
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

static int rec_trusted(const struct finderd_client *c, const struct dir_rec *r, int live)
{
	if (!rec_needs_slot(r))
		return 1;
	if (r->checked_seq != c->invalidate_seq || !live || r->epoch != c->gen.epoch)
		return 0;
	if (r->slot == 0 || r->slot >= c->gen.nslots)
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

/* Keep every directory of @reply; the reply is owned by the client after. */
static int absorb_reply(struct finderd_client *c, struct finderd_reply *reply)
{
	const struct finderd_genfile_info *info = finderd_reply_genfile(reply);
	struct held_reply *held;
	size_t i, n = finderd_reply_dir_count(reply);
	int err;

	err = info && info->path.len ? genfile_map(&c->gen, info) : 0;
	if (err) {
		finderd_reply_free(reply);
		return err;
	}
	held = held_new(c, reply);
	if (!held) {
		finderd_reply_free(reply);
		return -ENOMEM;
	}
	held->refs = 1; /* keep alive while absorbing */
	for (i = 0; i < n; i++) {
		const struct finderd_dir *d = finderd_reply_dir(reply, i);
		struct dir_rec *old;

		if (d->status == FINDERD_DIR_UNCHANGED) {
			old = table_get(c, d->path.data, d->path.len);
			if (old)
				old->checked_seq = c->invalidate_seq;
			continue;
		}
		err = table_put(c, held, i, d, c->gen.epoch);
		if (err) {
			held_unref(c, held);
			return err;
		}
	}
	held_unref(c, held);
	return 0;
}

static int lookup_paths(struct finderd_client *c, const struct finderd_str *paths,
			const uint64_t *known, size_t n)
{
	struct finderd_reply *reply = NULL;
	int err;

	c->counters.lookups++;
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

	paths = fdi_malloc(&c->alloc, (c->count + 1) * sizeof(*paths));
	known = fdi_malloc(&c->alloc, (c->count + 1) * sizeof(*known));
	if (!paths || !known) {
		fdi_free(&c->alloc, paths);
		fdi_free(&c->alloc, known);
		return -ENOMEM;
	}
	for (i = 0; i < c->table_size; i++) {
		struct dir_rec *r = c->table[i];

		if (!r || rec_trusted(c, r, live))
			continue;
		paths[n].data = r->path;
		paths[n].len = r->path_len;
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

/*
 * The record of directory @path, fetching it with one Lookup when the
 * listing of its parent (held and trusted) says it is a directory.
 */
static struct dir_rec *get_dir(struct finderd_client *c, const char *path, size_t len, int *err)
{
	const struct finderd_entry *entries, *e;
	struct dir_rec *parent;
	size_t n, plen;
	struct finderd_str want;

	*err = 0;
	if (table_get(c, path, len))
		return get_trusted(c, path, len, err);
	plen = parent_len(path, len);
	if (plen == 0)
		return NULL;
	parent = get_trusted(c, path, plen, err);
	if (!parent || *err)
		return NULL;
	if (parent->status == FINDERD_DIR_ABSENT) {
		*err = absent_error(parent);
		return NULL;
	}
	if (parent->status != FINDERD_DIR_SERVED)
		return NULL;
	*err = rec_entries(parent, &entries, &n);
	if (*err)
		return NULL;
	e = find_entry(entries, n, path + plen + (plen > 1), len - plen - (plen > 1));
	if (!e) {
		*err = -ENOENT;
		return NULL;
	}
	if (e->kind == FINDERD_ENTRY_FILE) {
		*err = -ENOTDIR;
		return NULL;
	}
	if (e->kind != FINDERD_ENTRY_DIR && e->kind != FINDERD_ENTRY_SYMLINK_DIR)
		return NULL;
	want.data = path;
	want.len = len;
	*err = lookup_paths(c, &want, NULL, 1);
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

/* Map an internal result: transport errors become "ask the filesystem". */
static int settle(struct finderd_client *c, int err)
{
	if (err == -ENOENT || err == -ENOTDIR)
		return answered(c, err);
	return not_served(c);
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
			return answered(c, 0);
		}
		if (r && r->status == FINDERD_DIR_ABSENT)
			return answered(c, -r->error);
		if (err || !r || r->status != FINDERD_DIR_NOT_SERVED)
			return settle(c, err);
	}
	plen = parent_len(path, len);
	if (plen == 0)
		return not_served(c);
	r = get_dir(c, path, plen, &err);
	if (!r)
		return settle(c, err);
	if (r->status == FINDERD_DIR_ABSENT)
		return answered(c, absent_error(r));
	if (r->status != FINDERD_DIR_SERVED)
		return not_served(c);
	err = rec_entries(r, &entries, &n);
	if (err)
		return client_fail(c, not_served(c));
	e = find_entry(entries, n, path + plen + (plen > 1), len - plen - (plen > 1));
	if (!e)
		return answered(c, -ENOENT);
	if (e->kind == FINDERD_ENTRY_OTHER && e->mode == 0)
		return not_served(c); /* dangling or looping: let stat() say which */
	stat_from_entry(st, e);
	return answered(c, 0);
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
	if (r->status == FINDERD_DIR_ABSENT)
		return answered(c, -r->error);
	if (r->status != FINDERD_DIR_SERVED)
		return not_served(c);
	err = rec_entries(r, entries, n);
	if (err)
		return client_fail(c, not_served(c));
	return answered(c, 0);
}

/* ------------------------------------------------------------------------ */
/* Life cycle                                                               */
/* ------------------------------------------------------------------------ */

int finderd_client_new(const struct finderd_options *opts, struct finderd_client **clientp)
{
	struct fdi_opts resolved;
	struct finderd_client *c;
	int err;

	err = fdi_opts_load(&resolved, opts);
	if (err)
		return err;
	c = fdi_malloc(&resolved.alloc, sizeof(*c));
	if (!c)
		return -ENOMEM;
	memset(c, 0, sizeof(*c));
	c->alloc = resolved.alloc;
	err = finderd_connect(opts, &c->conn);
	if (err) {
		fdi_free(&resolved.alloc, c);
		return err;
	}
	*clientp = c;
	return 0;
}

void finderd_client_free(struct finderd_client *c)
{
	struct fdi_alloc alloc;
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->table_size; i++)
		rec_free(c, c->table[i]);
	fdi_free(&c->alloc, c->table);
	genfile_unmap(&c->gen);
	finderd_close(c->conn);
	alloc = c->alloc;
	fdi_free(&alloc, c);
}

int finderd_client_snapshot(struct finderd_client *c, const struct finderd_snapshot_request *req)
{
	struct finderd_reply *reply = NULL;
	const struct finderd_genfile_info *info;
	int err;

	if (c->dead)
		return FINDERD_ECLOSED;
	err = finderd_snapshot(c->conn, req, &reply);
	if (err)
		return client_fail(c, err);
	info = finderd_reply_genfile(reply);
	if (!info || info->path.len == 0) {
		finderd_reply_free(reply);
		return client_fail(c, FINDERD_EGENFILE);
	}
	err = absorb_reply(c, reply);
	return err ? client_fail(c, err) : 0;
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

void finderd_client_invalidate(struct finderd_client *c)
{
	if (c)
		c->invalidate_seq++;
}

void finderd_client_counters(const struct finderd_client *c, struct finderd_client_counters *out)
{
	*out = c->counters;
}

struct finderd_conn *finderd_client_conn(struct finderd_client *c)
{
	return c->conn;
}
