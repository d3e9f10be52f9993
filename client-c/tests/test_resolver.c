/*
 * test_resolver.c - the resolver (struct finderd_client) against the real
 * daemon: FINDERD_BIN is started on a temporary socket over a temporary tree.
 *
 *   - stat()/listdir() answers equal stat()/readdir() of the tree: mode,
 *     size, mtime_ns, kinds, -ENOENT and -ENOTDIR;
 *   - a directory not in the snapshot costs exactly one Lookup, nested
 *     levels included; everything below it then none;
 *   - trust through the generation file: a change made after the snapshot
 *     moves the directory's slot, and the next answer is fresh;
 *   - finderd_client_invalidate() revalidates in one Lookup, unchanged
 *     directories keep their listing;
 *   - "." components under a held directory; non-canonical paths are
 *     FINDERD_ENOTSERVED without a Lookup;
 *   - a daemon out of generation slots: what it cannot vouch for goes to the
 *     filesystem without a Lookup per question;
 *   - a daemon stopped or killed mid-life: answers become
 *     FINDERD_ENOTSERVED, no crash, no wait past the call deadline; reconnect
 *     attempts bounded by pauses; served again, exactly, once it is back
 *     (after fork() too), nothing kept from the old daemon;
 *   - a daemon of another user is refused unless it is the daemon user;
 *   - allocation failures at every allocation of a session.
 */
#define _GNU_SOURCE /* mkfifo, symlink, setenv under -std=c99 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "finderd.h"
#include "sock.h"
#include "failalloc.h"
#include "test.h"

#define CALL_US 2000000  /* room for slow machines, valgrind and sanitizers */
#define LEASE_US 200000  /* the daemon's default lease */

static char tmp[] = "/tmp/finderd-resolver-XXXXXX";
static char root[256], missing[256];
static const char *bin;
static struct test_daemon daemon_a;

/* ------------------------------------------------------------ the tree */

static const char *in(const char *dir, const char *name)
{
	static char bufs[8][512];
	static int next;
	char *p = bufs[next++ % 8];

	snprintf(p, 512, "%s/%s", dir, name);
	return p;
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static void append_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "a");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

static void make_tree(void)
{
	snprintf(root, sizeof(root), "%s/root", tmp);
	snprintf(missing, sizeof(missing), "%s/missing", tmp);
	mkdir(root, 0755);
	write_file(in(root, "a.py"), "print(1)\n");
	write_file(in(root, "b.pyc"), "0123456789012345678901234567890123456789");
	mkdir(in(root, "pkg"), 0755);
	write_file(in(root, "pkg/__init__.py"), "");
	write_file(in(root, "pkg/mod.py"), "x = 1\n");
	mkdir(in(root, "pkg/sub"), 0750);
	write_file(in(root, "pkg/sub/deep.py"), "y = 2\n");
	mkdir(in(root, "pkg/sub/more"), 0755);
	write_file(in(root, "pkg/sub/more/leaf.py"), "z = 3\n");
	mkdir(in(root, "nspkg"), 0755);
	write_file(in(root, "nspkg/part.py"), "");
	mkdir(in(root, "empty"), 0700);
	if (symlink("pkg", in(root, "link")) || symlink("a.py", in(root, "flink.py")) ||
	    symlink("nowhere", in(root, "dangling")) || mkfifo(in(root, "fifo"), 0644))
		fprintf(stderr, "test_resolver: could not make the tree\n");
	chmod(in(root, "b.pyc"), 0600);
}

/* A client of @sock holding the snapshot of root and missing; @pause_us:
 * its first reconnect pause (0: the library's). */
static struct finderd_client *client_with(const char *sock, uint32_t connect_us, uint32_t call_us,
					  uint32_t pause_us)
{
	struct finderd_str sp[2] = { { root, strlen(root) }, { missing, strlen(missing) } };
	struct finderd_snapshot_request req = { NULL, sp, 2, { NULL, 0 }, 0, 0 };
	struct finderd_options o;
	struct finderd_client *c = NULL;

	finderd_options_init(&o);
	o.socket_path = sock;
	o.connect_timeout_us = connect_us;
	o.call_timeout_us = call_us;
	o.reconnect_min_us = pause_us;
	o.reconnect_max_us = pause_us * 10;
	CHECK_INT(finderd_client_new(&o, &c), 0);
	if (c)
		CHECK_INT(finderd_client_snapshot(c, &req), 0);
	return c;
}

static struct finderd_client *new_client(const char *sock, uint32_t call_us)
{
	return client_with(sock, CALL_US, call_us, 0);
}

static uint64_t lookups(struct finderd_client *c)
{
	struct finderd_client_counters k;

	finderd_client_counters(c, &k);
	return k.lookups;
}

