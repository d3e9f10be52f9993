/*
 * loadgen - the S6 load generator: RPC latency and throughput of a finderd
 * daemon, measured through libfinderd (the C client every interpreter uses).
 *
 *   loadgen lookup   --socket S --clients N --seconds T --path DIR [--path DIR...]
 *   loadgen snapshot --socket S --clients N --seconds T --path DIR [--path DIR...]
 *   loadgen connect-snapshot --socket S --clients 1 --seconds T --path DIR...
 *   loadgen crawl    --socket S --list FILE
 *   loadgen floor    --clients N --seconds T --request-bytes Q --reply-bytes R [--connect] [--poll]
 *
 * lookup/snapshot: each client is a thread with its own persistent
 * connection, calling back to back for T seconds after a short warm-up.
 * connect-snapshot: a fresh connection per call, connected as an
 * interpreter's resolver connects (FINDERD_CONNECT_LAZY: what one start-up
 * pays). crawl: one Lookup of every directory listed in FILE (one
 * absolute path per line), timed: the daemon's cold crawl when it has not
 * seen them. floor: the raw Unix-socket floor for the same exchange: each
 * client writes Q bytes and reads R bytes back from a thread of its own
 * that answers with blocking read()/write() (no HTTP/2, no daemon); with
 * --connect, every exchange connects to a listening socket first and
 * closes after (what connect-snapshot pays at least); with --poll, the
 * client waits for the reply as libfinderd does when its waits are short
 * (client-c/src/spin.h): non-blocking receives and sched_yield() for up to
 * SPIN_US, then a blocking read.
 *
 * Prints one JSON object on stdout. Latencies are per call, client side
 * (request written to reply decoded), in microseconds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "finderd.h"

enum mode { MODE_LOOKUP, MODE_SNAPSHOT, MODE_CONNECT_SNAPSHOT, MODE_CRAWL, MODE_FLOOR };

static enum mode mode;
static const char *socket_path;
static int clients = 1;
static double seconds = 2.0;
static struct finderd_str *paths;
static size_t n_paths;
static pthread_barrier_t start_barrier;
/* floor: message sizes, and the listening socket with --connect (-1 without). */
static size_t floor_request = 200, floor_reply = 400;
static int floor_listen = -1;
static int floor_poll;
/* floor --poll: as FDI_SPIN_MAX_US in client-c/src/spin.h. */
#define SPIN_US 200
static struct sockaddr_un floor_addr;
static volatile uint64_t deadline_ns;

struct worker {
	pthread_t thread;
	uint64_t *lat_ns;
	size_t n, cap;
	uint64_t errors;
	int first_error;
	int fd; /* floor: this client's end of its socket pair */
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err)
{
	fprintf(stderr, "loadgen: %s: %s\n", what, finderd_strerror(err));
	exit(1);
}

static struct finderd_options options(void)
{
	struct finderd_options opts;
	finderd_options_init(&opts);
	opts.socket_path = socket_path;
	opts.call_timeout_us = 10u * 1000u * 1000u; /* a cold crawl may take long */
	opts.connect_timeout_us = 1000u * 1000u;
	return opts;
}

/* One call on @conn; 0 or a negative code. */
static int one_call(struct finderd_conn *conn)
{
	struct finderd_reply *reply = NULL;
	int rc;
	if (mode == MODE_LOOKUP) {
		rc = finderd_lookup(conn, paths, NULL, 0, n_paths, &reply);
	} else {
		struct finderd_snapshot_request req;
		memset(&req, 0, sizeof req);
		req.sys_path = paths;
		req.n_sys_path = n_paths;
		rc = finderd_snapshot(conn, &req, &reply);
	}
	finderd_reply_free(reply);
	return rc;
}


