/*
 * finderd.h - libfinderd, the C client of the finderd import-resolution daemon.
 *
 * finderd keeps warm, inotify-validated listings of search-path directories
 * and answers over gRPC on a Unix socket. This library speaks that protocol
 * (HTTP/2, HPACK, gRPC framing and protobuf, written for this library in C99
 * over libc) and offers two levels:
 *
 *   - the wire calls: finderd_connect(), finderd_snapshot(), finderd_lookup(),
 *     finderd_stats(), finderd_health(), with replies the caller frees;
 *   - the resolver, struct finderd_client: a connection plus the listings it
 *     has received, answering stat()- and listdir()-shaped questions from
 *     memory and asking the daemon (one batched round trip) only for what it
 *     does not hold or can no longer trust.
 *
 * Conventions (as in liburing):
 *   - Functions that can fail return 0 on success and a negative value on
 *     failure: either -errno (-ECONNREFUSED, -ETIMEDOUT, -ENOMEM, ...) or one
 *     of the FINDERD_E* codes below, which lie in [-10099, -10000].
 *     finderd_strerror() names every code.
 *   - Strings on the wire are byte strings (Linux paths are not UTF-8): they
 *     are passed as pointer + length and are not NUL-terminated unless stated.
 *   - Objects are not thread-safe. Use one connection (or client) per thread,
 *     or serialise calls on it with your own lock. Distinct objects may be
 *     used from distinct threads concurrently; the library has no global
 *     mutable state.
 *   - Memory: every object returned through an out-pointer is owned by the
 *     caller and released with the matching *_free()/finderd_close() call.
 *     Pointers into a reply (names, paths, entries) stay valid until that
 *     reply is freed. Allocation goes through the allocator hooks of
 *     struct finderd_options when given, malloc/realloc/free otherwise.
 */
#ifndef FINDERD_H
#define FINDERD_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------ */
/* Versions                                                                 */
/* ------------------------------------------------------------------------ */

/** Library version this header describes (semantic versioning). */
#define FINDERD_VERSION_MAJOR 0
#define FINDERD_VERSION_MINOR 1
#define FINDERD_VERSION_PATCH 0
/** The version as one comparable number: major * 10000 + minor * 100 + patch. */
#define FINDERD_VERSION_NUMBER \
	(FINDERD_VERSION_MAJOR * 10000 + FINDERD_VERSION_MINOR * 100 + FINDERD_VERSION_PATCH)
/** True when the header is at least version major.minor. */
#define FINDERD_VERSION_AT_LEAST(major, minor) \
	(FINDERD_VERSION_MAJOR > (major) || \
	 (FINDERD_VERSION_MAJOR == (major) && FINDERD_VERSION_MINOR >= (minor)))

/** The wire protocol version (finderd.v1.ProtocolVersion) this library speaks. */
#define FINDERD_PROTOCOL_VERSION 1

/**
 * finderd_version() - the version of the library actually loaded.
 *
 * Return: a static string "MAJOR.MINOR.PATCH"; compare with the
 * FINDERD_VERSION_* macros to detect a header/library mismatch.
 */
const char *finderd_version(void);

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/** The peer broke the HTTP/2 protocol (bad frame, bad preface, bad state). */
#define FINDERD_EHTTP2        (-10001)
/** A malformed HPACK header block (bad index, bad integer, table overflow). */
#define FINDERD_EHPACK        (-10002)
/** Malformed Huffman-coded string (bad padding, EOS inside the string). */
#define FINDERD_EHUFFMAN      (-10003)
/** A malformed protobuf message (varint overflow, wrong wire type, length
 *  past the buffer, unterminated group). */
#define FINDERD_EPROTOBUF     (-10004)
/** The call ended with a gRPC status other than OK; see finderd_last_status(). */
#define FINDERD_EGRPC         (-10005)
/** The reply used gRPC message compression, which this library refuses. */
#define FINDERD_ECOMPRESSED   (-10006)
/** The server sent GOAWAY; the connection accepts no further calls. */
#define FINDERD_EGOAWAY       (-10007)
/** The server reset the call's stream (RST_STREAM). */
#define FINDERD_ERESET        (-10008)
/** The daemon speaks another protocol version. */
#define FINDERD_EVERSION      (-10009)
/** A message exceeded the configured size limit (max_message_bytes). */
#define FINDERD_ETOOBIG       (-10010)
/** The connection is closed or unusable after an earlier error. */
#define FINDERD_ECLOSED       (-10011)
/** A well-formed reply that breaks the contract (listing not sorted, entry
 *  count different from request, missing fields). */
