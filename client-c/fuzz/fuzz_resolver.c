/*
 * fuzz_resolver.c - libFuzzer target: the resolver absorbing a hostile
 * SnapshotReply and answering stat()/listdir() questions from it.
 *
 * The input is a SnapshotReply. The harness appends a GenerationFile field
 * naming a file it owns (the last occurrence of each field wins), so that no
 * input makes the resolver open a file of its choosing, and stores every
 * directory's generation in its slot, so that the records are trusted. Then
 * it asks about each directory of the reply, each entry, and paths around
 * them ("." components, a component below a file, a missing one). The
 * client has no connection: a question that needs a Lookup ends it, as a
 * transport error would, so those come last.
 *
 * Checked: no crash, leak or undefined behaviour; every answer is 0,
 * -ENOENT, -ENOTDIR or FINDERD_ENOTSERVED, whatever the reply says.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "finderd.h"
#include "reply.h"
#include "resolver.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SLOTS 64u
#define MAX_DIRS 8
#define MAX_NAMES 8
#define MAX_PATH 300

static char gen_path[64];
static uint64_t *gen_words; /* the mapped file: header, then slots */
static uint8_t gen_field[128];
static size_t gen_field_len;

static size_t put_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	while (v >= 0x80) {
		p[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	p[n++] = (uint8_t)v;
	return n;
}

/* SnapshotReply.generations (field 3): our file, epoch 1, SLOTS slots, a
 * lease that never ends. */
static void make_gen_field(void)
{
	uint8_t inner[100];
	size_t n = 0, plen = strlen(gen_path);

	inner[n++] = 0x0a; /* path */
	n += put_varint(inner + n, plen);
	memcpy(inner + n, gen_path, plen);
	n += plen;
	inner[n++] = 0x10; /* epoch */
	n += put_varint(inner + n, 1);
	inner[n++] = 0x18; /* slots */
	n += put_varint(inner + n, SLOTS);
	inner[n++] = 0x20; /* lease_ns */
	n += put_varint(inner + n, UINT64_MAX);
	gen_field[0] = 0x1a;
	gen_field_len = 1 + put_varint(gen_field + 1, n);
	memcpy(gen_field + gen_field_len, inner, n);
	gen_field_len += n;
}

static void remove_gen_file(void)
{
	unlink(gen_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	size_t bytes = 64 + SLOTS * 8;
	int fd;

	(void)argc;
	(void)argv;
	snprintf(gen_path, sizeof(gen_path), "/tmp/finderd-fuzz-gen-XXXXXX");
	fd = mkstemp(gen_path);
	if (fd < 0 || ftruncate(fd, (off_t)bytes) != 0)
		abort();
	atexit(remove_gen_file);
	gen_words = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (gen_words == MAP_FAILED)
		abort();
	gen_words[0] = UINT64_C(0x314E4547444E4946);      /* "FINDGEN1" */
	gen_words[1] = 1u | (uint64_t)SLOTS << 32;        /* version, slots (LE) */
	gen_words[2] = 1;                                 /* epoch */
	gen_words[3] = 0;                                 /* dry_ns */
	gen_words[4] = UINT64_MAX;                        /* lease_ns */
	make_gen_field();
	return 0;
}

struct question {
	char path[MAX_PATH];
	size_t len;
	int has_entry;   /* the path of a listing entry */
	int may_look_up; /* below an entry: its directory may not be held */
};

static void check_answer(int ret)
{
	if (ret != 0 && ret != -ENOENT && ret != -ENOTDIR && ret != FINDERD_ENOTSERVED)
		abort();
}

static void ask_stat(struct finderd_client *c, const struct question *q)
{
	struct finderd_stat st;

	check_answer(finderd_client_stat(c, q->path, q->len, &st));
}

static void ask_listdir(struct finderd_client *c, const char *path, size_t len)
{
	const struct finderd_entry *e;
	size_t n, i, sum = 0;
	int ret = finderd_client_listdir(c, path, len, &e, &n);

	check_answer(ret);
	for (i = 0; ret == 0 && i < n; i++)
		sum += e[i].name.len;
	(void)sum;
}

/* "dir" + sep + name into @q; 0 when it does not fit. */
static int join(struct question *q, const struct finderd_str *dir, const char *sep,
		const struct finderd_str *name)
{
	size_t sl = strlen(sep);

	if (dir->len + sl + name->len >= MAX_PATH)
		return 0;
	memcpy(q->path, dir->data, dir->len);
	memcpy(q->path + dir->len, sep, sl);
	memcpy(q->path + dir->len + sl, name->data, name->len);
	q->len = dir->len + sl + name->len;
	q->has_entry = 0;
	q->may_look_up = 0;
	return 1;
}

/* Copy the questions out of the reply before the client owns it. */
static size_t collect(struct finderd_reply *r, struct question *qs, size_t max)
{
	static const struct finderd_str x = { "x", 1 };
	size_t i, j, n = 0;

	for (i = 0; i < finderd_reply_dir_count(r) && i < MAX_DIRS; i++) {
		const struct finderd_dir *d = finderd_reply_dir(r, i);
		const struct finderd_entry *e;
		size_t ne;

		if (d->slot && d->slot < SLOTS)
			gen_words[8 + d->slot] = d->generation;
		if (n < max && d->path.len < MAX_PATH) {
			memcpy(qs[n].path, d->path.data, d->path.len);
			qs[n].len = d->path.len;
			qs[n].may_look_up = 0;
			qs[n++].has_entry = 0;
		}
		if (finderd_dir_entries(r, i, &e, &ne))
			continue;
		for (j = 0; j < ne && j < MAX_NAMES && n + 3 <= max; j++) {
			if (join(&qs[n], &d->path, "/", &e[j].name))
				qs[n++].has_entry = 1;
			n += join(&qs[n], &d->path, "/./", &e[j].name);
			if (join(&qs[n], &d->path, "/", &e[j].name) && qs[n].len + 2 < MAX_PATH) {
				memcpy(qs[n].path + qs[n].len, "/x", 2);
				qs[n].may_look_up = 1;
				qs[n++].len += 2;
			}
		}
		if (n < max)
			n += join(&qs[n], &d->path, "/", &x);
	}
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct question qs[MAX_DIRS * (MAX_NAMES * 3 + 2)];
	struct finderd_client *c;
	struct finderd_reply *r;
	struct fdi_alloc a;
	uint8_t *msg;
	size_t n, i;

	if (size > 1 << 20)
		return 0;
	fdi_alloc_libc(&a);
	msg = malloc(size + gen_field_len);
	if (!msg)
		return 0;
	memcpy(msg, data, size);
	memcpy(msg + size, gen_field, gen_field_len);
	memset(gen_words + 8, 0, SLOTS * 8);
	if (fdi_reply_decode(&a, msg, msg, size + gen_field_len, FDI_REPLY_SNAPSHOT, &r)) {
		free(msg);
		return 0;
	}
	n = collect(r, qs, sizeof(qs) / sizeof(qs[0]));
	if (fdi_client_new_offline(&a, &c)) {
		finderd_reply_free(r);
		return 0;
	}
	if (fdi_client_absorb(c, r) == 0) {
		/* From memory first; then what may need a Lookup (it fails). */
		for (i = 0; i < n; i++)
			if (!qs[i].may_look_up)
				ask_stat(c, &qs[i]);
		for (i = 0; i < n; i++)
			if (!qs[i].has_entry && !qs[i].may_look_up)
				ask_listdir(c, qs[i].path, qs[i].len);
		for (i = 0; i < n; i++)
			if (qs[i].may_look_up)
				ask_stat(c, &qs[i]);
		for (i = 0; i < n; i++)
			ask_listdir(c, qs[i].path, qs[i].len);
		if (n)
			finderd_client_touch(c, qs[0].path, qs[0].len);
		finderd_client_invalidate(c);
		if (n)
			ask_stat(c, &qs[n - 1]);
	}
	finderd_client_free(c);
	return 0;
}
