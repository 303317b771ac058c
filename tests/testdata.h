// Test helpers that need no test framework (multi-process programs use
// them too): byte patterns that tell messages apart, and free loopback
// ports.

#ifndef TW_TESTS_TESTDATA_H
#define TW_TESTS_TESTDATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
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

// Whether `port` of 127.0.0.1 can be bound now, the way the tcp://
// transport binds it (SO_REUSEADDR, so a connection left in TIME_WAIT by an
// earlier test does not count as taken).
static inline bool tw_test_port_bindable(unsigned port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	bool ok = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
	close(fd);
	return ok;
}

// A loopback port that is free now (0 if none).  It is drawn at random from
// below the kernel's ephemeral range (net.ipv4.ip_local_port_range): the
// kernel serves every outgoing connection and every bind to port 0 from that
// range, so neither can take the port before the test binds it.  Tests that
// run at once could still draw the same port, but they draw from thousands
// and skip ports already bound, so only two draws of one port within the
// few milliseconds before either binds it collide.
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
		if (tw_test_port_bindable(port))
			return port;
	}
	return 0;
}

#endif // TW_TESTS_TESTDATA_H