#define FINDERD_EBADREPLY     (-10012)
/** Resolver: the daemon does not serve this path; ask the filesystem. */
#define FINDERD_ENOTSERVED    (-10013)
/** The shared generation file could not be mapped or is not valid. */
#define FINDERD_EGENFILE      (-10014)

/**
 * finderd_strerror() - describe an error code.
 * @err: a value returned by a libfinderd function (negative), or 0.
 *
 * Return: a static, NUL-terminated English description; never NULL.
 * Negative errno values are described as strerror() would, without using
 * its static buffer.
 */
const char *finderd_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/** Default time allowed for connect() to complete, in microseconds. */
#define FINDERD_DEFAULT_CONNECT_TIMEOUT_US 20000u
/** Default deadline of one call (request sent to reply read), in microseconds. */
#define FINDERD_DEFAULT_CALL_TIMEOUT_US 50000u
/** Default upper bound of one received gRPC message, in bytes. */
#define FINDERD_DEFAULT_MAX_MESSAGE_BYTES (64u * 1024u * 1024u)

/**
 * struct finderd_options - how to reach the daemon and how to allocate.
 *
 * Initialise with finderd_options_init() and then set what you need; that
 * keeps your code source- and binary-compatible when fields are added (the
 * library reads only the first @size bytes).
 */
struct finderd_options {
	/** sizeof(struct finderd_options) as the caller compiled it. */
	size_t size;
	/** Socket path (NUL-terminated); NULL for finderd_socket_path()'s choice. */
	const char *socket_path;
	/** Limit for connect(); 0 means FINDERD_DEFAULT_CONNECT_TIMEOUT_US. */
	uint32_t connect_timeout_us;
	/** Deadline of each call; 0 means FINDERD_DEFAULT_CALL_TIMEOUT_US. */
	uint32_t call_timeout_us;
	/** Largest reply accepted; 0 means FINDERD_DEFAULT_MAX_MESSAGE_BYTES. */
	uint32_t max_message_bytes;
	/** Allocator hooks: all three set, or all three NULL for libc's. */
	void *(*alloc)(size_t size, void *ctx);
	void *(*realloc)(void *ptr, size_t size, void *ctx);
	void (*free)(void *ptr, void *ctx);
	/** Passed to the hooks as @ctx. */
	void *alloc_ctx;
};

/**
 * finderd_options_init() - fill @opts with the defaults.
 * @opts: the struct to initialise (sets size, zeroes the rest).
 */
void finderd_options_init(struct finderd_options *opts);

/**
 * finderd_socket_path() - the socket a client uses when none is configured.
 * @buf: receives the NUL-terminated path.
 * @size: size of @buf in bytes.
 *
 * Resolution, shared by the daemon, this library and the Python client:
 *   1. $FINDERD_SOCKET when set and non-empty;
 *   2. the per-user socket: $XDG_RUNTIME_DIR/finderd/finderd.sock when
 *      $XDG_RUNTIME_DIR is set, /run/finderd/finderd.sock for root, else
 *      /tmp/finderd-$UID/finderd.sock;
 *   3. when (1) is unset and the per-user socket does not exist (one stat()),
 *      the system socket /run/finderd/finderd.sock.
 *
 * Return: 0, or -ENAMETOOLONG when @buf is too small.
 */
int finderd_socket_path(char *buf, size_t size);

/* ------------------------------------------------------------------------ */
/* Byte strings and request/reply shapes                                    */
/* ------------------------------------------------------------------------ */

/** A byte string: @len bytes at @data, not NUL-terminated. */
struct finderd_str {
	const char *data;
	size_t len;
};

/** The interpreter asking (finderd.v1.Interpreter). */
struct finderd_interpreter {
	const char *implementation;  /**< NUL-terminated, e.g. "cpython" */
	const char *version;         /**< NUL-terminated, e.g. "3.11.7" */
	const char *cache_tag;       /**< NUL-terminated, e.g. "cpython-311"; may be NULL */
	const struct finderd_str *source_suffixes;
	size_t n_source_suffixes;
	const struct finderd_str *bytecode_suffixes;
	size_t n_bytecode_suffixes;
	const struct finderd_str *extension_suffixes;
	size_t n_extension_suffixes;
};

