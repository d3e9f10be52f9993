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
 *   - Threads: objects (connections, replies, clients) are not thread-safe.
 *     Use one per thread, or serialise every call on one object with your
 *     own lock. Distinct objects may be used from distinct threads at the
 *     same time: the library has no global mutable state (it reads the
 *     environment in finderd_socket_path() only).
 *   - Processes: sockets are close-on-exec. After fork(), use a connection
 *     or client in one of the two processes only (they share the socket).
 *   - Signals: no call raises SIGPIPE; an interrupted wait is resumed and
 *     still ends at the call's deadline.
 *   - Memory: every object returned through an out-pointer is owned by the
 *     caller and released with the matching *_free()/finderd_close() call,
 *     which accept NULL. Pointers into a reply (names, paths, entries) stay
 *     valid until that reply is freed. Every allocation goes through the
 *     allocator hooks of struct finderd_options when given (the resolver's
 *     included), malloc/realloc/free otherwise.
 *   - Compatibility: see "ABI" in client-c/README.md. In short, within a
 *     major version (the SONAME, libfinderd.so.0) functions, structs passed
 *     by pointer and constants keep their meaning; new functions get a new
 *     symbol version node (FINDERD_0.2, ...); struct finderd_options only
 *     grows at its end, read up to its @size. Opaque types may change.
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
#define FINDERD_VERSION_MINOR 3
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
/** The process listening on the socket runs as a user this client does not
 *  trust: not root, not the caller's effective uid, not the configured
 *  daemon user (struct finderd_options.daemon_user). Nothing was sent.
 *  finderd_socket_peer() says who listens. Since 0.3. */
#define FINDERD_EUNTRUSTED    (-10015)

/**
 * finderd_strerror() - describe an error code.
 * @err: a value returned by a libfinderd function (negative), or 0.
 *
 * Thread-safe.
 *
 * Return: a static, NUL-terminated English description; never NULL.
 * Negative errno values are described as strerror() would, without using
 * its static buffer; unknown values as "Unknown error".
 */
const char *finderd_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/** Default time allowed for connect() to complete, in microseconds. */
#define FINDERD_DEFAULT_CONNECT_TIMEOUT_US 20000u
/** Default deadline of one call (request sent to reply read), in microseconds. */
#define FINDERD_DEFAULT_CALL_TIMEOUT_US 50000u
/** Without snapshot_timeout_us, finderd_snapshot()'s deadline is this many
 *  call deadlines. Since 0.3. */
#define FINDERD_SNAPSHOT_TIMEOUT_CALLS 2u
/** Default upper bound of one received gRPC message, in bytes. */
#define FINDERD_DEFAULT_MAX_MESSAGE_BYTES (64u * 1024u * 1024u)
/** Default first pause of the resolver between reconnect attempts, in
 *  microseconds (see struct finderd_client). Since 0.3. */
#define FINDERD_DEFAULT_RECONNECT_MIN_US 100000u
/** Default longest pause between reconnect attempts, in microseconds. Since 0.3. */
#define FINDERD_DEFAULT_RECONNECT_MAX_US 30000000u