static int64_t mtime_ns(const struct stat *st)
{
	return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* ------------------------------------------------------------ agreement */

/* stat(@path) through the resolver equals stat(2); FINDERD_ENOTSERVED is
 * accepted only with @may_refuse. */
#define AGREE(c, path, may_refuse) agree(c, path, may_refuse, __LINE__)

static void agree(struct finderd_client *c, const char *path, int may_refuse, int line)
{
	struct finderd_stat fs;
	struct stat st;
	int want = stat(path, &st) == 0 ? 0 : -errno;
	int got = finderd_client_stat(c, path, strlen(path), &fs);

	test_checks++;
	if (got == FINDERD_ENOTSERVED && may_refuse)
		return;
	if (got != want) {
		test_failures++;
		fprintf(stderr, "%s:%d: stat(%s): %d (%s), stat(2) says %d\n", __FILE__, line, path,
			got, finderd_strerror(got), want);
		return;
	}
	if (got == 0 && (fs.mode != st.st_mode || fs.size != (uint64_t)st.st_size ||
			 fs.mtime_ns != mtime_ns(&st))) {
		test_failures++;
		fprintf(stderr, "%s:%d: stat(%s): mode %o size %llu mtime %lld, stat(2) says "
				"%o %llu %lld\n", __FILE__, line, path, fs.mode,
			(unsigned long long)fs.size, (long long)fs.mtime_ns, st.st_mode,
			(unsigned long long)st.st_size, (long long)mtime_ns(&st));
	}
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* listdir(@path) through the resolver equals readdir(3): the same names in
 * byte order, each entry with stat(2)'s fingerprint and kind (but for
 * symlinks' with @skip_links). */
#define AGREE_DIR(c, path) agree_dir(c, path, 0, __LINE__)

static void agree_dir(struct finderd_client *c, const char *path, int skip_links, int line)
{
	const struct finderd_entry *e = NULL;
	char *names[64];
	size_t n = 0, got_n = 0, i;
	struct dirent *de;
	DIR *d = opendir(path);
	int want = d ? 0 : -errno;
	int got = finderd_client_listdir(c, path, strlen(path), &e, &got_n);

	CHECK_INT(got, want);
	if (!d)
		return;
	while ((de = readdir(d)) && n < 64)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			names[n++] = strdup(de->d_name);
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_names);
	if (got == 0) {
		if (got_n != n)
			fprintf(stderr, "%s:%d: listdir(%s)\n", __FILE__, line, path);
		CHECK_INT(got_n, n);
	}
	for (i = 0; got == 0 && i < n && i < got_n; i++) {
		struct stat st;
		const char *p = in(path, names[i]);
		int ok = stat(p, &st) == 0;
		uint32_t kind = !ok ? FINDERD_ENTRY_OTHER
			      : S_ISREG(st.st_mode) ? FINDERD_ENTRY_FILE
			      : !S_ISDIR(st.st_mode) ? FINDERD_ENTRY_OTHER
			      : lstat(p, &st) == 0 && S_ISLNK(st.st_mode) ? FINDERD_ENTRY_SYMLINK_DIR
			      : FINDERD_ENTRY_DIR;

		CHECK_BYTES(e[i].name.data, e[i].name.len, names[i]);
		CHECK_INT(e[i].kind, kind);
		if (skip_links && lstat(p, &st) == 0 && S_ISLNK(st.st_mode))
			continue;
		if (ok && stat(p, &st) == 0) {
			CHECK_INT(e[i].mode, st.st_mode);
			CHECK_INT(e[i].size, st.st_size);
			CHECK_INT(e[i].mtime_ns, mtime_ns(&st));
		}
	}
	for (i = 0; i < n; i++)
		free(names[i]);
}

static void test_agreement(struct finderd_client *c)
{
	static const char *paths[] = {
		"a.py", "b.pyc", "pkg", "pkg/__init__.py", "pkg/mod.py", "pkg/sub",
		"pkg/sub/deep.py", "pkg/sub/more/leaf.py", "nspkg", "nspkg/part.py", "empty",
		"link", "link/mod.py", "flink.py", "fifo", "nope", "nope.py", "a.py/x",
		"pkg/nope/x", "pkg/mod.py/x", "empty/x", "link/sub/more/leaf.py",
	};
	size_t i;

	AGREE(c, root, 0);
	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		AGREE(c, in(root, paths[i]), 0);
	/* A dangling symlink: stat(2) says ENOENT, a loop ELOOP; the resolver
	 * lets the filesystem say which. */
	AGREE(c, in(root, "dangling"), 1);
	AGREE(c, missing, 0);
	AGREE(c, in(missing, "x"), 0);
	AGREE(c, in(missing, "x/y/z"), 0);
	AGREE_DIR(c, root);
	AGREE_DIR(c, in(root, "pkg"));
	AGREE_DIR(c, in(root, "pkg/sub"));
	AGREE_DIR(c, in(root, "pkg/sub/more"));
	AGREE_DIR(c, in(root, "link"));
	AGREE_DIR(c, in(root, "empty"));
	AGREE_DIR(c, in(root, "nspkg"));
	AGREE_DIR(c, in(root, "nope"));
	AGREE_DIR(c, in(root, "a.py"));
	AGREE_DIR(c, missing);
}

/* ------------------------------------------------------------ round trips */

static void test_one_lookup_per_directory(void)
{
	struct finderd_client *c = new_client(daemon_a.sock, CALL_US);
	struct finderd_stat st;
	const struct finderd_entry *e;
	size_t n;

	if (!c)
		return;
	CHECK_INT(lookups(c), 0);
	/* Answered from the snapshot's listing of root. */
	CHECK_INT(finderd_client_stat(c, in(root, "a.py"), strlen(in(root, "a.py")), &st), 0);
	CHECK_INT(finderd_client_stat(c, in(root, "pkg"), strlen(in(root, "pkg")), &st), 0);
	CHECK_INT(finderd_client_stat(c, in(root, "no/x.py"), strlen(in(root, "no/x.py")), &st),
		  -ENOENT);
	CHECK_INT(lookups(c), 0);
	/* pkg is not held: one Lookup, then nothing more under it. */
	AGREE(c, in(root, "pkg/__init__.py"), 0);
	CHECK_INT(lookups(c), 1);
	AGREE(c, in(root, "pkg/mod.py"), 0);
	AGREE(c, in(root, "pkg/nope.py"), 0);
	CHECK_INT(finderd_client_listdir(c, in(root, "pkg"), strlen(in(root, "pkg")), &e, &n), 0);
	CHECK_INT(n, 3);
	CHECK_INT(lookups(c), 1);
	/* Two levels below a held directory: still one Lookup. */
	AGREE(c, in(root, "pkg/sub/more/leaf.py"), 0);
	CHECK_INT(lookups(c), 2);
	AGREE(c, in(root, "pkg/sub/deep.py"), 0);
	AGREE(c, in(root, "pkg/sub/more/nope.py"), 0);
	CHECK_INT(lookups(c), 2);
	/* What the listings rule out costs nothing. */
	AGREE(c, in(root, "a.py/x/y"), 0);
	AGREE(c, in(root, "nothere/x/y/z.py"), 0);
	AGREE(c, in(missing, "pkg/x.py"), 0);
	CHECK_INT(lookups(c), 2);
	/* Not under anything held: the filesystem answers, no Lookup. */
	CHECK_INT(finderd_client_stat(c, tmp, strlen(tmp), &st), FINDERD_ENOTSERVED);
	CHECK_INT(finderd_client_stat(c, "/", 1, &st), FINDERD_ENOTSERVED);
	CHECK_INT(lookups(c), 2);
	/* A directory outside every held one: listdir asks once. */
	CHECK_INT(finderd_client_listdir(c, tmp, strlen(tmp), &e, &n), 0);
	CHECK_INT(lookups(c), 3);
	CHECK_INT(finderd_client_listdir(c, tmp, strlen(tmp), &e, &n), 0);
	CHECK_INT(lookups(c), 3);
	finderd_client_free(c);
}

/*
 * FINDERD_CLIENT_NO_ROUND_TRIPS: what is held and trusted is answered as
 * usual; what would cost a Lookup (a directory not held, a listing to
 * revalidate) is FINDERD_ENOTSERVED, and the client is not given up:
 * without the flag the same question is answered after one Lookup.
 */
static void test_no_round_trips(void)
{
	struct finderd_client *c = new_client(daemon_a.sock, CALL_US);
	struct finderd_client_counters counters;
	const struct finderd_entry *e;
	struct finderd_stat st;
	const char *deep = in(root, "pkg/sub/deep.py");
	size_t n;

	if (!c)
		return;
	CHECK_INT(finderd_client_set_flags(c, 0x80u), -EINVAL);
	CHECK_INT(finderd_client_set_flags(c, FINDERD_CLIENT_NO_ROUND_TRIPS), 0);
	AGREE(c, in(root, "a.py"), 0);
	AGREE(c, in(root, "nope.py"), 0);
	AGREE(c, in(root, "a.py/x"), 0);
	CHECK_INT(finderd_client_stat(c, deep, strlen(deep), &st), FINDERD_ENOTSERVED);
	CHECK_INT(finderd_client_listdir(c, tmp, strlen(tmp), &e, &n), FINDERD_ENOTSERVED);
	/* A listing that needs revalidation is not revalidated either. */
	finderd_client_invalidate(c);
	CHECK_INT(finderd_client_stat(c, in(root, "a.py"), strlen(in(root, "a.py")), &st),
		  FINDERD_ENOTSERVED);
	finderd_client_counters(c, &counters);
	CHECK_INT(counters.lookups, 0);
	CHECK_INT(counters.revalidations, 0);
	/* Cleared: the same questions cost their round trips, and are answered. */
	CHECK_INT(finderd_client_set_flags(c, 0), 0);
	AGREE(c, in(root, "a.py"), 0);
	AGREE(c, deep, 0);
	CHECK_INT(finderd_client_listdir(c, tmp, strlen(tmp), &e, &n), 0);
	finderd_client_counters(c, &counters);
	CHECK_INT(counters.lookups, 3);
	finderd_client_free(c);
}

/* ------------------------------------------------------------ fork */

/*
 * After fork() both processes ask questions that need round trips: the
 * child on a connection of its own (finderd_client_after_fork()), the parent
 * on the one they used to share. Neither may see the other's frames.
 */
static void test_after_fork(void)
{
	struct finderd_client *c = new_client(daemon_a.sock, CALL_US);
	const struct finderd_entry *e;
	int status = -1;
	size_t n;
	pid_t pid;

	if (!c)
		return;
	pid = fork();
	if (pid == 0) {
		int ok;

		finderd_client_after_fork(c);
		ok = finderd_client_listdir(c, in(root, "pkg"), strlen(in(root, "pkg")), &e, &n) == 0 &&
		     n == 3 && lookups(c) == 1 &&
		     finderd_client_listdir(c, tmp, strlen(tmp), &e, &n) == 0 && lookups(c) == 2;
		finderd_client_free(c);
		_exit(ok ? 0 : 1);
	}
	CHECK(pid > 0);
	CHECK_INT(finderd_client_listdir(c, in(root, "pkg/sub"), strlen(in(root, "pkg/sub")), &e, &n),
		  0);
	CHECK_INT(lookups(c), 1);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* The parent's connection survived the child's reconnect and exit. */
	CHECK_INT(finderd_client_listdir(c, tmp, strlen(tmp), &e, &n), 0);
	CHECK_INT(lookups(c), 2);
	finderd_client_free(c);
}

/* ------------------------------------------------------------ freshness */

struct genmap {
	const volatile uint64_t *words;
	size_t bytes;
};

static int genmap_open(struct genmap *g, const char *sock)
{
	char path[300];
	struct stat st;
	void *p;
	int fd;

	snprintf(path, sizeof(path), "%s.gen", sock);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (p == MAP_FAILED)
		return -1;
	g->words = p;
	g->bytes = (size_t)st.st_size;
	return 0;
}

static void genmap_close(struct genmap *g)
{
	munmap((void *)g->words, g->bytes);
}

/* Wait (at most 30 s: a bound for a loaded machine, not a measure) until the
 * daemon's slot for @dir no longer holds the generation the client holds.
 * Returns 0 once it moved. */
static int wait_slot_moves(struct finderd_client *c, const struct genmap *g, const char *dir)
{
	const struct finderd_dir *d;
	int64_t until = fdi_now_us() + 30000000;

	if (finderd_client_dir(c, dir, strlen(dir), &d) || d->slot == 0 ||
	    (size_t)d->slot >= (g->bytes - 64) / 8)
		return -1;
	while (__atomic_load_n(&g->words[8 + d->slot], __ATOMIC_ACQUIRE) == d->generation) {
		if (fdi_now_us() > until)
			return -1;
		test_sleep_us(1000);
	}
	return 0;
}

static void test_trust_through_generation_file(void)
{
	struct finderd_client *c = new_client(daemon_a.sock, CALL_US);
	struct finderd_stat st;
	struct genmap g;
	const char *a = in(root, "a.py"), *fresh = in(root, "fresh.py");
	uint64_t before;

	if (!c || genmap_open(&g, daemon_a.sock)) {
		CHECK(!"generation file");
		finderd_client_free(c);
		return;
	}
	AGREE(c, a, 0);
	AGREE(c, fresh, 0); /* -ENOENT */
	before = lookups(c);
	/* Trusted: many answers, no round trip. */
	AGREE(c, a, 0);
	AGREE(c, in(root, "b.pyc"), 0);
	CHECK_INT(lookups(c), before);
	/* A change after the snapshot: once the slot moved, the next answer is
	 * fresh, at the cost of one revalidation. */
	append_file(a, "print(2)\n");
	CHECK_INT(wait_slot_moves(c, &g, root), 0);
	AGREE(c, a, 0);
	CHECK_INT(finderd_client_stat(c, a, strlen(a), &st), 0);
	CHECK_INT(st.size, 18);
	CHECK_INT(lookups(c), before + 1);
	write_file(fresh, "");
	CHECK_INT(wait_slot_moves(c, &g, root), 0);
	AGREE(c, fresh, 0);
	AGREE(c, root, 0); /* its mtime moved too */
	CHECK_INT(lookups(c), before + 2);
	unlink(fresh);
	CHECK_INT(wait_slot_moves(c, &g, root), 0);
	AGREE(c, fresh, 0);
	/* flink.py -> a.py: see test_symlink_target_changes(). */
	agree_dir(c, root, 1, __LINE__);
	CHECK_INT(lookups(c), before + 3);
	genmap_close(&g);
	finderd_client_free(c);
}

/*
 * A symlink's entry carries its target's stat(). When the target changes,
 * the symlink's entry must change too (the daemon watches what each symlink
 * entry resolves through), or a .pyc of a module reached through a
 * symlinked source would be validated against stale fingerprints.
 */
static void test_symlink_target_changes(void)
{
	struct finderd_client *c;
	struct genmap g;
	const char *a = in(root, "a.py"), *flink = in(root, "flink.py");

	c = new_client(daemon_a.sock, CALL_US);
	if (!c || genmap_open(&g, daemon_a.sock)) {
		finderd_client_free(c);
		return;
	}
	AGREE(c, flink, 0);
	append_file(a, "print(3)\n");
	CHECK_INT(wait_slot_moves(c, &g, root), 0);
	AGREE(c, a, 0);
	AGREE(c, flink, 0);
	genmap_close(&g);
	finderd_client_free(c);
}

static void test_invalidate(void)
{
	struct finderd_client *c = new_client(daemon_a.sock, CALL_US);
	struct finderd_client_counters k0, k1;
	struct finderd_stats s0, s1;
	const struct finderd_dir *root_dir, *d;
	const char *mod = in(root, "pkg/mod.py");

	if (!c)
		return;
	AGREE(c, mod, 0);                           /* holds root, pkg, missing */
	AGREE(c, in(root, "pkg/sub/more/leaf.py"), 0); /* and pkg/sub, pkg/sub/more */
	CHECK_INT(finderd_client_dir(c, root, strlen(root), &root_dir), 0);
	finderd_client_counters(c, &k0);
	CHECK_INT(finderd_stats(finderd_client_conn(c), &s0), 0);
	/* Nothing changed: one Lookup revalidates all five, all UNCHANGED, and
	 * each keeps the listing it had. */
	finderd_client_invalidate(c);
	AGREE(c, mod, 0);
	finderd_client_counters(c, &k1);
	CHECK_INT(k1.lookups, k0.lookups + 1);
	CHECK_INT(k1.revalidations, k0.revalidations + 5);
	CHECK_INT(finderd_stats(finderd_client_conn(c), &s1), 0);
	CHECK_INT(s1.directories_unchanged, s0.directories_unchanged + 5);
	CHECK_INT(finderd_client_dir(c, root, strlen(root), &d), 0);
	CHECK(d == root_dir);
	/* A change, asked about at once (no waiting for the slot): after
	 * invalidate, the Lookup's barrier makes the answer exact. */
	append_file(mod, "x = 2\n");
	finderd_client_invalidate(c);
	AGREE(c, mod, 0);
	CHECK_INT(lookups(c), k1.lookups + 1);
	CHECK_INT(finderd_client_dir(c, root, strlen(root), &d), 0);
	CHECK(d == root_dir); /* root did not change: same listing */
	AGREE_DIR(c, in(root, "pkg"));
	finderd_client_invalidate(NULL);
	finderd_client_free(c);
}

/*
 * mkdir() of a directory the trusted listing names fails with EEXIST and
 * changes nothing: no revalidation (finderd_client_touch() would cost one).
 */
static void test_touch_mkdir(void)
{
	struct finderd_client *c = new_client(daemon_a.sock, CALL_US);
	const char *a = in(root, "a.py"), *pkg = in(root, "pkg"), *made = in(root, "made");
	uint64_t before;

	if (!c)
		return;
	AGREE(c, a, 0);
	before = lookups(c);
	finderd_client_touch_mkdir(c, pkg, strlen(pkg));
	AGREE(c, a, 0);
	CHECK_INT(lookups(c), before);
	finderd_client_touch(c, pkg, strlen(pkg));
	AGREE(c, a, 0);
	CHECK_INT(lookups(c), before + 1);
	/* A directory not there yet: created, and seen at once. */
	finderd_client_touch_mkdir(c, made, strlen(made));
	CHECK_INT(mkdir(made, 0755), 0);
	AGREE(c, made, 0);
	CHECK_INT(lookups(c), before + 2);
	CHECK_INT(rmdir(made), 0);
	finderd_client_touch(c, made, strlen(made));
	AGREE(c, made, 0);
	finderd_client_free(c);
}

/* ------------------------------------------------------------ paths */

static void test_dot_components(struct finderd_client *c)
{
	char p[600];
	const struct finderd_entry *e1, *e2;
	size_t n1, n2;
	uint64_t before;
	struct finderd_stat st;

	AGREE(c, in(root, "pkg/mod.py"), 0);
	before = lookups(c);
	snprintf(p, sizeof(p), "%s/./a.py", root);
	AGREE(c, p, 0);
	snprintf(p, sizeof(p), "%s/./pkg/./mod.py", root);
	AGREE(c, p, 0);
	snprintf(p, sizeof(p), "%s/./nope.py", root);
	AGREE(c, p, 0);
	snprintf(p, sizeof(p), "%s/.", root);
	AGREE(c, p, 0);
	CHECK_INT(finderd_client_listdir(c, root, strlen(root), &e1, &n1), 0);
	CHECK_INT(finderd_client_listdir(c, p, strlen(p), &e2, &n2), 0);
	CHECK(n1 == n2 && e1 == e2);
	CHECK_INT(lookups(c), before);
	/* "." under something not held, or after a file: the filesystem. */
	snprintf(p, sizeof(p), "%s/./x", tmp);
	CHECK_INT(finderd_client_stat(c, p, strlen(p), &st), FINDERD_ENOTSERVED);
	snprintf(p, sizeof(p), "%s/a.py/./x", root);
	CHECK_INT(finderd_client_stat(c, p, strlen(p), &st), FINDERD_ENOTSERVED);
	CHECK_INT(lookups(c), before);
}

static void test_non_canonical(struct finderd_client *c)
{
	static const char *tails[] = { "//a.py", "/a.py/", "/../root/a.py", "/pkg/..",
				       "/pkg/../a.py", "/", "/pkg//mod.py" };
	struct finderd_stat st;
	const struct finderd_entry *e;
	uint64_t before = lookups(c);
	char p[600];
	size_t i, n;

	for (i = 0; i < sizeof(tails) / sizeof(tails[0]); i++) {
		snprintf(p, sizeof(p), "%s%s", root, tails[i]);
		CHECK_INT(finderd_client_stat(c, p, strlen(p), &st), FINDERD_ENOTSERVED);
		CHECK_INT(finderd_client_listdir(c, p, strlen(p), &e, &n), FINDERD_ENOTSERVED);
	}
	CHECK_INT(finderd_client_stat(c, "a.py", 4, &st), FINDERD_ENOTSERVED);
	CHECK_INT(finderd_client_stat(c, "", 0, &st), FINDERD_ENOTSERVED);
	CHECK_INT(finderd_client_stat(c, "./a.py", 6, &st), FINDERD_ENOTSERVED);
	snprintf(p, sizeof(p), "%s/a.py", root);
	p[strlen(root)] = '\0'; /* an embedded NUL */
	CHECK_INT(finderd_client_stat(c, p, strlen(root) + 5, &st), FINDERD_ENOTSERVED);
	CHECK_INT(finderd_client_stat(NULL, root, strlen(root), &st), FINDERD_ENOTSERVED);
	CHECK_INT(lookups(c), before);
}

/* ------------------------------------------------------------ the daemon goes */

/* Every question of @c is FINDERD_ENOTSERVED at once: answered without a
 * Lookup (no round trip to wait for). */
static void all_refused(struct finderd_client *c)
{
	static const char *paths[] = { "a.py", "pkg/mod.py", "pkg/sub/more/leaf.py", "nope",
				       "nspkg/part.py" };
	struct finderd_snapshot_request req = { NULL, NULL, 0, { NULL, 0 }, 0, 0 };
	struct finderd_client_counters before, after;
	const struct finderd_entry *e;
	struct finderd_stat st;
	size_t i, n;

	finderd_client_counters(c, &before);
	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		const char *p = in(root, paths[i]);

		CHECK_INT(finderd_client_stat(c, p, strlen(p), &st), FINDERD_ENOTSERVED);
		CHECK_INT(finderd_client_listdir(c, p, strlen(p), &e, &n), FINDERD_ENOTSERVED);
	}
	finderd_client_counters(c, &after);
	CHECK(after.lookups == before.lookups);
	CHECK_INT(finderd_client_listdir(c, root, strlen(root), &e, &n), FINDERD_ENOTSERVED);
	CHECK(finderd_client_snapshot(c, &req) < 0);
}

