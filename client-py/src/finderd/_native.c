/*
 * finderd._native - libfinderd's resolver as drop-in posix.stat/listdir.
 *
 * A Client holds one connection to the daemon and the listings it sent.
 * Its stat() and listdir() accept exactly what importlib's path-based finder
 * passes to posix.stat()/posix.listdir() (one str or bytes path) and answer
 * from those listings; anything else, and anything the daemon does not
 * serve, is passed to posix unchanged, so results and exceptions are always
 * what posix would give.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "finderd.h"
#include "resolver.h" /* recordings, for the benchmark's bound */

#ifdef Py_TPFLAGS_HAVE_VECTORCALL
#define FINDERD_TPFLAGS_HAVE_VECTORCALL Py_TPFLAGS_HAVE_VECTORCALL
#else
#define FINDERD_TPFLAGS_HAVE_VECTORCALL _Py_TPFLAGS_HAVE_VECTORCALL
#endif

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *Py_NewRef(PyObject *obj)
{
	Py_INCREF(obj);
	return obj;
}
#endif

/* Python-visible stat_result fields this module fills, by name. */
enum stat_field {
	F_MODE, F_INO, F_DEV, F_NLINK, F_UID, F_GID, F_SIZE,
	F_ATIME_INT, F_MTIME_INT, F_CTIME_INT,
	F_ATIME, F_MTIME, F_CTIME, F_ATIME_NS, F_MTIME_NS, F_CTIME_NS,
	F_COUNT
};

static const char *const named_fields[] = {
	"st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns",
};

typedef struct {
	PyObject *posix_stat;
	PyObject *posix_listdir;
	PyObject *io_open_code;  /* _io.open_code */
	PyObject *bytes_io;      /* _io.BytesIO */
	PyTypeObject *stat_result;
	Py_ssize_t n_fields;
	Py_ssize_t field_index[F_COUNT]; /* -1: not in this build's stat_result */
	PyObject *error;                 /* finderd._native.Error */
} module_state;

static module_state state; /* one interpreter; set once at import */

typedef struct {
	PyObject_HEAD
	struct finderd_client *client;
	/*
	 * importlib.invalidate_caches() increments _NamespacePath._epoch (3.9
	 * to 3.13); watching it maps the call to finderd_client_invalidate()
	 * without replacing anything of importlib's.
	 */
	PyObject *epoch_owner;
	PyObject *epoch_seen;
	/* FINDERD_DEBUG: say on stderr when the client falls back, fails to
	 * reconnect, and is served again. */
	int debug;
	PyObject *socket;               /* the socket path, fs-encoded bytes */
	struct finderd_client_status seen; /* as last reported */

	int borrowed; /* the launcher owns the client (finderd_native_borrow()) */
} ClientObject;

static PyObject *epoch_name; /* interned "_epoch" */

static void settle_changes(ClientObject *self);

/* Distrust every listing when importlib.invalidate_caches() ran since last
 * time, and every directory a change of this process may still be making
 * (settle_changes()). Called before every question. */
static void follow_invalidations(ClientObject *self)
{
	settle_changes(self);
	PyObject *epoch;

	if (!self->epoch_owner)
		return;
	epoch = PyObject_GetAttr(self->epoch_owner, epoch_name);
	if (!epoch) {
		PyErr_Clear();
		return;
	}
	if (epoch != self->epoch_seen &&
	    (!self->epoch_seen || PyObject_RichCompareBool(epoch, self->epoch_seen, Py_NE) == 1)) {
		finderd_client_invalidate(self->client);
		Py_XSETREF(self->epoch_seen, epoch);
		return;
	}
	PyErr_Clear();
	Py_DECREF(epoch);
}

/* ------------------------------------------------------------------------ */
/* Losing the daemon and coming back, told on stderr with FINDERD_DEBUG      */
/* ------------------------------------------------------------------------ */

static struct finderd_client_status client_status(const ClientObject *self)
{
	struct finderd_client_status s;

	memset(&s, 0, sizeof(s));
	s.size = sizeof(s);
	if (self->client)
		finderd_client_status(self->client, &s);
	return s;
}

/* One line per change since the last question: lost, an attempt failed, back. */
static void tell_transitions(ClientObject *self)
{
	struct finderd_client_status now = client_status(self);
	const char *sock = PyBytes_AS_STRING(self->socket);

	if (now.fallbacks > self->seen.fallbacks)
		PySys_FormatStderr("finderd: lost the daemon at %s: %s; imports go to the "
				   "filesystem, reconnecting at the next import\n",
				   sock, finderd_strerror(now.lost_error));
	if (now.attempts > self->seen.attempts && now.state == FINDERD_CLIENT_FELL_BACK)
		PySys_FormatStderr("finderd: reconnect to %s failed: %s; next attempt in %d ms\n",
				   sock, finderd_strerror(now.error),
				   (int)((now.retry_in_us + 999) / 1000));
	if (now.reconnects > self->seen.reconnects)
		PySys_FormatStderr("finderd: served again by %s (reconnect %d)\n", sock,
				   (int)now.reconnects);
	self->seen = now;
}

/*
 * After a question that may have lost the daemon or reconnected to it, and
 * after its answer was used: writing to sys.stderr may run Python code,
 * which may ask the client again and so end the answer's life.
 */
