/*
 * test_api.c - version, error strings, options, socket path resolution,
 * fast connect failures, allocator hooks.
 */
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "finderd.h"
#include "internal.h"
#include "sock.h"
#include "test.h"
#include "trust.h"

static void test_version(void)
{
	char want[32];

	snprintf(want, sizeof(want), "%d.%d.%d", FINDERD_VERSION_MAJOR, FINDERD_VERSION_MINOR,
		 FINDERD_VERSION_PATCH);
	CHECK(strcmp(finderd_version(), want) == 0);
	CHECK(FINDERD_VERSION_AT_LEAST(0, 1));
	CHECK(FINDERD_VERSION_AT_LEAST(0, 2));
	CHECK(FINDERD_VERSION_AT_LEAST(0, 3));
	CHECK(!FINDERD_VERSION_AT_LEAST(0, 4));
	CHECK(!FINDERD_VERSION_AT_LEAST(1, 0));
	CHECK_INT(FINDERD_VERSION_NUMBER, 300);
}

static void test_strerror(void)
{
	int codes[] = { FINDERD_EHTTP2, FINDERD_EHPACK, FINDERD_EHUFFMAN, FINDERD_EPROTOBUF,
			FINDERD_EGRPC, FINDERD_ECOMPRESSED, FINDERD_EGOAWAY, FINDERD_ERESET,
			FINDERD_EVERSION, FINDERD_ETOOBIG, FINDERD_ECLOSED, FINDERD_EBADREPLY,
			FINDERD_ENOTSERVED, FINDERD_EGENFILE, FINDERD_EUNTRUSTED };
	size_t i, j;

	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		const char *s = finderd_strerror(codes[i]);

		CHECK(s && *s && strcmp(s, "Unknown error") != 0);
		CHECK(codes[i] <= -10000 && codes[i] >= -10099);
		for (j = 0; j < i; j++)
			CHECK(strcmp(s, finderd_strerror(codes[j])) != 0);
	}
	CHECK(strcmp(finderd_strerror(0), "Success") == 0);
	CHECK(strcmp(finderd_strerror(-ENOENT), "No such file or directory") == 0);
	CHECK(strcmp(finderd_strerror(-ECONNREFUSED), "Connection refused") == 0);
	CHECK(strcmp(finderd_strerror(-ETIMEDOUT), "Connection timed out") == 0);
	CHECK(strcmp(finderd_strerror(-ENOMEM), "Cannot allocate memory") == 0);
	CHECK(strcmp(finderd_strerror(-10050), "Unknown error") == 0);
	CHECK(strcmp(finderd_strerror(12), "Unknown error") == 0);
	CHECK(strcmp(finderd_strerror(-2000000000), "Unknown error") == 0);
}

static void *count_alloc(size_t n, void *ctx)
{
	((long *)ctx)[0]++;
	return malloc(n);
}

static void *count_realloc(void *p, size_t n, void *ctx)
{
	(void)ctx;
	return realloc(p, n);
}

static void count_free(void *p, void *ctx)
{
	((long *)ctx)[1]++;
	free(p);
}