/**
 * struct finderd_options - how to reach the daemon and how to allocate.
 *
 * Initialise with finderd_options_init() and then set what you need; that
 * keeps your code source- and binary-compatible when fields are added (the
 * library reads only the first @size bytes, and fields past a caller's
 * @size take their defaults). The library keeps no pointer into it.
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
	/**
	 * Allocator hooks: all three set, or all three NULL for libc's. @alloc
	 * and @realloc return NULL on failure, as malloc()/realloc() do; the
	 * library never asks for 0 bytes and never passes NULL to @free. The
	 * hooks are called from the thread using the object.
	 */
	void *(*alloc)(size_t size, void *ctx);
	void *(*realloc)(void *ptr, size_t size, void *ctx);
	void (*free)(void *ptr, void *ctx);
	/** Passed to the hooks as @ctx. */
	void *alloc_ctx;
	/** FINDERD_CONNECT_* flags, or 0 (since 0.2; older libraries ignore it). */
	uint32_t flags;
	/**
	 * The caller's mount namespace, sent with every Snapshot, Lookup and
	 * Report: the st_ino of /proc/self/ns/mnt, or 0 for unknown (since 0.2).
	 * It matters only for a connection that passes no view
	 * (FINDERD_CONNECT_NO_VIEW): a daemon in another namespace then serves
	 * it nothing. The resolver (finderd_client_new()) fills it in itself
	 * when it is 0.
	 */
	uint64_t mount_namespace;
	/**
	 * Who besides root and the caller's effective uid may listen on the
	 * socket (since 0.3): a user name or a decimal uid, NUL-terminated; ""
	 * for nobody else; NULL for $FINDERD_DAEMON_USER (read at each connect).
	 * Every connect checks the listener's credentials (SO_PEERCRED: the
	 * user that called listen(), so root for a socket systemd passes)
	 * before it sends anything, and fails with FINDERD_EUNTRUSTED when they
	 * are none of these. A name that does not resolve names nobody.
	 */
	const char *daemon_user;
	/** Resolver only: first pause before a reconnect attempt after the
	 *  last one failed; 0 means FINDERD_DEFAULT_RECONNECT_MIN_US (since 0.3). */
	uint32_t reconnect_min_us;
	/** Resolver only: longest such pause; 0 means
	 *  FINDERD_DEFAULT_RECONNECT_MAX_US (since 0.3). */
	uint32_t reconnect_max_us;
	/**
	 * Deadline of finderd_snapshot() (the resolver's start-up call); 0
	 * means FINDERD_SNAPSHOT_TIMEOUT_CALLS times @call_timeout_us (since
	 * 0.3). One Snapshot brings a whole start's directories: in a view the
	 * daemon has not indexed (a new container on a slow filesystem) their
	 * crawl takes longer than one Lookup's, and the daemon answers with
	 * what it has read by a share of this deadline.
	 */
	uint32_t snapshot_timeout_us;
};

/**
 * FINDERD_CONNECT_LAZY - connect without waiting for the server (0-RTT).
 *
 * finderd_connect() returns as soon as the socket is connected, with the
 * HTTP/2 preface and SETTINGS queued; they leave in the same write as the
 * first call's request, and the server's SETTINGS are checked when its
 * reply arrives. That saves one round trip per connection. What
 * finderd_connect() would have reported about the server (FINDERD_EHTTP2
 * for a peer that does not speak HTTP/2, -ETIMEDOUT for one that says
 * nothing within the connect timeout, -ECONNRESET) is then returned by the
 * first call, which still waits for the server's SETTINGS no longer than
 * connect_timeout_us from when it started. Socket errors (-ENOENT,
 * -ECONNREFUSED, ...) are still returned by finderd_connect().
 * finderd_client_new() always connects this way.
 */
#define FINDERD_CONNECT_LAZY 0x1u

/**
 * FINDERD_CONNECT_NO_VIEW - do not pass the caller's view (since 0.3).
 *
 * By default finderd_connect() passes an O_PATH descriptor of the caller's
 * root directory ("/") to the daemon with SCM_RIGHTS, before the HTTP/2
 * preface: the daemon then resolves every path of the connection beneath
 * that root, as the caller's own system calls would, even when the daemon
 * runs in another mount namespace (a node daemon serving containers)
 * without any privilege. The daemon reads through it with its own
 * credentials and gives the caller only what the caller could read
 * itself. The descriptor is sent only to a daemon that passed the trust
 * check. With this flag the connection passes nothing and is answered in
 * the daemon's own view, as a standard gRPC client is.
 */
#define FINDERD_CONNECT_NO_VIEW 0x2u

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
 * Resolution, shared by the daemon, this library and the Python client
 * (whose finderd.pth applies it with one stat() at every interpreter start):
 *   1. $FINDERD_SOCKET when set and non-empty;
 *   2. $XDG_RUNTIME_DIR/finderd/finderd.sock when $XDG_RUNTIME_DIR is set;
 *   3. the system daemon's /run/finderd/finderd.sock.
 * No system call.
 *
 * Reads the environment (getenv()): not safe against a concurrent setenv().
 *
 * Return: 0, or -ENAMETOOLONG when @buf is too small.
 */
int finderd_socket_path(char *buf, size_t size);

/** Who listens on a socket: the credentials the listening process had when
 *  it called listen() (SO_PEERCRED). Since 0.3. */
struct finderd_peer {
	int32_t pid;  /**< 0 when the kernel cannot name it (another pid namespace) */
	uint32_t uid;
	uint32_t gid;
};

/**
 * finderd_socket_peer() - who listens on the daemon's socket.
 * @opts: the socket and connect timeout, as for finderd_connect(); or NULL.
 * @peer: receives the listener's credentials.
 *
 * Connects, reads the listener's credentials and closes without sending a
 * byte. For diagnostics (who holds a socket a connect refused with
 * FINDERD_EUNTRUSTED): it checks nothing and trusts nobody. Since 0.3.
 *
 * Return: 0, -EINVAL, or a socket error of finderd_connect() (-ENOENT,
 * -ECONNREFUSED, ...).
 */
