/*
 * bench.c - round-trip latency of libfinderd against a running daemon, with
 * a raw Unix-socket ping-pong measured in the same run as the floor.
 *
 *   bench --socket S --tree DIR [--entries 200] [--iterations N]
 *   bench --socket S --tree DIR --syscalls N
 *   bench --socket S --tree DIR --connects N | --eager-connects N
 *
 * DIR holds the sys.path entries DIR/e000 ... (made by run.sh). Every
 * measurement is taken in rounds of 100 calls, the kinds interleaved round
 * by round, so that drift in the machine's state hits them alike. Prints a
 * Markdown table of p50/p99/mean/max in microseconds, client side (request
 * written to reply decoded).
 *
 * --syscalls N: no timing; one lazy connection makes a Snapshot, then N
 * Lookups between two getppid() markers, so that `strace -f` shows the
 * system calls of N calls (run.sh divides).
 *
 * --connects N: N fresh lazy connections with one Lookup each, to trace
 * either side of a connection; --eager-connects N the same without
 * FINDERD_CONNECT_LAZY.
 *
 * Not a test: it asserts nothing but that the calls succeed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "finderd.h"

#define ROUND 100
#define MAX_ENTRIES 4096

static const char *sock_path;
static struct finderd_str sys_path[MAX_ENTRIES];
static size_t n_entries = 200;

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "bench: %s: %s\n", what, finderd_strerror(err));
	exit(1);
}

/* ------------------------------------------------------------ samples */

struct series {
	const char *name;
	int64_t *ns;
	size_t n, cap;
};

static void record(struct series *s, int64_t ns)
{
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 1024;
		s->ns = realloc(s->ns, s->cap * sizeof(*s->ns));
		if (!s->ns)
			die("realloc", -ENOMEM);
	}
	s->ns[s->n++] = ns;
}

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

static void report(struct series *s)
{
	double sum = 0;
	size_t i;

	qsort(s->ns, s->n, sizeof(*s->ns), cmp_i64);
	for (i = 0; i < s->n; i++)
		sum += (double)s->ns[i];
	printf("| %-46s | %7zu | %8.1f | %8.1f | %8.1f | %9.1f |\n", s->name, s->n,
	       s->ns[s->n / 2] / 1e3, s->ns[s->n * 99 / 100] / 1e3, sum / s->n / 1e3,
	       s->ns[s->n - 1] / 1e3);
}

/* ------------------------------------------------------------ ping-pong */

/* An echo process on the other end of a socketpair: the floor any RPC over
 * a Unix socket pays (two context switches, two copies each way). */
static int pp_fd = -1;
static pid_t pp_pid;

static void pingpong_start(size_t len)
{
	int sv[2];
	char buf[4096];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		die("socketpair", -errno);
	pp_pid = fork();
	if (pp_pid == 0) {
		ssize_t n;

		close(sv[0]);
		while ((n = read(sv[1], buf, len)) > 0)
			if (write(sv[1], buf, (size_t)n) != n)
				break;
		_exit(0);
	}
	close(sv[1]);
	pp_fd = sv[0];
}

static void pingpong_round(struct series *s, size_t len)
{
	char buf[4096];
	int i;

	memset(buf, 'p', len);
	for (i = 0; i < ROUND; i++) {
		int64_t t0 = now_ns();
		size_t got = 0;

		if (write(pp_fd, buf, len) != (ssize_t)len)
			die("ping write", -errno);
		while (got < len) {
			ssize_t n = read(pp_fd, buf + got, len - got);

			if (n <= 0)
				die("ping read", n < 0 ? -errno : -ECONNRESET);
			got += (size_t)n;
		}
		record(s, now_ns() - t0);
	}
}

static void pingpong_stop(void)
{
	int st;

	close(pp_fd);
	waitpid(pp_pid, &st, 0);
}

/* ------------------------------------------------------------ calls */

static struct finderd_conn *open_conn(uint32_t flags)
{
	struct finderd_options o;
	struct finderd_conn *c;
	int ret;