static void after_question(ClientObject *self)
{
	if (self->debug && self->client)
		tell_transitions(self);
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

/* Raise finderd._native.Error(code, message) for a libfinderd failure. */
static PyObject *raise_finderd(int code, struct finderd_conn *conn)
{
	const char *grpc_message = NULL;
	PyObject *exc;

	if (code == FINDERD_EGRPC && conn && finderd_last_status(conn, &grpc_message) >= 0 &&
	    grpc_message && grpc_message[0])
		exc = Py_BuildValue("(iss)", code, finderd_strerror(code), grpc_message);
	else
		exc = Py_BuildValue("(is)", code, finderd_strerror(code));
	if (exc) {
		PyErr_SetObject(state.error, exc);
		Py_DECREF(exc);
	}
	return NULL;
}

/* Raise the OSError posix would raise for @err (negative errno) on @path. */
static PyObject *raise_errno(int err, PyObject *path)
{
	errno = -err;
	return PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
}

/* ------------------------------------------------------------------------ */
/* stat_result                                                              */
/* ------------------------------------------------------------------------ */

/*
 * Learn where each field lives in os.stat_result by building one from
 * markers through its public constructor: the layout differs between
 * versions and platforms, the constructor's field names do not.
 */
static int learn_stat_layout(void)
{
	PyObject *seq = NULL, *named = NULL, *args = NULL, *sample = NULL, *n = NULL;
	Py_ssize_t i, j;
	int rc = -1;

	for (i = 0; i < F_COUNT; i++)
		state.field_index[i] = -1;
	n = PyObject_GetAttrString((PyObject *)state.stat_result, "n_fields");
	if (!n)
		goto out;
	state.n_fields = PyLong_AsSsize_t(n);
	if (state.n_fields < 10)
		goto out;
	seq = PyTuple_New(10);
	named = PyDict_New();
	if (!seq || !named)
		goto out;
	for (i = 0; i < 10; i++)
		PyTuple_SET_ITEM(seq, i, PyLong_FromSsize_t(1000 + i));
	for (j = 0; j < (Py_ssize_t)(sizeof(named_fields) / sizeof(named_fields[0])); j++) {
		PyObject *marker = PyLong_FromSsize_t(2000 + j);

		if (!marker || PyDict_SetItemString(named, named_fields[j], marker) < 0) {
			Py_XDECREF(marker);
			goto out;
		}
		Py_DECREF(marker);
	}
	args = Py_BuildValue("(OO)", seq, named);
	sample = args ? PyObject_Call((PyObject *)state.stat_result, args, NULL) : NULL;
	if (!sample)
		goto out;
	for (i = 0; i < state.n_fields; i++) {
		PyObject *item = PyStructSequence_GetItem(sample, i);
		long v = item && PyLong_Check(item) ? PyLong_AsLong(item) : -1;

		if (v >= 1000 && v < 1010)
			state.field_index[v - 1000] = i;
		else if (v >= 2000 && v < 2000 + (long)(sizeof(named_fields) / sizeof(named_fields[0])))
			state.field_index[F_ATIME + (v - 2000)] = i;
	}
	PyErr_Clear();
	rc = 0;
	for (i = 0; i < F_COUNT; i++)
		if (state.field_index[i] < 0 && i < F_ATIME)
			rc = -1; /* the ten sequence fields must all be there */
out:
	if (rc < 0 && !PyErr_Occurred())
		PyErr_SetString(PyExc_ImportError, "finderd: unexpected os.stat_result layout");
	Py_XDECREF(n);
	Py_XDECREF(seq);
	Py_XDECREF(named);
	Py_XDECREF(args);
	Py_XDECREF(sample);
	return rc;
}

static int set_field(PyObject *result, enum stat_field f, PyObject *value)
{
	if (!value)
		return -1;
	if (state.field_index[f] < 0) {
		Py_DECREF(value);
		return 0;
	}
	PyStructSequence_SetItem(result, state.field_index[f], value);
	return 0;
}

/*
 * Build the os.stat_result posix.stat() would return for what the daemon
 * knows: mode, size and mtime are exact (st_mtime is computed as CPython
 * computes it, so FileFinder's mtime comparison and .pyc validation see the
 * same values); times the daemon does not send repeat mtime; inode, device,
 * owner are 0 (importlib reads none of them).
 */
static PyObject *make_stat_result(const struct finderd_stat *st)
{
	long long sec = st->mtime_ns / 1000000000LL;
	long long nsec = st->mtime_ns % 1000000000LL;
	PyObject *result;
	Py_ssize_t i;
	int rc = 0;

	if (nsec < 0) { /* floor, as struct timespec does */
		nsec += 1000000000LL;
		sec -= 1;
	}
	result = PyStructSequence_New(state.stat_result);
	if (!result)
		return NULL;
	rc |= set_field(result, F_MODE, PyLong_FromUnsignedLong(st->mode));
	rc |= set_field(result, F_INO, PyLong_FromLong(0));
	rc |= set_field(result, F_DEV, PyLong_FromLong(0));
	rc |= set_field(result, F_NLINK, PyLong_FromLong(1));
	rc |= set_field(result, F_UID, PyLong_FromLong(0));
	rc |= set_field(result, F_GID, PyLong_FromLong(0));
	rc |= set_field(result, F_SIZE, PyLong_FromUnsignedLongLong(st->size));
	rc |= set_field(result, F_ATIME_INT, PyLong_FromLongLong(sec));
	rc |= set_field(result, F_MTIME_INT, PyLong_FromLongLong(sec));
	rc |= set_field(result, F_CTIME_INT, PyLong_FromLongLong(sec));
	rc |= set_field(result, F_ATIME, PyFloat_FromDouble((double)sec + (double)nsec * 1e-9));
	rc |= set_field(result, F_MTIME, PyFloat_FromDouble((double)sec + (double)nsec * 1e-9));
	rc |= set_field(result, F_CTIME, PyFloat_FromDouble((double)sec + (double)nsec * 1e-9));
	rc |= set_field(result, F_ATIME_NS, PyLong_FromLongLong(st->mtime_ns));
	rc |= set_field(result, F_MTIME_NS, PyLong_FromLongLong(st->mtime_ns));
	rc |= set_field(result, F_CTIME_NS, PyLong_FromLongLong(st->mtime_ns));
	for (i = 0; i < state.n_fields && rc == 0; i++) {
		if (PyStructSequence_GetItem(result, i) == NULL) {
			PyObject *zero = PyLong_FromLong(0); /* st_blksize, st_rdev...: unknown */

			if (!zero) {
				rc = -1;
				break;
			}
			PyStructSequence_SetItem(result, i, zero);
		}
	}
	if (rc) {
		Py_DECREF(result);
		return NULL;
	}
	return result;
}

/* ------------------------------------------------------------------------ */
/* Paths                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * The bytes of a str or bytes path, without copying when possible.
 * Returns 1 with *data and *len set (and *owner holding a new reference to keep
 * them alive, possibly NULL), 0 when @path is not a type served here.
 */
static int path_bytes(PyObject *path, const char **data, Py_ssize_t *len, PyObject **owner)
{
	*owner = NULL;
	if (PyUnicode_Check(path)) {
		if (PyUnicode_IS_ASCII(path)) {
			*data = (const char *)PyUnicode_DATA(path);
			*len = PyUnicode_GET_LENGTH(path);
			return 1;
		}
		*owner = PyUnicode_EncodeFSDefault(path);
		if (!*owner) {
			PyErr_Clear(); /* let posix raise its own error */
			return 0;
		}
		*data = PyBytes_AS_STRING(*owner);
		*len = PyBytes_GET_SIZE(*owner);
		return 1;
	}
	if (PyBytes_CheckExact(path)) {
		*data = PyBytes_AS_STRING(path);
		*len = PyBytes_GET_SIZE(path);
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Changes made by this process                                             */
/* ------------------------------------------------------------------------ */

/*
 * The daemon sees a change microseconds after it happens; a program that
 * writes a module and imports it at once must not get the listing from just
 * before. CPython raises an audit event before every filesystem change made
 * through Python (open for writing, os.rename, os.remove, os.mkdir...); this
 * hook passes the path to finderd_client_touch(), so the next question
 * about that directory revalidates it under the daemon's barrier. Changes
 * made by other processes reach running clients through the generation
 * file, as they do anyway.
 *
 * Audit hooks last as long as the process: this one follows whichever
 * Client is tracked and does nothing when none is.
 */
static ClientObject *tracked; /* strong reference, or NULL */

/* Audit event names and the argument positions of the paths they change. */
static const struct {
	const char *event;
	int paths[2]; /* -1: none */
	int dir_fd;   /* position of a dir_fd argument, or -1 */
} changing_events[] = {
	{"os.rename", {0, 1}, 2},    /* rename, replace; src_dir_fd, dst_dir_fd */
	{"os.remove", {0, -1}, 1},   /* remove, unlink */
	{"os.rmdir", {0, -1}, 1},
	{"os.mkdir", {0, -1}, 2},
	{"os.symlink", {1, -1}, 2},
	{"os.link", {1, -1}, 3},
	{"os.truncate", {0, -1}, -1},
	{"os.utime", {0, -1}, 3},
	{"os.chmod", {0, -1}, 2},
	{"os.chown", {0, -1}, 3},
	{"os.chflags", {0, -1}, -1},
	{"os.mkfifo", {0, -1}, 2},
	{"os.mknod", {0, -1}, 3},
	{"os.setxattr", {0, -1}, -1},
	{"os.removexattr", {0, -1}, -1},
};

/*
 * Changes still being made. The audit event comes before the system call,
 * and the call runs without the GIL: another thread's question in between
 * revalidates the directory under the daemon's barrier before the change
 * exists, which clears the touch, and the changing thread's import right
 * after the call would then trust the listing from before (up to a lease,
 * until the daemon reads the event). So each touch is kept here and made
 * again before every question, until the changing thread itself asks a
 * question or raises another event (its call has returned by then: one
 * more touch, and the revalidation it causes sees the change), or, for a
 * thread that does neither, until PENDING_KEEP_US have passed. A question
 * made after that is still exact when the change took less than
 * PENDING_KEEP_US minus the daemon's lease (200 ms by default) to make.
 */
#define PENDING_MAX 64
#define PENDING_KEEP_US 1000000

struct pending_change {
	unsigned long thread; /* PyThread_get_thread_ident(); 0: no thread clears it */
	uint64_t at_us;       /* when it was announced */
	char *path;           /* NULL: every held listing */
	size_t len;
	int create_dir;
};

static struct pending_change pending[PENDING_MAX];
static size_t n_pending;

static uint64_t monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Tell the resolver of @p: its directory is to be revalidated before use. */
static void touch_change(struct finderd_client *client, const struct pending_change *p)
{
	if (!p->path)
		finderd_client_invalidate(client);
	else if (p->create_dir)
		finderd_client_touch_mkdir(client, p->path, p->len);
	else
		finderd_client_touch(client, p->path, p->len);
}

static void forget_change(size_t i)
{
	PyMem_RawFree(pending[i].path);
	pending[i] = pending[--n_pending];
}

/*
 * Touch again every pending change; forget those of the current thread
 * (made by now) and those older than PENDING_KEEP_US.
 */
static void retouch_pending(struct finderd_client *client)
{
	unsigned long me = PyThread_get_thread_ident();
	uint64_t now = monotonic_us();
	size_t i = 0;

	while (i < n_pending) {
		touch_change(client, &pending[i]);
		if (pending[i].thread == me || now - pending[i].at_us > PENDING_KEEP_US)
			forget_change(i);
		else
			i++;
	}
}

/* Before a question of the tracked client: see retouch_pending(). */
static void settle_changes(ClientObject *self)
{
	if (n_pending && self == tracked)
		retouch_pending(self->client);
}

/* Keep @p (its path copied) until its change is surely made. When the
 * table is full, one entry that distrusts everything stands for all. */
static void keep_pending(struct pending_change p)
{
	size_t i;

	for (i = 0; i < n_pending; i++)
		if (pending[i].thread == p.thread && pending[i].create_dir == p.create_dir &&
		    pending[i].len == p.len && pending[i].path && p.path &&
		    memcmp(pending[i].path, p.path, p.len) == 0) {
			pending[i].at_us = p.at_us;
			return;
		}
	if (p.path) {
		char *copy = PyMem_RawMalloc(p.len ? p.len : 1);

		if (copy)
			memcpy(copy, p.path, p.len);
		p.path = copy; /* out of memory: NULL, everything */
	}
	if (n_pending == PENDING_MAX) {
		while (n_pending)
			forget_change(0);
		p.thread = 0;
		PyMem_RawFree(p.path);
		p.path = NULL;
	}
	pending[n_pending++] = p;
}

/*
 * Tell the resolver that @path is about to change (all, if it is not a
 * path); @create_dir: it is to be mkdir()ed, which changes nothing where a
 * directory exists. The thread's earlier changes are made by now.
 */
static void touch_path(PyObject *path, int relative_to_fd, int create_dir)
{
	struct pending_change p = {PyThread_get_thread_ident(), monotonic_us(), NULL, 0, create_dir};
	Py_ssize_t len;
	PyObject *owner = NULL;
	const char *data;

	retouch_pending(tracked->client);
	if (!relative_to_fd && path && path_bytes(path, &data, &len, &owner)) {
		p.path = (char *)data;
		p.len = (size_t)len;
	}
	touch_change(tracked->client, &p);
	keep_pending(p);
	Py_XDECREF(owner);
}

static int uses_dir_fd(PyObject *args, int position)
{
	PyObject *fd;

	if (position < 0 || PyTuple_GET_SIZE(args) <= position)
		return 0;
	fd = PyTuple_GET_ITEM(args, position);
	if (fd == Py_None)
		return 0;
	if (PyLong_Check(fd) && PyLong_AsLong(fd) == -1) {
		PyErr_Clear(); /* an overflow is not -1: any error here means "uses one" */
		return 0;
	}
	PyErr_Clear();
	return 1;
}

/*
 * "open" events carry (path, mode, flags): only writers change anything.
 * An "open" of a file descriptor (FileIO(fd), as importlib's _write_atomic
 * does after os.open) names a file whose opening was audited already.
 */
static void on_open(PyObject *args)
{
	long flags;

	if (PyTuple_GET_SIZE(args) < 3 || !PyLong_Check(PyTuple_GET_ITEM(args, 2)) ||
	    PyLong_Check(PyTuple_GET_ITEM(args, 0)))
		return;
	flags = PyLong_AsLong(PyTuple_GET_ITEM(args, 2));
	if (flags == -1 && PyErr_Occurred()) {
		PyErr_Clear();
		return;
	}
	if ((flags & O_ACCMODE) != O_RDONLY || (flags & (O_CREAT | O_TRUNC)))
		touch_path(PyTuple_GET_ITEM(args, 0), 0, 0);
}

static void on_os_event(const char *event, PyObject *args)
{
	size_t i;
	int j;

	for (i = 0; i < sizeof(changing_events) / sizeof(changing_events[0]); i++) {
		if (strcmp(event, changing_events[i].event) != 0)
			continue;
		for (j = 0; j < 2; j++) {
			int at = changing_events[i].paths[j];

			if (at >= 0 && at < PyTuple_GET_SIZE(args))
				touch_path(PyTuple_GET_ITEM(args, at),
					   uses_dir_fd(args, changing_events[i].dir_fd),
					   strcmp(event, "os.mkdir") == 0);
		}
		return;
	}
}

/*
 * A child process changes files the parent then imports ("pip install" in a
 * subprocess, then import): the next question after a spawn revalidates
 * every held listing under the daemon's barrier, instead of relying on the
 * daemon having read the child's last events by then.
 */
static const char *const spawning_events[] = {
	"subprocess.Popen", "os.posix_spawn", "os.spawn", "os.system", "os.fork", "os.forkpty",
};

static int is_spawning_event(const char *event)
{
	size_t i;

	for (i = 0; i < sizeof(spawning_events) / sizeof(spawning_events[0]); i++)
		if (strcmp(event, spawning_events[i]) == 0)
			return 1;
	return 0;
}

static int audit_hook(const char *event, PyObject *args, void *Py_UNUSED(data))
{
	if (!tracked || !tracked->client || !PyTuple_Check(args))
		return 0;
	/* Most events are imports, execs and reads: reject them on one byte. */
	if (event[0] == 'o' && event[1] == 'p' && strcmp(event, "open") == 0)
		on_open(args);
	else if (event[0] == 'o' && event[1] == 's' && event[2] == '.' && is_spawning_event(event))
		finderd_client_invalidate(tracked->client);
	else if (event[0] == 'o' && event[1] == 's' && event[2] == '.')
		on_os_event(event, args);
	else if (event[0] == 's' && is_spawning_event(event))
		finderd_client_invalidate(tracked->client);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Client                                                                   */
/* ------------------------------------------------------------------------ */

static PyObject *Client_stat(ClientObject *self, PyObject *const *args, Py_ssize_t nargs,
			     PyObject *kwnames)
{
	struct finderd_stat st;
	const char *data;
	Py_ssize_t len;
	PyObject *owner;
	int rc;

	if (nargs != 1 || kwnames || !self->client ||
	    !path_bytes(args[0], &data, &len, &owner))
		return PyObject_Vectorcall(state.posix_stat, args, (size_t)nargs, kwnames);
	follow_invalidations(self);
	rc = finderd_client_stat(self->client, data, (size_t)len, &st);
	after_question(self);
	Py_XDECREF(owner);
	if (rc == 0)
		return make_stat_result(&st);
	if (rc == -ENOENT || rc == -ENOTDIR)
		return raise_errno(rc, args[0]);
	return PyObject_Vectorcall(state.posix_stat, args, (size_t)nargs, kwnames);
}

static PyObject *entry_names(const struct finderd_entry *entries, size_t n, int as_bytes)
{
	PyObject *list = PyList_New((Py_ssize_t)n);
	size_t i;

	if (!list)
		return NULL;
	for (i = 0; i < n; i++) {
		const struct finderd_str *name = &entries[i].name;
		char terminated[256];
		PyObject *item;

		/*
		 * Before the interpreter's codecs exist (the launcher answers
		 * the `encodings` import itself), PyUnicode_DecodeFSDefault
		 * decodes with mbstowcs() and wants a NUL after the name; names
		 * in a reply have none. NAME_MAX is 255 on Linux.
		 */
		if (!as_bytes && name->len < sizeof(terminated)) {
			memcpy(terminated, name->data, name->len);
			terminated[name->len] = '\0';
			item = PyUnicode_DecodeFSDefaultAndSize(terminated, (Py_ssize_t)name->len);
		} else {
			item = as_bytes ? PyBytes_FromStringAndSize(name->data, (Py_ssize_t)name->len)
					: PyUnicode_DecodeFSDefaultAndSize(name->data,
									   (Py_ssize_t)name->len);
		}

		if (!item) {
			Py_DECREF(list);
			return NULL;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, item);
	}
	return list;
}

static PyObject *Client_listdir(ClientObject *self, PyObject *const *args, Py_ssize_t nargs,
				PyObject *kwnames)
{
	const struct finderd_entry *entries;
	const char *data;
	Py_ssize_t len;
	PyObject *owner, *names;
	size_t n;
	int rc;

	if (nargs != 1 || kwnames || !self->client ||
	    !path_bytes(args[0], &data, &len, &owner))
		return PyObject_Vectorcall(state.posix_listdir, args, (size_t)nargs, kwnames);
	follow_invalidations(self);
	rc = finderd_client_listdir(self->client, data, (size_t)len, &entries, &n);
	names = rc == 0 ? entry_names(entries, n, PyBytes_Check(args[0])) : NULL;
	after_question(self);
	Py_XDECREF(owner);
	if (rc == 0)
		return names;
	if (rc == -ENOENT || rc == -ENOTDIR)
		return raise_errno(rc, args[0]);
	return PyObject_Vectorcall(state.posix_listdir, args, (size_t)nargs, kwnames);
}

/* ------------------------------------------------------------------------ */
/* Fast misses for sys.path finders                                         */
/* ------------------------------------------------------------------------ */

/*
 * PathFinder asks every sys.path entry's FileFinder in turn; with a long
 * sys.path most of them answer "not here", each after a stat() and a walk
 * over the loader suffixes in Python. A FastFind stands in for one
 * FileFinder's find_spec (as an instance attribute, so the finder stays a
 * FileFinder): when the entry's served listing has neither the name nor the
 * name with any of the finder's suffixes, FileFinder would return None, and
 * so does FastFind, in C; otherwise it calls FileFinder.find_spec itself,
 * so every answer is stock's.
 */
typedef struct {
	PyObject_HEAD
	vectorcallfunc vectorcall;
	ClientObject *client;
	PyObject *path;      /* the finder's path, fs-encoded bytes */
	PyObject *stock;     /* FileFinder.find_spec bound to the finder */
	PyObject *suffixes;  /* tuple of fs-encoded bytes */
	unsigned long long misses;
} FastFindObject;

static int has_name(const struct finderd_entry *entries, size_t n, const char *name, size_t len)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct finderd_str *e = &entries[mid].name;
		size_t common = e->len < len ? e->len : len;
		int c = memcmp(e->data, name, common);

		if (c == 0)
			c = (e->len > len) - (e->len < len);
		if (c == 0)
			return 1;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

#define MAX_CANDIDATE 512

/* Does a listing hold @tail, or @tail with one of @suffixes? 1: yes, 0: no, -1: unknown. */
static int listing_has_module(const struct finderd_entry *entries, size_t n, PyObject *suffixes,
			      const char *tail, size_t tail_len)
{
	char candidate[MAX_CANDIDATE];
	Py_ssize_t i;

	if (has_name(entries, n, tail, tail_len))
		return 1;
	memcpy(candidate, tail, tail_len);
	for (i = 0; i < PyTuple_GET_SIZE(suffixes); i++) {
		PyObject *suffix = PyTuple_GET_ITEM(suffixes, i);
		size_t slen = (size_t)PyBytes_GET_SIZE(suffix);

		if (tail_len + slen > sizeof(candidate))
			return -1;
		memcpy(candidate + tail_len, PyBytes_AS_STRING(suffix), slen);
		if (has_name(entries, n, candidate, tail_len + slen))
			return 1;
	}
	return 0;
}

/* Could the finder of @self find module @tail (fs-encoded)? 1: maybe, 0: no, -1: unknown. */
static int may_have(FastFindObject *self, const char *tail, size_t tail_len)
{
	const struct finderd_entry *entries;
	size_t n;
	int verdict = -1;

	if (!self->client->client || tail_len >= MAX_CANDIDATE / 2)
		return -1;
	follow_invalidations(self->client);
	if (finderd_client_listdir(self->client->client, PyBytes_AS_STRING(self->path),
				   (size_t)PyBytes_GET_SIZE(self->path), &entries, &n) == 0)
		verdict = listing_has_module(entries, n, self->suffixes, tail, tail_len);
	after_question(self->client);
	return verdict;
}

static PyObject *FastFind_call(PyObject *callable, PyObject *const *args, size_t nargsf,
			       PyObject *kwnames)
{
	FastFindObject *self = (FastFindObject *)callable;
	Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
	PyObject *fullname, *tail, *owner;
	const char *data;
	Py_ssize_t dot, len;
	int verdict;

	if (nargs < 1 || nargs > 2 || kwnames || !PyUnicode_Check(args[0]))
		return PyObject_Vectorcall(self->stock, args, nargsf, kwnames);
	fullname = args[0];
	dot = PyUnicode_FindChar(fullname, '.', 0, PyUnicode_GET_LENGTH(fullname), -1);
	if (dot == -2)
		return NULL;
	tail = PyUnicode_Substring(fullname, dot + 1, PyUnicode_GET_LENGTH(fullname));
	if (!tail)
		return NULL;
	verdict = path_bytes(tail, &data, &len, &owner) ? may_have(self, data, (size_t)len) : -1;
	Py_XDECREF(owner);
	Py_DECREF(tail);
	if (verdict == 0) {
		self->misses++;
		Py_RETURN_NONE;
	}
	return PyObject_Vectorcall(self->stock, args, nargsf, kwnames);
}

static void FastFind_dealloc(FastFindObject *self)
{
	Py_XDECREF(self->client);
	Py_XDECREF(self->path);
	Py_XDECREF(self->stock);
	Py_XDECREF(self->suffixes);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *FastFind_misses(FastFindObject *self, void *Py_UNUSED(closure))
{
	return PyLong_FromUnsignedLongLong(self->misses);
}

static PyGetSetDef FastFind_getset[] = {
	{"misses", (getter)FastFind_misses, NULL, "Questions answered 'not here' without FileFinder.",
	 NULL},
	{NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject FastFindType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "finderd._native.FastFind",
	.tp_basicsize = sizeof(FastFindObject),
	.tp_dealloc = (destructor)FastFind_dealloc,
	.tp_vectorcall_offset = offsetof(FastFindObject, vectorcall),
	.tp_call = PyVectorcall_Call,
	.tp_flags = Py_TPFLAGS_DEFAULT | FINDERD_TPFLAGS_HAVE_VECTORCALL,
	.tp_doc = "find_spec(fullname, target=None) of one FileFinder, answering misses from "
		  "the served listing and everything else through FileFinder.find_spec.",
	.tp_getset = FastFind_getset,
};

/* fast_find_spec(finder) -> a FastFind for that FileFinder. */
static PyObject *Client_fast_find_spec(ClientObject *self, PyObject *finder)
{
	PyObject *path_str, *path = NULL, *loaders = NULL, *suffixes = NULL, *stock = NULL;
	FastFindObject *fast = NULL;
	Py_ssize_t i, n;

	path_str = PyObject_GetAttrString(finder, "path");
	if (!path_str || !PyUnicode_FSConverter(path_str, &path)) {
		Py_XDECREF(path_str);
		goto out;
	}
	Py_DECREF(path_str);
	loaders = PyObject_GetAttrString(finder, "_loaders");
	stock = PyObject_GetAttrString(finder, "find_spec");
	if (!loaders || !stock || !PyList_Check(loaders))
		goto out;
	n = PyList_GET_SIZE(loaders);
	suffixes = PyTuple_New(n);
	for (i = 0; suffixes && i < n; i++) {
		PyObject *pair = PyList_GET_ITEM(loaders, i), *encoded = NULL;

		if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) < 1 ||
		    !PyUnicode_FSConverter(PyTuple_GET_ITEM(pair, 0), &encoded)) {
			Py_CLEAR(suffixes);
			break;
		}
		PyTuple_SET_ITEM(suffixes, i, encoded);
	}
	if (!suffixes)
		goto out;
	fast = PyObject_New(FastFindObject, &FastFindType);
	if (!fast)
		goto out;
	fast->vectorcall = FastFind_call;
	fast->client = (ClientObject *)Py_NewRef((PyObject *)self);
	fast->path = Py_NewRef(path);
	fast->stock = Py_NewRef(stock);
	fast->suffixes = Py_NewRef(suffixes);
	fast->misses = 0;
out:
	if (!fast && !PyErr_Occurred())
		PyErr_SetString(PyExc_TypeError, "fast_find_spec() needs a FileFinder");
	Py_XDECREF(path);
	Py_XDECREF(loaders);
	Py_XDECREF(suffixes);
	Py_XDECREF(stock);
	return (PyObject *)fast;
}

static int Client_init(ClientObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"socket_path", "connect_timeout_us", "call_timeout_us",
				 "epoch_owner", "daemon_user", "debug", NULL};
	struct finderd_options opts;
	PyObject *path_obj = NULL, *epoch_owner = NULL;
	unsigned int connect_us = 0, call_us = 0;
	const char *daemon_user = "";
	int debug = 0, rc;

	/*
	 * This module keeps one interpreter's objects (posix functions, the
	 * stat_result type) in static state, as single-phase modules do: a
	 * subinterpreter that re-runs site gets stock behaviour instead.
	 */
	if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
		PyErr_SetString(PyExc_RuntimeError, "finderd serves the main interpreter only");
		return -1;
	}
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|IIOsp", kwlist, PyUnicode_FSConverter,
					 &path_obj, &connect_us, &call_us, &epoch_owner,
					 &daemon_user, &debug))
		return -1;
	if (epoch_owner && epoch_owner != Py_None) {
		Py_XSETREF(self->epoch_owner, Py_NewRef(epoch_owner));
		Py_XSETREF(self->epoch_seen, PyObject_GetAttr(epoch_owner, epoch_name));
		PyErr_Clear();
	}
	if (self->client) {
		Py_DECREF(path_obj);
		PyErr_SetString(PyExc_RuntimeError, "Client already initialised");
		return -1;
	}
	finderd_options_init(&opts);
	opts.socket_path = PyBytes_AS_STRING(path_obj);
	opts.connect_timeout_us = connect_us;
	opts.call_timeout_us = call_us;
	opts.daemon_user = daemon_user; /* never NULL: the caller read the environment */
	Py_BEGIN_ALLOW_THREADS
	rc = finderd_client_new(&opts, &self->client);
	Py_END_ALLOW_THREADS
	self->debug = debug;
	Py_XSETREF(self->socket, path_obj);
	if (rc < 0 && rc > -4096) {
		errno = -rc;
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	if (rc < 0) {
		raise_finderd(rc, NULL);
		return -1;
	}
	return 0;
}

static void Client_dealloc(ClientObject *self)
{
	Py_XDECREF(self->socket);
	Py_XDECREF(self->epoch_owner);
	Py_XDECREF(self->epoch_seen);
	if (!self->borrowed)
		finderd_client_free(self->client);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Fill @out (length n) from a sequence of bytes; *keep holds the fast seq. */
static int str_array(PyObject *seq, const char *what, struct finderd_str **out, size_t *n,
		     PyObject **keep)
{
	Py_ssize_t i, len;

	*keep = PySequence_Fast(seq, what);
	if (!*keep)
		return -1;
	len = PySequence_Fast_GET_SIZE(*keep);
	*out = PyMem_Calloc((size_t)len + 1, sizeof(**out));
	if (!*out) {
		PyErr_NoMemory();
		return -1;
	}
	for (i = 0; i < len; i++) {
		PyObject *item = PySequence_Fast_GET_ITEM(*keep, i);

		if (!PyBytes_Check(item)) {
			PyErr_Format(PyExc_TypeError, "%s must hold bytes", what);
			return -1;
		}
		(*out)[i].data = PyBytes_AS_STRING(item);
		(*out)[i].len = (size_t)PyBytes_GET_SIZE(item);
	}
	*n = (size_t)len;
	return 0;
}

enum { SEQ_PATH, SEQ_SOURCE, SEQ_BYTECODE, SEQ_EXTENSION, SEQ_COUNT };

static PyObject *Client_snapshot(ClientObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"sys_path", "implementation", "version", "cache_tag",
				 "source_suffixes", "bytecode_suffixes", "extension_suffixes",
				 "program_key", "prefetch_bytes", "bytecode_bytes", NULL};
	PyObject *seqs[SEQ_COUNT] = {NULL}, *keep[SEQ_COUNT] = {NULL};
	struct finderd_str *arrays[SEQ_COUNT] = {NULL};
	size_t counts[SEQ_COUNT] = {0};
	const char *impl, *version, *cache_tag;
	const char *key = NULL;
	Py_ssize_t key_len = 0;
	unsigned long long prefetch = 0, bytecode = 0;
	struct finderd_interpreter interp;
	struct finderd_snapshot_request req;
	PyObject *result = NULL;
	int i, rc;

	if (!self->client)
		return raise_finderd(FINDERD_ECLOSED, NULL);
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "OsszOOO|y#KK", kwlist, &seqs[SEQ_PATH],
					 &impl, &version, &cache_tag, &seqs[SEQ_SOURCE],
					 &seqs[SEQ_BYTECODE], &seqs[SEQ_EXTENSION], &key, &key_len,
					 &prefetch, &bytecode))
		return NULL;
	for (i = 0; i < SEQ_COUNT; i++)
		if (str_array(seqs[i], kwlist[i == SEQ_PATH ? 0 : i + 3], &arrays[i], &counts[i],
			      &keep[i]) < 0)
			goto out;
	memset(&interp, 0, sizeof(interp));
	interp.implementation = impl;
	interp.version = version;
	interp.cache_tag = cache_tag;
	interp.source_suffixes = arrays[SEQ_SOURCE];
	interp.n_source_suffixes = counts[SEQ_SOURCE];
	interp.bytecode_suffixes = arrays[SEQ_BYTECODE];
	interp.n_bytecode_suffixes = counts[SEQ_BYTECODE];
	interp.extension_suffixes = arrays[SEQ_EXTENSION];
	interp.n_extension_suffixes = counts[SEQ_EXTENSION];
	memset(&req, 0, sizeof(req));
	req.interpreter = &interp;
	req.sys_path = arrays[SEQ_PATH];
	req.n_sys_path = counts[SEQ_PATH];
	req.program_key.data = key;
	req.program_key.len = (size_t)key_len;
	req.prefetch_bytes = prefetch;
	req.bytecode_bytes = bytecode;
	/* The GIL stays held: the snapshot runs while imports wait for it anyway. */
	rc = finderd_client_snapshot(self->client, &req);
	after_question(self);
	if (rc < 0)
		raise_finderd(rc, fdi_client_last_conn(self->client));
	else
		result = Py_NewRef(Py_None);
