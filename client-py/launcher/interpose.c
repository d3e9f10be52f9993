/*
 * interpose.c - CPython's own path calculation, answered from listings.
 *
 * Before an interpreter imports anything, getpath (Modules/getpath.py, run
 * by libpython's C helpers) checks its landmarks: isfile(), isdir() and
 * isxfile() through stat(), readlines() through fopen(), realpath() through
 * readlink(). libpython calls libc's stat64, fopen64 and readlink (setup.py
 * checks that it does, and builds without this file's definitions when it
 * does not). This executable defines those three names and exports them, so
 * the dynamic linker binds libpython's calls here: in the global scope the
 * executable comes before every library. A static libpython is bound here
 * by the static linker instead.
 *
 * Each function is libc's own, exactly, except in two cases:
 *
 *   - While getpath runs (launcher_serving_getpath, set by finderd_python.c
 *     around the calculation only), stat64() of a path the held listings
 *     answer returns the listing's fingerprint (st_mode, st_size, st_mtim;
 *     getpath reads st_mode alone), and fopen64() for reading a path the
 *     listings say does not exist fails with its errno, without a system
 *     call. The client asks no round trip then (FINDERD_CLIENT_NO_ROUND_TRIPS):
 *     what it does not hold goes to libc. Nothing but getpath runs in that
 *     window (the main thread, before any Python code of the program).
 *
 *   - readlink() of a name this launcher replaced in its own directory
 *     (python3.X, which `python -m finderd launcher enable` found as a
 *     symlink to the base interpreter) returns that symlink's target when
 *     the real call says "not a link". getpath derives sys._base_executable
 *     by following the executable's symlinks, so this keeps it stock's. The
 *     targets are written into this binary's layout record by `enable`.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launcher.h"

struct finderd_client *launcher_getpath_client;
int launcher_serving_getpath;
unsigned long launcher_getpath_answered, launcher_getpath_passed;

/* ------------------------------------------------------------------------ */
/* The interposed functions                                                 */
/* ------------------------------------------------------------------------ */

#ifdef LAUNCHER_INTERPOSE

/* What the held listings say of @path: 0 with @st filled, -ENOENT/-ENOTDIR,
 * or 1 when they cannot say (the filesystem answers). */
static int from_listings(const char *path, struct finderd_stat *st)
{
	int rc;

	if (!launcher_serving_getpath || !launcher_getpath_client || !path || path[0] != '/')
		return 1;
	rc = finderd_client_stat(launcher_getpath_client, path, strlen(path), st);
	if (rc == 0 || rc == -ENOENT || rc == -ENOTDIR) {
		launcher_getpath_answered++;
		return rc;
	}
	launcher_getpath_passed++;
	return 1;
}

LAUNCHER_EXPORT int stat64(const char *path, struct stat64 *buf);
LAUNCHER_EXPORT FILE *fopen64(const char *path, const char *mode);

int stat64(const char *path, struct stat64 *buf)
{
	struct finderd_stat st;
	int rc = from_listings(path, &st);

	if (rc == 1)
		return fstatat64(AT_FDCWD, path, buf, 0); /* what glibc's stat64 is */
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	memset(buf, 0, sizeof(*buf));
	buf->st_mode = st.mode;
	buf->st_nlink = 1;
	buf->st_size = (off_t)st.size;
	buf->st_mtim.tv_sec = (time_t)(st.mtime_ns / 1000000000);
	buf->st_mtim.tv_nsec = (long)(st.mtime_ns % 1000000000);
	if (buf->st_mtim.tv_nsec < 0) {
		buf->st_mtim.tv_nsec += 1000000000;
		buf->st_mtim.tv_sec -= 1;
	}
	buf->st_atim = buf->st_ctim = buf->st_mtim;
	return 0;
}

FILE *fopen64(const char *path, const char *mode)
{
	static FILE *(*real)(const char *, const char *);
	struct finderd_stat st;

	/* Only a read of a path that does not exist is answered: an existing
	 * one is opened for real (its bytes are the point). */
	if (mode && mode[0] == 'r' && !strchr(mode, '+')) {
		int rc = from_listings(path, &st);

		if (rc < 0) {
			errno = -rc;
			return NULL;
		}
	}
	if (!real)
		real = (FILE * (*)(const char *, const char *))dlsym(RTLD_NEXT, "fopen64");
	if (!real) {
		errno = ENOSYS;
		return NULL;
	}
	return real(path, mode);
}

