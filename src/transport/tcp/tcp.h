// Internals of the tcp:// transport shared by its files:
//
//   tcp.c       channels: a link's view of one peer, bound to a connection
//               (OPEN), credit-based flow control, the channel ops
//   tcp_conn.c  connections: one per pair of processes, shared by every
//               link between them; the frame reader, the writer and its
//               queue, heartbeats
//   tcp_node.c  nodes: one per listening address and process; accepting,
//               the handshake of new connections, the registry of
//               connections, links waiting for their peers
//
// Lock order (outer first): node mtx, endpoint mtx, channel mtx,
// connection mtx, connection tx_mtx, mailbox.  The reader of a connection
// holds none of them while it pushes into a mailbox.

#ifndef TW_TRANSPORT_TCP_TCP_H
#define TW_TRANSPORT_TCP_TCP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/log.h"
#include "core/mailbox.h"
#include "core/nsset.h"
#include "platform/posix/poller.h"
#include "transport/rxbox.h"
#include "transport/tcp/tcp_proto.h"
#include "transport/tcp/tcp_sock.h"
#include "transport/transport.h"

typedef struct tcp_node tcp_node;
typedef struct tcp_conn tcp_conn;
typedef struct tcp_chan tcp_chan;
typedef struct tcp_sx tcp_sx;
struct sx_item;

// This party's side of a link: the mailbox that all its channels deliver
// into, freed with the last reference (its channels, and connections
// that are binding one of them).
typedef struct tcp_ep {
	struct tcp_ep *next; // node's list, protected by the node's mtx
	tcp_node *node;
	tw_mailbox *mb;
	char *link_id;
	uint32_t self_rank;
	uint32_t size;
	uint64_t recv_buffer; // the window granted to each peer
	uint64_t max_msg;
	int64_t heartbeat_ms; // 0: off
	unsigned stripes; // connections per peer process it asks for
	uint64_t chunk; // bytes per chunk of a striped message
	void *secret;
	size_t secret_len;
	char **addrs; // [size]: every party's address, for tw__tcp_dials
	pthread_mutex_t mtx; // guards chans against destroy
	tcp_chan **chans; // [size], chans[self_rank] == NULL; by mtx
	bool registered; // protected by the node's mtx
	unsigned refs; // atomic
} tcp_ep;

// Channel states (atomic).
enum {
	CH_IDLE, // not bound to a connection yet
	CH_OPENING, // bound, our OPEN sent, waiting for the peer's
	CH_READY, // both OPENs done: data may flow
};

struct tcp_chan {
	tw__rxbox rx; // first: the shared receive ops find it at impl
	tw_channel ch;
	tcp_ep *ep; // referenced
	char *peer_id;
	char *peer_addr;
	uint32_t peer_rank;
	bool dialer; // this side connects to the peer (tcp.c explains)
	int64_t connect_deadline;
	unsigned refs; // atomic: the link, and readers dispatching to it

	pthread_mutex_t mtx;
	pthread_cond_t cv; // state, credit, peer gone, aborted
	int state; // atomic, CH_*
	tcp_conn *conn; // set once under mtx (referenced), then constant
	uint32_t my_slot; // our number for the link on conn
	uint32_t peer_slot; // the peer's (valid once CH_READY)

	// Sending, by mtx: the peer's window and what it has taken.
	uint64_t peer_window;
	uint64_t tx_data; // data bytes sent (reserved) so far
	uint64_t tx_credit; // data bytes the peer has taken so far
	bool credit_asked; // a CREDIT_REQ is out
	uint64_t last_seq; // atomic: the sequence number of our last DATA

	// Receiving, by mtx: what we have taken and granted.
	uint64_t taken; // data bytes taken out of the mailbox
	uint64_t credit_sent;
	bool peer_starved; // the peer asked for credit

	int peer_gone; // atomic: the peer's link is gone (UNBIND, EOF)
	uint64_t gone_ack; // atomic: the peer's ack when it went
	int aborted; // atomic
	int auth_failed; // atomic
	int unbound; // atomic: our UNBIND went out (abort or destroy)
	tw__nsset peer_aborted; // namespaces the peer aborted

