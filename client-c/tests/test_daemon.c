/*
 * test_daemon.c - every call against the real daemon: FINDERD_BIN is
 * started on a temporary socket and a temporary tree.
 *
 * Snapshot (names, kinds, sizes, mtimes against stat()), Lookup (UNCHANGED
 * with known generations, fresh after a change), Stats, health, a reply of
 * several MB (100k files), and error statuses.
 */
#define _GNU_SOURCE /* mkfifo, symlink, setenv under -std=c99 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon.h"
#include "finderd.h"
#include "test.h"

static char tmp[] = "/tmp/finderd-daemon-XXXXXX";
static char tree[256], big[256];
static struct test_daemon served;

static void path_in(char *out, const char *dir, const char *name)
{
	snprintf(out, 256, "%s/%s", dir, name);
}

static void write_file(const char *dir, const char *name, size_t size)
{
	char p[256];
	FILE *f;

	path_in(p, dir, name);
	f = fopen(p, "w");
	while (size--)
		fputc('x', f);
	fclose(f);
}

static void make_tree(void)
{
	char p[256], q[256];

	path_in(tree, tmp, "tree");
	mkdir(tree, 0755);
	write_file(tree, "a.py", 10);
	write_file(tree, "b.pyc", 1234);
	write_file(tree, "Z.txt", 0);
	path_in(p, tree, "pkg");
	mkdir(p, 0755);
	write_file(p, "__init__.py", 3);
	path_in(q, tree, "link");
	symlink("pkg", q);
	path_in(q, tree, "dangling");
	symlink("nowhere", q);
	path_in(q, tree, "fifo");
	mkfifo(q, 0644);
}

static void make_big(size_t n)
{
	char p[300];
	size_t i;

	path_in(big, tmp, "big");
	mkdir(big, 0755);
	for (i = 0; i < n; i++) {
		int fd;

		snprintf(p, sizeof(p), "%s/module_%06zu.py", big, i);
		fd = open(p, O_CREAT | O_WRONLY, 0644);
		if (fd >= 0)
			close(fd);
	}
}

static struct finderd_conn *conn(uint32_t call_us)
{
	struct finderd_options o;
	struct finderd_conn *c = NULL;

	finderd_options_init(&o);
	o.socket_path = served.sock;
	o.call_timeout_us = call_us;
	CHECK_INT(finderd_connect(&o, &c), 0);
	return c;
}

static struct finderd_str str(const char *s)
{
	struct finderd_str r = { s, strlen(s) };

	return r;
}