int finderd_socket_peer(const struct finderd_options *opts, struct finderd_peer *peer);

/**
 * FINDERD_SOCKET_PATH_NO_ENV - finderd_socket_path_flags(): skip step 1,
 * $FINDERD_SOCKET. For an embedder that runs with its own environment
 * variables ignored (python -E and -I ignore PYTHON*; finderd-python then
 * ignores FINDERD_* too). $XDG_RUNTIME_DIR still counts: it says where this
 * user's runtime files are, not how finderd behaves. Since 0.3.
 */
#define FINDERD_SOCKET_PATH_NO_ENV 0x1u

/**
 * finderd_socket_path_flags() - finderd_socket_path() with flags.
 * @buf: receives the NUL-terminated path.
 * @size: size of @buf in bytes.
 * @flags: 0 (exactly finderd_socket_path()), or FINDERD_SOCKET_PATH_NO_ENV.
 *
 * No system call. Reads the environment: not safe against a concurrent
 * setenv(). Since 0.3 (symbol version FINDERD_0.3).
 *
 * Return: 0, -ENAMETOOLONG when @buf is too small, -EINVAL for an unknown
 * flag.
 */
int finderd_socket_path_flags(char *buf, size_t size, uint32_t flags);

/* ------------------------------------------------------------------------ */
/* Byte strings and request/reply shapes                                    */
/* ------------------------------------------------------------------------ */

/** A byte string: @len bytes at @data, not NUL-terminated. */
struct finderd_str {
	const char *data;
	size_t len;
};

/**
 * struct finderd_interpreter - who is asking (finderd.v1.Interpreter): what
 * decides what a directory entry means to an import. Every pointer is read
 * during the call only.
 */
struct finderd_interpreter {
	const char *implementation;  /**< NUL-terminated, e.g. "cpython" */
	const char *version;         /**< NUL-terminated, e.g. "3.11.7" */
	const char *cache_tag;       /**< NUL-terminated, e.g. "cpython-311"; may be NULL */
	/** e.g. ".py" (importlib.machinery.SOURCE_SUFFIXES) */
	const struct finderd_str *source_suffixes;
	size_t n_source_suffixes;
	/** e.g. ".pyc" */
	const struct finderd_str *bytecode_suffixes;
	size_t n_bytecode_suffixes;
	/** e.g. ".cpython-311-x86_64-linux-gnu.so", ".abi3.so", ".so" */
	const struct finderd_str *extension_suffixes;
	size_t n_extension_suffixes;
};

/**
 * struct finderd_snapshot_request - a start-up request
 * (finderd.v1.SnapshotRequest). Every pointer is read during the call only.
 */
struct finderd_snapshot_request {
	const struct finderd_interpreter *interpreter; /**< may be NULL */
	/** The search path, absolute and canonical (see finderd_client_stat());
	 *  an entry in another form is answered NOT_SERVED, a relative one makes
	 *  the daemon refuse the call (FINDERD_EGRPC, INVALID_ARGUMENT). */
	const struct finderd_str *sys_path;
	size_t n_sys_path;
	struct finderd_str program_key;                /**< {NULL, 0}: none */
	/** Encoded bytes of package directories the daemon may add beyond the
	 *  sys_path entries when it has no plan for @program_key; 0: none. */
	uint64_t prefetch_bytes;
	/** Bytes of compiled files (struct finderd_cached_file) the daemon may
	 *  include for files the plan names on slow filesystems; 0: none.
	 *  Since 0.2. */
	uint64_t bytecode_bytes;
};

/** What a listing entry is, after following symlinks as stat() does
 *  (finderd.v1.EntryKind). */
enum finderd_entry_kind {
	FINDERD_ENTRY_FILE = 0,        /**< a regular file, or a symlink to one */
	FINDERD_ENTRY_DIR = 1,         /**< a directory (not through a symlink) */
	FINDERD_ENTRY_SYMLINK_DIR = 2, /**< a symlink that resolves to a directory */
	FINDERD_ENTRY_OTHER = 3,       /**< fifo, socket, device, dangling or looping symlink */
};

