// What every fuzz target needs: a check that aborts (libFuzzer reports an
// abort as a crash, with the input), and a heap copy of exactly the input's
// bytes, so that AddressSanitizer catches a read one byte past them.

#ifndef TW_FUZZ_FUZZ_UTIL_H
#define TW_FUZZ_FUZZ_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline void require(int cond)
{
	if (!cond)
		abort();
}

// NULL when out of memory (the target then skips the input).
static inline unsigned char *copy_of(const uint8_t *data, size_t size)
{
	unsigned char *buf = malloc(size > 0 ? size : 1);
	if (buf != NULL && size > 0)
		memcpy(buf, data, size);
	return buf;
}

#endif // TW_FUZZ_FUZZ_UTIL_H