	finderd_options_init(&o);
	o.socket_path = sock_path;
	o.call_timeout_us = 5000000;
	o.connect_timeout_us = 5000000;
	o.flags = flags;
	ret = finderd_connect(&o, &c);
	if (ret)
		die("connect", ret);
	return c;
}

static void do_lookup(struct finderd_conn *c, const uint64_t *known, uint64_t epoch)
{
	struct finderd_reply *r;
	const struct finderd_entry *e;
	size_t n;
	int ret = finderd_lookup(c, sys_path, known, epoch, 1, &r);

	if (ret)
		die("lookup", ret);
	if (!known && finderd_dir_entries(r, 0, &e, &n))
		die("entries", FINDERD_EBADREPLY);
	finderd_reply_free(r);
}

static void do_snapshot(struct finderd_conn *c, uint64_t *gen0, uint64_t *epoch)
{
	struct finderd_snapshot_request req = { NULL, sys_path, n_entries, { NULL, 0 }, 0, 0 };
	struct finderd_reply *r;
	size_t i, n;
	const struct finderd_entry *e;
	int ret = finderd_snapshot(c, &req, &r);

	if (ret)
		die("snapshot", ret);
	/* Decode every listing, as a client using the answer would. */
	for (i = 0; i < finderd_reply_dir_count(r); i++)
		if (finderd_dir_entries(r, i, &e, &n))
			die("entries", FINDERD_EBADREPLY);
	if (gen0)
		*gen0 = finderd_reply_dir(r, 0)->generation;
	if (epoch)
		*epoch = finderd_reply_genfile(r)->epoch;
	finderd_reply_free(r);
}

struct kinds {
	struct series ping, lookup, unchanged, snapshot, eager, lazy, resolver;
};

static void round_calls(struct kinds *k, struct finderd_conn *c, uint64_t gen, uint64_t epoch)
{
	int i;

	for (i = 0; i < ROUND; i++) {
		int64_t t0 = now_ns();

		do_lookup(c, NULL, 0);
		record(&k->lookup, now_ns() - t0);
	}
	for (i = 0; i < ROUND; i++) {
		int64_t t0 = now_ns();

		do_lookup(c, &gen, epoch);
		record(&k->unchanged, now_ns() - t0);
	}
	for (i = 0; i < ROUND / 4; i++) {
		int64_t t0 = now_ns();

		do_snapshot(c, NULL, NULL);
		record(&k->snapshot, now_ns() - t0);
	}
}

/* A fresh connection and its first call (one Lookup), then close. */
static void round_connects(struct kinds *k)
{
	int i;

	for (i = 0; i < ROUND / 4; i++) {
		int64_t t0 = now_ns();
		struct finderd_conn *c = open_conn(0);

		do_lookup(c, NULL, 0);
		record(&k->eager, now_ns() - t0);
		finderd_close(c);
		t0 = now_ns();
		c = open_conn(FINDERD_CONNECT_LAZY);
		do_lookup(c, NULL, 0);
		record(&k->lazy, now_ns() - t0);
		finderd_close(c);
	}
}

/* What an embedder's start-up pays: resolver, 200-entry snapshot, free. */
static void round_resolver(struct kinds *k)
{
	struct finderd_snapshot_request req = { NULL, sys_path, n_entries, { NULL, 0 }, 0, 0 };
	struct finderd_options o;
	int i;

	finderd_options_init(&o);
	o.socket_path = sock_path;
	o.call_timeout_us = 5000000;
	for (i = 0; i < ROUND / 10; i++) {
		int64_t t0 = now_ns();
		struct finderd_client *cl;
		int ret = finderd_client_new(&o, &cl);

		if (!ret)
			ret = finderd_client_snapshot(cl, &req);
		if (ret)
			die("resolver", ret);
		record(&k->resolver, now_ns() - t0);
		finderd_client_free(cl);
	}
}

/* --connects N: N fresh connections (lazy, or with @flags 0 eager), one
 * Lookup each, for tracing either side of a connection. */
static void connects(size_t n, uint32_t flags)
{
	size_t i;

	(void)getppid();
	for (i = 0; i < n; i++) {
		struct finderd_conn *c = open_conn(flags);

		do_lookup(c, NULL, 0);
		finderd_close(c);
	}
	(void)getppid();
}

