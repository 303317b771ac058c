// Counting a process's own TCP sockets (see proccount.h).

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include "proccount.h"

// Each socket is asked directly (its own state and ports) rather than
// looked up in /proc/net/tcp: that table is the whole host's, is read in
// pieces while other processes open and close connections, and then lists
// a socket twice or not at all; with many thousands of entries it is also
// slow to read.

static unsigned port_of(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return 0;
}

// Adds the TCP socket open as fd to out, once per socket (a socket open
// under two descriptors is one end).  Descriptors of other kinds, and one
// closed meanwhile, are skipped.
static void add_fd(int fd, pc_snap *out, unsigned long *seen, size_t *nseen)
{
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode))
		return;
	for (size_t i = 0; i < *nseen; i++)
		if (seen[i] == (unsigned long)st.st_ino)
			return;
	int domain = 0, proto = 0;
	socklen_t len = sizeof(domain);
	if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0
	    || (domain != AF_INET && domain != AF_INET6))
		return;
	len = sizeof(proto);
	if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) != 0
	    || proto != IPPROTO_TCP)
		return;
	struct tcp_info ti;
	len = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return;
	struct sockaddr_storage l, r;
	socklen_t ll = sizeof(l), rl = sizeof(r);
	memset(&l, 0, sizeof(l));
	memset(&r, 0, sizeof(r));
	if (getsockname(fd, (struct sockaddr *)&l, &ll) != 0)
		return;
	if (getpeername(fd, (struct sockaddr *)&r, &rl) != 0)
		memset(&r, 0, sizeof(r)); // listening, or not connected
	if (*nseen < PC_MAX_SOCKS * 2)
		seen[(*nseen)++] = (unsigned long)st.st_ino;
	if (out->n == PC_MAX_SOCKS) {
		out->truncated = true;
		return;
	}
	out->s[out->n++] = (pc_sock) { .state = ti.tcpi_state,
		.lport = port_of(&l),
		.rport = port_of(&r),
		.v6 = domain == AF_INET6 };
}

int pc_snap_self(pc_snap *out)
{
	memset(out, 0, sizeof(*out));
	DIR *dir = opendir("/proc/self/fd");
	if (dir == NULL)
		return -1;
	unsigned long seen[PC_MAX_SOCKS * 2];
	size_t nseen = 0;
	int self = dirfd(dir);
	struct dirent *e;
	while ((e = readdir(dir)) != NULL) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);
		if (e->d_name[0] == '.' || *end != '\0' || fd == self)
			continue;
		add_fd((int)fd, out, seen, &nseen);
	}
	closedir(dir);
	return 0;
}

size_t pc_count_state(const pc_snap *s, unsigned state)
{
	size_t n = 0;
	for (size_t i = 0; i < s->n; i++)
		n += s->s[i].state == state;
	return n;
}

size_t pc_count_between(
    const pc_snap *a, unsigned a_port, const pc_snap *b, unsigned b_port)
{
	size_t n = 0;
	for (size_t i = 0; i < a->n; i++) {
		const pc_sock *x = &a->s[i];
		if (x->state != PC_TCP_ESTABLISHED)
			continue;
		if (x->rport == b_port) { // a dialled b
			n++;
			continue;
		}
		if (x->lport != a_port)
			continue;
		for (size_t j = 0; j < b->n; j++) { // b dialled a
			const pc_sock *y = &b->s[j];
			if (y->state == PC_TCP_ESTABLISHED
			    && y->rport == a_port && y->lport == x->rport) {
				n++;
				break;
			}
		}
	}
	return n;
}
