/*
 * pb.c - protobuf wire format: reading fields, encoding requests, decoding
 * StatsReply and HealthCheckResponse.
 */
#include <errno.h>
#include <string.h>

#include "finderd_fields.h"
#include "pb.h"

FDI_STATIC_ASSERT(FINDERD_HEALTH_UNKNOWN == FDI_VALUE_SERVING_STATUS_UNKNOWN, health_unknown);
FDI_STATIC_ASSERT(FINDERD_HEALTH_SERVING == FDI_VALUE_SERVING_STATUS_SERVING, health_serving);
FDI_STATIC_ASSERT(FINDERD_HEALTH_NOT_SERVING == FDI_VALUE_SERVING_STATUS_NOT_SERVING,
		  health_not_serving);
FDI_STATIC_ASSERT(FINDERD_HEALTH_SERVICE_UNKNOWN == FDI_VALUE_SERVING_STATUS_SERVICE_UNKNOWN,
		  health_service_unknown);

/* ------------------------------------------------------------------------ */
/* Reading                                                                  */
/* ------------------------------------------------------------------------ */

int fdi_pb_varint(const uint8_t **pp, const uint8_t *end, uint64_t *v)
{
	const uint8_t *p = *pp;
	uint64_t x = 0;
	unsigned i;

	for (i = 0; i < 10; i++) {
		uint8_t b;

		if (p >= end)
			return FINDERD_EPROTOBUF;
		b = *p++;
		/* The tenth byte holds bit 63 only, and ends the varint. */
		if (i == 9 && b > 1)
			return FINDERD_EPROTOBUF;
		x |= (uint64_t)(b & 0x7f) << (7 * i);
		if (!(b & 0x80)) {
			*v = x;
			*pp = p;
			return 0;
		}
	}
	return FINDERD_EPROTOBUF;
}

static uint64_t get_le(const uint8_t *p, unsigned n)
{
	uint64_t v = 0;

	while (n--)
		v = v << 8 | p[n];
	return v;
}

int fdi_pb_next(const uint8_t **pp, const uint8_t *end, struct fdi_pb_field *f)
{
	const uint8_t *p = *pp;
	uint64_t key, len;
	int ret;

	if (p >= end)
		return 0;
	ret = fdi_pb_varint(&p, end, &key);
	if (ret)
		return ret;
	if ((key >> 3) == 0 || (key >> 3) > 0x1fffffffu)
		return FINDERD_EPROTOBUF;
	f->num = (uint32_t)(key >> 3);
	f->wt = (uint8_t)(key & 7);
	f->p = p; /* never NULL: empty for all but LEN fields */
	f->len = 0;
	f->v = 0;
	switch (f->wt) {
	case FDI_PB_VARINT:
		ret = fdi_pb_varint(&p, end, &f->v);
		break;
	case FDI_PB_I64:
	case FDI_PB_I32:
		len = f->wt == FDI_PB_I64 ? 8 : 4;
		if (len > (uint64_t)(end - p))
			return FINDERD_EPROTOBUF;
		f->v = get_le(p, (unsigned)len);
		p += len;
		break;
	case FDI_PB_LEN:
		ret = fdi_pb_varint(&p, end, &len);
		if (ret)
			return ret;
		if (len > (uint64_t)(end - p))
			return FINDERD_EPROTOBUF;
		f->p = p;
		f->len = (size_t)len;
		p += len;
		break;
	default:
		/* Groups (3, 4) are not proto3; 6 and 7 do not exist. */
		return FINDERD_EPROTOBUF;
	}
	if (ret)
		return ret;
	*pp = p;
	return 1;
}

int fdi_pb_get_u64(const struct fdi_pb_field *f, uint64_t *out)
{
	if (f->wt != FDI_PB_VARINT)
		return FINDERD_EPROTOBUF;
	*out = f->v;
	return 0;
}

/* uint32 and enum fields keep the low 32 bits, as protobuf parsers do. */
int fdi_pb_get_u32(const struct fdi_pb_field *f, uint32_t *out)
{
	if (f->wt != FDI_PB_VARINT)
		return FINDERD_EPROTOBUF;
	*out = (uint32_t)f->v;
	return 0;
}