/** What the daemon says of a directory (finderd.v1.DirectoryStatus). */
enum finderd_dir_status {
	FINDERD_DIR_UNSPECIFIED = 0, /**< treat as FINDERD_DIR_NOT_SERVED */
	FINDERD_DIR_SERVED = 1,      /**< the listing is complete and fresh */
	FINDERD_DIR_NOT_SERVED = 2,  /**< ask the filesystem; @reason says why */
	FINDERD_DIR_ABSENT = 3,      /**< does not exist: @error is ENOENT or ENOTDIR */
	FINDERD_DIR_UNCHANGED = 4,   /**< revalidation: the known generation is current */
};

/** One listing entry; @name points into the reply that holds it. */
struct finderd_entry {
	struct finderd_str name; /**< one path component, never "." or ".." */
	uint32_t kind;      /**< enum finderd_entry_kind */
	uint32_t mode;      /**< st_mode after following symlinks; 0 if unknown */
	int64_t mtime_ns;   /**< st_mtime in nanoseconds since the epoch */
	uint64_t size;      /**< st_size */
};

/** One directory of a reply (finderd.v1.Directory) without its entries,
 *  which finderd_dir_entries() decodes on demand. Strings point into the
 *  reply. */
struct finderd_dir {
	struct finderd_str path;   /**< as requested (or as prefetched) */
	uint32_t status;           /**< enum finderd_dir_status */
	struct finderd_str reason; /**< FINDERD_DIR_NOT_SERVED: why, for humans */
	int32_t error;             /**< FINDERD_DIR_ABSENT: the errno a stat() gives */
	/** Bumped whenever the listing or a fingerprint in it changes; never
	 *  reused within a generation file epoch. */
	uint64_t generation;
	/** Index in the generation file's slots holding @generation while the
	 *  listing is current; 0: none (revalidate before trusting it again). */
	uint32_t slot;
	uint32_t mode;             /**< the directory's own stat(): st_mode */
	int64_t mtime_ns;          /**< ... st_mtime in nanoseconds */
	uint64_t size;             /**< ... st_size */
	/** The daemon found the directory's filesystem slow: compiled files
	 *  under it are worth serving from memory (since 0.2). */
	uint32_t slow_filesystem;
};

/**
 * struct finderd_cached_file - a compiled file a learned plan names, served
 * from the daemon's memory (finderd.v1.CachedFile), with the fingerprint it
 * had at the daemon's barrier. Its directory is among the reply's
 * directories; finderd_client_cached_file() checks through it that the file
 * is still current. Since 0.2.
 */
struct finderd_cached_file {
	struct finderd_str path;
	struct finderd_str data;
	int64_t mtime_ns;
	uint64_t size;
};

/** The daemon's shared generation file (finderd.v1.GenerationFile). */
struct finderd_genfile_info {
	struct finderd_str path; /**< where it is; empty when the reply named none */
	uint64_t epoch;          /**< random per daemon start */
	uint32_t slots;          /**< number of 64-bit slots */
	uint64_t lease_ns;       /**< slots are trusted this long after dry_ns */
};

/** A decoded SnapshotReply or LookupReply: both have this shape. Opaque. */
struct finderd_reply;

/**
 * finderd_reply_dir_count() - the number of directories in @reply.
 *
 * Return: for a LookupReply, the number of paths asked; for a
 * SnapshotReply, the sys_path entries and the prefetched directories after
 * them.
 */
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
 * FINDERD_EBADREPLY when it is not strictly sorted or a name is not one
 * path component, -ERANGE when @i is out of range.
 */
int finderd_dir_entries(struct finderd_reply *reply, size_t i,
			const struct finderd_entry **entries, size_t *n);

/**
 * finderd_reply_genfile() - the generation file the daemon announced.
 *
 * Return: a pointer valid until the reply is freed; never NULL (the path is
 * empty if the reply named none).
 */
const struct finderd_genfile_info *finderd_reply_genfile(const struct finderd_reply *reply);

/** Number of compiled files in @reply (0 for a LookupReply). Since 0.2. */
size_t finderd_reply_file_count(const struct finderd_reply *reply);

/** The @i-th compiled file of @reply, or NULL when @i is out of range;
 *  valid until the reply is freed. Since 0.2. */
const struct finderd_cached_file *finderd_reply_file(const struct finderd_reply *reply, size_t i);

/** How many of @reply's directories, after those of the request, came from
 *  the program's learned plan (0 for a LookupReply). Since 0.2. */
uint32_t finderd_reply_planned_directories(const struct finderd_reply *reply);

/**
 * finderd_reply_daemon_version() - the daemon's version string.
 *
 * Return: bytes inside the reply (not NUL-terminated); empty for a
 * LookupReply, which does not carry it.
 */