/** A start-up request (finderd.v1.SnapshotRequest). */
struct finderd_snapshot_request {
	const struct finderd_interpreter *interpreter; /**< may be NULL */
	const struct finderd_str *sys_path;            /**< absolute paths */
	size_t n_sys_path;
	struct finderd_str program_key;                /**< {NULL, 0}: none */
	uint64_t prefetch_bytes;                       /**< 0: no prefetch */
};

/** finderd.v1.EntryKind */
enum finderd_entry_kind {
	FINDERD_ENTRY_FILE = 0,
	FINDERD_ENTRY_DIR = 1,
	FINDERD_ENTRY_SYMLINK_DIR = 2,
	FINDERD_ENTRY_OTHER = 3,
};

/** finderd.v1.DirectoryStatus */
enum finderd_dir_status {
	FINDERD_DIR_UNSPECIFIED = 0,
	FINDERD_DIR_SERVED = 1,
	FINDERD_DIR_NOT_SERVED = 2,
	FINDERD_DIR_ABSENT = 3,
	FINDERD_DIR_UNCHANGED = 4,
};

/** One listing entry; @name points into the reply that holds it. */
struct finderd_entry {
	struct finderd_str name;
	uint32_t kind;      /**< enum finderd_entry_kind */
	uint32_t mode;      /**< st_mode after following symlinks; 0 if unknown */
	int64_t mtime_ns;
	uint64_t size;
};

/** One directory of a reply (finderd.v1.Directory) without its entries,
 *  which finderd_dir_entries() decodes on demand. */
struct finderd_dir {
	struct finderd_str path;
	uint32_t status;       /**< enum finderd_dir_status */
	struct finderd_str reason;
	int32_t error;         /**< errno for FINDERD_DIR_ABSENT */
	uint64_t generation;
	uint32_t slot;
	uint32_t mode;
	int64_t mtime_ns;
	uint64_t size;
};

/** finderd.v1.GenerationFile */
struct finderd_genfile_info {
	struct finderd_str path;
	uint64_t epoch;
	uint32_t slots;
	uint64_t lease_ns;
};

/** A decoded SnapshotReply or LookupReply: both have this shape. Opaque. */
struct finderd_reply;

/** Number of directories in @reply. */
size_t finderd_reply_dir_count(const struct finderd_reply *reply);

/**
 * finderd_reply_dir() - the @i-th directory of @reply (0-based).
 *
 * Return: a pointer valid until the reply is freed, or NULL when @i is out
 * of range.
 */
const struct finderd_dir *finderd_reply_dir(const struct finderd_reply *reply, size_t i);

/**
 * finderd_dir_entries() - the entries of the @i-th directory of @reply.
 * @entries: receives an array sorted by name (unsigned byte order).
 * @n: receives its length.
 *
 * Entries are decoded on the first call for a directory and kept; names
 * point into the reply's receive buffer (no copy). Not safe to call for the
 * same reply from two threads at once.
 *
 * Return: 0, -ENOMEM, FINDERD_EPROTOBUF for a malformed listing,
 * FINDERD_EBADREPLY when it is not strictly sorted, -ERANGE when @i is out
 * of range.
 */
int finderd_dir_entries(struct finderd_reply *reply, size_t i,
			const struct finderd_entry **entries, size_t *n);

/** The generation file the daemon announced (path empty if none). */
const struct finderd_genfile_info *finderd_reply_genfile(const struct finderd_reply *reply);

/** The daemon's version string (empty for a LookupReply). */
struct finderd_str finderd_reply_daemon_version(const struct finderd_reply *reply);

/** Release @reply and everything pointing into it. NULL is allowed. */
void finderd_reply_free(struct finderd_reply *reply);

/* ------------------------------------------------------------------------ */
/* Connections and calls                                                    */
/* ------------------------------------------------------------------------ */

/** One HTTP/2 connection to the daemon. Opaque; not thread-safe. */
struct finderd_conn;