/* ------------------------------------------------------------ losing the daemon */

#define PAUSE_US 20000       /* first pause between reconnect attempts, in these tests */
#define HANG_GUARD_US 30000000

/* A daemon of its own on @name.sock in tmp, and a client of it with @call_us
 * for connects and calls and short reconnect pauses; NULL (and no daemon)
 * when either fails. */
static struct finderd_client *daemon_and_client(struct test_daemon *d, const char *name,
						uint32_t call_us)
{
	struct finderd_client *c;

	snprintf(d->sock, sizeof(d->sock), "%s/%s.sock", tmp, name);
	if (test_daemon_start(d, bin)) {
		CHECK(!"a daemon of its own");
		return NULL;
	}
	c = client_with(d->sock, call_us, call_us, PAUSE_US);
	if (!c)
		test_daemon_signal(d, SIGKILL);
	return c;
}

static struct finderd_client_status status_of(const struct finderd_client *c)
{
	struct finderd_client_status s;

	memset(&s, 0, sizeof(s));
	s.size = sizeof(s);
	CHECK_INT(finderd_client_status(c, &s), 0);
	return s;
}

/* Ask about @path until @c answers it from the daemon again (bounded). */
static int served_again(struct finderd_client *c, const char *path)
{
	int64_t end = fdi_now_us() + HANG_GUARD_US;
	struct finderd_stat st;

	while (fdi_now_us() < end) {
		if (finderd_client_stat(c, path, strlen(path), &st) != FINDERD_ENOTSERVED)
			return 1;
		test_sleep_us(1000);
	}
	return 0;
}