out:
	for (i = 0; i < SEQ_COUNT; i++) {
		PyMem_Free(arrays[i]);
		Py_XDECREF(keep[i]);
	}
	return result;
}

static PyObject *Client_invalidate(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
	finderd_client_invalidate(self->client);
	Py_RETURN_NONE;
}

static const char *status_name(uint32_t status)
{
	switch (status) {
	case FINDERD_DIR_SERVED: return "served";
	case FINDERD_DIR_NOT_SERVED: return "not served";
	case FINDERD_DIR_ABSENT: return "absent";
	case FINDERD_DIR_UNCHANGED: return "unchanged";
	default: return "unspecified";
	}
}

/* describe(path) -> (status, reason, generation, slot) or None: what the client holds. */
static PyObject *Client_describe(ClientObject *self, PyObject *arg)
{
	const struct finderd_dir *dir;
	const char *data;
	Py_ssize_t len;
	PyObject *owner, *result;

	if (!self->client || !path_bytes(arg, &data, &len, &owner))
		Py_RETURN_NONE;
	if (finderd_client_dir(self->client, data, (size_t)len, &dir) < 0) {
		Py_XDECREF(owner);
		Py_RETURN_NONE;
	}
	result = Py_BuildValue("(ss#KI)", status_name(dir->status), dir->reason.data,
			       (Py_ssize_t)dir->reason.len, (unsigned long long)dir->generation,
			       (unsigned int)dir->slot);
	Py_XDECREF(owner);
	return result;
}