/**
 * finderd_connect() - connect to the daemon and exchange HTTP/2 settings.
 * @opts: options, or NULL for the defaults.
 * @connp: receives the connection.
 *
 * Fails fast: a missing socket gives -ENOENT, nobody listening
 * -ECONNREFUSED, a peer that does not answer the HTTP/2 preface within the
 * connect timeout -ETIMEDOUT. The socket is close-on-exec.
 *
 * Return: 0, -errno, or FINDERD_EHTTP2 when the peer does not speak HTTP/2.
 */
int finderd_connect(const struct finderd_options *opts, struct finderd_conn **connp);

/** Close @conn (sends GOAWAY when the connection is healthy). NULL is allowed. */
void finderd_close(struct finderd_conn *conn);

/**
 * finderd_last_status() - gRPC status of the last call on @conn.
 * @message: if not NULL, receives the percent-decoded grpc-message (NUL
 *           terminated, valid until the next call on @conn; "" if none).
 *
 * Return: the grpc-status code (0 = OK), or -1 if no call completed yet or
 * the last call failed before a status arrived.
 */
int finderd_last_status(const struct finderd_conn *conn, const char **message);

/**
 * finderd_snapshot() - the start-up call (Finder/Snapshot).
 * @replyp: receives the reply; free it with finderd_reply_free().
 *
 * Return: 0; FINDERD_EGRPC (see finderd_last_status()); FINDERD_EVERSION when
 * the daemon answered with another protocol version; -ETIMEDOUT past the
 * call timeout; another negative code on a broken connection, after which
 * the connection returns FINDERD_ECLOSED.
 */
int finderd_snapshot(struct finderd_conn *conn, const struct finderd_snapshot_request *req,
		     struct finderd_reply **replyp);

/**
 * finderd_lookup() - listings of further directories (Finder/Lookup).
 * @paths: @n absolute directory paths.
 * @known_generations: NULL, or @n generations the caller holds (0: none);
 *                     current ones come back FINDERD_DIR_UNCHANGED.
 * @known_epoch: the generation file epoch those generations came from
 *               (finderd_genfile_info.epoch); a daemon with another epoch
 *               ignores them. 0 with NULL @known_generations.
 * @replyp: receives a reply with exactly @n directories, in request order.
 *
 * Return: as finderd_snapshot(); FINDERD_EBADREPLY when the daemon answered
 * a different number of directories.
 */
int finderd_lookup(struct finderd_conn *conn, const struct finderd_str *paths,
		   const uint64_t *known_generations, uint64_t known_epoch, size_t n,
		   struct finderd_reply **replyp);

/** Latency distribution (finderd.v1.Histogram), microseconds. */
struct finderd_histogram {
	uint64_t count, sum_us, max_us, p50_us, p99_us;
};

/** The daemon's counters (finderd.v1.StatsReply). Fields the daemon did not
 *  send are zero. @daemon_version is NUL-terminated. */
struct finderd_stats {
	char daemon_version[64];
	uint64_t uptime_ms;
	uint32_t pid;
	uint64_t roots, directories, entries, index_bytes;
	uint64_t watches, inotify_events, overflows, degraded_roots;
	uint64_t snapshot_requests, lookup_requests;
	uint64_t directories_served, directories_not_served, directories_unchanged;
	uint64_t hits, misses, rejected_requests;
	uint64_t crawls_sync, crawls_uring;
	struct finderd_histogram barrier_latency, refresh_latency, request_latency;
};

/**
 * finderd_stats() - read the daemon's counters (Finder/Stats).
 * Return: 0 or a negative code as for finderd_snapshot().
 */
int finderd_stats(struct finderd_conn *conn, struct finderd_stats *stats);

/** grpc.health.v1.HealthCheckResponse.ServingStatus */
enum finderd_health_status {
	FINDERD_HEALTH_UNKNOWN = 0,
	FINDERD_HEALTH_SERVING = 1,
	FINDERD_HEALTH_NOT_SERVING = 2,
	FINDERD_HEALTH_SERVICE_UNKNOWN = 3,
};

/**
 * finderd_health() - the standard health check (grpc.health.v1.Health/Check).
 * @service: NUL-terminated service name; "" or NULL for the whole server.
 * @status: receives an enum finderd_health_status value.
 * Return: 0 or a negative code as for finderd_snapshot().
 */