/* Does this process still map a generation file of @sock that was deleted
 * (the one of a daemon that is gone)? */
static int maps_deleted_genfile(const char *sock)
{
	char line[4096], want[300];
	FILE *f = fopen("/proc/self/maps", "r");
	int found = 0;

	snprintf(want, sizeof(want), "%s.gen (deleted)", sock);
	while (f && fgets(line, sizeof(line), f))
		found |= strstr(line, want) != NULL;
	if (f)
		fclose(f);
	return found;
}

static void test_status_arguments(struct finderd_client *c)
{
	struct finderd_client_status s;

	memset(&s, 0xab, sizeof(s));
	s.size = 0;
	CHECK_INT(finderd_client_status(c, &s), -EINVAL);
	CHECK_INT(finderd_client_status(NULL, &s), -EINVAL);
	CHECK_INT(finderd_client_status(c, NULL), -EINVAL);
	/* An older caller's shorter struct: nothing written past its size. */
	s.size = offsetof(struct finderd_client_status, fallbacks);
	CHECK_INT(finderd_client_status(c, &s), 0);
	CHECK_INT(s.state, FINDERD_CLIENT_SERVED);
	CHECK_INT(s.error, 0);
	CHECK(s.fallbacks == UINT64_C(0xabababababababab));
	s = status_of(c);
	CHECK(s.fallbacks == 0 && s.reconnects == 0 && s.attempts == 0 && s.retry_in_us == 0);
}