static PyObject *Client_counters(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
	struct finderd_client_counters c;

	if (!self->client)
		return raise_finderd(FINDERD_ECLOSED, NULL);
	finderd_client_counters(self->client, &c);
	return Py_BuildValue("{sKsKsKsKsO}", "answered", (unsigned long long)c.answered,
			     "not_served", (unsigned long long)c.not_served, "lookups",
			     (unsigned long long)c.lookups, "revalidations",
			     (unsigned long long)c.revalidations, "gave_up",
			     fdi_client_dead(self->client) ? Py_True : Py_False);
}

/* status() -> dict: served or fell back, why, and when the next attempt is due. */
static PyObject *Client_status(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
	struct finderd_client_status s = client_status(self);

	if (!self->client)
		return raise_finderd(FINDERD_ECLOSED, NULL);
	return Py_BuildValue("{sssisssssKsKsKsd}", "state",
			     s.state == FINDERD_CLIENT_SERVED ? "served" : "fell back", "error",
			     s.error, "reason", s.error ? finderd_strerror(s.error) : "",
			     "lost_reason", s.lost_error ? finderd_strerror(s.lost_error) : "",
			     "fallbacks", (unsigned long long)s.fallbacks, "reconnects",
			     (unsigned long long)s.reconnects, "attempts",
			     (unsigned long long)s.attempts, "retry_in_s",
			     (double)s.retry_in_us / 1e6);
}