/* Reads exactly @n bytes; 0, or -1 at end of stream or error. */
static int read_full(int fd, char *p, size_t n)
{
	while (n) {
		ssize_t r = read(fd, p, n);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int write_full(int fd, const char *p, size_t n)
{
	while (n) {
		ssize_t r = write(fd, p, n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* floor: answers every request of size floor_request on @fd with floor_reply bytes. */
static void floor_answer(int fd)
{
	char *req = malloc(floor_request), *rep = calloc(1, floor_reply);
	while (req && rep && read_full(fd, req, floor_request) == 0 &&
	       write_full(fd, rep, floor_reply) == 0)
		;
	free(req);
	free(rep);
}

static void *floor_server(void *arg)
{
	int fd = (int)(intptr_t)arg;
	if (floor_listen < 0) {
		floor_answer(fd);
		close(fd);
		return NULL;
	}
	for (;;) { /* --connect: one exchange per accepted connection */
		int c = accept(floor_listen, NULL, NULL);
		if (c < 0)
			return NULL;
		floor_answer(c);
		close(c);
	}
}

/* floor --poll: wait for the first bytes of a reply without sleeping (for at
 * most SPIN_US), then read the rest as read_full() does. */
static int read_polling(int fd, char *p, size_t n)
{
	uint64_t start = now_ns();
	do {
		ssize_t r = recv(fd, p, n, MSG_DONTWAIT);
		if (r > 0)
			return (size_t)r == n ? 0 : read_full(fd, p + r, n - (size_t)r);
		if (r == 0 || (errno != EAGAIN && errno != EINTR))
			return -1;
		sched_yield();
	} while (now_ns() - start < SPIN_US * 1000u);
	return read_full(fd, p, n);
}

/* floor: one exchange on @w's socket (a new connection with --connect). */
static int floor_call(struct worker *w, char *req, char *rep)
{
	int fd = w->fd, rc = 0;
	if (floor_listen >= 0) {
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&floor_addr, sizeof floor_addr) < 0)
			rc = -errno;
	}
	if (!rc && (write_full(fd, req, floor_request) ||
		    (floor_poll ? read_polling : read_full)(fd, rep, floor_reply)))
		rc = -EIO;
	if (floor_listen >= 0 && fd >= 0)
		close(fd);
	return rc;
}

static void record(struct worker *w, uint64_t ns)
{
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 65536;
		w->lat_ns = realloc(w->lat_ns, w->cap * sizeof *w->lat_ns);
		if (!w->lat_ns) {
			fprintf(stderr, "loadgen: out of memory\n");
			exit(1);
		}
	}
	w->lat_ns[w->n++] = ns;
}

static void *run_worker(void *arg)
{
	struct worker *w = arg;
	struct finderd_options opts = options();
	struct finderd_conn *conn = NULL;
	char *req = calloc(1, floor_request), *rep = malloc(floor_reply);
	int rc;

	if (mode == MODE_FLOOR) {
		for (int i = 0; i < 50; i++)
			if ((rc = floor_call(w, req, rep)) < 0)
				die("warm-up exchange", rc);
	} else if (mode == MODE_CONNECT_SNAPSHOT) {
		/* As an interpreter's resolver connects: the request goes out
		 * with the connection preface, without waiting for the server's
		 * SETTINGS (one round trip, not two). */
		opts.flags |= FINDERD_CONNECT_LAZY;
	} else {
		rc = finderd_connect(&opts, &conn);
		if (rc < 0)
			die("connect", rc);
		for (int i = 0; i < 50; i++) /* warm-up: connection, daemon caches */
			if ((rc = one_call(conn)) < 0)
				die("warm-up call", rc);
	}
	pthread_barrier_wait(&start_barrier);
	for (;;) {
		uint64_t t0 = now_ns();
		if (t0 >= deadline_ns)
			break;
		if (mode == MODE_FLOOR) {
			rc = floor_call(w, req, rep);
		} else if (mode == MODE_CONNECT_SNAPSHOT) {
			rc = finderd_connect(&opts, &conn);
			if (rc == 0)
				rc = one_call(conn);
			finderd_close(conn);
			conn = NULL;
		} else {
			rc = one_call(conn);
		}
		uint64_t t1 = now_ns();
		if (rc < 0) {
			if (!w->errors)
				w->first_error = rc;
			w->errors++;
			if (mode != MODE_CONNECT_SNAPSHOT && !(mode == MODE_FLOOR && floor_listen >= 0))
				break; /* the connection is unusable after an error */
			continue;
		}
		record(w, t1 - t0);
	}
	finderd_close(conn);
	free(req);
	free(rep);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, size_t n, double p)
{
	if (!n)
		return 0;
	size_t i = (size_t)(p * (double)(n - 1) + 0.5);
	return (double)v[i] / 1000.0;
}

static void add_path(const char *p)
{
	paths = realloc(paths, (n_paths + 1) * sizeof *paths);
	if (!paths)
		exit(1);
	paths[n_paths].data = strdup(p);
	paths[n_paths].len = strlen(p);
	n_paths++;
}

static void read_list(const char *file)
{
	FILE *f = fopen(file, "r");
	char line[4096];
	if (!f) {
		perror(file);
		exit(1);
	}
	while (fgets(line, sizeof line, f)) {
		line[strcspn(line, "\n")] = 0;
		if (line[0])
			add_path(line);
	}
	fclose(f);
}

static int crawl(void)
{
	struct finderd_options opts = options();
	struct finderd_conn *conn = NULL;
	struct finderd_reply *reply = NULL;
	int rc = finderd_connect(&opts, &conn);
	if (rc < 0)
		die("connect", rc);
	uint64_t t0 = now_ns();
	rc = finderd_lookup(conn, paths, NULL, 0, n_paths, &reply);
	uint64_t t1 = now_ns();
	if (rc < 0) {
		const char *msg = "";
		finderd_last_status(conn, &msg);
		fprintf(stderr, "loadgen: crawl lookup: %s %s\n", finderd_strerror(rc), msg);
		return 1;
	}
	size_t served = 0, entries = 0;
	for (size_t i = 0; i < finderd_reply_dir_count(reply); i++) {
		const struct finderd_dir *d = finderd_reply_dir(reply, i);
		const struct finderd_entry *e;
		size_t n = 0;
		if (d->status == FINDERD_DIR_SERVED) {
			served++;
			if (finderd_dir_entries(reply, i, &e, &n) == 0)
				entries += n;
		}
	}
	printf("{\"mode\": \"crawl\", \"directories\": %zu, \"served\": %zu, \"entries\": %zu, "
	       "\"seconds\": %.6f}\n", n_paths, served, entries, (double)(t1 - t0) / 1e9);
	finderd_reply_free(reply);
	finderd_close(conn);
	return 0;
}


/* floor: a server thread per client (a socket pair each), or with --connect
 * a listening socket in a fresh directory and as many accepting threads. */
static void start_floor(struct worker *workers, int with_connect)
{
	static char dir[] = "/tmp/loadgen-floor-XXXXXX";
	pthread_t t;
	if (with_connect) {
		if (!mkdtemp(dir))
			die("mkdtemp", -errno);
		floor_addr.sun_family = AF_UNIX;
		snprintf(floor_addr.sun_path, sizeof floor_addr.sun_path, "%s/s", dir);
		floor_listen = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (floor_listen < 0 ||
		    bind(floor_listen, (struct sockaddr *)&floor_addr, sizeof floor_addr) < 0 ||
		    listen(floor_listen, 128) < 0)
			die("floor socket", -errno);
	}
	for (int i = 0; i < clients; i++) {
		int sv[2] = {-1, -1};
		if (!with_connect && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair", -errno);
		workers[i].fd = sv[0];
		if (pthread_create(&t, NULL, floor_server, (void *)(intptr_t)sv[1]))
			die("pthread_create", -errno);
		pthread_detach(t);
	}
}

/* The directory part of @path (modified in place). */
static char *dirname_of(char *path)
{
	char *slash = strrchr(path, '/');
	if (slash)
		*slash = 0;
	return path;
}

static void usage(void)
{
	fprintf(stderr, "usage: loadgen lookup|snapshot|connect-snapshot|crawl --socket S "
			"[--clients N] [--seconds T] [--path DIR]... [--list FILE]\n"
			"       loadgen floor [--clients N] [--seconds T] [--request-bytes Q] "
			"[--reply-bytes R] [--connect] [--poll]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		usage();
	if (!strcmp(argv[1], "lookup"))
		mode = MODE_LOOKUP;
	else if (!strcmp(argv[1], "snapshot"))
		mode = MODE_SNAPSHOT;
	else if (!strcmp(argv[1], "connect-snapshot"))
		mode = MODE_CONNECT_SNAPSHOT;
	else if (!strcmp(argv[1], "crawl"))
		mode = MODE_CRAWL;
	else if (!strcmp(argv[1], "floor"))
		mode = MODE_FLOOR;
	else
		usage();
	int floor_connect = 0;
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--connect")) {
			floor_connect = 1;
			continue;
		}
		if (!strcmp(argv[i], "--poll")) {
			floor_poll = 1;
			continue;
		}
		if (i + 1 >= argc)
			usage();
		if (!strcmp(argv[i], "--socket"))
			socket_path = argv[++i];
		else if (!strcmp(argv[i], "--clients"))
			clients = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--seconds"))
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--path"))
			add_path(argv[++i]);
		else if (!strcmp(argv[i], "--list"))
			read_list(argv[++i]);
		else if (!strcmp(argv[i], "--request-bytes"))
			floor_request = (size_t)atol(argv[++i]);
		else if (!strcmp(argv[i], "--reply-bytes"))
			floor_reply = (size_t)atol(argv[++i]);
		else
			usage();
	}
	if (mode != MODE_FLOOR && (!socket_path || !n_paths))
		usage();
	if (clients < 1 || !floor_request || !floor_reply)
		usage();
	if (mode == MODE_CRAWL)
		return crawl();

	struct worker *workers = calloc((size_t)clients, sizeof *workers);
	if (mode == MODE_FLOOR)
		start_floor(workers, floor_connect);
	pthread_barrier_init(&start_barrier, NULL, (unsigned)clients + 1);
	deadline_ns = UINT64_MAX;
	for (int i = 0; i < clients; i++)
		if (pthread_create(&workers[i].thread, NULL, run_worker, &workers[i]))
			die("pthread_create", -errno);
	pthread_barrier_wait(&start_barrier);
	/* Workers read deadline_ns after the barrier, which orders this store. */
	uint64_t t0 = now_ns();
	deadline_ns = t0 + (uint64_t)(seconds * 1e9);
	size_t total = 0;
	uint64_t errors = 0;
	int first_error = 0;
	for (int i = 0; i < clients; i++) {
		pthread_join(workers[i].thread, NULL);
		total += workers[i].n;
		errors += workers[i].errors;
		if (!first_error)
			first_error = workers[i].first_error;
	}
	double elapsed = (double)(now_ns() - t0) / 1e9;
	uint64_t *all = malloc((total ? total : 1) * sizeof *all);
	size_t k = 0;
	for (int i = 0; i < clients; i++) {
		memcpy(all + k, workers[i].lat_ns, workers[i].n * sizeof *all);
		k += workers[i].n;
		free(workers[i].lat_ns);
	}
	qsort(all, total, sizeof *all, cmp_u64);
	printf("{\"mode\": \"%s\", \"clients\": %d, \"paths\": %zu, \"requests\": %zu, "
	       "\"seconds\": %.3f, \"rps\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, "
	       "\"p99_us\": %.1f, \"max_us\": %.1f, \"errors\": %llu, \"first_error\": \"%s\"}\n",
	       argv[1], clients, n_paths, total, elapsed, (double)total / elapsed,
	       pct(all, total, 0.50), pct(all, total, 0.90), pct(all, total, 0.99),
	       total ? (double)all[total - 1] / 1000.0 : 0.0, (unsigned long long)errors,
	       errors ? finderd_strerror(first_error) : "");
	free(all);
	free(workers);
	if (floor_listen >= 0) {
		unlink(floor_addr.sun_path);
		rmdir(dirname_of(floor_addr.sun_path));
	}
	return errors && !total ? 1 : 0;
}
