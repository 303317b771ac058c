// Counting a process's own TCP sockets from /proc (see proccount.h).

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "proccount.h"

#define PC_MAX_FDS 4096

static int cmp_ulong(const void *a, const void *b)
{
	unsigned long x = *(const unsigned long *)a;
	unsigned long y = *(const unsigned long *)b;
	return x < y ? -1 : x > y;
}

// The inodes of the sockets among this process's descriptors, sorted.
static int socket_inodes(unsigned long *out, size_t cap, size_t *n)
{
	DIR *dir = opendir("/proc/self/fd");
	if (dir == NULL)
		return -1;
	*n = 0;
	struct dirent *e;
	while ((e = readdir(dir)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		char link[64];
		ssize_t len = readlinkat(
		    dirfd(dir), e->d_name, link, sizeof(link) - 1);
		if (len <= 0)
			continue; // closed in between
		link[len] = '\0';
		unsigned long ino;
		if (sscanf(link, "socket:[%lu]", &ino) != 1)
			continue;
		if (*n == cap) {
			closedir(dir);
			errno = EMFILE;
			return -1;
		}
		out[(*n)++] = ino;
	}
	closedir(dir);
	qsort(out, *n, sizeof(*out), cmp_ulong);
	return 0;
}

// Adds the sockets of one /proc/net/tcp* table whose inode is in `inodes`.
static int scan_table(const char *path, bool v6, const unsigned long *inodes,
    size_t n_inodes, pc_snap *out)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return errno == ENOENT ? 0 : -1; // no IPv6 in this kernel
	char line[512];
	if (fgets(line, sizeof(line), f) == NULL) { // the header
		fclose(f);
		return 0;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		// "  sl: LADDR:LPORT RADDR:RPORT ST TX:RX TR:WHEN RETR UID
		//  TIMEOUT INODE ..." with addresses and ports in hex.
		unsigned lport, rport, state;
		unsigned long ino;
		if (sscanf(line,
		        " %*u: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%x %x %*x:%*x "
		        "%*x:%*x %*x %*u %*u %lu",
		        &lport, &rport, &state, &ino)
		    != 4)
			continue;
		if (ino == 0
		    || bsearch(
		           &ino, inodes, n_inodes, sizeof(*inodes), cmp_ulong)
		        == NULL)
			continue;
		if (out->n == PC_MAX_SOCKS) {
			out->truncated = true;
			continue;
		}
		out->s[out->n++] = (pc_sock) { .state = state,
			.lport = lport,
			.rport = rport,
			.v6 = v6 };
	}
	fclose(f);
	return 0;
}

int pc_snap_self(pc_snap *out)
{
	memset(out, 0, sizeof(*out));
	unsigned long *inodes = malloc(PC_MAX_FDS * sizeof(*inodes));
	if (inodes == NULL)
		return -1;
	size_t n;
	int rv = socket_inodes(inodes, PC_MAX_FDS, &n);
	if (rv == 0)
		rv = scan_table("/proc/net/tcp", false, inodes, n, out);
	if (rv == 0)
		rv = scan_table("/proc/net/tcp6", true, inodes, n, out);
	free(inodes);
	return rv;
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