static PyObject *Client_daemon_stats(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
	struct finderd_stats s;
	int rc;

	if (!self->client)
		return raise_finderd(FINDERD_ECLOSED, NULL);
	memset(&s, 0, sizeof(s));
	rc = finderd_stats(finderd_client_conn(self->client), &s);
	if (rc < 0)
		return raise_finderd(rc == -EINVAL ? FINDERD_ECLOSED : rc,
				     fdi_client_last_conn(self->client));
	return Py_BuildValue(
		"{sssKsIsKsKsKsKsKsKsKsKsKsKsK}", "daemon_version", s.daemon_version,
		"uptime_ms", (unsigned long long)s.uptime_ms, "pid", (unsigned int)s.pid,
		"roots", (unsigned long long)s.roots, "directories",
		(unsigned long long)s.directories, "entries", (unsigned long long)s.entries,
		"watches", (unsigned long long)s.watches, "inotify_events",
		(unsigned long long)s.inotify_events, "snapshot_requests",
		(unsigned long long)s.snapshot_requests, "lookup_requests",
		(unsigned long long)s.lookup_requests, "directories_served",
		(unsigned long long)s.directories_served, "directories_not_served",
		(unsigned long long)s.directories_not_served, "hits", (unsigned long long)s.hits,
		"misses", (unsigned long long)s.misses);
}