struct finderd_str finderd_reply_daemon_version(const struct finderd_reply *reply);

/** Release @reply and everything pointing into it. NULL is allowed. */
void finderd_reply_free(struct finderd_reply *reply);

/* ------------------------------------------------------------------------ */
/* Connections and calls                                                    */
/* ------------------------------------------------------------------------ */

/**
 * struct finderd_conn - one HTTP/2 connection to the daemon. Opaque; not
 * thread-safe. Calls are unary and one at a time. A call that breaks the
 * connection (malformed input, end of stream, a timeout) leaves it closed:
 * later calls return FINDERD_ECLOSED. A call that fails only its own stream
 * (FINDERD_EGRPC, FINDERD_ERESET, FINDERD_ECOMPRESSED, FINDERD_ETOOBIG,
 * FINDERD_EBADREPLY, FINDERD_EVERSION) leaves the connection usable.
 *
 * In the common case a call is two system calls: one send() of the whole
 * request and one recv() of the whole reply (see client-c/README.md).
 */
struct finderd_conn;

/**
 * finderd_connect() - connect to the daemon and exchange HTTP/2 settings.
 * @opts: options, or NULL for the defaults.
 * @connp: receives the connection; close it with finderd_close().
 *
 * Fails fast: a missing socket gives -ENOENT, nobody listening
 * -ECONNREFUSED, a peer that does not answer the HTTP/2 preface within the
 * connect timeout -ETIMEDOUT. Before it sends a byte it checks who listens
 * (SO_PEERCRED): root, the caller's effective uid or the daemon user of
 * @opts, else FINDERD_EUNTRUSTED. The socket is close-on-exec. With
 * FINDERD_CONNECT_LAZY in @opts->flags, returns once the socket is
 * connected and the first call does the rest (one round trip less).
 *
 * Return: 0, -EINVAL (bad options, unknown flags, NULL @connp), -errno,
 * FINDERD_EUNTRUSTED for a listener of another user, or FINDERD_EHTTP2 when
 * the peer does not speak HTTP/2.
 */
int finderd_connect(const struct finderd_options *opts, struct finderd_conn **connp);

/** Close @conn (sends GOAWAY when the connection is healthy and was used).
 *  NULL is allowed. */
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
 * @req: what to list; read during the call only.
 * @replyp: receives the reply; free it with finderd_reply_free(). NULL on
 *          failure.
 *
 * The reply holds one directory per @req->sys_path entry, in order, then
 * the prefetched ones; every change made before the call is in it.
 *
 * Return: 0; FINDERD_EGRPC (see finderd_last_status()); FINDERD_EVERSION when
 * the daemon answered with another protocol version; FINDERD_EBADREPLY when
 * the directories do not answer the request; -ETIMEDOUT past the call
 * timeout; -EINVAL for NULL arguments; another negative code on a broken
 * connection, after which the connection returns FINDERD_ECLOSED.
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
 * @replyp: receives a reply with exactly @n directories, in request order;
 *          NULL on failure.
 *
 * Return: as finderd_snapshot(); FINDERD_EBADREPLY when the daemon answered
 * a different number of directories or other paths.
 */
int finderd_lookup(struct finderd_conn *conn, const struct finderd_str *paths,
		   const uint64_t *known_generations, uint64_t known_epoch, size_t n,
		   struct finderd_reply **replyp);

/** Latency distribution (finderd.v1.Histogram), microseconds. */
struct finderd_histogram {
	uint64_t count, sum_us, max_us, p50_us, p99_us;
};