	// Messages from the peer held behind an incomplete striped one
	// (tcp_stripe.c), by the connection's striping mutex.
	struct sx_item *held, *held_tail;
	unsigned held_n; // atomic
};

#define LOGC(mc, level, ...)                                                  \
	TW_LOGL(level, "tcp", (mc)->ep->link_id, (mc)->ep->self_rank,         \
	    __VA_ARGS__)

static inline bool tw__tcp_flag(const int *p)
{
	return __atomic_load_n(p, __ATOMIC_ACQUIRE) != 0;
}

// --- endpoints and channels (tcp.c) -----------------------------------------

void tw__tcp_ep_ref(tcp_ep *ep);
void tw__tcp_ep_unref(tcp_ep *ep);
void tw__tcp_chan_ref(tcp_chan *mc);
void tw__tcp_chan_unref(tcp_chan *mc);

// The peer bound the link named by an OPEN frame on connection c: `mc`
// is our channel to the sender (referenced by the caller).  Checks the
// proof, answers with our OPEN when the peer spoke first, and readies the
// channel.  TW_OK, or TW_EPROTO / TW_EAUTH: the connection must close.
int tw__tcp_chan_on_open(
    tcp_conn *c, tcp_chan *mc, const tw__tcp_hdr *h, const tw__tcp_open *o);

// A frame for channel mc arrived (DATA with its payload, whose ownership
// passes; CLOSE_NS, ABORT_NS, UNBIND, CREDIT, CREDIT_REQ).  TW_OK, or an
// error that closes the connection (logged).
int tw__tcp_chan_on_frame(
    tcp_chan *mc, const tw__tcp_hdr *h, const char *key, void *payload);

// The connection of mc failed or closed: its peer is gone.
void tw__tcp_chan_conn_failed(tcp_chan *mc);

// Pushes a message from the peer into mc's mailbox (ownership of data
// passes).  TW_OK (also when the namespace was aborted here: dropped), or
// TW_EPROTO (the peer overran its credit) / TW_ENOMEM: the connection
// must close.
int tw__tcp_chan_deliver(
    tcp_chan *mc, const char *key, void *data, size_t len);

// --- striped messages (tcp_stripe.c) -----------------------------------------

tcp_sx *tw__tcp_sx_new(void);
void tw__tcp_sx_free(tcp_sx *sx);
// The connection failed: nothing more is delivered.
void tw__tcp_sx_fail(tcp_sx *sx);
// The sequence number of the oldest announcement not yet delivered
// (UINT64_MAX: none): the main connection acknowledges nothing from it on.
uint64_t tw__tcp_sx_hold(const tcp_sx *sx);
// A DATA frame for mc (main connection's reader): delivered, or held
// behind an incomplete striped message.
int tw__tcp_sx_data(
    tcp_sx *sx, tcp_chan *mc, const char *key, void *data, size_t len);
// A STRIPED frame for mc (the peer's slot `slot`), sequence number seq.
int tw__tcp_sx_announce(tcp_sx *sx, tcp_chan *mc, uint32_t slot,
    const char *key, const tw__tcp_chunk *ck, uint64_t seq);
// A CHUNK of n bytes: *dst is where they go; chunk_end once they are read.
int tw__tcp_sx_chunk_begin(tcp_sx *sx, tcp_chan *mc, uint32_t slot,
    const tw__tcp_chunk *ck, size_t n, void **entry, unsigned char **dst);
int tw__tcp_sx_chunk_end(tcp_sx *sx, tcp_chan *mc, void *entry);
// Frees what mc holds (when it is freed).
void tw__tcp_sx_chan_free(tcp_chan *mc);

// --- connections (tcp_conn.c) -------------------------------------------------

// What a connection knows about its peer once the handshake is done.
typedef struct tcp_conn_info {
	int fd; // connected; owned by the connection from now on
	bool dialer; // this side connected
	const char *dialed; // the address dialed ("tcp://h:p"), or NULL
	const tw__tcp_hs_peer *peer;
	int64_t heartbeat_ms; // 0: off
	tcp_conn *main; // for an extra connection (stripe): its main one
	unsigned stripe; // and its index (1, 2, ...)
} tcp_conn_info;