/* track_writes(): follow this process's filesystem changes (see audit_hook). */
static PyObject *Client_track_writes(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
	static int hook_added;

	if (!hook_added) {
		if (PySys_AddAuditHook(audit_hook, NULL) < 0)
			return NULL;
		hook_added = 1;
	}
	Py_XSETREF(tracked, (ClientObject *)Py_NewRef((PyObject *)self));
	Py_RETURN_NONE;
}

/*
 * open_code(path): _io.open_code, answered from a compiled file the daemon
 * sent (a BytesIO over its bytes) when the client holds a current copy.
 * importlib's loaders call it as "with _io.open_code(path) as f: f.read()".
 */
static PyObject *Client_open_code(ClientObject *self, PyObject *const *args, Py_ssize_t nargs,
				  PyObject *kwnames)
{
	struct finderd_str data;
	const char *path;
	Py_ssize_t len;
	PyObject *owner, *bytes, *result;
	int rc;

	if (nargs != 1 || kwnames || !self->client || !path_bytes(args[0], &path, &len, &owner))
		return PyObject_Vectorcall(state.io_open_code, args, (size_t)nargs, kwnames);
	follow_invalidations(self);
	rc = finderd_client_cached_file(self->client, path, (size_t)len, &data);
	bytes = rc == 0 ? PyBytes_FromStringAndSize(data.data, (Py_ssize_t)data.len) : NULL;
	after_question(self);
	Py_XDECREF(owner);
	if (rc != 0)
		return PyObject_Vectorcall(state.io_open_code, args, (size_t)nargs, kwnames);
	if (!bytes)
		return NULL;
	result = PyObject_CallOneArg(state.bytes_io, bytes);
	Py_DECREF(bytes);
	return result;
}

