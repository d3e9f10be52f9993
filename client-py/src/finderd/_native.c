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
#include <string.h>

#include "finderd.h"

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
} ClientObject;

static PyObject *epoch_name; /* interned "_epoch" */

/* Distrust every listing when importlib.invalidate_caches() ran since last time. */
static void follow_invalidations(ClientObject *self)
{
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
 * Returns 1 with *data/*len set (and *owner holding a new reference to keep
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
		PyObject *item = as_bytes
			? PyBytes_FromStringAndSize(name->data, (Py_ssize_t)name->len)
			: PyUnicode_DecodeFSDefaultAndSize(name->data, (Py_ssize_t)name->len);

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
	PyObject *owner;
	size_t n;
	int rc;

	if (nargs != 1 || kwnames || !self->client ||
	    !path_bytes(args[0], &data, &len, &owner))
		return PyObject_Vectorcall(state.posix_listdir, args, (size_t)nargs, kwnames);
	follow_invalidations(self);
	rc = finderd_client_listdir(self->client, data, (size_t)len, &entries, &n);
	Py_XDECREF(owner);
	if (rc == 0)
		return entry_names(entries, n, PyBytes_Check(args[0]));
	if (rc == -ENOENT || rc == -ENOTDIR)
		return raise_errno(rc, args[0]);
	return PyObject_Vectorcall(state.posix_listdir, args, (size_t)nargs, kwnames);
}

static int Client_init(ClientObject *self, PyObject *args, PyObject *kwds)
{
	static char *kwlist[] = {"socket_path", "connect_timeout_us", "call_timeout_us",
				 "epoch_owner", NULL};
	struct finderd_options opts;
	PyObject *path_obj = NULL, *epoch_owner = NULL;
	unsigned int connect_us = 0, call_us = 0;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|IIO", kwlist, PyUnicode_FSConverter,
					 &path_obj, &connect_us, &call_us, &epoch_owner))
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
	Py_BEGIN_ALLOW_THREADS
	rc = finderd_client_new(&opts, &self->client);
	Py_END_ALLOW_THREADS
	Py_DECREF(path_obj);
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
	Py_XDECREF(self->epoch_owner);
	Py_XDECREF(self->epoch_seen);
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
				 "program_key", "prefetch_bytes", NULL};
	PyObject *seqs[SEQ_COUNT] = {NULL}, *keep[SEQ_COUNT] = {NULL};
	struct finderd_str *arrays[SEQ_COUNT] = {NULL};
	size_t counts[SEQ_COUNT] = {0};
	const char *impl, *version, *cache_tag;
	const char *key = NULL;
	Py_ssize_t key_len = 0;
	unsigned long long prefetch = 0;
	struct finderd_interpreter interp;
	struct finderd_snapshot_request req;
	PyObject *result = NULL;
	int i, rc;

	if (!self->client)
		return raise_finderd(FINDERD_ECLOSED, NULL);
	if (!PyArg_ParseTupleAndKeywords(args, kwds, "OsszOOO|y#K", kwlist, &seqs[SEQ_PATH],
					 &impl, &version, &cache_tag, &seqs[SEQ_SOURCE],
					 &seqs[SEQ_BYTECODE], &seqs[SEQ_EXTENSION], &key, &key_len,
					 &prefetch))
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
	/* The GIL stays held: the snapshot runs while imports wait for it anyway. */
	rc = finderd_client_snapshot(self->client, &req);
	if (rc < 0)
		raise_finderd(rc, finderd_client_conn(self->client));
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

/* describe(path) -> (status, reason) or None: what the client holds for path. */
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
	result = Py_BuildValue("(ss#)", status_name(dir->status), dir->reason.data,
			       (Py_ssize_t)dir->reason.len);
	Py_XDECREF(owner);
	return result;
}

static PyObject *Client_counters(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
	struct finderd_client_counters c;

	if (!self->client)
		return raise_finderd(FINDERD_ECLOSED, NULL);
	finderd_client_counters(self->client, &c);
	return Py_BuildValue("{sKsKsKsK}", "answered", (unsigned long long)c.answered,
			     "not_served", (unsigned long long)c.not_served, "lookups",
			     (unsigned long long)c.lookups, "revalidations",
			     (unsigned long long)c.revalidations);
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
		return raise_finderd(rc, finderd_client_conn(self->client));
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

static PyObject *Client_close(ClientObject *self, PyObject *Py_UNUSED(ignored))
{
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
	 "describe(path) -> (status, reason) the daemon gave for a directory, or None."},
	{"counters", (PyCFunction)Client_counters, METH_NOARGS,
	 "counters() -> dict: answered, not_served, lookups, revalidations."},
	{"daemon_stats", (PyCFunction)Client_daemon_stats, METH_NOARGS,
	 "daemon_stats() -> dict of the daemon's Stats RPC."},
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
	.tp_doc = "Client(socket_path, connect_timeout_us=0, call_timeout_us=0, epoch_owner=None): "
		  "a connection to finderd and the listings it answered. When epoch_owner's "
		  "_epoch attribute changes, every listing is revalidated before use. Not "
		  "thread-safe beyond the GIL.",
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
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "finderd._native",
	.m_doc = "libfinderd's resolver as drop-in posix.stat/posix.listdir.",
	.m_size = -1,
	.m_methods = module_methods,
};

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

PyMODINIT_FUNC PyInit__native(void)
{
	PyObject *m;

	epoch_name = PyUnicode_InternFromString("_epoch");
	if (!epoch_name || load_posix() < 0 || PyType_Ready(&ClientType) < 0)
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
	    PyModule_AddIntConstant(m, "PROTOCOL_VERSION", FINDERD_PROTOCOL_VERSION) < 0) {
		Py_DECREF(m);
		return NULL;
	}
	return m;
}
