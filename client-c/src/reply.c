/*
 * reply.c - SnapshotReply / LookupReply: directory headers decoded eagerly,
 * listings lazily, every string pointing into the received message.
 */
#include <errno.h>
#include <string.h>

#include "finderd_fields.h"
#include "pb.h"
#include "reply.h"

/* The public enums are the proto's values: the client hands them on as decoded. */
FDI_STATIC_ASSERT(FINDERD_PROTOCOL_VERSION == FDI_VALUE_PROTOCOL_VERSION_1, protocol_version);
FDI_STATIC_ASSERT(FINDERD_ENTRY_FILE == FDI_VALUE_ENTRY_KIND_FILE, entry_file);
FDI_STATIC_ASSERT(FINDERD_ENTRY_DIR == FDI_VALUE_ENTRY_KIND_DIR, entry_dir);
FDI_STATIC_ASSERT(FINDERD_ENTRY_SYMLINK_DIR == FDI_VALUE_ENTRY_KIND_SYMLINK_DIR, entry_symlink_dir);
FDI_STATIC_ASSERT(FINDERD_ENTRY_OTHER == FDI_VALUE_ENTRY_KIND_OTHER, entry_other);
FDI_STATIC_ASSERT(FINDERD_DIR_UNSPECIFIED == FDI_VALUE_DIRECTORY_STATUS_UNSPECIFIED, dir_unspecified);
FDI_STATIC_ASSERT(FINDERD_DIR_SERVED == FDI_VALUE_DIRECTORY_STATUS_SERVED, dir_served);
FDI_STATIC_ASSERT(FINDERD_DIR_NOT_SERVED == FDI_VALUE_DIRECTORY_STATUS_NOT_SERVED, dir_not_served);
FDI_STATIC_ASSERT(FINDERD_DIR_ABSENT == FDI_VALUE_DIRECTORY_STATUS_ABSENT, dir_absent);
FDI_STATIC_ASSERT(FINDERD_DIR_UNCHANGED == FDI_VALUE_DIRECTORY_STATUS_UNCHANGED, dir_unchanged);

/* Where a directory's encoding lies, and its listing once decoded. */
struct dir_raw {
	const uint8_t *p;
	size_t len;
	size_t n_entries;
	struct finderd_entry *entries;
	int decoded;
};

struct finderd_reply {
	struct fdi_alloc alloc;
	uint8_t *buf;
	const uint8_t *msg;        /* the encoded message, inside buf */
	size_t msg_len;
	enum fdi_reply_kind kind;
	uint32_t protocol_version;
	struct finderd_str daemon_version;
	struct finderd_genfile_info genfile;
	size_t n_dirs;
	struct finderd_dir *dirs;
	struct dir_raw *raw;
	uint32_t planned_directories;
	size_t n_files;
	struct finderd_cached_file *files;
};

/* Field numbers of the two reply messages. */
struct reply_fields {
	uint32_t protocol_version;
	uint32_t daemon_version; /* 0: absent */
	uint32_t generations;
	uint32_t directories;
	uint32_t files;          /* 0: absent */
	uint32_t planned;        /* 0: absent */
};

static const struct reply_fields fields_of[] = {
	[FDI_REPLY_SNAPSHOT] = {
		.protocol_version = FDI_FIELD_SNAPSHOT_REPLY_PROTOCOL_VERSION,
		.daemon_version = FDI_FIELD_SNAPSHOT_REPLY_DAEMON_VERSION,
		.generations = FDI_FIELD_SNAPSHOT_REPLY_GENERATIONS,
		.directories = FDI_FIELD_SNAPSHOT_REPLY_DIRECTORIES,
		.files = FDI_FIELD_SNAPSHOT_REPLY_FILES,
		.planned = FDI_FIELD_SNAPSHOT_REPLY_PLANNED_DIRECTORIES,
	},
	[FDI_REPLY_LOOKUP] = {
		.protocol_version = FDI_FIELD_LOOKUP_REPLY_PROTOCOL_VERSION,
		.generations = FDI_FIELD_LOOKUP_REPLY_GENERATIONS,
		.directories = FDI_FIELD_LOOKUP_REPLY_DIRECTORIES,
	},
};

static const char empty[] = "";

/* ------------------------------------------------------------------------ */
/* Messages                                                                 */
/* ------------------------------------------------------------------------ */

