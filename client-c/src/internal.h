/*
 * internal.h - private helpers shared by the libfinderd sources.
 *
 * Nothing here is part of the public API or ABI. Internal names start with
 * fdi_ ("finderd internal"); the linker map keeps them out of the shared
 * library's dynamic symbol table.
 */
#ifndef FINDERD_INTERNAL_H
#define FINDERD_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "finderd.h"

#define FDI_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FDI_MAX(a, b) ((a) > (b) ? (a) : (b))
#define FDI_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
/* A compile-time check at file scope (C99 has no _Static_assert): a false
 * @cond makes an array of negative size. */
#define FDI_STATIC_ASSERT(cond, name) typedef char fdi_static_assert_##name[(cond) ? 1 : -1]

/* ------------------------------------------------------------------------ */
/* Allocation                                                               */
/* ------------------------------------------------------------------------ */

/** The allocator hooks of struct finderd_options, or libc's. */
struct fdi_alloc {
	void *(*alloc)(size_t size, void *ctx);
	void *(*realloc)(void *ptr, size_t size, void *ctx);
	void (*free)(void *ptr, void *ctx);
	void *ctx;
};

/** Fill @a with hooks that call malloc/realloc/free. */
void fdi_alloc_libc(struct fdi_alloc *a);
/** Never returns a pointer for a zero-size request: asks for one byte. */
void *fdi_malloc(const struct fdi_alloc *a, size_t size);
/** Zeroed array of @n elements of @size bytes; NULL on overflow too. */
void *fdi_calloc(const struct fdi_alloc *a, size_t n, size_t size);
/** realloc(NULL, size) is routed to the alloc hook. */
void *fdi_realloc(const struct fdi_alloc *a, void *ptr, size_t size);
/** NULL is allowed. */
void fdi_free(const struct fdi_alloc *a, void *ptr);

/* ------------------------------------------------------------------------ */
/* Growable byte buffer                                                     */
/* ------------------------------------------------------------------------ */

struct fdi_buf {
	uint8_t *data;
	size_t len;
	size_t cap;
};

/** Make room for @extra more bytes after len. Return: 0 or -ENOMEM. */
int fdi_buf_reserve(struct fdi_buf *b, const struct fdi_alloc *a, size_t extra);
/** Append @n bytes. Return: 0 or -ENOMEM. */
int fdi_buf_append(struct fdi_buf *b, const struct fdi_alloc *a, const void *p, size_t n);
/** Release the storage and zero @b. */
void fdi_buf_free(struct fdi_buf *b, const struct fdi_alloc *a);

/* ------------------------------------------------------------------------ */
/* Options                                                                  */
/* ------------------------------------------------------------------------ */

/** struct finderd_options after defaults and validation. */
struct fdi_opts {
	const char *socket_path; /* NULL: finderd_socket_path() */
	uint32_t connect_timeout_us;
	uint32_t call_timeout_us;
	uint32_t max_message_bytes;
	uint32_t flags; /* FINDERD_CONNECT_* */
	uint64_t mount_namespace; /* 0: unknown */
	const char *daemon_user;  /* NULL: $FINDERD_DAEMON_USER */
	uint32_t reconnect_min_us;
	uint32_t reconnect_max_us;
	uint32_t snapshot_timeout_us;
	struct fdi_alloc alloc;
};

/**
 * fdi_opts_load() - read the first @in->size bytes of @in, apply defaults.
 * @in: caller's options or NULL.
 * Return: 0, or -EINVAL (size 0, or allocator hooks only partly set).
 */
int fdi_opts_load(struct fdi_opts *out, const struct finderd_options *in);

/**
 * fdi_conn_abandon() - free @c and close its socket without sending anything
 * (GOAWAY included): for a child after fork(), whose parent keeps the
 * connection. NULL is allowed.
 */
void fdi_conn_abandon(struct finderd_conn *c);

/** The mount namespace @c sends with its requests from now on (0: unknown). */
void fdi_conn_set_mount_namespace(struct finderd_conn *c, uint64_t mount_namespace);

/* ------------------------------------------------------------------------ */
/* Byte order                                                               */
/* ------------------------------------------------------------------------ */

static inline uint32_t fdi_get_be24(const uint8_t *p)
{
	return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | (uint32_t)p[2];
}

static inline uint32_t fdi_get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
	       (uint32_t)p[3];
}

static inline void fdi_put_be24(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 16);
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)v;
}

static inline void fdi_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/** Compare two byte strings in unsigned byte order (memcmp, then length). */
static inline int fdi_bytes_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = memcmp(a, b, FDI_MIN(alen, blen));

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

/** True when the @n bytes at @p equal the NUL-terminated @s. */
static inline int fdi_bytes_eq(const void *p, size_t n, const char *s)
{
	size_t sl = strlen(s);

	return n == sl && memcmp(p, s, n) == 0;
}

#endif /* FINDERD_INTERNAL_H */
