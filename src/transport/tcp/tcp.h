// Internals of the tcp:// transport shared by its files: tcp.c (channels,
// sending, the receiver of each connection) and tcp_node.c (the node of
// each listening address, which accepts connections and hands them to the
// link they name).

#ifndef TW_TRANSPORT_TCP_TCP_H
#define TW_TRANSPORT_TCP_TCP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/log.h"
#include "core/mailbox.h"
#include "core/nsset.h"
#include "transport/tcp/tcp_proto.h"
#include "transport/tcp/tcp_sock.h"
#include "transport/rxbox.h"
#include "transport/transport.h"

typedef struct tcp_node tcp_node;
typedef struct tcp_chan tcp_chan;

// This party's side of a link: the mailbox that all its channels deliver
// into, freed with the last reference (its channels, and handshakes in
// progress that found it).
typedef struct tcp_ep {
	struct tcp_ep *next; // node's list, protected by the node's mtx
	tcp_node *node;
	tw_mailbox *mb;
	char *link_id;
	uint32_t self_rank;
	uint32_t size;
	uint64_t recv_buffer;
	uint64_t max_msg;
	int64_t heartbeat_ms; // 0: off
	void *secret;
	size_t secret_len;
	pthread_mutex_t mtx; // guards chans against destroy
	tcp_chan **chans; // [size], chans[self_rank] == NULL; by mtx
	bool registered; // protected by the node's mtx
	unsigned refs; // atomic
} tcp_ep;

struct tcp_chan {
	tw__rxbox rx; // first: the shared receive ops find it at impl
	tw_channel ch;
	tcp_ep *ep;
	char *peer_id;
	char *peer_addr;
	uint32_t peer_rank;
	int64_t connect_deadline;

	// The connection.  fd is set once (by test_send, or by the node when
	// the peer connected) under mtx, and `attached` says so.
	pthread_mutex_t mtx;
	pthread_cond_t cv; // attached, acked or failed
	int fd; // protected by mtx until attached, constant after
	int attached; // atomic
	pthread_t rx_thread;
	bool rx_started; // protected by mtx

	// Sending: one writer at a time, so frames never interleave.
	pthread_mutex_t tx_mtx;
	uint64_t tx_seq; // atomic: the last sequence number used
	int tx_broken; // atomic: a frame was cut short; nothing more goes

	// Receiving (rx thread), published for waiters.
	uint64_t rx_done; // atomic: last frame from the peer fully handled
	uint64_t peer_ack; // atomic: the peer's last ack
	int peer_gone; // atomic
	int stop; // atomic: destroy in progress; cancels rx pushes
	int aborted; // atomic
	int auth_failed; // atomic: a connection for it failed the secret

	// Namespaces the peer aborted (sends there fail with TW_EPEER).
	tw__nsset peer_aborted; // namespaces the peer aborted
};

#define LOGC(mc, level, ...)                                                  \
	TW_LOGL(level, "tcp", (mc)->ep->link_id, (mc)->ep->self_rank,         \
	    __VA_ARGS__)

static inline bool tw__tcp_flag(const int *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE) != 0;
}

// The node of `addr` ("tcp://HOST:PORT"): its listener and accepting
// thread, shared by every link of this process that names the address.
// Registers `ep` there.  TW_OK, TW_ESYS (cannot bind, or the link is
// already open at this address in this process; logged), TW_ENOMEM.
int tw__tcp_node_join(const char *addr, tcp_ep *ep);

// Takes `ep` out of its node (no new connections reach it) and drops the
// node reference it held.  Idempotent.
void tw__tcp_node_leave(tcp_ep *ep);

// This node's "host:port" and instance, for handshakes.
const char *tw__tcp_node_name(const tcp_node *n);
uint64_t tw__tcp_node_instance(const tcp_node *n);

// Attaches a connected, handshaken socket to channel mc and starts its
// receiver.  TW_OK, or TW_EPEER when the channel has a connection already
// (the caller closes fd) or is being destroyed, TW_ESYS (no thread).
int tw__tcp_chan_attach(tcp_chan *mc, int fd);

void tw__tcp_ep_ref(tcp_ep *ep);
void tw__tcp_ep_unref(tcp_ep *ep);

#endif // TW_TRANSPORT_TCP_TCP_H