/* finderd.v1.GenerationFile (fields merge when it appears twice) */
static int decode_genfile(const struct fdi_pb_field *outer, struct finderd_genfile_info *g)
{
	const uint8_t *p, *end;
	struct fdi_pb_field f;
	int ret;

	if (outer->wt != FDI_PB_LEN)
		return FINDERD_EPROTOBUF;
	p = outer->p;
	end = p + outer->len;
	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		switch (f.num) {
		case FDI_FIELD_GENERATION_FILE_PATH: ret = fdi_pb_get_str(&f, &g->path); break;
		case FDI_FIELD_GENERATION_FILE_EPOCH: ret = fdi_pb_get_u64(&f, &g->epoch); break;
		case FDI_FIELD_GENERATION_FILE_SLOTS: ret = fdi_pb_get_u32(&f, &g->slots); break;
		case FDI_FIELD_GENERATION_FILE_LEASE_NS: ret = fdi_pb_get_u64(&f, &g->lease_ns); break;
		default: ret = 0; break;
		}
		if (ret)
			return ret;
	}
	return ret;
}

static int directory_field(const struct fdi_pb_field *f, struct finderd_dir *d,
			   struct dir_raw *raw)
{
	switch (f->num) {
	case FDI_FIELD_DIRECTORY_PATH: return fdi_pb_get_str(f, &d->path);
	case FDI_FIELD_DIRECTORY_STATUS: return fdi_pb_get_u32(f, &d->status);
	case FDI_FIELD_DIRECTORY_REASON: return fdi_pb_get_str(f, &d->reason);
	case FDI_FIELD_DIRECTORY_ERROR: return fdi_pb_get_i32(f, &d->error);
	case FDI_FIELD_DIRECTORY_GENERATION: return fdi_pb_get_u64(f, &d->generation);
	case FDI_FIELD_DIRECTORY_SLOT: return fdi_pb_get_u32(f, &d->slot);
	case FDI_FIELD_DIRECTORY_MODE: return fdi_pb_get_u32(f, &d->mode);
	case FDI_FIELD_DIRECTORY_MTIME_NS: return fdi_pb_get_i64(f, &d->mtime_ns);
	case FDI_FIELD_DIRECTORY_SIZE: return fdi_pb_get_u64(f, &d->size);
	case FDI_FIELD_DIRECTORY_SLOW_FILESYSTEM: return fdi_pb_get_u32(f, &d->slow_filesystem);
	case FDI_FIELD_DIRECTORY_ENTRIES:
		if (f->wt != FDI_PB_LEN)
			return FINDERD_EPROTOBUF;
		raw->n_entries++;
		return 0;
	}
	return 0;
}

/* finderd.v1.Directory without its entries, which are only counted. */
static int decode_directory(const struct fdi_pb_field *outer, struct finderd_dir *d,
			    struct dir_raw *raw)
{
	const uint8_t *p = outer->p, *end = outer->p + outer->len;
	struct fdi_pb_field f;
	int ret;

	if (outer->wt != FDI_PB_LEN)
		return FINDERD_EPROTOBUF;
	d->path.data = d->reason.data = empty;
	raw->p = outer->p;
	raw->len = outer->len;
	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		ret = directory_field(&f, d, raw);
		if (ret)
			return ret;
	}
	return ret;
}

static int entry_field(const struct fdi_pb_field *f, struct finderd_entry *e)
{
	switch (f->num) {
	case FDI_FIELD_ENTRY_NAME: return fdi_pb_get_str(f, &e->name);
	case FDI_FIELD_ENTRY_KIND: return fdi_pb_get_u32(f, &e->kind);
	case FDI_FIELD_ENTRY_MODE: return fdi_pb_get_u32(f, &e->mode);
	case FDI_FIELD_ENTRY_MTIME_NS: return fdi_pb_get_i64(f, &e->mtime_ns);
	case FDI_FIELD_ENTRY_SIZE: return fdi_pb_get_u64(f, &e->size);
	}
	return 0;
}

/* finderd.v1.Entry */
static int decode_entry(const struct fdi_pb_field *outer, struct finderd_entry *e)
{
	const uint8_t *p = outer->p, *end = outer->p + outer->len;
	struct fdi_pb_field f;
	int ret;

	if (outer->wt != FDI_PB_LEN)
		return FINDERD_EPROTOBUF;
	memset(e, 0, sizeof(*e));
	e->name.data = empty;
	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		ret = entry_field(&f, e);
		if (ret)
			return ret;
	}
	return ret;
}

