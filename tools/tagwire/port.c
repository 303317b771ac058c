// Free ports for the parties that `perf` and `run` start.
//
// A port is drawn at random from below the kernel's ephemeral range
// (net.ipv4.ip_local_port_range) and reserved by binding it.  The kernel
// serves every outgoing connection and every bind to port 0 from that
// range, so neither can take a drawn port in the gap before the party binds
// it; a port merely bound to port 0 and released would be fair game for
// both.

#include <netdb.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "cli.h"

// The low end of the ephemeral range (32768 where it cannot be read).
static unsigned ephemeral_low(void)
{
	unsigned lo = 32768, hi;
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
	if (f != NULL) {
		if (fscanf(f, "%u %u", &lo, &hi) != 2)
			lo = 32768;
		fclose(f);
	}
	return lo;
}

// Reserves `port` of the address `a` for this process until it exits:
// returns whether it was free.  The probe binds without SO_REUSEADDR, so it
// fails while any socket holds the port (another program's listener or
// reservation, a connection in TIME_WAIT), and then stays open with
// SO_REUSEADDR set: the tcp:// transport binds with SO_REUSEADDR too, so the
// party given the port binds past the reservation while other programs
// drawing ports the same way still find it taken.  A probe closed at once
// would leave a gap in which two programs both find the port free.
static bool reserve(const struct addrinfo *a, unsigned port)
{
	struct sockaddr_storage ss;
	if (a->ai_addrlen > sizeof(ss))
		return false;
	memcpy(&ss, a->ai_addr, a->ai_addrlen);
	if (ss.ss_family == AF_INET6)
		((struct sockaddr_in6 *)&ss)->sin6_port
		    = htons((uint16_t)port);
	else
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
	int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	int one = 1;
	if (bind(fd, (struct sockaddr *)&ss, a->ai_addrlen) != 0
	    || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one))
	        != 0) {
		close(fd);
		return false;
	}
	return true; // the descriptor stays open until the program exits
}

int cli_free_ports(const char *host, unsigned *ports, size_t n)
{
	struct addrinfo hints, *ai = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	int rc = getaddrinfo(host, "0", &hints, &ai);
	if (rc != 0) {
		fprintf(stderr, "tagwire: %s: %s\n", host, gai_strerror(rc));
		return -1;
	}
	unsigned lo = ephemeral_low();
	unsigned base = lo > 16384 + 1024 ? lo - 16384 : 1024;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t x = ((uint64_t)getpid() << 32 ^ (uint64_t)ts.tv_nsec) | 1;
	size_t got = 0;
	for (size_t tries = 0; got < n && lo > base && tries < 1000 * n;
	     tries++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		unsigned p = base + (unsigned)(x % (lo - base));
		bool dup = false;
		for (size_t k = 0; k < got; k++)
			dup = dup || ports[k] == p;
		for (struct addrinfo *a = ai; !dup && a != NULL;
		     a = a->ai_next)
			if (reserve(a, p)) {
				ports[got++] = p;
				break;
			}
	}
	freeaddrinfo(ai);
	if (got < n) {
		fprintf(stderr, "tagwire: no %zu free ports on %s below %u\n",
		    n, host, lo);
		return -1;
	}
	return 0;
}