// Extra connections (stripes) of a main connection.
tcp_sx *tw__tcp_conn_sx(const tcp_conn *c);
unsigned tw__tcp_conn_stripe(const tcp_conn *c); // 0: a main connection
// Attaches stripe s to main connection c (both referenced by c).  TW_OK,
// or TW_EPROTO when c has no room for it or failed.
int tw__tcp_conn_add_stripe(tcp_conn *c, tcp_conn *s);
// The connection that carries chunk number i of a message: c itself or
// one of its stripes, round robin.  Not referenced (c holds it).
tcp_conn *tw__tcp_conn_pick(tcp_conn *c, uint64_t i);
// Sends a CHUNK (prefix and bytes from the caller's memory), always whole.
int tw__tcp_conn_send_chunk(tcp_conn *c, uint32_t slot,
    const tw__tcp_chunk *ck, const void *bytes, size_t n);
// Next id of a striped message sent on c.
uint64_t tw__tcp_conn_next_id(tcp_conn *c);

// Makes a connection of node n and starts reading it.  TW_OK, TW_ENOMEM,
// TW_ESYS (logged); the caller closes info->fd on failure.
int tw__tcp_conn_new(tcp_node *n, const tcp_conn_info *info, tcp_conn **out);

void tw__tcp_conn_ref(tcp_conn *c);
void tw__tcp_conn_unref(tcp_conn *c);

// Starts reading; the node calls it once the connection is listed.
void tw__tcp_conn_start(tcp_conn *c);

// The node's list of connections (protected by the node's mtx).
tcp_conn *tw__tcp_conn_next(const tcp_conn *c);
tcp_conn **tw__tcp_conn_nextp(tcp_conn *c);
void tw__tcp_conn_set_next(tcp_conn *c, tcp_conn *next);

// Closes cleanly: a BYE after everything queued (waiting for it to leave
// until `deadline`), then as tw__tcp_conn_fail without a log line.
void tw__tcp_conn_close(tcp_conn *c, int64_t deadline);

bool tw__tcp_conn_failed(const tcp_conn *c);
bool tw__tcp_conn_is_dialer(const tcp_conn *c);
const char *tw__tcp_conn_dialed(const tcp_conn *c);
uint64_t tw__tcp_conn_peer_instance(const tcp_conn *c);
const char *tw__tcp_conn_who(const tcp_conn *c);
const unsigned char *tw__tcp_conn_my_nonce(const tcp_conn *c);
const unsigned char *tw__tcp_conn_peer_nonce(const tcp_conn *c);
tcp_node *tw__tcp_conn_node(const tcp_conn *c);

// Closes the connection (idempotent): every bound channel sees its peer
// gone, queued frames are dropped, the node forgets it.  `why` goes into
// the log line (NULL: a clean close, no line).
void tw__tcp_conn_fail(tcp_conn *c, const char *why);

// Binds mc to c under a fresh slot of ours.  TW_OK, TW_EPEER (c failed),
// TW_ENOMEM.
int tw__tcp_conn_bind(tcp_conn *c, tcp_chan *mc);

// Maps the peer's slot to mc, so that its frames reach mc.  TW_OK, or
// TW_EPROTO when the slot is taken or out of range.
int tw__tcp_conn_map_peer(tcp_conn *c, tcp_chan *mc, uint32_t peer_slot);

// Forgets mc (both slots).  Idempotent.
void tw__tcp_conn_unbind(tcp_conn *c, tcp_chan *mc);

// Forgets the peer's slot (its link is gone: it may reuse the number).
void tw__tcp_conn_unmap_peer(tcp_conn *c, uint32_t peer_slot);

// Frame-sending flags.
enum {
	TX_NOWAIT = 1, // never block: copy into the queue (control frames)
};