/*
 * A starved daemon: the lease runs out, the revalidation waits for the call
 * deadline and no longer, and the client falls back. While the daemon stays
 * stopped an attempt costs at most the connect deadline, then a pause in
 * which questions are answered at once; once it runs again, the client is
 * served again.
 */
static void test_daemon_stopped(void)
{
	struct test_daemon d;
	struct finderd_client *c;
	struct finderd_client_status s;
	struct finderd_stat st;
	const char *a = in(root, "a.py");
	int64_t t0, took;

	c = daemon_and_client(&d, "stop", CALL_US);
	if (c) {
		AGREE(c, a, 0);
		test_daemon_signal(&d, SIGSTOP);
		test_sleep_us(LEASE_US * 3 / 2);
		t0 = fdi_now_us();
		CHECK_INT(finderd_client_stat(c, a, strlen(a), &st), FINDERD_ENOTSERVED);
		took = fdi_now_us() - t0;
		/* At least the deadline; the upper bound only tells "gave up" from
		 * "waited for the stopped daemon", with room for a loaded machine. */
		CHECK(took >= CALL_US - 1000 && took < CALL_US + 5000000);
		s = status_of(c);
		CHECK_INT(s.state, FINDERD_CLIENT_FELL_BACK);
		CHECK_INT(s.error, -ETIMEDOUT);
		CHECK_INT(s.lost_error, -ETIMEDOUT);
		CHECK(s.fallbacks == 1 && s.attempts == 0 && s.retry_in_us == 0);
		/* The next question makes an attempt, which times out too. */
		CHECK_INT(finderd_client_stat(c, a, strlen(a), &st), FINDERD_ENOTSERVED);
		s = status_of(c);
		CHECK(s.attempts == 1 && s.state == FINDERD_CLIENT_FELL_BACK);
		CHECK(s.retry_in_us <= PAUSE_US);
		test_daemon_signal(&d, SIGCONT);
		CHECK(served_again(c, a));
		AGREE(c, a, 0);
		AGREE(c, in(root, "pkg/sub/more/leaf.py"), 0);
		s = status_of(c);
		CHECK(s.state == FINDERD_CLIENT_SERVED && s.error == 0 && s.reconnects == 1);
		CHECK_INT(s.lost_error, -ETIMEDOUT);
		finderd_client_free(c);
		test_daemon_signal(&d, SIGKILL);
	}
}

