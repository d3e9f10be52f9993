/*
 * failalloc.h - allocator hooks whose Nth call fails, counting allocations
 * and frees, for the "every allocation failure path" tests.
 */
#ifndef FINDERD_TEST_FAILALLOC_H
#define FINDERD_TEST_FAILALLOC_H

#include <stdlib.h>

struct counting {
	long allocs, frees, calls, fail_at;
};

static inline void *fail_alloc(size_t n, void *ctx)
{
	struct counting *k = ctx;
	void *p;

	if (++k->calls == k->fail_at)
		return NULL;
	p = malloc(n);
	k->allocs += p != NULL;
	return p;
}

static inline void *fail_realloc(void *old, size_t n, void *ctx)
{
	struct counting *k = ctx;

	if (++k->calls == k->fail_at)
		return NULL;
	return realloc(old, n);
}

static inline void fail_free(void *p, void *ctx)
{
	struct counting *k = ctx;

	k->frees++;
	free(p);
}

#endif /* FINDERD_TEST_FAILALLOC_H */
