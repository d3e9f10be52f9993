/*
 * test.h - the smallest assertion kit: CHECK() records a failure and goes
 * on; TEST_MAIN_END() prints a summary and sets the exit status.
 */
#ifndef FINDERD_TEST_H
#define FINDERD_TEST_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int test_checks;
static int test_failures;

#define CHECK(cond)                                                                   \
	do {                                                                          \
		test_checks++;                                                        \
		if (!(cond)) {                                                        \
			test_failures++;                                              \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, \
				#cond);                                               \
		}                                                                     \
	} while (0)

#define CHECK_INT(a, b)                                                               \
	do {                                                                          \
		long long a_ = (long long)(a), b_ = (long long)(b);                   \
		test_checks++;                                                        \
		if (a_ != b_) {                                                       \
			test_failures++;                                              \
			fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n",   \
				__FILE__, __LINE__, #a, a_, #b, b_);                  \
		}                                                                     \
	} while (0)

/* Compare @n bytes at @p with the NUL-terminated @s. */
#define CHECK_BYTES(p, n, s)                                                          \
	do {                                                                          \
		size_t n_ = (n);                                                      \
		test_checks++;                                                        \
		if (n_ != strlen(s) || memcmp((p), (s), n_) != 0) {                   \
			test_failures++;                                              \
			fprintf(stderr, "%s:%d: %s is \"%.*s\", expected \"%s\"\n",  \
				__FILE__, __LINE__, #p, (int)n_, (const char *)(p), (s)); \
		}                                                                     \
	} while (0)

#define TEST_MAIN_END(name)                                                           \
	do {                                                                          \
		printf("%s: %d checks, %d failed\n", (name), test_checks, test_failures); \
		return test_failures ? 1 : 0;                                         \
	} while (0)

/* Decode a hex string (spaces ignored) into @out; returns the length. */
static inline size_t test_unhex(const char *hex, unsigned char *out)
{
	size_t n = 0;
	int hi = -1;

	for (; *hex; hex++) {
		int v;

		if (*hex >= '0' && *hex <= '9')
			v = *hex - '0';
		else if (*hex >= 'a' && *hex <= 'f')
			v = *hex - 'a' + 10;
		else if (*hex >= 'A' && *hex <= 'F')
			v = *hex - 'A' + 10;
		else
			continue;
		if (hi < 0) {
			hi = v;
		} else {
			out[n++] = (unsigned char)(hi << 4 | v);
			hi = -1;
		}
	}
	return n;
}

#endif /* FINDERD_TEST_H */