/*
 * A daemon killed under a client, then gone for good for a while: every
 * question goes to the filesystem at once, and attempts are bounded by the
 * pauses, not made per question. Restarted on the same socket, the daemon
 * serves the client again: exact answers (a file made meanwhile is found),
 * nothing kept from the old daemon (its listings, its generation file).
 */
static void test_daemon_killed_and_restarted(void)
{
	struct test_daemon d;
	struct finderd_client *c;
	struct finderd_client_status s;
	const struct finderd_dir *dir;
	const struct finderd_entry *e;
	struct finderd_stat st;
	const char *part = in(root, "nspkg/part.py"), *sub = in(root, "pkg/sub");
	const char *born = in(root, "born_while_dead.py");
	uint64_t attempts;
	int64_t t0, elapsed;
	size_t n;
	int i;

	c = daemon_and_client(&d, "kill", CALL_US);
	if (!c)
		return;
	AGREE(c, in(root, "a.py"), 0);
	CHECK_INT(finderd_client_listdir(c, sub, strlen(sub), &e, &n), 0);
	test_daemon_signal(&d, SIGKILL);
	/* The next round trip (nspkg is not held) finds the connection gone. */
	CHECK_INT(finderd_client_stat(c, part, strlen(part), &st), FINDERD_ENOTSERVED);
	all_refused(c);
	s = status_of(c);
	CHECK(s.state == FINDERD_CLIENT_FELL_BACK && s.fallbacks == 1 && s.attempts >= 1);
	CHECK_INT(s.error, -ECONNREFUSED); /* the socket file is left, nobody listens */
	attempts = s.attempts;
	t0 = fdi_now_us();
	for (i = 0; i < 5000; i++)
		CHECK_INT(finderd_client_stat(c, part, strlen(part), &st), FINDERD_ENOTSERVED);
	elapsed = fdi_now_us() - t0;
	/* At most one attempt per half a first pause (pauses only grow). */
	CHECK(status_of(c).attempts - attempts <= (uint64_t)(elapsed / (PAUSE_US / 2)) + 1);
	write_file(born, "born = 1\n");
	if (test_daemon_start(&d, bin)) {
		CHECK(!"third daemon, again");
		finderd_client_free(c);
		return;
	}
	CHECK(served_again(c, born));
	AGREE(c, born, 0);
	s = status_of(c);
	CHECK(s.state == FINDERD_CLIENT_SERVED && s.reconnects == 1 && s.fallbacks == 1);
	CHECK(!maps_deleted_genfile(d.sock));
	/* Held again: the snapshot's entries; not what was looked up before. */
	CHECK_INT(finderd_client_dir(c, root, strlen(root), &dir), 0);
	CHECK_INT(finderd_client_dir(c, sub, strlen(sub), &dir), -ENOENT);
	CHECK_INT(finderd_client_listdir(c, sub, strlen(sub), &e, &n), 0);
	AGREE(c, in(root, "pkg/sub/deep.py"), 0);
	finderd_client_free(c);
	test_daemon_signal(&d, SIGKILL);
}