static void test_options(void)
{
	struct finderd_options o;
	struct fdi_opts r;

	memset(&o, 0xff, sizeof(o));
	finderd_options_init(&o);
	CHECK_INT(o.size, sizeof(o));
	CHECK(o.socket_path == NULL && o.alloc == NULL && o.connect_timeout_us == 0);
	CHECK_INT(fdi_opts_load(&r, &o), 0);
	CHECK_INT(r.connect_timeout_us, FINDERD_DEFAULT_CONNECT_TIMEOUT_US);
	CHECK_INT(r.call_timeout_us, FINDERD_DEFAULT_CALL_TIMEOUT_US);
	CHECK_INT(r.max_message_bytes, FINDERD_DEFAULT_MAX_MESSAGE_BYTES);
	CHECK_INT(r.reconnect_min_us, FINDERD_DEFAULT_RECONNECT_MIN_US);
	CHECK_INT(r.reconnect_max_us, FINDERD_DEFAULT_RECONNECT_MAX_US);
	CHECK_INT(r.snapshot_timeout_us,
		  FINDERD_SNAPSHOT_TIMEOUT_CALLS * FINDERD_DEFAULT_CALL_TIMEOUT_US);
	CHECK(r.daemon_user == NULL);
	/* A Snapshot's deadline follows the call deadline unless it is set. */
	o.call_timeout_us = 3000000000u;
	CHECK_INT(fdi_opts_load(&r, &o), 0);
	CHECK(r.snapshot_timeout_us == UINT32_MAX);
	o.snapshot_timeout_us = 5;
	CHECK_INT(fdi_opts_load(&r, &o), 0);
	CHECK_INT(r.snapshot_timeout_us, 5);
	finderd_options_init(&o);
	/* The longest pause is never shorter than the first. */
	o.reconnect_min_us = 5000;
	o.reconnect_max_us = 10;
	CHECK_INT(fdi_opts_load(&r, &o), 0);
	CHECK_INT(r.reconnect_min_us, 5000);
	CHECK_INT(r.reconnect_max_us, 5000);
	/* A 0.2 caller's struct ends before daemon_user. */
	o.daemon_user = "nobody";
	o.size = offsetof(struct finderd_options, daemon_user);
	CHECK_INT(fdi_opts_load(&r, &o), 0);
	CHECK(r.daemon_user == NULL);
	CHECK_INT(r.reconnect_min_us, FINDERD_DEFAULT_RECONNECT_MIN_US);
	finderd_options_init(&o);
	CHECK_INT(fdi_opts_load(&r, NULL), 0);
	o.alloc = count_alloc;
	CHECK_INT(fdi_opts_load(&r, &o), -EINVAL); /* all three or none */
	o.size = 0;
	CHECK_INT(fdi_opts_load(&r, &o), -EINVAL);
	/* An older caller's shorter struct: fields past its size are defaults. */
	finderd_options_init(&o);
	o.call_timeout_us = 7;
	o.alloc = count_alloc;
	o.size = offsetof(struct finderd_options, max_message_bytes);
	CHECK_INT(fdi_opts_load(&r, &o), 0);
	CHECK_INT(r.call_timeout_us, 7);
	CHECK(r.alloc.alloc != count_alloc);
	/* A 0.1 caller's struct ends before flags. */
	finderd_options_init(&o);
	o.flags = FINDERD_CONNECT_LAZY;
	o.size = offsetof(struct finderd_options, flags);
	CHECK_INT(fdi_opts_load(&r, &o), 0);
	CHECK_INT(r.flags, 0);
	o.size = sizeof(o);
	CHECK_INT(fdi_opts_load(&r, &o), 0);
	CHECK_INT(r.flags, FINDERD_CONNECT_LAZY);
	/* Flags this library does not know are refused, not ignored. */
	o.flags = 0x80000000u;
	CHECK_INT(fdi_opts_load(&r, &o), -EINVAL);
	/* A newer caller's longer struct: what this library knows is read. */
	{
		struct {
			struct finderd_options o;
			uint64_t future[4];
		} big;

		memset(&big, 0xab, sizeof(big));
		finderd_options_init(&big.o);
		big.o.size = sizeof(big);
		big.o.call_timeout_us = 9;
		CHECK_INT(fdi_opts_load(&r, &big.o), 0);
		CHECK_INT(r.call_timeout_us, 9);
	}
}

static void test_socket_path(void)
{
	char buf[256];
	char small[8];

	setenv("FINDERD_SOCKET", "/x/y.sock", 1);
	CHECK_INT(finderd_socket_path(buf, sizeof(buf)), 0);
	CHECK(strcmp(buf, "/x/y.sock") == 0);
	CHECK_INT(finderd_socket_path(small, sizeof(small)), -ENAMETOOLONG);
	/* Empty means unset; then the per-user runtime directory... */
	setenv("FINDERD_SOCKET", "", 1);
	setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
	CHECK_INT(finderd_socket_path(buf, sizeof(buf)), 0);
	CHECK(strcmp(buf, "/run/user/4242/finderd/finderd.sock") == 0);
	CHECK_INT(finderd_socket_path(small, sizeof(small)), -ENAMETOOLONG);
	/* ...and without one, the system daemon's socket, whoever asks. */
	unsetenv("XDG_RUNTIME_DIR");
	unsetenv("FINDERD_SOCKET");
	CHECK_INT(finderd_socket_path(buf, sizeof(buf)), 0);
	CHECK(strcmp(buf, "/run/finderd/finderd.sock") == 0);
}

/* An embedder that ignores its environment (python -E) skips $FINDERD_SOCKET
 * only; flags 0 is finderd_socket_path() itself. */
static void test_socket_path_flags(void)
{
	char buf[256];
	char small[8];

	setenv("FINDERD_SOCKET", "/x/y.sock", 1);
	setenv("XDG_RUNTIME_DIR", "/run/user/4242", 1);
	CHECK_INT(finderd_socket_path_flags(buf, sizeof(buf), 0), 0);
	CHECK(strcmp(buf, "/x/y.sock") == 0);
	CHECK_INT(finderd_socket_path_flags(buf, sizeof(buf), FINDERD_SOCKET_PATH_NO_ENV), 0);
	CHECK(strcmp(buf, "/run/user/4242/finderd/finderd.sock") == 0);
	CHECK_INT(finderd_socket_path_flags(small, sizeof(small), FINDERD_SOCKET_PATH_NO_ENV),
		  -ENAMETOOLONG);
	unsetenv("XDG_RUNTIME_DIR");
	CHECK_INT(finderd_socket_path_flags(buf, sizeof(buf), FINDERD_SOCKET_PATH_NO_ENV), 0);
	CHECK(strcmp(buf, "/run/finderd/finderd.sock") == 0);
	/* Unknown flags are refused, and the buffer is left alone. */
	strcpy(buf, "untouched");
	CHECK_INT(finderd_socket_path_flags(buf, sizeof(buf), 0x80u), -EINVAL);
	CHECK(strcmp(buf, "untouched") == 0);
	unsetenv("FINDERD_SOCKET");
	/* finderd_client_set_flags() refuses what it does not know. */
	CHECK_INT(finderd_client_set_flags(NULL, 0), -EINVAL);
	CHECK_INT(finderd_client_set_flags(NULL, FINDERD_CLIENT_NO_ROUND_TRIPS), -EINVAL);
}