/* Two's complement reinterpretation without implementation-defined casts. */
int fdi_pb_get_i32(const struct fdi_pb_field *f, int32_t *out)
{
	uint32_t u = (uint32_t)f->v;

	if (f->wt != FDI_PB_VARINT)
		return FINDERD_EPROTOBUF;
	*out = u <= INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
	return 0;
}

int fdi_pb_get_i64(const struct fdi_pb_field *f, int64_t *out)
{
	uint64_t u = f->v;

	if (f->wt != FDI_PB_VARINT)
		return FINDERD_EPROTOBUF;
	*out = u <= INT64_MAX ? (int64_t)u : -(int64_t)(~u) - 1;
	return 0;
}

int fdi_pb_get_str(const struct fdi_pb_field *f, struct finderd_str *out)
{
	if (f->wt != FDI_PB_LEN)
		return FINDERD_EPROTOBUF;
	out->data = (const char *)f->p;
	out->len = f->len;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Writing                                                                  */
/* ------------------------------------------------------------------------ */

/* A writer that only counts when @p is NULL: encoders run twice, first to
 * size the message (and nested lengths), then to write it. */
struct pbw {
	uint8_t *p;
	size_t n;
};

static void w_raw(struct pbw *w, const void *d, size_t n)
{
	if (w->p && n)
		memcpy(w->p + w->n, d, n);
	w->n += n;
}

static void w_varint(struct pbw *w, uint64_t v)
{
	uint8_t tmp[10];
	size_t n = 0;

	while (v >= 0x80) {
		tmp[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	tmp[n++] = (uint8_t)v;
	w_raw(w, tmp, n);
}

static void w_tag(struct pbw *w, uint32_t num, unsigned wt)
{
	w_varint(w, (uint64_t)num << 3 | wt);
}

/* Always written (elements of repeated bytes). */
static void w_bytes(struct pbw *w, uint32_t num, const void *d, size_t n)
{
	w_tag(w, num, FDI_PB_LEN);
	w_varint(w, n);
	w_raw(w, d, n);
}

/* proto3 singular fields: the default value is not written. */
static void w_opt_bytes(struct pbw *w, uint32_t num, const void *d, size_t n)
{
	if (n)
		w_bytes(w, num, d, n);
}

static void w_opt_cstr(struct pbw *w, uint32_t num, const char *s)
{
	if (s)
		w_opt_bytes(w, num, s, strlen(s));
}

static void w_opt_varint(struct pbw *w, uint32_t num, uint64_t v)
{
	if (v) {
		w_tag(w, num, FDI_PB_VARINT);
		w_varint(w, v);
	}
}

static void w_strs(struct pbw *w, uint32_t num, const struct finderd_str *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		w_bytes(w, num, s[i].data, s[i].len);
}

static int check_strs(const struct finderd_str *s, size_t n)
{
	size_t i;

	if (n && !s)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (s[i].len && !s[i].data)
			return -EINVAL;
	return 0;
}

/* Size with @w counting, then write into @b. */
typedef void (*encode_fn)(struct pbw *w, const void *arg);

static int encode(struct fdi_buf *b, const struct fdi_alloc *a, encode_fn fn, const void *arg)
{
	struct pbw w = { NULL, 0 };
	int ret;

	fn(&w, arg);
	if (w.n == 0)
		return 0;
	if (w.n > UINT32_MAX)
		return FINDERD_ETOOBIG;
	ret = fdi_buf_reserve(b, a, w.n);
	if (ret)
		return ret;
	w.p = b->data + b->len;
	w.n = 0;
	fn(&w, arg);
	b->len += w.n;
	return 0;
}

/* finderd.v1.Interpreter */
static void w_interpreter_fields(struct pbw *w, const struct finderd_interpreter *in)
{
	w_opt_cstr(w, FDI_FIELD_INTERPRETER_IMPLEMENTATION, in->implementation);
	w_opt_cstr(w, FDI_FIELD_INTERPRETER_VERSION, in->version);
	w_opt_cstr(w, FDI_FIELD_INTERPRETER_CACHE_TAG, in->cache_tag);
	w_strs(w, FDI_FIELD_INTERPRETER_SOURCE_SUFFIXES, in->source_suffixes,
	       in->n_source_suffixes);
	w_strs(w, FDI_FIELD_INTERPRETER_BYTECODE_SUFFIXES, in->bytecode_suffixes,
	       in->n_bytecode_suffixes);
	w_strs(w, FDI_FIELD_INTERPRETER_EXTENSION_SUFFIXES, in->extension_suffixes,
	       in->n_extension_suffixes);
}

struct snapshot_args {
	const struct finderd_snapshot_request *req;
	uint64_t mount_namespace;
};

/* finderd.v1.SnapshotRequest */
static void w_snapshot(struct pbw *w, const void *arg)
{
	const struct snapshot_args *s = arg;
	const struct finderd_snapshot_request *r = s->req;

	w_opt_varint(w, FDI_FIELD_SNAPSHOT_REQUEST_PROTOCOL_VERSION, FINDERD_PROTOCOL_VERSION);
	if (r->interpreter) {
		struct pbw count = { NULL, 0 };

		w_interpreter_fields(&count, r->interpreter);
		w_tag(w, FDI_FIELD_SNAPSHOT_REQUEST_INTERPRETER, FDI_PB_LEN);
		w_varint(w, count.n);
		w_interpreter_fields(w, r->interpreter);
	}
	w_strs(w, FDI_FIELD_SNAPSHOT_REQUEST_SYS_PATH, r->sys_path, r->n_sys_path);
	w_opt_bytes(w, FDI_FIELD_SNAPSHOT_REQUEST_PROGRAM_KEY, r->program_key.data,
		    r->program_key.len);
	w_opt_varint(w, FDI_FIELD_SNAPSHOT_REQUEST_PREFETCH_BYTES, r->prefetch_bytes);
	w_opt_varint(w, FDI_FIELD_SNAPSHOT_REQUEST_BYTECODE_BYTES, r->bytecode_bytes);
	w_opt_varint(w, FDI_FIELD_SNAPSHOT_REQUEST_MOUNT_NAMESPACE, s->mount_namespace);
}

int fdi_pb_encode_snapshot(struct fdi_buf *b, const struct fdi_alloc *a,
			   const struct finderd_snapshot_request *req, uint64_t mount_namespace)
{
	const struct finderd_interpreter *in = req->interpreter;
	struct snapshot_args args = { req, mount_namespace };

	if (check_strs(req->sys_path, req->n_sys_path) ||
	    (req->program_key.len && !req->program_key.data))
		return -EINVAL;
	if (in && (check_strs(in->source_suffixes, in->n_source_suffixes) ||
		   check_strs(in->bytecode_suffixes, in->n_bytecode_suffixes) ||
		   check_strs(in->extension_suffixes, in->n_extension_suffixes)))
		return -EINVAL;
	return encode(b, a, w_snapshot, &args);
}

/* finderd.v1.LookupRequest; known_generations packed (proto3's default). */
static void w_lookup(struct pbw *w, const void *arg)
{
	const struct fdi_lookup_args *l = arg;
	size_t i;

	w_opt_varint(w, FDI_FIELD_LOOKUP_REQUEST_PROTOCOL_VERSION, FINDERD_PROTOCOL_VERSION);
	w_strs(w, FDI_FIELD_LOOKUP_REQUEST_PATHS, l->paths, l->n);
	if (l->known && l->n) {
		struct pbw count = { NULL, 0 };

		for (i = 0; i < l->n; i++)
			w_varint(&count, l->known[i]);
		w_tag(w, FDI_FIELD_LOOKUP_REQUEST_KNOWN_GENERATIONS, FDI_PB_LEN);
		w_varint(w, count.n);
		for (i = 0; i < l->n; i++)
			w_varint(w, l->known[i]);
	}
	w_opt_varint(w, FDI_FIELD_LOOKUP_REQUEST_KNOWN_EPOCH, l->epoch);
	w_opt_varint(w, FDI_FIELD_LOOKUP_REQUEST_MOUNT_NAMESPACE, l->mount_namespace);
}

int fdi_pb_encode_lookup(struct fdi_buf *b, const struct fdi_alloc *a,
			 const struct fdi_lookup_args *l)
{
	if (check_strs(l->paths, l->n))
		return -EINVAL;
	return encode(b, a, w_lookup, l);
}

struct report_args {
	const struct finderd_report_request *req;
	uint64_t mount_namespace;
};

/* finderd.v1.ReportRequest */
static void w_report(struct pbw *w, const void *arg)
{
	const struct report_args *r = arg;
	const struct finderd_report_request *req = r->req;

	w_opt_varint(w, FDI_FIELD_REPORT_REQUEST_PROTOCOL_VERSION, FINDERD_PROTOCOL_VERSION);
	w_opt_bytes(w, FDI_FIELD_REPORT_REQUEST_PROGRAM_KEY, req->program_key.data,
		    req->program_key.len);
	w_strs(w, FDI_FIELD_REPORT_REQUEST_DIRECTORIES, req->directories, req->n_directories);
	w_strs(w, FDI_FIELD_REPORT_REQUEST_BYTECODE_FILES, req->bytecode_files,
	       req->n_bytecode_files);
	w_opt_varint(w, FDI_FIELD_REPORT_REQUEST_MOUNT_NAMESPACE, r->mount_namespace);
}

int fdi_pb_encode_report(struct fdi_buf *b, const struct fdi_alloc *a,
			 const struct finderd_report_request *req, uint64_t mount_namespace)
{
	struct report_args args = { req, mount_namespace };

	if (check_strs(req->directories, req->n_directories) ||
	    check_strs(req->bytecode_files, req->n_bytecode_files) ||
	    (req->program_key.len && !req->program_key.data))
		return -EINVAL;
	return encode(b, a, w_report, &args);
}

/* grpc.health.v1.HealthCheckRequest */
static void w_health(struct pbw *w, const void *arg)
{
	w_opt_cstr(w, FDI_FIELD_HEALTH_CHECK_REQUEST_SERVICE, arg);
}

int fdi_pb_encode_health(struct fdi_buf *b, const struct fdi_alloc *a, const char *service)
{
	return encode(b, a, w_health, service);
}

/* ------------------------------------------------------------------------ */
/* Small replies                                                            */
/* ------------------------------------------------------------------------ */

/* finderd.v1.Histogram */
static int decode_histogram(const struct fdi_pb_field *outer, struct finderd_histogram *h)
{
	uint64_t *slot[FDI_FIELD_HISTOGRAM_P99_US + 1] = {
		[FDI_FIELD_HISTOGRAM_COUNT] = &h->count,
		[FDI_FIELD_HISTOGRAM_SUM_US] = &h->sum_us,
		[FDI_FIELD_HISTOGRAM_MAX_US] = &h->max_us,
		[FDI_FIELD_HISTOGRAM_P50_US] = &h->p50_us,
		[FDI_FIELD_HISTOGRAM_P99_US] = &h->p99_us,
	};
	const uint8_t *p, *end;
	struct fdi_pb_field f;
	int ret;

	if (outer->wt != FDI_PB_LEN)
		return FINDERD_EPROTOBUF;
	p = outer->p;
	end = p + outer->len;
	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		if (f.num < FDI_ARRAY_SIZE(slot) && slot[f.num] &&
		    (ret = fdi_pb_get_u64(&f, slot[f.num])))
			return ret;
	}
	return ret;
}

static int stats_field(const struct fdi_pb_field *f, struct finderd_stats *s)
{
	/* Sized by the highest of these fields: a renumbered one that does not
	 * fit is a compile error. */
	uint64_t *u64[FDI_FIELD_STATS_REPLY_CRAWLS_URING + 1] = {
		[FDI_FIELD_STATS_REPLY_UPTIME_MS] = &s->uptime_ms,
		[FDI_FIELD_STATS_REPLY_ROOTS] = &s->roots,
		[FDI_FIELD_STATS_REPLY_DIRECTORIES] = &s->directories,
		[FDI_FIELD_STATS_REPLY_ENTRIES] = &s->entries,
		[FDI_FIELD_STATS_REPLY_INDEX_BYTES] = &s->index_bytes,
		[FDI_FIELD_STATS_REPLY_WATCHES] = &s->watches,
		[FDI_FIELD_STATS_REPLY_INOTIFY_EVENTS] = &s->inotify_events,
		[FDI_FIELD_STATS_REPLY_OVERFLOWS] = &s->overflows,
		[FDI_FIELD_STATS_REPLY_DEGRADED_ROOTS] = &s->degraded_roots,
		[FDI_FIELD_STATS_REPLY_SNAPSHOT_REQUESTS] = &s->snapshot_requests,
		[FDI_FIELD_STATS_REPLY_LOOKUP_REQUESTS] = &s->lookup_requests,
		[FDI_FIELD_STATS_REPLY_DIRECTORIES_SERVED] = &s->directories_served,
		[FDI_FIELD_STATS_REPLY_DIRECTORIES_NOT_SERVED] = &s->directories_not_served,
		[FDI_FIELD_STATS_REPLY_DIRECTORIES_UNCHANGED] = &s->directories_unchanged,
		[FDI_FIELD_STATS_REPLY_HITS] = &s->hits,
		[FDI_FIELD_STATS_REPLY_MISSES] = &s->misses,
		[FDI_FIELD_STATS_REPLY_REJECTED_REQUESTS] = &s->rejected_requests,
		[FDI_FIELD_STATS_REPLY_CRAWLS_SYNC] = &s->crawls_sync,
		[FDI_FIELD_STATS_REPLY_CRAWLS_URING] = &s->crawls_uring,
	};
	struct finderd_str v;
	int ret;

	switch (f->num) {
	case FDI_FIELD_STATS_REPLY_DAEMON_VERSION:
		ret = fdi_pb_get_str(f, &v);
		if (!ret) {
			size_t n = FDI_MIN(v.len, sizeof(s->daemon_version) - 1);

			memcpy(s->daemon_version, v.data, n);
			s->daemon_version[n] = '\0';
		}
		return ret;
	case FDI_FIELD_STATS_REPLY_PID:
		return fdi_pb_get_u32(f, &s->pid);
	case FDI_FIELD_STATS_REPLY_BARRIER_LATENCY:
		return decode_histogram(f, &s->barrier_latency);
	case FDI_FIELD_STATS_REPLY_REFRESH_LATENCY:
		return decode_histogram(f, &s->refresh_latency);
	case FDI_FIELD_STATS_REPLY_REQUEST_LATENCY:
		return decode_histogram(f, &s->request_latency);
	}
	if (f->num < FDI_ARRAY_SIZE(u64) && u64[f->num])
		return fdi_pb_get_u64(f, u64[f->num]);
	return 0;
}

int fdi_pb_decode_stats(const uint8_t *p, size_t len, struct finderd_stats *out)
{
	const uint8_t *end = p + len;
	struct fdi_pb_field f;
	int ret;

	memset(out, 0, sizeof(*out));
	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		ret = stats_field(&f, out);
		if (ret)
			return ret;
	}
	return ret;
}

int fdi_pb_decode_health(const uint8_t *p, size_t len, int *status)
{
	const uint8_t *end = p + len;
	struct fdi_pb_field f;
	uint32_t v = 0;
	int ret;

	while ((ret = fdi_pb_next(&p, end, &f)) > 0) {
		if (f.num == FDI_FIELD_HEALTH_CHECK_RESPONSE_STATUS &&
		    (ret = fdi_pb_get_u32(&f, &v)))
			return ret;
	}
	if (ret)
		return ret;
	*status = v <= FDI_VALUE_SERVING_STATUS_SERVICE_UNKNOWN ? (int)v : FINDERD_HEALTH_UNKNOWN;
	return 0;
}
