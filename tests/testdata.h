// Test helpers that need no test framework (multi-process programs use
// them too): byte patterns that tell messages apart, and free loopback
// ports.

#ifndef TW_TESTS_TESTDATA_H
#define TW_TESTS_TESTDATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

// A pseudo-random byte pattern that depends on (a, b, c) — say sender,
// receiver and message number — so that a misrouted, reordered or
// corrupted message never passes for another.
static inline uint32_t tw_test_pattern_seed(uint32_t a, uint32_t b, uint32_t c)
{
	return a * 2654435761u ^ b * 40503u ^ c * 97u ^ 0x5bd1e995u;
}

static inline void tw_test_fill(
    void *buf, size_t len, uint32_t a, uint32_t b, uint32_t c)
{
	uint32_t x = tw_test_pattern_seed(a, b, c);
	unsigned char *p = buf;
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (unsigned char)(x >> 16);
	}
}

// Whether buf[0..len) holds tw_test_fill(a, b, c).
static inline bool tw_test_check(
    const void *buf, size_t len, uint32_t a, uint32_t b, uint32_t c)
{
	uint32_t x = tw_test_pattern_seed(a, b, c);
	const unsigned char *p = buf;
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		if (p[i] != (unsigned char)(x >> 16))
			return false;
	}
	return true;
}

// A loopback port that is free now: bound to port 0, read back and
// closed (0 if none).  Another process could take it before the test binds
// it; that race is small (the kernel hands out ephemeral ports at random)
// and shows as a bind failure (TW_ESYS), never as a wrong result.
static inline unsigned tw_test_free_port(void)
{
	unsigned port = 0;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0
	    && getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
		port = ntohs(sa.sin_port);
	if (fd >= 0)
		close(fd);
	return port;
}

#endif // TW_TESTS_TESTDATA_H