/* reads_compiled_files(): should open_code() stand in for _io.open_code? */
static PyObject *Client_reads_compiled_files(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
	return PyBool_FromLong(self->client && fdi_client_reads_compiled_files(self->client));
}

/* report(program_key): tell the daemon what this run used, if it differs. */
static PyObject *Client_report(ClientObject *self, PyObject *arg)
{
	int rc;

	if (!PyBytes_Check(arg)) {
		PyErr_SetString(PyExc_TypeError, "report() needs the program key as bytes");
		return NULL;
	}
	if (!self->client)
		Py_RETURN_NONE;
	rc = finderd_client_report(self->client, PyBytes_AS_STRING(arg),
				   (size_t)PyBytes_GET_SIZE(arg));
	if (rc < 0)
		return raise_finderd(rc, fdi_client_last_conn(self->client));
	Py_RETURN_NONE;
}

/* save(path): write the replies held, for replay() (benchmarks only). */
static PyObject *Client_save(ClientObject *self, PyObject *arg)
{
	PyObject *path = NULL;
	int fd, rc;

	if (!self->client)
		return raise_finderd(FINDERD_ECLOSED, NULL);
	if (!PyUnicode_FSConverter(arg, &path))
		return NULL;
	fd = open(PyBytes_AS_STRING(path), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	rc = fd < 0 ? -errno : fdi_client_save(self->client, fd);
	if (fd >= 0)
		close(fd);
	if (rc < 0) {
		errno = -rc;
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
		Py_DECREF(path);
		return NULL;
	}
	Py_DECREF(path);
	Py_RETURN_NONE;
}

/* after_fork(): in a child, stop sharing the parent's connection. */
static PyObject *Client_after_fork(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
	finderd_client_after_fork(self->client);
	Py_RETURN_NONE;
}

static PyObject *Client_close(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
	if (tracked == self)
		Py_CLEAR(tracked);
	if (!self->borrowed)
		finderd_client_free(self->client);
	self->client = NULL;
	Py_RETURN_NONE;
}

static PyMethodDef Client_methods[] = {
	{"stat", (PyCFunction)(void (*)(void))Client_stat, METH_FASTCALL | METH_KEYWORDS,
	 "stat(path) -> os.stat_result, answered from the daemon's listings; any other "
	 "call form, or a path the daemon does not serve, goes to posix.stat."},
	{"listdir", (PyCFunction)(void (*)(void))Client_listdir, METH_FASTCALL | METH_KEYWORDS,
	 "listdir(path) -> list of names, from the daemon's listing; otherwise posix.listdir."},
	{"snapshot", (PyCFunction)(void (*)(void))Client_snapshot, METH_VARARGS | METH_KEYWORDS,
	 "snapshot(sys_path, implementation, version, cache_tag, source_suffixes, "
	 "bytecode_suffixes, extension_suffixes, program_key=b'', prefetch_bytes=0): "
	 "fetch the start-up answer. All sequences hold bytes."},
	{"invalidate", (PyCFunction)Client_invalidate, METH_NOARGS,
	 "Distrust every held listing: the next question revalidates them (one round trip)."},
	{"describe", (PyCFunction)Client_describe, METH_O,
	 "describe(path) -> (status, reason, generation, slot) the daemon gave for a directory, or None."},
	{"counters", (PyCFunction)Client_counters, METH_NOARGS,
	 "counters() -> dict: answered, not_served, lookups, revalidations, and gave_up "
	 "(the client stopped asking the daemon after an error)."},
	{"status", (PyCFunction)Client_status, METH_NOARGS,
	 "status() -> dict: state ('served' or 'fell back'), error and reason (why it fell "
	 "back), lost_reason (why it lost the daemon the last time), fallbacks, reconnects, "
	 "attempts, retry_in_s (when the next import may reconnect)."},
	{"daemon_stats", (PyCFunction)Client_daemon_stats, METH_NOARGS,
	 "daemon_stats() -> dict of the daemon's Stats RPC."},
	{"fast_find_spec", (PyCFunction)Client_fast_find_spec, METH_O,
	 "fast_find_spec(finder) -> a FastFind to set as that FileFinder's find_spec."},
	{"track_writes", (PyCFunction)Client_track_writes, METH_NOARGS,
	 "Follow this process's own filesystem changes through an audit hook, so that a "
	 "module written and imported at once is found (the hook lasts for the process)."},
	{"open_code", (PyCFunction)(void (*)(void))Client_open_code, METH_FASTCALL | METH_KEYWORDS,
	 "open_code(path) -> a BytesIO of a compiled file the daemon sent, while current; "
	 "otherwise _io.open_code(path)."},
	{"reads_compiled_files", (PyCFunction)Client_reads_compiled_files, METH_NOARGS,
	 "Whether the daemon sent compiled files or named a slow filesystem: then open_code() "
	 "should stand in for _io.open_code."},
	{"report", (PyCFunction)Client_report, METH_O,
	 "report(program_key): at exit, tell the daemon what this run used, when that differs "
	 "from what its start-up answer planned (no round trip otherwise)."},
	{"save", (PyCFunction)Client_save, METH_O,
	 "save(path): write the replies held to a recording replay() reads (benchmarks)."},
	{"after_fork", (PyCFunction)Client_after_fork, METH_NOARGS,
	 "In a child after fork(): reconnect at the next round trip instead of sharing the "
	 "parent's socket (os.register_at_fork(after_in_child=...))."},
	{"close", (PyCFunction)Client_close, METH_NOARGS,
	 "Close the connection; later calls go to posix."},
	{NULL, NULL, 0, NULL},
};

static PyTypeObject ClientType = {
	PyVarObject_HEAD_INIT(NULL, 0)
	.tp_name = "finderd._native.Client",
	.tp_basicsize = sizeof(ClientObject),
	.tp_dealloc = (destructor)Client_dealloc,
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Client(socket_path, connect_timeout_us=0, call_timeout_us=0, epoch_owner=None, "
		  "daemon_user='', debug=False): a connection to finderd and the listings it "
		  "answered. When epoch_owner's _epoch attribute changes, every listing is "
		  "revalidated before use. daemon_user: who besides root and this user may listen "
		  "on the socket (a name or uid). debug: say on stderr when the daemon is lost and "
		  "when it serves again. Not thread-safe beyond the GIL.",
	.tp_methods = Client_methods,
	.tp_init = (initproc)Client_init,
	.tp_new = PyType_GenericNew,
};

/* ------------------------------------------------------------------------ */
/* Module                                                                   */
/* ------------------------------------------------------------------------ */

static PyObject *native_socket_path(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
	char buf[4096];
	int rc = finderd_socket_path(buf, sizeof(buf));

	if (rc < 0)
		return raise_finderd(rc, NULL);
	return PyUnicode_DecodeFSDefault(buf);
}

/*
 * replay(path) -> Client answering from a recording, trusting it all, with
 * no daemon: the benchmark's "bound", the client's own cost. Never for
 * real use: nothing in it is checked for freshness.
 */
static PyObject *native_replay(PyObject *Py_UNUSED(module), PyObject *arg)
{
	struct fdi_alloc alloc;
	ClientObject *self;
	PyObject *path = NULL;
	int fd, rc;

	if (!PyUnicode_FSConverter(arg, &path))
		return NULL;
	self = (ClientObject *)ClientType.tp_alloc(&ClientType, 0);
	if (!self) {
		Py_DECREF(path);
		return NULL;
	}
	fdi_alloc_libc(&alloc);
	fd = open(PyBytes_AS_STRING(path), O_RDONLY | O_CLOEXEC);
	rc = fd < 0 ? -errno : fdi_client_replay(&alloc, fd, &self->client);
	if (fd >= 0)
		close(fd);
	if (rc < 0) {
		Py_DECREF(self);
		if (rc > -4096) {
			errno = -rc;
			PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
		} else {
			raise_finderd(rc, NULL);
		}
		Py_DECREF(path);
		return NULL;
	}
	Py_DECREF(path);
	return (PyObject *)self;
}

/* socket_peer(path) -> (pid, uid, gid) of the process listening on @path. */
static PyObject *native_socket_peer(PyObject *Py_UNUSED(module), PyObject *arg)
{
	struct finderd_options opts;
	struct finderd_peer peer;
	PyObject *path = NULL;
	int rc;

	if (!PyUnicode_FSConverter(arg, &path))
		return NULL;
	finderd_options_init(&opts);
	opts.socket_path = PyBytes_AS_STRING(path);
	Py_BEGIN_ALLOW_THREADS
	rc = finderd_socket_peer(&opts, &peer);
	Py_END_ALLOW_THREADS
	if (rc < 0) {
		errno = rc > -4096 ? -rc : EIO;
		PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
		Py_DECREF(path);
		return NULL;
	}
	Py_DECREF(path);
	return Py_BuildValue("(iII)", (int)peer.pid, (unsigned int)peer.uid,
			     (unsigned int)peer.gid);
}

static PyObject *native_strerror(PyObject *Py_UNUSED(module), PyObject *arg)
{
	long code = PyLong_AsLong(arg);

	if (code == -1 && PyErr_Occurred())
		return NULL;
	return PyUnicode_FromString(finderd_strerror((int)code));
}

static PyMethodDef module_methods[] = {
	{"socket_path", native_socket_path, METH_NOARGS,
	 "The socket libfinderd would use: FINDERD_SOCKET, the per-user socket, the system one."},
	{"strerror", native_strerror, METH_O, "Describe a libfinderd error code."},
	{"socket_peer", native_socket_peer, METH_O,
	 "socket_peer(path) -> (pid, uid, gid) of the process listening on the socket: who "
	 "a refused connect (EUNTRUSTED) met. Sends nothing."},
	{"replay", native_replay, METH_O,
	 "replay(path) -> Client answering from a recording made by Client.save(), with no "
	 "daemon and no freshness checks: for the benchmark's bound only."},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "finderd._native",
	.m_doc = "libfinderd's resolver as drop-in posix.stat/posix.listdir.",
	.m_size = -1,
	.m_methods = module_methods,
};

static int load_io(void)
{
	PyObject *io = PyImport_ImportModule("_io");

	if (!io)
		return -1;
	state.io_open_code = PyObject_GetAttrString(io, "open_code");
	state.bytes_io = PyObject_GetAttrString(io, "BytesIO");
	Py_DECREF(io);
	return state.io_open_code && state.bytes_io ? 0 : -1;
}

static int load_posix(void)
{
	PyObject *posix = PyImport_ImportModule("posix");

	if (!posix)
		return -1;
	state.posix_stat = PyObject_GetAttrString(posix, "stat");
	state.posix_listdir = PyObject_GetAttrString(posix, "listdir");
	state.stat_result = (PyTypeObject *)PyObject_GetAttrString(posix, "stat_result");
	Py_DECREF(posix);
	if (!state.posix_stat || !state.posix_listdir || !state.stat_result)
		return -1;
	return learn_stat_layout();
}

#ifdef FINDERD_NATIVE_EMBED
/*
 * Compiled into the finderd-python launcher (client-py/launcher), which
 * creates this module itself before the interpreter can import anything:
 * the same code, under another entry point, hidden like every other name
 * of the launcher.
 */
#define NATIVE_INIT_FUNC PyObject *finderd_native_module(void)
PyObject *finderd_native_module(void);
PyObject *finderd_native_borrow(struct finderd_client *client, PyObject *epoch_owner);

/*
 * A Client around @client, which the launcher connected and fed its
 * start-up answer before the interpreter existed. The launcher keeps
 * owning it (it reports and frees it after the interpreter is finalized):
 * the Client never frees it, and close() only stops using it.
 * @epoch_owner: as for Client(), or NULL.
 */
PyObject *finderd_native_borrow(struct finderd_client *client, PyObject *epoch_owner)
{
	ClientObject *self = (ClientObject *)ClientType.tp_alloc(&ClientType, 0);

	if (!self)
		return NULL;
	self->client = client;
	self->borrowed = 1;
	if (epoch_owner && epoch_owner != Py_None) {
		self->epoch_owner = Py_NewRef(epoch_owner);
		self->epoch_seen = PyObject_GetAttr(epoch_owner, epoch_name);
		PyErr_Clear();
	}
	return (PyObject *)self;
}
#else
#define NATIVE_INIT_FUNC PyMODINIT_FUNC PyInit__native(void)
#endif

NATIVE_INIT_FUNC
{
	PyObject *m;

	epoch_name = PyUnicode_InternFromString("_epoch");
	if (!epoch_name || load_posix() < 0 || load_io() < 0 || PyType_Ready(&ClientType) < 0 ||
	    PyType_Ready(&FastFindType) < 0)
		return NULL;
	m = PyModule_Create(&native_module);
	if (!m)
		return NULL;
	state.error = PyErr_NewExceptionWithDoc(
		"finderd._native.Error",
		"A libfinderd failure: args are (code, description[, daemon message]).",
		PyExc_Exception, NULL);
	if (!state.error || PyModule_AddObject(m, "Error", Py_NewRef(state.error)) < 0 ||
	    PyModule_AddObject(m, "Client", Py_NewRef((PyObject *)&ClientType)) < 0 ||
	    PyModule_AddStringConstant(m, "LIBRARY_VERSION", finderd_version()) < 0 ||
	    PyModule_AddIntConstant(m, "PROTOCOL_VERSION", FINDERD_PROTOCOL_VERSION) < 0 ||
	    PyModule_AddIntConstant(m, "EUNTRUSTED", FINDERD_EUNTRUSTED) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