/** The daemon's counters (finderd.v1.StatsReply; the proto documents each
 *  field). Fields the daemon did not send are zero. @daemon_version is
 *  NUL-terminated, truncated to fit. */
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
 * @stats: receives them (caller's memory; nothing to free).
 *
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
 *
 * Return: 0 or a negative code as for finderd_snapshot(); an unknown
 * @service is FINDERD_EGRPC with status 5 (NOT_FOUND).
 */
int finderd_health(struct finderd_conn *conn, const char *service, int *status);

/** What a run used (finderd.v1.ReportRequest). Since 0.2. */
struct finderd_report_request {
	struct finderd_str program_key;            /**< as in the run's Snapshot */
	const struct finderd_str *directories;     /**< directories whose listings it used */
	size_t n_directories;
	const struct finderd_str *bytecode_files;  /**< compiled files it read on slow filesystems */
	size_t n_bytecode_files;
};

/**
 * finderd_report() - tell the daemon what a run used (Finder/Report), so
 * that the next Snapshot with the same program key carries all of it.
 * Return: 0 or a negative code as for finderd_snapshot(). Since 0.2.
 */
int finderd_report(struct finderd_conn *conn, const struct finderd_report_request *req);

/* ------------------------------------------------------------------------ */
/* Resolver                                                                 */
/* ------------------------------------------------------------------------ */

/**
 * struct finderd_client - answers stat()/listdir() questions from listings.
 *
 * It holds a connection, every directory received, and a read-only mapping
 * of the daemon's generation file. A listing is trusted while the
 * generation file's epoch is the one it came with, the daemon read its
 * change queue dry less than a lease ago, and the directory's slot still
 * holds its generation: checking costs no system call. What it cannot trust
 * it revalidates, every such directory in one Lookup (unchanged ones keep
 * their listing). A directory it does not hold, below one it holds whose
 * listing says the next component is a directory, costs one Lookup (of
 * every missing level at once). A directory the daemon gave no slot (it ran
 * out of them) is left to the filesystem.
 *
 * Losing the daemon (since 0.3): after a transport error, a reply it cannot
 * use, or a generation file it cannot map or trust, the client falls back:
 * that question and every later one get FINDERD_ENOTSERVED (the caller asks
 * the filesystem), with no call, until a reconnect attempt is due. The
 * first is due at once (made at the next question); each failed one
 * doubles the pause before the next, from reconnect_min_us up to
 * reconnect_max_us of the options, less up to half of it at random so that
 * many clients do not come back at the same moment. A daemon gone for good
 * thus costs one connect() per pause, never a round trip per question. An
 * attempt first drops everything held from the lost daemon (listings,
 * compiled files, the generation file mapping: the new daemon's slots are
 * never read against the old file), then connects (checking the listener,
 * as every connect does) and sends the last Snapshot request again; once it
 * is answered the client serves exact answers from the new daemon.
 * finderd_client_status() says what it is doing and why.
 *
 * Freshness: a change is seen once the daemon has read its inotify event
 * (microseconds), at worst a lease (200 ms by default) after the daemon
 * stopped reading; finderd_client_invalidate() and finderd_client_touch()
 * make the next answer exact (its Lookup runs the daemon's barrier).
 *
 * Not thread-safe. Allocates through the hooks of its options.
 */
struct finderd_client;

/** What finderd_client_stat() knows of a path (stat() after symlinks). */
struct finderd_stat {
	uint32_t mode;      /**< st_mode */
	/** enum finderd_entry_kind; a directory the client holds itself is
	 *  FINDERD_ENTRY_DIR even when reached through a symlink */
	uint32_t kind;
	int64_t mtime_ns;   /**< st_mtime in nanoseconds since the epoch */
	uint64_t size;      /**< st_size */
};

/**
 * finderd_client_new() - create a resolver and connect it.
 * @opts: as for finderd_connect(), or NULL; its allocator hooks serve the
 *        resolver too. The connection is always FINDERD_CONNECT_LAZY: the
 *        first call (normally finderd_client_snapshot()) carries the HTTP/2
 *        handshake and reports what the server says.
 * @clientp: receives the client; free it with finderd_client_free().
 *
 * With no daemon, the connect() that fails is the only system call made
 * (the caller's mount namespace is looked up once connected), so an
 * embedder can call this first thing at every start.
 *
 * Return: 0, -EINVAL, -ENOMEM, or a socket error of finderd_connect()
 * (-ENOENT, -ECONNREFUSED, ..., FINDERD_EUNTRUSTED).
 */
int finderd_client_new(const struct finderd_options *opts, struct finderd_client **clientp);

/** Free @client, its connection, mapping and listings. NULL is allowed. */
void finderd_client_free(struct finderd_client *client);

/**
 * finderd_client_after_fork() - in a child after fork(): stop sharing the
 * parent's connection.
 *
 * Closes the child's copy of the socket without a word on the wire (the
 * parent goes on using the connection) and reconnects, at the child's next
 * round trip, to the same socket with the same options. Held listings and
 * the generation file mapping stay valid. Call it in the child before any
 * other call on @client (pthread_atfork(), Python's os.register_at_fork()).
 * NULL is allowed. Since 0.2.
 */
void finderd_client_after_fork(struct finderd_client *client);

/**
 * finderd_client_snapshot() - fetch the start-up answer and keep it.
 * @req: as for finderd_snapshot(); read during the call only.
 *
 * May be called again (for a new search path); answers accumulate.
 *
 * While the client has fallen back, a call when a reconnect attempt is due
 * makes that attempt with @req (which is then the request sent again at
 * later reconnects); before then it returns FINDERD_ECLOSED and sends
 * nothing.
 *
 * Return: 0 or a code of finderd_snapshot(); FINDERD_EGENFILE when the
 * generation file cannot be mapped (nothing is then trusted);
 * FINDERD_ECLOSED while fallen back. Any failure makes the client fall back
 * (see struct finderd_client).
 */
int finderd_client_snapshot(struct finderd_client *client,
			    const struct finderd_snapshot_request *req);

/**
 * finderd_client_stat() - stat() a path from the listings.
 * @path: absolute canonical path, @len bytes (no NUL needed): it starts
 *        with '/', has no empty, "." or ".." component and no trailing '/'.
 *        One exception: a "." component right after a directory the client
 *        holds is dropped ("CWD/./x", as Python 3.9 and 3.10 ask).
 * @st: receives the fingerprint on success.
 *
 * Asks the daemon (one Lookup) only to revalidate what it cannot trust or
 * to fetch a directory its listings say exists.
 *
 * Return: 0; -ENOENT or -ENOTDIR when the listings show that stat() would
 * fail that way; FINDERD_ENOTSERVED when the caller must ask the filesystem
 * (path not canonical, not under a served directory, a dangling symlink,
 * the daemon gone or not answering within the call deadline).
 */
int finderd_client_stat(struct finderd_client *client, const char *path, size_t len,
			struct finderd_stat *st);

/**
 * finderd_client_listdir() - the listing of a directory.
 * @path: as for finderd_client_stat().
 * @entries: receives the entries, sorted by name in unsigned byte order,
 *           without "." and ".."; valid until the next call on @client.
 * @n: receives their count.
 *
 * Asks the daemon (one Lookup) for a directory it does not hold, even one
 * under no held directory (a new search path entry); the answer is kept.
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
 * to this. Costs no system call; NULL is allowed.
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

/**
 * finderd_client_touch() - the caller is about to change @path.
 * @path: the path created, written, renamed, removed or re-moded, @len bytes.
 *
 * The daemon learns of changes through inotify, microseconds after they
 * happen; a process that changes a file and asks about it at once could
 * otherwise get the listing from just before. After this call, the next
 * question about @path or about its directory revalidates them first (in the
 * one batched Lookup). A path that is not absolute and canonical distrusts
 * every held listing, as finderd_client_invalidate() does. Costs no system
 * call. Python's client calls it from an audit hook for every "open" with
 * write intent and every "os.rename", "os.remove", "os.mkdir"... event.
 *
 * The mark lasts until the next revalidation, whoever's question causes
 * it. A caller whose threads share @client (serialised, as the GIL does)
 * must call it again once the change is made when another thread may have
 * asked in between: that question's revalidation may have run before the
 * change existed. Python's client keeps each announced change and touches
 * it again before every question until the changing thread asks one.
 * Since 0.2 (symbol version FINDERD_0.2).
 */
void finderd_client_touch(struct finderd_client *client, const char *path, size_t len);

/**
 * finderd_client_touch_mkdir() - the caller is about to mkdir(@path).
 * @path: the directory to be created, @len bytes.
 *
 * As finderd_client_touch(), except that nothing is marked when the held,
 * still trusted listing of @path's directory already names @path as a
 * directory (or a symlink to one): mkdir() then fails with EEXIST and
 * changes nothing. Tools call os.makedirs(exist_ok=True) before every write
 * (pytest does, per test module); without this each call would cost a
 * revalidation round trip. Costs no system call. Since 0.2 (symbol version
 * FINDERD_0.2).
 */
void finderd_client_touch_mkdir(struct finderd_client *client, const char *path, size_t len);

/**
 * finderd_client_cached_file() - a compiled file's bytes, from memory.
 * @path: absolute path of the file, @len bytes.
 * @data: receives the bytes (valid until the next call on @client).
 *
 * Answers when a reply carried the file (struct finderd_cached_file) and
 * the listing of its directory, still trusted, shows the same size and
 * mtime. Every call on a path under a slow filesystem is remembered for
 * finderd_client_report(), answered or not. Since 0.2.
 *
 * Return: 0; -ENOENT when the client holds no current copy (read the file).
 */
int finderd_client_cached_file(struct finderd_client *client, const char *path, size_t len,
			       struct finderd_str *data);

/**
 * finderd_client_report() - at the end of a run, tell the daemon what it
 * used, if that differs from what the start-up answer's plan held: a Lookup
 * was needed, a planned directory went unused, a prefetched directory was
 * used (the daemon had no plan yet; since 0.3), or a compiled file under a
 * slow filesystem was read from disk. Otherwise sends nothing.
 * @program_key: as in the run's snapshot request, @len bytes.
 *
 * Return: 0 (also when nothing was sent), or a code of finderd_report().
 * Since 0.2.
 */
int finderd_client_report(struct finderd_client *client, const char *program_key, size_t len);

/**
 * FINDERD_CLIENT_NO_ROUND_TRIPS - finderd_client_set_flags(): answer only
 * from what the client holds and trusts now. A question that would need a
 * round trip (a directory not held, a listing to revalidate) gets
 * FINDERD_ENOTSERVED instead, so the caller asks the filesystem, and
 * nothing is given up: once the flag is cleared, the same question costs
 * its Lookup as usual. Since 0.3.
 *
 * For questions asked where a stat() costs less than a round trip would:
 * an interpreter's own C-level probes while it starts (CPython's path
 * calculation checks a dozen landmarks in directories the start-up answer
 * holds), or any code that must not wait on the daemon.
 */
#define FINDERD_CLIENT_NO_ROUND_TRIPS 0x1u

/**
 * finderd_client_set_flags() - change how @client answers from now on.
 * @flags: FINDERD_CLIENT_* flags to hold from now on (those not given are
 *         cleared); 0 restores the default behaviour.
 *
 * Costs no system call. Since 0.3 (symbol version FINDERD_0.3).
 *
 * Return: 0, -EINVAL for a NULL @client or an unknown flag (nothing
 * changes then).
 */
int finderd_client_set_flags(struct finderd_client *client, uint32_t flags);

/** Counters of a resolver, for debugging and benchmarks. */
struct finderd_client_counters {
	uint64_t answered;      /**< questions answered from memory */
	uint64_t not_served;    /**< questions sent back to the filesystem */
	uint64_t lookups;       /**< Lookup round trips made */
	uint64_t revalidations; /**< directories revalidated */
};

/** Copy @client's counters into @out (zeros for a NULL @client). */
void finderd_client_counters(const struct finderd_client *client,
			     struct finderd_client_counters *out);

/**
 * finderd_client_conn() - the connection of @client, for finderd_stats()
 * and friends.
 *
 * Return: the connection, owned by @client (do not close it), or NULL for
 * a NULL @client, while it has fallen back, or when connecting again after
 * finderd_client_after_fork() failed; calls on it are calls on the client
 * for thread-safety. A transport error in such a call makes the client fall
 * back at its next question.
 */
struct finderd_conn *finderd_client_conn(struct finderd_client *client);

/** What a resolver does now (struct finderd_client_status.state). Since 0.3. */
enum finderd_client_state {
	/** Answering from the daemon's listings. */
	FINDERD_CLIENT_SERVED = 0,
	/** Lost the daemon: every question goes to the filesystem; the next
	 *  reconnect attempt is made at the first question after @retry_in_us. */
	FINDERD_CLIENT_FELL_BACK = 1,
};

/** struct finderd_client_status - a resolver's state and how it got there.
 *  Since 0.3. */
struct finderd_client_status {
	/** sizeof(struct finderd_client_status) as the caller compiled it: set
	 *  it before the call; the library writes no field past it. */
	size_t size;
	uint32_t state;      /**< enum finderd_client_state */
	/** FELL_BACK: why, the code of the failure that lost the daemon or of
	 *  the last reconnect attempt that failed; 0 while served. */
	int error;
	/** The failure that lost the daemon the last time; 0: never lost. */
	int lost_error;
	uint64_t fallbacks;  /**< times the client lost the daemon */
	uint64_t reconnects; /**< times it was served again afterwards */
	uint64_t attempts;   /**< reconnect attempts made, failed or not */
	/** FELL_BACK: microseconds until an attempt is due (0: the next question
	 *  makes one). */
	uint64_t retry_in_us;
};

/**
 * finderd_client_status() - what @client does now, and why.
 * @status: receives it; set @status->size first.
 *
 * Only reports: never connects. Costs no system call but a vDSO clock read.
 * Since 0.3.
 *
 * Return: 0, or -EINVAL for a NULL argument or a @size that does not even
 * hold @size itself.
 */
int finderd_client_status(const struct finderd_client *client,
			  struct finderd_client_status *status);

#ifdef __cplusplus
}
#endif

#endif /* FINDERD_H */