static void check_entry(const struct finderd_entry *e, const char *dir, uint32_t kind)
{
	char p[512];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%.*s", dir, (int)e->name.len, e->name.data);
	CHECK_INT(e->kind, kind);
	if (kind == FINDERD_ENTRY_OTHER && stat(p, &st) != 0)
		return; /* dangling: nothing to compare */
	CHECK_INT(stat(p, &st), 0);
	CHECK_INT(e->mode, st.st_mode);
	CHECK_INT(e->size, st.st_size);
	CHECK_INT(e->mtime_ns, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
}

static void test_health(struct finderd_conn *c)
{
	const char *msg;
	int status = -1;

	CHECK_INT(finderd_health(c, NULL, &status), 0);
	CHECK_INT(status, FINDERD_HEALTH_SERVING);
	CHECK_INT(finderd_health(c, "finderd.v1.Finder", &status), 0);
	CHECK_INT(status, FINDERD_HEALTH_SERVING);
	CHECK_INT(finderd_health(c, "no.such.Service", &status), FINDERD_EGRPC);
	CHECK_INT(finderd_last_status(c, &msg), 5); /* NOT_FOUND */
}

static void test_snapshot_and_lookup(struct finderd_conn *c)
{
	static const char *names[] = { "Z.txt", "a.py", "b.pyc", "dangling", "fifo", "link", "pkg" };
	static const uint32_t kinds[] = { FINDERD_ENTRY_FILE, FINDERD_ENTRY_FILE,
					  FINDERD_ENTRY_FILE, FINDERD_ENTRY_OTHER,
					  FINDERD_ENTRY_OTHER, FINDERD_ENTRY_SYMLINK_DIR,
					  FINDERD_ENTRY_DIR };
	char absent[256];
	struct finderd_str sp[2];
	struct finderd_snapshot_request req = { NULL, sp, 2, { NULL, 0 }, 0, 0 };
	struct finderd_reply *r = NULL, *l = NULL;
	const struct finderd_entry *e;
	const struct finderd_dir *d;
	uint64_t gen = 0, epoch = 0, known[1];
	size_t n, i;
	struct stat st;

	path_in(absent, tmp, "absent");
	sp[0] = str(tree);
	sp[1] = str(absent);
	CHECK_INT(finderd_snapshot(c, &req, &r), 0);
	if (!r)
		return;
	CHECK(finderd_reply_dir_count(r) >= 2);
	CHECK(finderd_reply_daemon_version(r).len > 0);
	epoch = finderd_reply_genfile(r)->epoch;
	CHECK(epoch != 0);
	d = finderd_reply_dir(r, 0);
	CHECK_INT(d->status, FINDERD_DIR_SERVED);
	CHECK_INT(stat(tree, &st), 0);
	CHECK_INT(d->mode, st.st_mode);
	CHECK_INT(d->mtime_ns, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
	gen = d->generation;
	CHECK(gen != 0);
	CHECK_INT(finderd_dir_entries(r, 0, &e, &n), 0);
	CHECK_INT(n, 7);
	for (i = 0; i < n && i < 7; i++) {
		CHECK_BYTES(e[i].name.data, e[i].name.len, names[i]);
		check_entry(&e[i], tree, kinds[i]);
	}
	d = finderd_reply_dir(r, 1);
	CHECK_INT(d->status, FINDERD_DIR_ABSENT);
	CHECK_INT(d->error, ENOENT);
	finderd_reply_free(r);

	/* Revalidation: unchanged, then changed (the barrier sees the new file). */
	known[0] = gen;
	CHECK_INT(finderd_lookup(c, sp, known, epoch, 1, &l), 0);
	if (l) {
		CHECK_INT(finderd_reply_dir_count(l), 1);
		CHECK_INT(finderd_reply_dir(l, 0)->status, FINDERD_DIR_UNCHANGED);
		finderd_reply_free(l);
	}
	write_file(tree, "new.py", 1);
	CHECK_INT(finderd_lookup(c, sp, known, epoch, 1, &l), 0);
	if (l) {
		d = finderd_reply_dir(l, 0);
		CHECK_INT(d->status, FINDERD_DIR_SERVED);
		CHECK(d->generation != gen);
		CHECK_INT(finderd_dir_entries(l, 0, &e, &n), 0);
		CHECK_INT(n, 8);
		finderd_reply_free(l);
	}
	/* Another epoch: the generations are ignored. */
	CHECK_INT(finderd_lookup(c, sp, known, epoch + 1, 1, &l), 0);
	if (l) {
		CHECK_INT(finderd_reply_dir(l, 0)->status, FINDERD_DIR_SERVED);
		finderd_reply_free(l);
	}
}

static void test_errors(struct finderd_conn *c)
{
	struct finderd_str sp[1] = { { "relative/path", 13 } };
	struct finderd_snapshot_request req = { NULL, sp, 1, { NULL, 0 }, 0, 0 };
	struct finderd_reply *r = (struct finderd_reply *)&req;
	const char *msg = NULL;
	int status;

	CHECK_INT(finderd_snapshot(c, &req, &r), FINDERD_EGRPC);
	CHECK(r == NULL);
	CHECK_INT(finderd_last_status(c, &msg), 3); /* INVALID_ARGUMENT */
	CHECK(msg && strstr(msg, "relative/path") != NULL);
	CHECK_INT(finderd_lookup(c, sp, NULL, 0, 1, &r), FINDERD_EGRPC);
	CHECK_INT(finderd_last_status(c, &msg), 3);
	/* The connection still serves. */
	CHECK_INT(finderd_health(c, NULL, &status), 0);
}

static void test_stats(struct finderd_conn *c)
{
	struct finderd_stats s;

	CHECK_INT(finderd_stats(c, &s), 0);
	CHECK(s.daemon_version[0] != '\0');
	CHECK_INT(s.pid, served.pid);
	CHECK(s.snapshot_requests >= 1 && s.lookup_requests >= 3);
	CHECK(s.directories >= 1 && s.entries >= 7);
	CHECK(s.rejected_requests >= 2);
}

static void test_big(struct finderd_conn *c, size_t files)
{
	struct finderd_str sp[1];
	struct finderd_snapshot_request req = { NULL, sp, 1, { NULL, 0 }, 0, 0 };
	struct finderd_reply *r = NULL;
	const struct finderd_entry *e;
	size_t n, i;
	int sorted = 1;

	sp[0] = str(big);
	CHECK_INT(finderd_snapshot(c, &req, &r), 0);
	if (!r)
		return;
	CHECK_INT(finderd_reply_dir(r, 0)->status, FINDERD_DIR_SERVED);
	CHECK_INT(finderd_dir_entries(r, 0, &e, &n), 0);
	CHECK_INT(n, files);
	for (i = 1; i < n; i++)
		sorted &= strncmp(e[i - 1].name.data, e[i].name.data, 16) < 0;
	CHECK(sorted);
	finderd_reply_free(r);
}

static void cleanup(void)
{
	char cmd[300];

	test_daemon_signal(&served, SIGTERM);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp);
}

int main(void)
{
	const char *bin = getenv("FINDERD_BIN");
	const char *nbig = getenv("FINDERD_TEST_BIG_FILES");
	size_t files = nbig ? (size_t)atol(nbig) : 100000;
	struct finderd_conn *c;

	if (!bin || !*bin) {
		fprintf(stderr, "test_daemon: set FINDERD_BIN to the finderd binary\n");
		return 2;
	}
	if (!mkdtemp(tmp))
		return 2;
	make_tree();
	make_big(files);
	path_in(served.sock, tmp, "s.sock");
	if (test_daemon_start(&served, bin)) {
		fprintf(stderr, "test_daemon: %s did not come up on %s\n", bin, served.sock);
		cleanup();
		return 1;
	}
	c = conn(2000000);
	if (c) {
		test_health(c);
		test_snapshot_and_lookup(c);
		test_errors(c);
		test_stats(c);
		finderd_close(c);
	}
	/* The 100k-file crawl takes longer than the 50 ms default. */
	c = conn(30000000);
	if (c) {
		test_big(c, files);
		finderd_close(c);
	}
	cleanup();
	TEST_MAIN_END("test_daemon");
}
