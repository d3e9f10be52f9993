/*
 * client.h - struct finderd_client and its records, shared by the parts of
 * the resolver; nothing here is public:
 *
 *   resolver.c             the answers (stat, listdir) and the life cycle:
 *                          losing the daemon and coming back, too
 *   resolver_table.c       held replies and directory records, by path
 *   resolver_genfile.c     the mapping of the daemon's generation file
 *   resolver_revalidate.c  what is trusted now; revalidation in one Lookup
 *   resolver_usage.c       what a run used: compiled files, the Report
 *   resolver_record.c      recordings of replies, for benchmarks
 */
#ifndef FINDERD_CLIENT_H
#define FINDERD_CLIENT_H

#include <stdint.h>

#include "internal.h"
#include "pathmap.h"
#include "reply.h"
#include "request.h"

struct genfile_header;

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

/* The read-only mapping of the daemon's generation file (resolver_genfile.c). */
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
	char *daemon_user;               /* connect.daemon_user, owned (NULL: from the environment) */
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
	int dead;                  /* fell back: serve nothing until reconnected */
	int offline;               /* no connection, ever (fdi_client_new_offline) */
	uint32_t flags;            /* FINDERD_CLIENT_*: finderd_client_set_flags() */
	/* Losing the daemon and coming back (finderd.h, struct finderd_client). */
	struct fdi_saved_snapshot last_snapshot; /* sent again at each reconnect */
	int has_snapshot;
	int error;                 /* why it fell back, or why the last attempt failed */
	int lost_error;            /* why it lost the daemon the last time */
	int64_t retry_at_us;       /* monotonic: no attempt before then */
	uint32_t pause_us;         /* the pause after the next failed attempt */
	uint32_t reconnect_min_us, reconnect_max_us;
	uint64_t fallbacks, reconnects, attempts;
	uint64_t random;           /* state of the pauses' random part */
	int trust_all;             /* replaying a recording: no freshness checks */
	struct finderd_client_counters counters;
};

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */
/* ------------------------------------------------------------------------ */

static inline uint64_t load_u64(const volatile uint64_t *p)
{
#if defined(__GNUC__) || defined(__clang__)
	return __atomic_load_n(p, __ATOMIC_ACQUIRE);
#else
	return *p;
#endif
}

/* Length of the parent of a canonical path ("/a/b" -> 2, "/a" -> 1, "/" -> 0). */
static inline size_t parent_len(const char *path, size_t len)
{
	size_t i = len;

	if (len <= 1)
		return 0;
	while (i > 0 && path[i - 1] != '/')
		i--;
	return i == 1 ? 1 : i - 1;
}

static inline struct dir_rec *table_get(struct finderd_client *c, const char *path, size_t len)
{
	return (struct dir_rec *)fdi_pathmap_get(&c->dirs, path, len);
}

/* The held record in slot @i of the map, or NULL (for walks over all). */
static inline struct dir_rec *table_at(const struct finderd_client *c, size_t i)
{
	return (struct dir_rec *)c->dirs.slots[i];
}

static inline int rec_entries(struct dir_rec *r, const struct finderd_entry **entries, size_t *n)
{
	return finderd_dir_entries(r->held->reply, r->index, entries, n);
}

/* ------------------------------------------------------------------------ */
/* resolver_table.c                                                         */
/* ------------------------------------------------------------------------ */

/**
 * fdi_path_is_canonical() - the resolver answers only for paths the daemon
 * would key the same way: absolute, no empty, "." or ".." component, no
 * trailing slash, no NUL.
 */
int fdi_path_is_canonical(const char *path, size_t len);

/** The entry @name (@len bytes) of a sorted listing, or NULL. */
const struct finderd_entry *fdi_find_entry(const struct finderd_entry *entries, size_t n,
					   const char *name, size_t len);

/**
 * fdi_absorb_reply() - keep every directory of @reply (and its compiled
 * files), mapping the generation file it names; the client owns @reply
 * after the call, whatever it returns.
 * Return: 0, FINDERD_EGENFILE, -ENOMEM.
 */
int fdi_absorb_reply(struct finderd_client *c, struct finderd_reply *reply);

/** Free a record, or a compiled file's, and its share of its reply. */
void fdi_rec_free(struct finderd_client *c, struct dir_rec *r);
void fdi_file_free(struct finderd_client *c, struct file_rec *f);

/* ------------------------------------------------------------------------ */
/* resolver_genfile.c                                                       */
/* ------------------------------------------------------------------------ */

/**
 * fdi_genfile_map() - map the generation file @info names (unless the one
 * of that epoch is mapped already), checking its header against @info.
 * Return: 0 or FINDERD_EGENFILE.
 */
int fdi_genfile_map(struct genfile_map *g, const struct finderd_genfile_info *info);
void fdi_genfile_unmap(struct genfile_map *g);
/** Is the daemon's view of the filesystem recent enough to trust slots? */
int fdi_genfile_live(const struct genfile_map *g);

/* ------------------------------------------------------------------------ */
/* resolver_revalidate.c                                                    */
/* ------------------------------------------------------------------------ */

/**
 * fdi_client_fail() - lose the daemon (a transport error, a broken reply):
 * every question goes to the filesystem until a reconnect attempt, due at
 * once (the next question makes it). What the client holds is dropped
 * then, not here: callers up the stack may still point into it.
 * Return: @err.
 */
int fdi_client_fail(struct finderd_client *c, int err);
/** The connection, made again (lazily) if fork() left the client without one. */
int fdi_ensure_conn(struct finderd_client *c);
/**
 * fdi_lookup_paths() - one Lookup of @n paths, with the generations held
 * (@known, or NULL to fetch), absorbed. A failure leaves the client fallen
 * back.
 */
int fdi_lookup_paths(struct finderd_client *c, const struct finderd_str *paths,
		     const uint64_t *known, size_t n);
/** Can @r be used now, with the generation file @live or not? */
int fdi_rec_trusted(const struct finderd_client *c, const struct dir_rec *r, int live);
/** Make @path's record (if held) trustworthy; returns it, or NULL (and *@err). */
struct dir_rec *fdi_get_trusted(struct finderd_client *c, const char *path, size_t len,
				int *err);

/* ------------------------------------------------------------------------ */
/* resolver_usage.c                                                         */
/* ------------------------------------------------------------------------ */

/** After a snapshot: mark its sys.path entries and its planned directories. */
void fdi_mark_snapshot_roles(struct finderd_client *c, const struct finderd_str *sys_path,
			     size_t n_sys_path);

#endif /* FINDERD_CLIENT_H */