/* Killed before the first call: the lazy handshake fails there, and the
 * client falls back like any other. */
static void test_daemon_killed_before_the_snapshot(void)
{
	struct test_daemon d;
	struct finderd_options o;
	struct finderd_client *c;
	struct finderd_str sp = { root, strlen(root) };
	struct finderd_snapshot_request req = { NULL, &sp, 1, { NULL, 0 }, 0, 0 };
	int ret;

	snprintf(d.sock, sizeof(d.sock), "%s/early.sock", tmp);
	if (test_daemon_start(&d, bin)) {
		CHECK(!"fourth daemon");
		return;
	}
	finderd_options_init(&o);
	o.socket_path = d.sock;
	o.connect_timeout_us = o.call_timeout_us = CALL_US;
	CHECK_INT(finderd_client_new(&o, &c), 0);
	test_daemon_signal(&d, SIGKILL);
	ret = finderd_client_snapshot(c, &req);
	CHECK(ret == -ECONNRESET || ret == -EPIPE);
	all_refused(c);
	finderd_client_free(c);
}

/*
 * fork() while fallen back, then the daemon comes back: parent and child
 * each reconnect on a connection of their own and are served again.
 */
static void test_fork_while_fallen_back(void)
{
	struct test_daemon d;
	struct finderd_client *c;
	struct finderd_stat st;
	const char *a = in(root, "a.py"), *leaf = in(root, "pkg/sub/more/leaf.py");
	int status = -1;
	pid_t pid;

	c = daemon_and_client(&d, "fork", CALL_US);
	if (!c)
		return;
	test_daemon_signal(&d, SIGKILL);
	CHECK_INT(finderd_client_stat(c, leaf, strlen(leaf), &st), FINDERD_ENOTSERVED);
	CHECK_INT(status_of(c).state, FINDERD_CLIENT_FELL_BACK);
	CHECK_INT(test_daemon_start(&d, bin), 0);
	pid = fork();
	if (pid == 0) {
		struct finderd_client_status s;
		int ok;

		finderd_client_after_fork(c);
		ok = served_again(c, a) && finderd_client_stat(c, leaf, strlen(leaf), &st) == 0;
		s.size = sizeof(s);
		ok = ok && finderd_client_status(c, &s) == 0 && s.reconnects == 1;
		finderd_client_free(c);
		_exit(ok ? 0 : 1);
	}
	CHECK(pid > 0);
	CHECK(served_again(c, leaf));
	AGREE(c, leaf, 0);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* The parent's connection survived the child's own and its exit. */
	AGREE(c, in(root, "pkg/mod.py"), 0);
	CHECK_INT(status_of(c).reconnects, 1);
	finderd_client_free(c);
	test_daemon_signal(&d, SIGKILL);
}

/*
 * A daemon run by another user (uid 65534 here; the tests run as root):
 * a connect refuses it before sending a byte, unless it is the configured
 * daemon user (the option, by uid or name, or $FINDERD_DAEMON_USER).
 */
static void test_listener_of_another_user(void)
{
	char dir[] = "/tmp/finderd-peer-XXXXXX";
	struct test_daemon d;
	struct finderd_options o;
	struct finderd_client *c = NULL;
	struct finderd_conn *conn = NULL;
	struct finderd_peer peer;
	int health = -1;

	if (geteuid() != 0) {
		printf("test_resolver: listener of another user skipped (needs root)\n");
		return;
	}
	if (!mkdtemp(dir) || chown(dir, 65534, 65534) != 0) {
		CHECK(!"a directory for uid 65534");
		return;
	}
	snprintf(d.sock, sizeof(d.sock), "%s/n.sock", dir);
	if (test_daemon_start_as(&d, bin, 65534)) {
		CHECK(!"daemon as uid 65534");
		return;
	}
	finderd_options_init(&o);
	o.socket_path = d.sock;
	o.daemon_user = "";
	setenv("FINDERD_DAEMON_USER", "65534", 1); /* "" overrides it */
	CHECK_INT(finderd_client_new(&o, &c), FINDERD_EUNTRUSTED);
	CHECK_INT(finderd_connect(&o, &conn), FINDERD_EUNTRUSTED);
	CHECK(c == NULL && conn == NULL);
	CHECK_INT(finderd_socket_peer(&o, &peer), 0);
	CHECK(peer.uid == 65534 && peer.gid == 65534 && peer.pid == d.pid);
	o.daemon_user = NULL; /* the environment's */
	CHECK_INT(finderd_connect(&o, &conn), 0);
	finderd_close(conn);
	unsetenv("FINDERD_DAEMON_USER");
	CHECK_INT(finderd_connect(&o, &conn), FINDERD_EUNTRUSTED);
	o.daemon_user = "65534";
	CHECK_INT(finderd_client_new(&o, &c), 0);
	CHECK_INT(finderd_health(finderd_client_conn(c), NULL, &health), 0);
	CHECK_INT(health, FINDERD_HEALTH_SERVING);
	finderd_client_free(c);
	if (getpwnam("nobody") && getpwnam("nobody")->pw_uid == 65534) {
		o.daemon_user = "nobody";
		CHECK_INT(finderd_connect(&o, &conn), 0);
		finderd_close(conn);
	}
	test_daemon_signal(&d, SIGKILL);
	unlink(d.sock);
	rmdir(dir);
}