// Sends one frame.  Small frames (and every TX_NOWAIT one) are copied into
// the connection's queue when the socket cannot take them at once, so the
// call returns when `payload` may be reused; a large one is written
// straight from the caller's memory, waiting for its turn and for room
// in the socket until `deadline` or *cancel.  Once its first byte is out
// a frame is always finished (the stream could not be framed otherwise).
// *seq, when not NULL, receives the frame's sequence number.  TW_OK,
// TW_EPEER (the connection failed), TW_ETIMEDOUT, TW_ECLOSED (cancelled),
// TW_ENOMEM, TW_EINVAL (a key too long).
int tw__tcp_conn_send(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, const void *payload, size_t len, int flags,
    int64_t deadline, const int *cancel, uint64_t *seq);

// Reads the connection from the calling thread, without blocking, until
// done(arg) says that what the caller waits for has arrived (checked after
// every batch of frames), until nothing has arrived for idle_ns, or until
// `deadline` (tw__now_ns scale): a receiver that polls briefly gets its
// message without a hand-off from the I/O thread, and one whose large
// message is arriving keeps reading it.  While another thread reads, only
// done() is watched.  Returns whether done() said so, or the connection
// failed meanwhile.
bool tw__tcp_conn_poll(tcp_conn *c, int64_t idle_ns, int64_t deadline,
    bool (*done)(void *arg), void *arg);

// The highest sequence number of ours the peer has acknowledged.
uint64_t tw__tcp_conn_peer_ack(const tcp_conn *c);

// Waits until the peer acknowledges frame `seq`, asking with a PING.
// TW_OK, TW_EPEER (the connection failed first), TW_ETIMEDOUT, or
// TW_ECLOSED when *cancel (may be NULL) becomes set.
int tw__tcp_conn_wait_ack(
    tcp_conn *c, uint64_t seq, int64_t deadline, const int *cancel);

// --- nodes (tcp_node.c) -------------------------------------------------------

// Handshakes a node runs at once: a connection beyond them is closed at
// once, so that strangers that never finish (slowloris) cannot pile up
// threads and memory.
#define TW_TCP_HS_MAX 128

// Whether the party at self_addr connects to the one at peer_addr (rather
// than waiting for it): the address that sorts first dials.
bool tw__tcp_dials(const char *self_addr, const char *peer_addr);

// The node of `addr` ("tcp://HOST:PORT"): its listener and accepting
// thread, shared by every link of this process that names the address.
// Registers `ep` there, and binds the OPENs that peers sent for it before
// it existed.  TW_OK, TW_ESYS (cannot bind, or the link is already open at
// this address in this process; logged), TW_ENOMEM.
int tw__tcp_node_join(const char *addr, tcp_ep *ep);

// Takes `ep` out of its node (no new OPEN reaches it) and drops the node
// reference it held.  Idempotent.
void tw__tcp_node_leave(tcp_ep *ep);

// This node's "host:port", instance and I/O thread.
const char *tw__tcp_node_name(const tcp_node *n);
uint64_t tw__tcp_node_instance(const tcp_node *n);
tw__poller *tw__tcp_node_poller(const tcp_node *n);

// The connection to `addr` that this node dials, made (dial and
// handshake, announcing link `ep`) when there is none, and shared with
// every other link that needs it.  Referenced.  TW_OK, TW_ETIMEDOUT,
// TW_EAUTH, TW_EPROTO, TW_ECLOSED (*cancel), TW_ESYS.
int tw__tcp_node_dial(tcp_node *n, const char *addr, tcp_ep *ep,
    uint32_t peer_rank, int64_t deadline, const int *cancel, tcp_conn **out);

// An OPEN for link `link_id` arrived on c: finds our channel to the
// sender (referenced, *out) or, when the link does not exist here yet,
// keeps the OPEN until it does (*out = NULL, TW_OK).  TW_EPROTO when the
// OPEN cannot be right (logged by the caller).
int tw__tcp_node_open_lookup(
    tcp_conn *c, const tw__tcp_hdr *h, const tw__tcp_open *o, tcp_chan **out);

// The connection is gone: forget it (and its kept OPENs).
void tw__tcp_node_forget(tcp_conn *c);

#endif // TW_TRANSPORT_TCP_TCP_H