int finderd_health(struct finderd_conn *conn, const char *service, int *status);

/* ------------------------------------------------------------------------ */
/* Resolver                                                                 */
/* ------------------------------------------------------------------------ */

/**
 * struct finderd_client - answers stat()/listdir() questions from listings.
 *
 * It holds a connection, every directory received, and a read-only mapping
 * of the daemon's generation file. A listing is trusted while the
 * generation file's epoch is the one it came with, the daemon read its change
 * queue dry less than a lease ago, and the directory's slot still holds its
 * generation: checking costs no system call. A directory it cannot trust, or
 * does not hold but whose parent listing says is a directory, costs one
 * Lookup. After a transport error every question gets FINDERD_ENOTSERVED
 * (the caller asks the filesystem) and no further calls are made.
 * Not thread-safe.
 */
struct finderd_client;

/** What finderd_client_stat() knows of a path (stat() after symlinks). */
struct finderd_stat {
	uint32_t mode;
	uint32_t kind;      /**< enum finderd_entry_kind */
	int64_t mtime_ns;
	uint64_t size;
};

/**
 * finderd_client_new() - connect and create a resolver.
 * Return: 0 or a code of finderd_connect().
 */
int finderd_client_new(const struct finderd_options *opts, struct finderd_client **clientp);

/** Free @client, its connection, mapping and listings. NULL is allowed. */
void finderd_client_free(struct finderd_client *client);

/**
 * finderd_client_snapshot() - fetch the start-up answer and keep it.
 * Return: 0 or a code of finderd_snapshot(); FINDERD_EGENFILE when the
 * generation file cannot be mapped (nothing is then trusted).
 */
int finderd_client_snapshot(struct finderd_client *client,
			    const struct finderd_snapshot_request *req);

/**
 * finderd_client_stat() - stat() a path from the listings.
 * @path: absolute canonical path, @len bytes (no NUL needed).
 * @st: receives the fingerprint on success.
 *
 * Return: 0; -ENOENT or -ENOTDIR when the listings show that stat() would
 * fail that way; FINDERD_ENOTSERVED when the caller must ask the filesystem
 * (path not canonical, not under a served directory, daemon gone).
 */
int finderd_client_stat(struct finderd_client *client, const char *path, size_t len,
			struct finderd_stat *st);

/**
 * finderd_client_listdir() - the listing of a directory.
 * @entries: receives the sorted entries (valid until the next call on @client).
 * @n: receives their count.
 *
 * Asks the daemon (one Lookup) for a directory it does not hold.
 *
 * Return: 0; -ENOENT or -ENOTDIR as listdir() would fail; FINDERD_ENOTSERVED.
 */
int finderd_client_listdir(struct finderd_client *client, const char *path, size_t len,
			   const struct finderd_entry **entries, size_t *n);

/**
 * finderd_client_invalidate() - forget trust in every held listing.
 *
 * The next question revalidates all held directories in one Lookup (those
 * unchanged keep their listing). Python's importlib.invalidate_caches() maps
 * to this.
 */
void finderd_client_invalidate(struct finderd_client *client);

/**
 * finderd_client_dir() - what the client holds for directory @path.
 * @dirp: receives the directory's header (status, reason, generation...),
 *        valid until the next call on @client.
 *
 * Only reports; never asks the daemon and never checks freshness.
 *
 * Return: 0, or -ENOENT when the client holds nothing for @path.
 */
int finderd_client_dir(struct finderd_client *client, const char *path, size_t len,
		       const struct finderd_dir **dirp);

/** Counters of a resolver, for debugging and benchmarks. */
struct finderd_client_counters {
	uint64_t answered;      /**< questions answered from memory */
	uint64_t not_served;    /**< questions sent back to the filesystem */
	uint64_t lookups;       /**< Lookup round trips made */
	uint64_t revalidations; /**< directories revalidated */
};

/** Copy @client's counters into @out. */
void finderd_client_counters(const struct finderd_client *client,
			     struct finderd_client_counters *out);

/** The connection of @client (for finderd_stats() and friends); owned by @client. */
struct finderd_conn *finderd_client_conn(struct finderd_client *client);

#ifdef __cplusplus
}
#endif

#endif /* FINDERD_H */