/* finderd.v1.CachedFile */
static int decode_file(const struct fdi_pb_field *outer, struct finderd_cached_file *c)
{
	const uint8_t *p = outer->p, *end = outer->p + outer->len;
	struct fdi_pb_field f;
	int ret;

	if (outer->wt != FDI_PB_LEN)
		return FINDERD_EPROTOBUF;
	c->path.data = c->data.data = empty;
	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		switch (f.num) {
		case FDI_FIELD_CACHED_FILE_PATH: ret = fdi_pb_get_str(&f, &c->path); break;
		case FDI_FIELD_CACHED_FILE_DATA: ret = fdi_pb_get_str(&f, &c->data); break;
		case FDI_FIELD_CACHED_FILE_MTIME_NS: ret = fdi_pb_get_i64(&f, &c->mtime_ns); break;
		case FDI_FIELD_CACHED_FILE_SIZE: ret = fdi_pb_get_u64(&f, &c->size); break;
		default: ret = 0; break;
		}
		if (ret)
			return ret;
	}
	if (!ret && c->data.len != c->size)
		ret = FINDERD_EBADREPLY; /* the bytes are not the file they claim to be */
	return ret;
}

/* A listing name: one path component, neither "." nor "..". */
static int name_ok(const struct finderd_str *n)
{
	if (n->len == 0 || memchr(n->data, '/', n->len) || memchr(n->data, '\0', n->len))
		return 0;
	return !(n->len <= 2 && n->data[0] == '.' && (n->len == 1 || n->data[1] == '.'));
}

static int decode_entries(const struct dir_raw *raw, struct finderd_entry *out)
{
	const uint8_t *p = raw->p, *end = raw->p + raw->len;
	struct fdi_pb_field f;
	size_t n = 0;
	int ret;

	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		if (f.num != FDI_FIELD_DIRECTORY_ENTRIES)
			continue;
		/* Counted when the directory was decoded: same bytes, same count. */
		ret = decode_entry(&f, &out[n]);
		if (ret)
			return ret;
		if (!name_ok(&out[n].name))
			return FINDERD_EBADREPLY;
		if (n && fdi_bytes_cmp(out[n - 1].name.data, out[n - 1].name.len,
				       out[n].name.data, out[n].name.len) >= 0)
			return FINDERD_EBADREPLY;
		n++;
	}
	return ret;
}

/* ------------------------------------------------------------------------ */
/* Reply                                                                    */
/* ------------------------------------------------------------------------ */

/* Pass 1: the scalar fields, and the number of directories. */
static int decode_top(struct finderd_reply *r, const uint8_t *p, const uint8_t *end,
		      const struct reply_fields *nums)
{
	struct fdi_pb_field f;
	int ret;

	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		if (f.num == nums->protocol_version)
			ret = fdi_pb_get_u32(&f, &r->protocol_version);
		else if (f.num == nums->daemon_version)
			ret = fdi_pb_get_str(&f, &r->daemon_version);
		else if (f.num == nums->generations)
			ret = decode_genfile(&f, &r->genfile);
		else if (f.num == nums->directories)
			ret = f.wt == FDI_PB_LEN ? (r->n_dirs++, 0) : FINDERD_EPROTOBUF;
		else if (nums->files && f.num == nums->files)
			ret = f.wt == FDI_PB_LEN ? (r->n_files++, 0) : FINDERD_EPROTOBUF;
		else if (nums->planned && f.num == nums->planned)
			ret = fdi_pb_get_u32(&f, &r->planned_directories);
		else
			ret = 0;
		if (ret)
			return ret;
	}
	return ret;
}

/* Pass 2: the directories. */
static int decode_dirs(struct finderd_reply *r, const uint8_t *p, const uint8_t *end,
		       uint32_t num)
{
	struct fdi_pb_field f;
	size_t i = 0;
	int ret;

	r->dirs = fdi_calloc(&r->alloc, r->n_dirs, sizeof(*r->dirs));
	r->raw = fdi_calloc(&r->alloc, r->n_dirs, sizeof(*r->raw));
	if (!r->dirs || !r->raw)
		return -ENOMEM;
	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		if (f.num != num)
			continue;
		ret = decode_directory(&f, &r->dirs[i], &r->raw[i]);
		if (ret)
			return ret;
		i++;
	}
	return ret;
}