#endif /* LAUNCHER_INTERPOSE */

#ifdef LAUNCHER_INTERPOSE_READLINK

/* ------------------------------------------------------------------------ */
/* The layout record                                                        */
/* ------------------------------------------------------------------------ */

/*
 * Written by `python -m finderd launcher enable` into each copy it places
 * (finderd/launcher.py, LAYOUT_MARKER): after the marker, "v1", then pairs
 * of NUL-terminated strings "link", NAME, TARGET: NAME in the launcher's
 * directory was a symlink to TARGET. An empty string ends the record. The
 * volatile qualifier keeps the compiler from folding the unpatched text.
 */
#define LAYOUT_MARKER_LEN 15 /* "FINDERD-LAYOUT:" */
__attribute__((used)) static const volatile char layout[4096] = "FINDERD-LAYOUT:";

/* The target recorded for @name, copied into @out (size @size), or NULL. */
static const char *layout_link(const char *name, char *out, size_t size)
{
	char field[3][PATH_MAX];
	size_t at = LAYOUT_MARKER_LEN, f = 0, n = 0;
	int version_seen = 0;

	while (at < sizeof(layout)) {
		char ch = layout[at++];

		if (n >= sizeof(field[0]))
			return NULL; /* a field longer than a path: not a record of ours */
		field[f][n++] = ch;
		if (ch != '\0')
			continue;
		n = 0;
		if (!version_seen) {
			if (strcmp(field[0], "v1") != 0)
				return NULL; /* unpatched (or another format) */
			version_seen = 1;
			continue;
		}
		if (f == 0 && field[0][0] == '\0')
			return NULL; /* end of the record */
		if (++f < 3)
			continue;
		f = 0;
		if (strcmp(field[0], "link") == 0 && strcmp(field[1], name) == 0 &&
		    strlen(field[2]) < size) {
			strcpy(out, field[2]);
			return out;
		}
	}
	return NULL;
}

/* The directory this executable was started from (the path execve() was
 * given, made absolute), without a trailing '/'; "" when unknown. */
static const char *exec_dir(void)
{
	static char dir[PATH_MAX];
	static int known;
	const char *fn;
	char *slash;

	if (known)
		return dir;
	known = 1;
	fn = (const char *)getauxval(AT_EXECFN);
	if (!fn || !*fn)
		return dir;
	if (fn[0] == '/') {
		if (strlen(fn) >= sizeof(dir))
			return dir;
		strcpy(dir, fn);
	} else {
		size_t len;

		if (!getcwd(dir, sizeof(dir))) {
			dir[0] = '\0';
			return dir;
		}
		len = strlen(dir);
		if (len + 1 + strlen(fn) >= sizeof(dir)) {
			dir[0] = '\0';
			return dir;
		}
		dir[len] = '/';
		strcpy(dir + len + 1, fn);
	}
	slash = strrchr(dir, '/');
	*slash = '\0';
	return dir;
}

LAUNCHER_EXPORT ssize_t readlink(const char *path, char *buf, size_t size);

ssize_t readlink(const char *path, char *buf, size_t size)
{
	char target[PATH_MAX];
	const char *dir, *slash;
	ssize_t n = readlinkat(AT_FDCWD, path, buf, size); /* what glibc's readlink is */
	size_t dlen, tlen;
	int saved = errno;

	if (n >= 0 || saved != EINVAL || path[0] != '/')
		return n;
	slash = strrchr(path, '/');
	dir = exec_dir();
	dlen = strlen(dir);
	if (!dlen || (size_t)(slash - path) != dlen || memcmp(path, dir, dlen) != 0 ||
	    !layout_link(slash + 1, target, sizeof(target))) {
		errno = saved;
		return n;
	}
	tlen = strlen(target);
	if (tlen > size)
		tlen = size; /* readlink() truncates, without a NUL */
	memcpy(buf, target, tlen);
	return (ssize_t)tlen;
}

#endif /* LAUNCHER_INTERPOSE_READLINK */
