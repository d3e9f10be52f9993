/*
 * launcher.h - what the parts of finderd-python share.
 *
 * finderd-python is a drop-in `python` for a venv: CPython (libpython)
 * embedded with libfinderd, so that the interpreter is served by finderd
 * from its first lookup. finderd_python.c starts the interpreter in PEP 587's
 * two phases and installs the resolver between them; interpose.c answers
 * CPython's own path calculation (getpath) from the daemon's listings.
 */
#ifndef FINDERD_LAUNCHER_H
#define FINDERD_LAUNCHER_H

#include <stddef.h>

#include "finderd.h"

#ifdef __GNUC__
#define LAUNCHER_EXPORT __attribute__((visibility("default")))
#else
#define LAUNCHER_EXPORT
#endif

/*
 * The client whose listings answer getpath's probes, and whether they may
 * now: set by finderd_python.c just before the main phase of the
 * initialisation (which calculates the path configuration first) and
 * cleared as soon as that calculation is done. While it is clear, the
 * functions of interpose.c are exactly libc's.
 */
extern struct finderd_client *launcher_getpath_client;
extern int launcher_serving_getpath;

/* Debug lines (FINDERD_DEBUG) go to stderr when this is set. */
extern int launcher_debug;

/* How many of getpath's probes the listings answered, and how many went to
 * the filesystem: for FINDERD_DEBUG and the tests. */
extern unsigned long launcher_getpath_answered, launcher_getpath_passed;

#endif /* FINDERD_LAUNCHER_H */