static void syscalls(size_t n)
{
	struct finderd_conn *c = open_conn(FINDERD_CONNECT_LAZY);
	size_t i;

	do_snapshot(c, NULL, NULL);
	do_lookup(c, NULL, 0);
	(void)getppid(); /* marker: the measured calls start */
	for (i = 0; i < n; i++)
		do_lookup(c, NULL, 0);
	(void)getppid(); /* marker: they end */
	finderd_close(c);
}

int main(int argc, char **argv)
{
	const char *tree = NULL;
	size_t iterations = 5000, sys_n = 0, conn_n = 0, eager_n = 0, i, rounds;
	struct kinds k = {
		{ "raw UDS ping-pong, 64 B each way", 0, 0, 0 },
		{ "Lookup, 1 dir (listing), persistent", 0, 0, 0 },
		{ "Lookup, 1 dir (UNCHANGED), persistent", 0, 0, 0 },
		{ "Snapshot, 200-entry sys.path, persistent", 0, 0, 0 },
		{ "connect + first Lookup (waits for SETTINGS)", 0, 0, 0 },
		{ "connect + first Lookup (FINDERD_CONNECT_LAZY)", 0, 0, 0 },
		{ "resolver: new + 200-entry snapshot + free", 0, 0, 0 },
	};
	struct finderd_conn *c;
	uint64_t gen, epoch;
	char *names;

	for (i = 1; i + 1 < (size_t)argc; i += 2) {
		if (!strcmp(argv[i], "--socket"))
			sock_path = argv[i + 1];
		else if (!strcmp(argv[i], "--tree"))
			tree = argv[i + 1];
		else if (!strcmp(argv[i], "--entries"))
			n_entries = (size_t)atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--iterations"))
			iterations = (size_t)atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--syscalls"))
			sys_n = (size_t)atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--connects"))
			conn_n = (size_t)atol(argv[i + 1]);
		else if (!strcmp(argv[i], "--eager-connects"))
			eager_n = (size_t)atol(argv[i + 1]);
	}
	if (!sock_path || !tree || n_entries == 0 || n_entries > MAX_ENTRIES) {
		fprintf(stderr, "usage: bench --socket S --tree DIR [--entries N] "
				"[--iterations N | --syscalls N | --connects N | "
				"--eager-connects N]\n");
		return 2;
	}
	names = malloc(n_entries * 4200);
	if (!names)
		die("malloc", -ENOMEM);
	for (i = 0; i < n_entries; i++) {
		sys_path[i].data = names + i * 4200;
		sys_path[i].len = (size_t)snprintf(names + i * 4200, 4200, "%s/e%03zu", tree, i);
	}
	if (sys_n) {
		syscalls(sys_n);
		return 0;
	}
	if (conn_n || eager_n) {
		connects(conn_n ? conn_n : eager_n, conn_n ? FINDERD_CONNECT_LAZY : 0);
		return 0;
	}
	signal(SIGPIPE, SIG_IGN);
	pingpong_start(64);
	c = open_conn(0);
	do_snapshot(c, &gen, &epoch); /* warm: every entry indexed */
	for (i = 0; i < 200; i++)
		do_lookup(c, NULL, 0);
	rounds = iterations / ROUND;
	for (i = 0; i < rounds; i++) {
		pingpong_round(&k.ping, 64);
		round_calls(&k, c, gen, epoch);
		round_connects(&k);
		round_resolver(&k);
	}
	finderd_close(c);
	pingpong_stop();
	printf("| %-46s | %7s | %8s | %8s | %8s | %9s |\n", "round trip (us)", "calls", "p50",
	       "p99", "mean", "max");
	printf("|%s|--------:|---------:|---------:|---------:|----------:|\n",
	       "------------------------------------------------");
	report(&k.ping);
	report(&k.lookup);
	report(&k.unchanged);
	report(&k.snapshot);
	report(&k.eager);
	report(&k.lazy);
	report(&k.resolver);
	free(names);
	return 0;
}
