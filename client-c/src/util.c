/*
 * util.c - allocation, buffers, options, version, error strings, socket path.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define FDI_STR2(x) #x
#define FDI_STR(x) FDI_STR2(x)

const char *finderd_version(void)
{
	return FDI_STR(FINDERD_VERSION_MAJOR) "." FDI_STR(FINDERD_VERSION_MINOR) "."
		FDI_STR(FINDERD_VERSION_PATCH);
}

/* ------------------------------------------------------------------------ */
/* Allocation                                                               */
/* ------------------------------------------------------------------------ */

static void *libc_alloc(size_t size, void *ctx)
{
	(void)ctx;
	return malloc(size);
}

static void *libc_realloc(void *ptr, size_t size, void *ctx)
{
	(void)ctx;
	return realloc(ptr, size);
}

static void libc_free(void *ptr, void *ctx)
{
	(void)ctx;
	free(ptr);
}

void fdi_alloc_libc(struct fdi_alloc *a)
{
	a->alloc = libc_alloc;
	a->realloc = libc_realloc;
	a->free = libc_free;
	a->ctx = NULL;
}

void *fdi_malloc(const struct fdi_alloc *a, size_t size)
{
	return a->alloc(size ? size : 1, a->ctx);
}

void *fdi_calloc(const struct fdi_alloc *a, size_t n, size_t size)
{
	void *p;

	if (size && n > SIZE_MAX / size)
		return NULL;
	p = fdi_malloc(a, n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

void *fdi_realloc(const struct fdi_alloc *a, void *ptr, size_t size)
{
	if (!ptr)
		return fdi_malloc(a, size);
	return a->realloc(ptr, size ? size : 1, a->ctx);
}

void fdi_free(const struct fdi_alloc *a, void *ptr)
{
	if (ptr)
		a->free(ptr, a->ctx);
}

/* ------------------------------------------------------------------------ */
/* Buffers                                                                  */
/* ------------------------------------------------------------------------ */

int fdi_buf_reserve(struct fdi_buf *b, const struct fdi_alloc *a, size_t extra)
{
	size_t need, cap;
	uint8_t *p;

	if (extra > SIZE_MAX - b->len)
		return -ENOMEM;
	need = b->len + extra;
	if (need <= b->cap)
		return 0;
	/* Double, or take exactly what is asked when that is more. */
	cap = b->cap > SIZE_MAX / 2 ? need : FDI_MAX(b->cap * 2, FDI_MAX(need, (size_t)64));
	p = fdi_realloc(a, b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int fdi_buf_append(struct fdi_buf *b, const struct fdi_alloc *a, const void *p, size_t n)
{
	int ret = fdi_buf_reserve(b, a, n);

	if (ret)
		return ret;
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

void fdi_buf_free(struct fdi_buf *b, const struct fdi_alloc *a)
{
	fdi_free(a, b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

void finderd_options_init(struct finderd_options *opts)
{
	memset(opts, 0, sizeof(*opts));
	opts->size = sizeof(*opts);
}

int fdi_opts_load(struct fdi_opts *out, const struct finderd_options *in)
{
	struct finderd_options o;
	int hooks;

	memset(&o, 0, sizeof(o));
	if (in) {
		if (in->size < sizeof(in->size))
			return -EINVAL;
		memcpy(&o, in, FDI_MIN(in->size, sizeof(o)));
	}
	hooks = (o.alloc != NULL) + (o.realloc != NULL) + (o.free != NULL);
	if (hooks != 0 && hooks != 3)
		return -EINVAL;
	if (o.flags & ~(uint32_t)(FINDERD_CONNECT_LAZY | FINDERD_CONNECT_NO_VIEW))
		return -EINVAL;
	out->socket_path = o.socket_path;
	out->flags = o.flags;
	out->mount_namespace = o.mount_namespace;
	out->daemon_user = o.daemon_user;
	out->reconnect_min_us =
		o.reconnect_min_us ? o.reconnect_min_us : FINDERD_DEFAULT_RECONNECT_MIN_US;
	out->reconnect_max_us =
		o.reconnect_max_us ? o.reconnect_max_us : FINDERD_DEFAULT_RECONNECT_MAX_US;
	if (out->reconnect_max_us < out->reconnect_min_us)
		out->reconnect_max_us = out->reconnect_min_us;
	out->connect_timeout_us =
		o.connect_timeout_us ? o.connect_timeout_us : FINDERD_DEFAULT_CONNECT_TIMEOUT_US;
	out->call_timeout_us =
		o.call_timeout_us ? o.call_timeout_us : FINDERD_DEFAULT_CALL_TIMEOUT_US;
	out->max_message_bytes =
		o.max_message_bytes ? o.max_message_bytes : FINDERD_DEFAULT_MAX_MESSAGE_BYTES;
	out->snapshot_timeout_us =
		o.snapshot_timeout_us
			? o.snapshot_timeout_us
			: (uint32_t)FDI_MIN((uint64_t)out->call_timeout_us * FINDERD_SNAPSHOT_TIMEOUT_CALLS,
					    UINT32_MAX);
	if (hooks) {
		out->alloc.alloc = o.alloc;
		out->alloc.realloc = o.realloc;
		out->alloc.free = o.free;
		out->alloc.ctx = o.alloc_ctx;
	} else {
		fdi_alloc_libc(&out->alloc);
	}
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Errors                                                                   */
/* ------------------------------------------------------------------------ */

static const char *finderd_error_string(int err)
{
	switch (err) {
	case FINDERD_EHTTP2: return "HTTP/2 protocol error";
	case FINDERD_EHPACK: return "malformed HPACK header block";
	case FINDERD_EHUFFMAN: return "malformed Huffman-coded header string";
	case FINDERD_EPROTOBUF: return "malformed protobuf message";
	case FINDERD_EGRPC: return "call ended with a non-OK gRPC status";
	case FINDERD_ECOMPRESSED: return "reply uses gRPC message compression";
	case FINDERD_EGOAWAY: return "server sent GOAWAY; connection accepts no further calls";
	case FINDERD_ERESET: return "server reset the stream (RST_STREAM)";
	case FINDERD_EVERSION: return "daemon speaks another protocol version";
	case FINDERD_ETOOBIG: return "message exceeds the configured size limit";
	case FINDERD_ECLOSED: return "connection closed or unusable after an earlier error";
	case FINDERD_EBADREPLY: return "reply breaks the finderd contract";
	case FINDERD_ENOTSERVED: return "path not served by the daemon";
	case FINDERD_EGENFILE: return "generation file cannot be mapped or is invalid";
	case FINDERD_EUNTRUSTED:
		return "the socket's listener runs as a user this client does not trust "
		       "(not root, not this user, not the configured daemon user)";
	}
	return NULL;
}

/* strerror() texts (glibc wording) for the errno values a client meets. */
static const char *errno_string(int e)
{
	switch (e) {
	case EPERM: return "Operation not permitted";
	case ENOENT: return "No such file or directory";
	case EINTR: return "Interrupted system call";
	case EIO: return "Input/output error";
	case E2BIG: return "Argument list too long";
	case EBADF: return "Bad file descriptor";
	case EAGAIN: return "Resource temporarily unavailable";
	case ENOMEM: return "Cannot allocate memory";
	case EACCES: return "Permission denied";
	case EFAULT: return "Bad address";
	case EBUSY: return "Device or resource busy";
	case EEXIST: return "File exists";
	case ENOTDIR: return "Not a directory";
	case EISDIR: return "Is a directory";
	case EINVAL: return "Invalid argument";
	case ENFILE: return "Too many open files in system";
	case EMFILE: return "Too many open files";
	case ENOSPC: return "No space left on device";
	case EROFS: return "Read-only file system";
	case EPIPE: return "Broken pipe";
	case EDOM: return "Numerical argument out of domain";
	case ERANGE: return "Numerical result out of range";
	case ENAMETOOLONG: return "File name too long";
	case ENOSYS: return "Function not implemented";
	case ELOOP: return "Too many levels of symbolic links";
	case EOVERFLOW: return "Value too large for defined data type";
	case EPROTO: return "Protocol error";
	case EBADMSG: return "Bad message";
	case ENOTSOCK: return "Socket operation on non-socket";
	case EPROTOTYPE: return "Protocol wrong type for socket";
	case EPROTONOSUPPORT: return "Protocol not supported";
	case EOPNOTSUPP: return "Operation not supported";
	case EAFNOSUPPORT: return "Address family not supported by protocol";
	case EADDRINUSE: return "Address already in use";
	case EADDRNOTAVAIL: return "Cannot assign requested address";
	case ENETDOWN: return "Network is down";
	case ENETUNREACH: return "Network is unreachable";
	case ECONNABORTED: return "Software caused connection abort";
	case ECONNRESET: return "Connection reset by peer";
	case ENOBUFS: return "No buffer space available";
	case EISCONN: return "Transport endpoint is already connected";
	case ENOTCONN: return "Transport endpoint is not connected";
	case ETIMEDOUT: return "Connection timed out";
	case ECONNREFUSED: return "Connection refused";
	case EHOSTUNREACH: return "No route to host";
	case EALREADY: return "Operation already in progress";
	case EINPROGRESS: return "Operation now in progress";
	case ECANCELED: return "Operation canceled";
	}
	return NULL;
}

const char *finderd_strerror(int err)
{
	const char *s;

	if (err == 0)
		return "Success";
	s = finderd_error_string(err);
	if (s)
		return s;
	if (err < 0 && err > -4096) {
		s = errno_string(-err);
		if (s)
			return s;
	}
	return "Unknown error";
}

/* ------------------------------------------------------------------------ */
/* Socket path                                                              */
/* ------------------------------------------------------------------------ */

#define FDI_SYSTEM_SOCKET "/run/finderd/finderd.sock"

static int copy_path(char *buf, size_t size, const char *s)
{
	size_t n = strlen(s);

	if (n >= size)
		return -ENAMETOOLONG;
	memcpy(buf, s, n + 1);
	return 0;
}

/* Build "<a><b>" into @buf; -ENAMETOOLONG when it does not fit. */
static int join2(char *buf, size_t size, const char *a, const char *b)
{
	size_t al = strlen(a), bl = strlen(b);

	if (al >= size || bl >= size - al)
		return -ENAMETOOLONG;
	memcpy(buf, a, al);
	memcpy(buf + al, b, bl + 1);
	return 0;
}

int finderd_socket_path(char *buf, size_t size)
{
	return finderd_socket_path_flags(buf, size, 0);
}

int finderd_socket_path_flags(char *buf, size_t size, uint32_t flags)
{
	const char *env, *xdg;

	if (flags & ~FINDERD_SOCKET_PATH_NO_ENV)
		return -EINVAL;
	env = flags & FINDERD_SOCKET_PATH_NO_ENV ? NULL : getenv("FINDERD_SOCKET");
	xdg = getenv("XDG_RUNTIME_DIR");
	if (env && *env)
		return copy_path(buf, size, env);
	if (xdg && *xdg)
		return join2(buf, size, xdg, "/finderd/finderd.sock");
	return copy_path(buf, size, FDI_SYSTEM_SOCKET);
}
