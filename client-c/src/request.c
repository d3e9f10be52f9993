/*
 * request.c - deep copies of Snapshot requests.
 *
 * One allocation holds a copy: first the arrays of struct finderd_str
 * (suffixes, sys.path), then the bytes they and the strings point to. The
 * copy is laid out twice with the same code: once to measure, once to fill.
 */
#include <errno.h>
#include <string.h>

#include "request.h"

/* A region of the copy; @base NULL while measuring. */
struct region {
	char *base;
	size_t used;
};

static void *region_take(struct region *r, const void *src, size_t n)
{
	char *p = r->base ? r->base + r->used : NULL;

	if (p && src && n)
		memcpy(p, src, n);
	r->used += n;
	return p;
}

static const char *copy_cstr(struct region *bytes, const char *s)
{
	return s ? region_take(bytes, s, strlen(s) + 1) : NULL;
}

static const struct finderd_str *copy_strs(struct region *arrays, struct region *bytes,
					   const struct finderd_str *in, size_t n)
{
	struct finderd_str *out = region_take(arrays, NULL, n * sizeof(*out));
	size_t i;

	for (i = 0; i < n; i++) {
		const char *data = region_take(bytes, in[i].data, in[i].len);

		if (out) {
			out[i].data = data;
			out[i].len = in[i].len;
		}
	}
	return out;
}

static void copy_interpreter(struct region *arrays, struct region *bytes,
			     const struct finderd_interpreter *in, struct finderd_interpreter *out)
{
	out->implementation = copy_cstr(bytes, in->implementation);
	out->version = copy_cstr(bytes, in->version);
	out->cache_tag = copy_cstr(bytes, in->cache_tag);
	out->source_suffixes = copy_strs(arrays, bytes, in->source_suffixes, in->n_source_suffixes);
	out->n_source_suffixes = in->n_source_suffixes;
	out->bytecode_suffixes =
		copy_strs(arrays, bytes, in->bytecode_suffixes, in->n_bytecode_suffixes);
	out->n_bytecode_suffixes = in->n_bytecode_suffixes;
	out->extension_suffixes =
		copy_strs(arrays, bytes, in->extension_suffixes, in->n_extension_suffixes);
	out->n_extension_suffixes = in->n_extension_suffixes;
}

/* Lay out the copy of @in in @arrays then @bytes, filling @out when they have a base. */
static void lay_out(struct region *arrays, struct region *bytes,
		    const struct finderd_snapshot_request *in, struct fdi_saved_snapshot *out)
{
	out->req = *in;
	out->req.interpreter = NULL;
	if (in->interpreter) {
		copy_interpreter(arrays, bytes, in->interpreter, &out->interpreter);
		out->req.interpreter = &out->interpreter;
	}
	out->req.sys_path = copy_strs(arrays, bytes, in->sys_path, in->n_sys_path);
	out->req.program_key.data =
		region_take(bytes, in->program_key.data, in->program_key.len);
}

int fdi_snapshot_save(const struct fdi_alloc *a, const struct finderd_snapshot_request *in,
		      struct fdi_saved_snapshot *out)
{
	struct region arrays = { NULL, 0 }, bytes = { NULL, 0 };
	struct fdi_saved_snapshot copy;
	char *blob;

	memset(&copy, 0, sizeof(copy));
	lay_out(&arrays, &bytes, in, &copy);
	blob = fdi_malloc(a, arrays.used + bytes.used);
	if (!blob)
		return -ENOMEM;
	bytes.base = blob + arrays.used;
	arrays.base = blob;
	arrays.used = bytes.used = 0;
	lay_out(&arrays, &bytes, in, &copy);
	copy.blob = blob;
	*out = copy;
	if (in->interpreter)
		out->req.interpreter = &out->interpreter;
	return 0;
}

void fdi_snapshot_release(const struct fdi_alloc *a, struct fdi_saved_snapshot *s)
{
	fdi_free(a, s->blob);
	memset(s, 0, sizeof(s[0]));
}