/* A daemon out of generation slots: the directories it cannot vouch for go
 * to the filesystem, without a Lookup per question. */
static void test_out_of_slots(void)
{
	struct test_daemon d;
	struct finderd_client *c;
	const struct finderd_dir *dir;
	struct finderd_stat st;
	const char *a = in(root, "a.py"), *x = in(missing, "x");
	uint64_t before;
	int i;

	snprintf(d.sock, sizeof(d.sock), "%s/slots.sock", tmp);
	/* Two slots; the per-uid node quota (by default a quarter of the slots,
	 * here 1) raised, so that running out of slots is all this tests. */
	if (test_daemon_start_with(&d, bin, "--generation-slots=2", "--max-nodes-per-uid=64")) {
		CHECK(!"daemon with 2 slots");
		return;
	}
	c = new_client(d.sock, CALL_US);
	if (c) {
		const char *vouched, *not_vouched;

		/* One slot for the two entries: the daemon crawls them at once,
		 * so either may have got it; the other has none. */
		CHECK_INT(finderd_client_dir(c, root, strlen(root), &dir), 0);
		vouched = dir->slot ? a : x;
		not_vouched = dir->slot ? x : a;
		CHECK(dir->slot <= 1);
		CHECK_INT(finderd_client_dir(c, missing, strlen(missing), &dir), 0);
		CHECK_INT(dir->slot, vouched == a ? 0 : 1);
		before = lookups(c);
		for (i = 0; i < 3; i++) {
			AGREE(c, vouched, 0);
			CHECK_INT(finderd_client_stat(c, not_vouched, strlen(not_vouched), &st),
				  FINDERD_ENOTSERVED);
		}
		CHECK_INT(lookups(c), before);
		finderd_client_free(c);
	}
	test_daemon_signal(&d, SIGTERM);
}

/* ------------------------------------------------------------ allocation */


/* One session: snapshot, answers from it, two Lookups, a revalidation.
 * Returns how many answers were right (ENOTSERVED counts as right). */
static int session_with(struct counting *k, int *snap)
{
	struct finderd_str sp[2] = { { root, strlen(root) }, { missing, strlen(missing) } };
	struct finderd_snapshot_request req = { NULL, sp, 2, { NULL, 0 }, 0, 0 };
	static const char *paths[] = { "a.py", "pkg/mod.py", "pkg/sub/more/leaf.py", "nope" };
	static const int want[] = { 0, 0, 0, -ENOENT };
	struct finderd_options o;
	struct finderd_client *c = NULL;
	const struct finderd_entry *e;
	struct finderd_stat st;
	size_t i, n;
	int ret, right = 0;

	finderd_options_init(&o);
	o.socket_path = daemon_a.sock;
	o.connect_timeout_us = o.call_timeout_us = CALL_US;
	o.alloc = fail_alloc;
	o.realloc = fail_realloc;
	o.free = fail_free;
	o.alloc_ctx = k;
	*snap = ret = finderd_client_new(&o, &c);
	if (!ret)
		*snap = finderd_client_snapshot(c, &req);
	for (i = 0; c && i < 2 * sizeof(paths) / sizeof(paths[0]); i++) {
		const char *p = in(root, paths[i % 4]);

		if (i == 4)
			finderd_client_invalidate(c);
		ret = finderd_client_stat(c, p, strlen(p), &st);
		right += ret == want[i % 4] || ret == FINDERD_ENOTSERVED;
	}
	if (c) {
		ret = finderd_client_listdir(c, root, strlen(root), &e, &n);
		right += ret == 0 || ret == FINDERD_ENOTSERVED;
	}
	finderd_client_free(c);
	return right;
}

static void test_allocation_failures(void)
{
	struct counting k;
	long n;
	int snap;

	for (n = 1; n < 2000; n++) {
		int right;

		memset(&k, 0, sizeof(k));
		k.fail_at = n;
		right = session_with(&k, &snap);
		CHECK(snap == 0 || snap == -ENOMEM || snap == FINDERD_ECLOSED);
		CHECK_INT(k.allocs, k.frees);
		if (snap == 0 || snap == FINDERD_ECLOSED)
			CHECK_INT(right, 9);
		if (k.calls < n) {
			CHECK_INT(snap, 0); /* no failure was injected */
			break;
		}
	}
	CHECK(n > 10 && n < 2000);
}

/* ------------------------------------------------------------ main */

static void cleanup(void)
{
	char cmd[300];

	test_daemon_signal(&daemon_a, SIGTERM);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		fprintf(stderr, "could not remove %s\n", tmp);
}

int main(void)
{
	struct finderd_client *c;

	bin = getenv("FINDERD_BIN");
	if (!bin || !*bin) {
		fprintf(stderr, "test_resolver: set FINDERD_BIN to the finderd binary\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (!mkdtemp(tmp))
		return 2;
	make_tree();
	snprintf(daemon_a.sock, sizeof(daemon_a.sock), "%s/s.sock", tmp);
	if (test_daemon_start(&daemon_a, bin)) {
		fprintf(stderr, "test_resolver: %s did not come up on %s\n", bin, daemon_a.sock);
		cleanup();
		return 1;
	}
	c = new_client(daemon_a.sock, CALL_US);
	if (c) {
		test_status_arguments(c);
		test_agreement(c);
		test_dot_components(c);
		test_non_canonical(c);
		finderd_client_free(c);
	}
	test_one_lookup_per_directory();
	test_no_round_trips();
	test_after_fork();
	test_trust_through_generation_file();
	test_symlink_target_changes();
	test_invalidate();
	test_touch_mkdir();
	test_allocation_failures();
	test_out_of_slots();
	test_daemon_stopped();
	test_daemon_killed_and_restarted();
	test_daemon_killed_before_the_snapshot();
	test_fork_while_fallen_back();
	test_listener_of_another_user();
	cleanup();
	TEST_MAIN_END("test_resolver");
}
