// Test helpers that need no test framework (multi-process programs use
// them too): byte patterns that tell messages apart, and free loopback
// ports.

#ifndef TW_TESTS_TESTDATA_H
#define TW_TESTS_TESTDATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
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

// The pattern's next eight bytes.  The pattern is made and checked a word at
// a time: sanitizer builds check every store and load, and tests stream
// hundreds of megabytes of it.
static inline uint64_t tw_test_pattern_next(uint64_t *x)
{
	*x = *x * 6364136223846793005u + 1442695040888963407u;
	return *x ^ (*x >> 29);
}

static inline void tw_test_fill(
    void *buf, size_t len, uint32_t a, uint32_t b, uint32_t c)
{
	uint64_t x = tw_test_pattern_seed(a, b, c);
	unsigned char *p = buf;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t w = tw_test_pattern_next(&x);
		memcpy(p + i, &w, 8);
	}
	if (i < len) {
		uint64_t w = tw_test_pattern_next(&x);
		memcpy(p + i, &w, len - i);
	}
}

// Whether buf[0..len) holds tw_test_fill(a, b, c).
static inline bool tw_test_check(
    const void *buf, size_t len, uint32_t a, uint32_t b, uint32_t c)
{
	uint64_t x = tw_test_pattern_seed(a, b, c);
	const unsigned char *p = buf;
	size_t i = 0;
	for (; i + 8 <= len; i += 8) {
		uint64_t w = tw_test_pattern_next(&x), got;
		memcpy(&got, p + i, 8);
		if (got != w)
			return false;
	}
	if (i < len) {
		uint64_t w = tw_test_pattern_next(&x);
		return memcmp(p + i, &w, len - i) == 0;
	}
	return true;
}

// Reserves `port` for this process until it exits: returns whether it was
// free.  The probe binds the wildcard address without SO_REUSEADDR, so it
// fails while any socket holds the port (another test's party, another
// test's reservation, a connection in TIME_WAIT), and then stays open with
// SO_REUSEADDR set: the tcp:// transport binds with SO_REUSEADDR too, so the
// party that was given the port binds past its own reservation, while every
// other test's probe still finds the port taken.  Checking a port and then
// closing the probe would leave a gap in which two tests running at once
// both find it free.
static inline bool tw_test_port_reserve(unsigned port)
{
	enum { HELD_MAX = 256 };
	static int held[HELD_MAX];
	static size_t nheld;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_ANY) };
	int one = 1;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0
	    || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one))
	        != 0) {
		close(fd);
		return false;
	}
	// The oldest reservation goes once HELD_MAX are held: its party has
	// long since bound the port or given up.
	if (nheld >= HELD_MAX)
		close(held[nheld % HELD_MAX]);
	held[nheld++ % HELD_MAX] = fd;
	return true;
}

// A loopback port that is free now and reserved for this process (0 if
// none).  It is drawn at random from below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range): the kernel serves every outgoing
// connection and every bind to port 0 from that range, so neither can take
// the port before the test binds it; tw_test_port_reserve keeps other tests
// off it.
static inline unsigned tw_test_free_port(void)
{
	unsigned lo = 32768, hi = 60999;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f != NULL) {
		if (fscanf(f, "%u %u", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	unsigned base = lo > 16384 + 1024 ? lo - 16384 : 1024;
	if (lo <= base + 1024)
		return 0; // no room below the ephemeral range
	static uint64_t x;
	if (x == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		x = ((uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_nsec
		        ^ (uint64_t)ts.tv_sec * 1000003u)
		    | 1;
	}
	for (int tries = 0; tries < 1000; tries++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		unsigned port = base + (unsigned)(x % (lo - base));
		if (tw_test_port_reserve(port))
			return port;
	}
	return 0;
}

#endif // TW_TESTS_TESTDATA_H