static void test_connect_failures(void)
{
	char dir[] = "/tmp/finderd-test-XXXXXX";
	char path[128];
	struct finderd_options o;
	struct finderd_conn *c = NULL;
	struct sockaddr_un sa;
	long counts[2] = { 0, 0 };
	int64_t t0;
	int fd;

	CHECK(mkdtemp(dir) != NULL);
	snprintf(path, sizeof(path), "%s/s.sock", dir);
	finderd_options_init(&o);
	o.socket_path = path;
	o.alloc = count_alloc;
	o.realloc = count_realloc;
	o.free = count_free;
	o.alloc_ctx = counts;
	t0 = fdi_now_us();
	CHECK_INT(finderd_connect(&o, &c), -ENOENT);
	/* A socket file nobody listens on. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	strcpy(sa.sun_path, path);
	CHECK_INT(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	CHECK_INT(finderd_connect(&o, &c), -ECONNREFUSED);
	close(fd);
	CHECK(fdi_now_us() - t0 < 1000000); /* not a timeout: an immediate answer */
	CHECK(c == NULL);
	CHECK(counts[0] > 0 && counts[0] == counts[1]);
	unlink(path);
	/* A path too long for sun_path. */
	o.socket_path = "/tmp/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
			"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock";
	CHECK_INT(finderd_connect(&o, &c), -ENAMETOOLONG);
	CHECK_INT(finderd_connect(NULL, NULL), -EINVAL);
	rmdir(dir);
	finderd_close(NULL);
}

static void test_daemon_user(void)
{
	uint32_t uid = 42;

	CHECK(fdi_daemon_uid("1234", &uid) && uid == 1234);
	CHECK(fdi_daemon_uid("root", &uid) && uid == 0);
	uid = 42;
	CHECK(!fdi_daemon_uid("", &uid) && uid == 42);
	CHECK(!fdi_daemon_uid("no-such-user-finderd-test", &uid));
	CHECK(!fdi_daemon_uid("4294967295", &uid)); /* (uid_t)-1 is nobody's */
	CHECK(!fdi_daemon_uid("99999999999999999999", &uid));
	CHECK(!fdi_daemon_uid("12ab", &uid) || uid != 12);
	setenv("FINDERD_DAEMON_USER", "77", 1);
	CHECK(fdi_daemon_uid(NULL, &uid) && uid == 77);
	CHECK(!fdi_daemon_uid("", &uid)); /* "": nobody, whatever the environment says */
	unsetenv("FINDERD_DAEMON_USER");
	CHECK(!fdi_daemon_uid(NULL, &uid));
}

/* A listener of this process's own user: trusted, and named by
 * finderd_socket_peer() without a byte sent to it. */
static void test_listener_of_this_user(void)
{
	char dir[] = "/tmp/finderd-test-XXXXXX";
	struct finderd_options o;
	struct finderd_peer peer;
	struct sockaddr_un sa;
	char byte;
	int lfd, fd;

	CHECK(mkdtemp(dir) != NULL);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/s.sock", dir);
	lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK_INT(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	CHECK_INT(listen(lfd, 4), 0);
	finderd_options_init(&o);
	o.socket_path = sa.sun_path;
	CHECK_INT(finderd_socket_peer(&o, &peer), 0);
	CHECK_INT(peer.pid, getpid());
	CHECK_INT(peer.uid, geteuid());
	CHECK_INT(peer.gid, getegid());
	fd = accept(lfd, NULL, NULL);
	CHECK(fd >= 0 && recv(fd, &byte, 1, 0) == 0); /* closed, nothing sent */
	close(fd);
	CHECK_INT(fdi_sock_connect(sa.sun_path, fdi_now_us() + 1000000, &fd), 0);
	CHECK_INT(fdi_check_listener(fd, ""), 0);
	close(fd);
	CHECK_INT(finderd_socket_peer(&o, NULL), -EINVAL);
	close(lfd);
	unlink(sa.sun_path);
	CHECK_INT(finderd_socket_peer(&o, &peer), -ENOENT);
	rmdir(dir);
}

int main(void)
{
	test_version();
	test_strerror();
	test_options();
	test_socket_path();
	test_socket_path_flags();
	test_connect_failures();
	test_daemon_user();
	test_listener_of_this_user();
	TEST_MAIN_END("test_api");
}
