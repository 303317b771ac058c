// Counting a process's own TCP sockets.
//
// pc_snap_self() lists the descriptors in /proc/self/fd and asks each TCP
// socket among them for its state (TCP_INFO) and its local and remote
// ports.  The other functions count in such a snapshot, or match two
// snapshots of processes on one host that talk over loopback, where a port
// names one socket end.

#ifndef TW_PROCCOUNT_H
#define TW_PROCCOUNT_H

#include <stdbool.h>
#include <stddef.h>

#define PC_MAX_SOCKS 128

// TCP states (the kernel's TCP_* values, as TCP_INFO reports them).
enum { PC_TCP_ESTABLISHED = 0x01, PC_TCP_LISTEN = 0x0A };

typedef struct pc_sock {
	unsigned state; // PC_TCP_*, or another TCP state
	unsigned lport, rport; // local and remote port (0 while listening)
	bool v6; // an IPv6 socket
} pc_sock;

typedef struct pc_snap {
	size_t n; // sockets in s[]
	bool truncated; // more than PC_MAX_SOCKS TCP sockets: some left out
	pc_sock s[PC_MAX_SOCKS];
} pc_snap;

// Takes a snapshot of this process's TCP sockets.  Returns 0, or -1 with
// errno set when /proc/self/fd cannot be read.
int pc_snap_self(pc_snap *out);

// Sockets of the snapshot in `state`.
size_t pc_count_state(const pc_snap *s, unsigned state);

// Established connections of process `a` (listening on a_port) to process
// `b` (listening on b_port): those `a` dialled (remote port b_port) and
// those `a` accepted from `b` (local port a_port, remote port the local
// port of one of b's established sockets whose remote port is a_port).
size_t pc_count_between(
    const pc_snap *a, unsigned a_port, const pc_snap *b, unsigned b_port);

#endif // TW_PROCCOUNT_H