/* Pass 3: the compiled files. */
static int decode_files(struct finderd_reply *r, const uint8_t *p, const uint8_t *end,
			uint32_t num)
{
	struct fdi_pb_field f;
	size_t i = 0;
	int ret;

	if (!r->n_files)
		return 0;
	r->files = fdi_calloc(&r->alloc, r->n_files, sizeof(*r->files));
	if (!r->files)
		return -ENOMEM;
	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		if (f.num != num)
			continue;
		ret = decode_file(&f, &r->files[i++]);
		if (ret)
			return ret;
	}
	return ret;
}

static void reply_release(struct finderd_reply *r)
{
	size_t i;

	if (r->raw)
		for (i = 0; i < r->n_dirs; i++)
			fdi_free(&r->alloc, r->raw[i].entries);
	fdi_free(&r->alloc, r->raw);
	fdi_free(&r->alloc, r->dirs);
	fdi_free(&r->alloc, r->files);
	fdi_free(&r->alloc, r);
}

int fdi_reply_decode(const struct fdi_alloc *a, uint8_t *buf, const uint8_t *msg, size_t len,
		     enum fdi_reply_kind kind, struct finderd_reply **out)
{
	const struct reply_fields *nums = &fields_of[kind];
	struct finderd_reply *r;
	int ret;

	r = fdi_calloc(a, 1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->alloc = *a;
	r->daemon_version.data = empty;
	r->genfile.path.data = empty;
	ret = decode_top(r, msg, msg + len, nums);
	if (!ret && r->protocol_version != FINDERD_PROTOCOL_VERSION)
		ret = FINDERD_EVERSION;
	if (!ret)
		ret = decode_dirs(r, msg, msg + len, nums->directories);
	if (!ret && nums->files)
		ret = decode_files(r, msg, msg + len, nums->files);
	if (ret) {
		reply_release(r);
		return ret;
	}
	r->buf = buf;
	r->msg = msg;
	r->msg_len = len;
	r->kind = kind;
	*out = r;
	return 0;
}

void fdi_reply_message(const struct finderd_reply *r, const uint8_t **msg, size_t *len,
		       enum fdi_reply_kind *kind)
{
	*msg = r->msg;
	*len = r->msg_len;
	*kind = r->kind;
}

/* ------------------------------------------------------------------------ */
/* Public accessors                                                         */
/* ------------------------------------------------------------------------ */

size_t finderd_reply_file_count(const struct finderd_reply *reply)
{
	return reply->n_files;
}

const struct finderd_cached_file *finderd_reply_file(const struct finderd_reply *reply, size_t i)
{
	return i < reply->n_files ? &reply->files[i] : NULL;
}

uint32_t finderd_reply_planned_directories(const struct finderd_reply *reply)
{
	return reply->planned_directories;
}

size_t finderd_reply_dir_count(const struct finderd_reply *reply)
{
	return reply->n_dirs;
}

const struct finderd_dir *finderd_reply_dir(const struct finderd_reply *reply, size_t i)
{
	return i < reply->n_dirs ? &reply->dirs[i] : NULL;
}

int finderd_dir_entries(struct finderd_reply *reply, size_t i,
			const struct finderd_entry **entries, size_t *n)
{
	struct dir_raw *raw;
	struct finderd_entry *e;
	int ret;

	if (i >= reply->n_dirs)
		return -ERANGE;
	raw = &reply->raw[i];
	if (!raw->decoded) {
		e = fdi_calloc(&reply->alloc, raw->n_entries, sizeof(*e));
		if (!e)
			return -ENOMEM;
		ret = decode_entries(raw, e);
		if (ret) {
			fdi_free(&reply->alloc, e);
			return ret;
		}
		raw->entries = e;
		raw->decoded = 1;
	}
	*entries = raw->entries;
	*n = raw->n_entries;
	return 0;
}

const struct finderd_genfile_info *finderd_reply_genfile(const struct finderd_reply *reply)
{
	return &reply->genfile;
}

struct finderd_str finderd_reply_daemon_version(const struct finderd_reply *reply)
{
	return reply->daemon_version;
}

void finderd_reply_free(struct finderd_reply *reply)
{
	if (!reply)
		return;
	fdi_free(&reply->alloc, reply->buf);
	reply_release(reply);
}
