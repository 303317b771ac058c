// Internals of the tcp:// transport shared by its files.  Layers, from the
// socket up:
//
//   tcp_conn.c, tcp_writer.c, tcp_reader.c
//               a connection: one socket and its frames; reports up
//               through a table of callbacks (tcp_conn.h) and knows
//               nothing of what follows
//   tcp_peer.c  a peer: the connections to one peer process (a main one
//               and its stripes) and the links bound to them by slot; it
//               is the connections' owner, and routes their frames
//   tcp_sx.c    messages longer than a frame: reassembly from chunks, in
//               order, on any of a peer's connections
//   tcp_node.c  a node: one per listening address and process; the
//               listener, the I/O thread, the peers, dialing
//   tcp_accept.c the accepting side of handshakes, on the I/O thread
//   tcp_hs.c    the connecting side of handshakes, and their records
//   tcp.c       channels: a link's view of one peer over a peer object;
//               credit, sending, receiving, the channel ops
//
// Lock order (outer first): node mtx, endpoint mtx, channel mtx, peer mtx,
// sx mtx, connection locks, mailbox.  No upcall of a connection runs with
// any of them held but the connection's reader role.

#ifndef TW_TRANSPORT_TCP_TCP_H
#define TW_TRANSPORT_TCP_TCP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/log.h"
#include "core/names.h"
#include "core/mailbox.h"
#include "platform/posix/poller.h"
#include "transport/chanbase.h"
#include "transport/tcp/tcp_conn.h"
#include "transport/tcp/tcp_proto.h"
#include "transport/tcp/tcp_sock.h"
#include "transport/transport.h"

typedef struct tcp_node tcp_node;
typedef struct tcp_peer tcp_peer;
typedef struct tcp_chan tcp_chan;
typedef struct tcp_sx tcp_sx;
struct sx_item;
struct sx_entry;
struct sx_stray;

// TW_OPT_STRIPES' largest value: connections per pair of processes.
#define TCP_STRIPES_MAX 64

// This party's side of a link: the mailbox that all its channels deliver
// into, freed with the last reference (its channels, and handshakes that
// look it up).
typedef struct tcp_ep {
	struct tcp_ep *next; // node's list, protected by the node's mtx
	tcp_node *_Atomic node; // cleared by the first channel that leaves
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
	char **addrs; // [size]: every party's address
	char **ids; // [size]: every party's id (what its certificate names)
	char *tls[3]; // certificate, key and CA files, or NULL: plaintext
	int dial_rank; // the only rank that dials, or -1: by address
	pthread_mutex_t mtx; // guards chans against destroy
	tcp_chan **chans; // [size], chans[self_rank] == NULL; by mtx
	// [size]: per peer, the mailbox's count of what the application took
	// (a running maximum) and the count from which credit may be due (0:
	// at every take), so that most takes report nothing and take no lock
	// (on_taken).
	struct tcp_taken {
		_Atomic uint64_t taken, due;
	} * taken;
	unsigned live_chans; // not destroyed yet, by mtx
	bool registered; // protected by the node's mtx
	_Atomic unsigned refs;
} tcp_ep;

// Channel states.
enum {
	CH_IDLE, // not bound to a peer yet
	CH_OPENING, // bound, our OPEN sent, waiting for the peer's
	CH_READY, // both OPENs done: data may flow
};

struct tcp_chan {
	tw__chanbase base; // first: the shared ops find it at impl
	tcp_ep *ep; // referenced
	char *peer_id;
	char *peer_addr;
	uint32_t peer_rank;
	bool dialer; // this side connects to the peer (tcp_node.c)
	_Atomic unsigned refs; // the link, and frames being dispatched

	pthread_mutex_t mtx;
	pthread_cond_t cv; // state, credit, peer gone, aborted
	_Atomic int state; // CH_*
	tcp_peer *peer; // by mtx (referenced): set when bound, constant once
	    // ready; a dialing channel whose peer fails before
	    // it answered goes back to NULL and CH_IDLE
	uint32_t my_slot; // our number for the link on the peer
	uint32_t peer_slot; // the peer's (valid once CH_READY)

	// Sending: the peer's window and what it has taken, in message costs
	// (tw__msg_cost).  Written under mtx, except that a send with credit
	// at hand adds to tx_cost by compare-and-swap (reserve).
	uint64_t peer_window; // constant once ready
	uint64_t peer_max_msg; // the largest message the peer accepts
	_Atomic uint64_t tx_cost; // reserved so far
	_Atomic uint64_t tx_credit; // taken by the peer so far
	bool credit_asked; // a CREDIT_REQ is out
	_Atomic uint64_t last_seq; // main connection's frame that, once
	    // acknowledged, means our last data
	    // message arrived (control messages
	    // do not count)

	// Receiving, by mtx: what we have taken (ep->taken) and granted.
	uint64_t dropped; // cost of messages given up before delivery, or
	    // delivered past the mailbox (tcp_post)
	uint64_t credit_sent;
	bool peer_starved; // the peer asked for credit

	_Atomic int peer_gone; // the peer's link is gone (UNBIND, failure)
	_Atomic uint64_t gone_ack; // the peer's ack when it went
	_Atomic int auth_failed; // the peer failed to prove the secret
	_Atomic int auth_seen; // a stranger claimed the peer's rank
	_Atomic int unbound; // our UNBIND went out (abort or destroy)

	// Messages from the peer held behind an incomplete striped one
	// (tcp_sx.c), by the peer's sx mutex.
	struct sx_item *held, *held_tail;
	_Atomic unsigned held_n;
};

#define LOGC(mc, level, ...)                                                  \
	TW_LOGL(level, "tcp", (mc)->ep->link_id, (mc)->ep->self_rank,         \
	    __VA_ARGS__)

// --- endpoints and channels (tcp.c) -----------------------------------------

void tw__tcp_ep_ref(tcp_ep *ep);
void tw__tcp_ep_unref(tcp_ep *ep);
void tw__tcp_chan_ref(tcp_chan *mc);
void tw__tcp_chan_unref(tcp_chan *mc);

// The peer bound the link named by an OPEN frame on peer p: `mc` is our
// channel to the sender (referenced by the caller).  Checks the proof,
// answers with our OPEN when the peer spoke first, and readies the
// channel.  TW_OK, or TW_EPROTO / TW_EAUTH: the connection must close.
int tw__tcp_chan_on_open(
    tcp_peer *p, tcp_chan *mc, uint32_t peer_slot, const tw__tcp_open *o);

// A control frame for channel mc arrived (CLOSE_NS, ABORT_NS, UNBIND,
// CREDIT, CREDIT_REQ; `payload` holds a fixed payload).  TW_OK, or an
// error that fails the connection (logged).
int tw__tcp_chan_on_frame(
    tcp_chan *mc, const tw__tcp_hdr *h, const unsigned char *payload);

// Peer p, to which mc is bound, failed or closed: mc's peer is gone.
void tw__tcp_chan_peer_failed(tcp_chan *mc, tcp_peer *p);

// Pushes a message from the peer into mc's mailbox (ownership of data
// passes).  TW_OK (also when it was dropped because its namespace is
// closed here), or TW_EPROTO (the peer overran its credit) / TW_ENOMEM:
// the connection must close.
int tw__tcp_chan_deliver(
    tcp_chan *mc, const char *key, void *data, size_t len);
// The same for a copy of src[0..len), which the mailbox makes (a small
// message needs no allocation).
int tw__tcp_chan_deliver_copy(
    tcp_chan *mc, const char *key, const void *src, size_t len);
// The same through the reader's run (core/mailbox.h), which may stage it
// until the reader flushes the run.
int tw__tcp_chan_deliver_run(tcp_chan *mc, tw__mailbox_run *run,
    const char *key, const void *src, size_t len);

// A striped message of `len` bytes from the peer was given up (CANCEL),
// or delivered in a posted buffer without passing the mailbox: its cost
// comes back to the peer as credit.
void tw__tcp_chan_dropped(tcp_chan *mc, uint64_t len);

// --- peers (tcp_peer.c) ------------------------------------------------------

// What a peer knows once the handshake of its main connection is done.
typedef struct tcp_peer_info {
	int fd; // connected; the peer's from TW_OK on
	tw__tls *tls; // its TLS state, or NULL (plaintext); as fd
	bool dialer; // this side connected
	const char *dialed; // the address dialed ("tcp://h:p"), or NULL
	const tw__tcp_hs_peer *hs;
	int64_t heartbeat_ms; // 0: off
	// The link that made the peer, whose identity a resumed connection
	// shows again (tcp_resume.c), and the peer's rank in it.
	const tcp_ep *ep;
	uint32_t peer_rank;
} tcp_peer_info;

// How long a connection whose socket broke waits to be resumed when the
// link has no heartbeats (with them: 3 heartbeat periods).
#define TCP_DOWN_LIMIT_NO_HB_MS 10000

// What a resumed connection's handshake shows: the identity of the link
// that made the peer.  Constant for the peer's life.
typedef struct tcp_creds {
	char link_id[TW_LINK_ID_MAX + 1];
	uint32_t self_rank, peer_rank;
	char peer_id[256]; // what the peer's certificate must name
	unsigned char *secret; // NULL: none
	size_t secret_len;
	bool tls;
} tcp_creds;

const tcp_creds *tw__tcp_peer_creds(const tcp_peer *p);

// When the resumer probes this accepted peer next (the node's mtx).
int64_t *tw__tcp_peer_next_probe(tcp_peer *p);

// tcp_resume.c: one attempt to resume peer p's connection k (0: main,
// then its stripes), which is down, on the side that dialed it.  TW_OK
// (resumed), TW_EAGAIN (no answer now: again later), TW_ECLOSED
// (*cancel), or another code once p failed (logged) or the connection
// did.  Blocks up to a second; not on the I/O thread.
int tw__tcp_resume_dial(
    tcp_node *n, tcp_peer *p, unsigned k, const _Atomic int *cancel);

// tcp_resume.c: whether the process that dialed p, whose connection k is
// down on our (accepting) side, is still there: a connect to its
// listening address that is refused fails p with TW_EPEER (logged).
// TW_OK (not refused: it may come back), TW_ECLOSED (*cancel), TW_EINVAL.
// Blocks up to 300 ms; not on the I/O thread.
//
// Either call leaves p to its main connection's end when a stripe (k > 0)
// finds the port refusing while the main connection is up: frames on it
// may still be on their way in (see tcp_resume.c).
int tw__tcp_resume_probe(tcp_peer *p, unsigned k, const _Atomic int *cancel);

// Attempts and probes that found the peer's port refusing, since the
// process started (for tests).
extern _Atomic uint64_t tw__tcp_resume_refused;

// tcp_node.c: a connection that went down wakes the node's resumer (a
// thread started on first use, joined when the node stops), which calls
// tw__tcp_resume_dial for the connections this side dialed until they
// are back or failed, and tw__tcp_resume_probe every 100 ms for those it
// accepted.
void tw__tcp_node_resume_wake(tcp_node *n);

// The peer this node accepted from process `instance` with `session`,
// referenced, or NULL.
tcp_peer *tw__tcp_node_find_session(
    tcp_node *n, uint64_t instance, uint64_t session);

// The peer's connection k (0: main, then its stripes), referenced, or
// NULL.
tcp_conn *tw__tcp_peer_conn(tcp_peer *p, unsigned k);

// Makes a peer over its main connection, listed by the node, reading.
// Referenced for the caller.  TW_OK, TW_ENOMEM, TW_ESYS; on failure
// info->fd and info->tls are still the caller's.
int tw__tcp_peer_new(tcp_node *n, const tcp_peer_info *info, tcp_peer **out);

// Adds an extra connection (a stripe) on `fd` with TLS state `tls` (may
// be NULL), which are the peer's from the call on (closed and freed on
// failure).  TW_OK, TW_EPROTO (no room, or p failed), TW_ENOMEM, TW_ESYS.
int tw__tcp_peer_add_stripe(
    tcp_peer *p, int fd, tw__tls *tls, const char *who);

void tw__tcp_peer_ref(tcp_peer *p);
void tw__tcp_peer_unref(tcp_peer *p);

// Fails the peer: every connection, every bound link.  Idempotent.
void tw__tcp_peer_fail(tcp_peer *p, int status, const char *why);
// Ends the peer cleanly: BYE on every connection, waiting until deadline.
void tw__tcp_peer_close(tcp_peer *p, int64_t deadline);

bool tw__tcp_peer_failed(const tcp_peer *p);
bool tw__tcp_peer_is_dialer(const tcp_peer *p);
const char *tw__tcp_peer_dialed(const tcp_peer *p);
uint64_t tw__tcp_peer_instance(const tcp_peer *p);
// The session: the dialer's random id of the connections between the two
// processes, which a resuming connection names.
uint64_t tw__tcp_peer_session(const tcp_peer *p);
const char *tw__tcp_peer_who(const tcp_peer *p);
// The TLS state of the main connection (NULL: plaintext).
tw__tls *tw__tcp_peer_tls(const tcp_peer *p);
const unsigned char *tw__tcp_peer_my_nonce(const tcp_peer *p);
const unsigned char *tw__tcp_peer_peer_nonce(const tcp_peer *p);
tcp_node *tw__tcp_peer_node(const tcp_peer *p);
tcp_sx *tw__tcp_peer_sx(const tcp_peer *p);
unsigned tw__tcp_peer_nstripes(const tcp_peer *p);

// The main connection (not referenced: the peer holds it).
tcp_conn *tw__tcp_peer_main(const tcp_peer *p);
// The connection that carries chunk number i of a message: the main one
// or a stripe, round robin.  Not referenced.
tcp_conn *tw__tcp_peer_pick(tcp_peer *p, uint64_t i);
// Next id of a striped message sent to p.
uint64_t tw__tcp_peer_next_id(tcp_peer *p);

// Binds mc to p under a fresh slot of ours.  TW_OK, TW_EPEER (p failed),
// TW_ENOMEM.
int tw__tcp_peer_bind(tcp_peer *p, tcp_chan *mc);
// Maps the peer's slot to mc.  TW_OK, or TW_EPROTO when the slot is taken
// or out of range.
int tw__tcp_peer_map(tcp_peer *p, tcp_chan *mc, uint32_t peer_slot);
// Forgets mc (both slots).  Idempotent.
void tw__tcp_peer_unbind(tcp_peer *p, tcp_chan *mc);
// Forgets the peer's slot (its link is gone: it may reuse the number).
void tw__tcp_peer_unmap(tcp_peer *p, uint32_t peer_slot);

// The node's list (protected by the node's mtx).
tcp_peer *tw__tcp_peer_next(const tcp_peer *p);
tcp_peer **tw__tcp_peer_nextp(tcp_peer *p);

// --- messages longer than a frame (tcp_sx.c) ----------------------------------

tcp_sx *tw__tcp_sx_new(void);
void tw__tcp_sx_free(tcp_sx *sx);
// The peer failed: nothing more is delivered.
void tw__tcp_sx_fail(tcp_sx *sx);
// A DATA message for mc: delivered, or held behind an incomplete one.
// Ownership of data passes.
int tw__tcp_sx_data(
    tcp_sx *sx, tcp_chan *mc, const char *key, void *data, size_t len);
// The same for a copy of src[0..len), read by the main connection whose
// reader posted `post` (or NULL) and stages small messages in `run` (or
// NULL: none).  A message staged in run is in nobody's sight until run is
// flushed (tw__mailbox_run_flush); while run holds any, a later message
// is not placed in the post, which must not overtake them.
struct tcp_post;
int tw__tcp_sx_data_copy(tcp_sx *sx, tcp_chan *mc, const char *key,
    const void *src, size_t len, struct tcp_post *post, tw__mailbox_run *run);
// A receive of `key` into buf[0..cap) that an application thread posted
// while it reads the peer's main connection itself (tw__tcp_conn_poll's
// post): the next message of that key from mc, if it is next in line and
// fits, lands in buf rather than in the mailbox: a message of one frame
// copied there, a striped one assembled there, saving the copy out of
// memory of its own (tcp_sx.c has the rules).  The poster's, on its
// stack.
typedef struct tcp_post {
	tcp_chan *mc;
	const char *key;
	unsigned char *buf;
	size_t cap;
	struct sx_entry *entry; // assembling in buf now, by the sx mutex
	bool used; // an entry was ever placed here (the poster's alone)
	bool small; // a message of one frame was (tw__tcp_sx_claim_small)
	_Atomic bool done; // a message of len bytes was delivered in buf
	size_t len;
	void *frame; // a message of one frame being read into buf (peer's)
} tcp_post;

// Whether a DATA message of one frame, `len` bytes of `key` from mc, may
// land in post's buffer (the rules above; nothing held); if so the
// buffer is claimed for it.  Reader role of the main connection held.
bool tw__tcp_sx_claim_small(
    tcp_chan *mc, const char *key, size_t len, tcp_post *post);
// The message claimed so is whole in the buffer: the receive is done,
// and the message counts as taken.
void tw__tcp_sx_placed_small(tcp_chan *mc, tcp_post *post, size_t len);

// What moved through posted receives since the process started (for
// tests): messages delivered in a posted buffer, half-assembled messages
// moved into one from memory of their own and back out of one when its
// poster let go, and chunks that arrived on another connection while
// their message was being assembled in a posted buffer.
extern _Atomic uint64_t tw__tcp_rx_placed, tw__tcp_rx_adopted,
    tw__tcp_rx_moved, tw__tcp_rx_strays;
// Messages of one frame delivered in a posted buffer, and moved out of one
// half read, when its poster let go.
extern _Atomic uint64_t tw__tcp_rx_placed_small, tw__tcp_rx_moved_small;

// A STRIPED announcement for mc (the peer's slot `slot`), frame `seq` of
// connection `main`, whose acks it holds while the message is incomplete.
// `post`: the reading thread's, or NULL.
int tw__tcp_sx_announce(tcp_sx *sx, tcp_conn *main, tcp_chan *mc,
    uint32_t slot, const char *key, const tw__tcp_chunk *ck, uint64_t seq,
    tcp_post *post);
// A chunk's hold on its message while its bytes arrive.
typedef struct tcp_sx_claim {
	struct sx_entry *entry; // NULL: a chunk of a message given up
	struct sx_stray *stray; // the chunk's own memory, or NULL
} tcp_sx_claim;
// A CHUNK of n bytes: *dst is where they go; chunk_end once they are in
// (ok) or not (!ok: the connection failed, or broke and will send the
// chunk again after a resume, so its n bytes are unclaimed).  `post`: the
// reading thread's, or NULL.
int tw__tcp_sx_chunk_begin(tcp_sx *sx, tcp_chan *mc, uint32_t slot,
    const tw__tcp_chunk *ck, size_t n, tcp_post *post, tcp_sx_claim *claim,
    unsigned char **dst);
int tw__tcp_sx_chunk_end(tcp_sx *sx, tcp_conn *main, tcp_chan *mc,
    const tcp_sx_claim *claim, size_t n, bool ok);
// The poster of `post` lets go of the main connection `main`: a message
// being assembled in its buffer moves to memory of its own (the frame
// being read follows it).  Reader role of main held.  TW_OK or
// TW_ENOMEM.
int tw__tcp_sx_unpost(tcp_sx *sx, tcp_conn *main, tcp_post *post);
// A CANCEL of message `id` for mc: what there is of it is dropped.
int tw__tcp_sx_cancel(tcp_sx *sx, tcp_conn *main, tcp_chan *mc, uint64_t id);
// For tests: when set, called with the main connection as each long
// message is delivered (to the mailbox or its posted buffer), with the
// reassembly's mutex held.
extern void (*_Atomic tw__tcp_sx_deliver_hook)(tcp_conn *main);
// Frees what mc holds (when it is freed).
void tw__tcp_sx_chan_free(tcp_chan *mc);

// --- nodes (tcp_node.c, tcp_accept.c) ------------------------------------------

// Handshakes a node runs at once, and from one source address: a
// connection beyond them is closed at once, so that strangers that never
// finish cannot pile up memory or crowd out the parties.
#define TW_TCP_HS_MAX 128
#define TW_TCP_HS_PER_SOURCE 32

// Whether the party at self_addr connects to the one at peer_addr (rather
// than waiting for it): the address that sorts first dials.
bool tw__tcp_dials(const char *self_addr, const char *peer_addr);
// Whether rank `from` of link ep connects to rank `to`: ep's dial_rank
// when set, else by address.
bool tw__tcp_ep_dials(const tcp_ep *ep, uint32_t from, uint32_t to);

// The node of `addr` ("tcp://HOST:PORT"): its listener and I/O thread,
// shared by every link of this process that names the address.  Registers
// `ep` there, and binds the OPENs that peers sent for it before it
// existed.  With TLS, the node's TLS context is made from the link's files
// (or must come from the same files, when another link made it).  TW_OK,
// TW_ESYS (cannot bind, or the link is already open at this address in
// this process; logged), TW_EINVAL (a TLS file cannot be used, or the
// files differ from those of the node's other links; logged), TW_ENOMEM.
int tw__tcp_node_join(const char *addr, tcp_ep *ep);

// Takes `ep` out of its node's list: no new OPEN reaches it.  Idempotent.
void tw__tcp_node_unlist(tcp_ep *ep);

// Drops the node reference that `ep` held, once its channels let go of
// their peers; the last one stops the node: its connections close, its
// listener closes, its thread is joined.  Not from the I/O thread.
void tw__tcp_node_leave(tcp_ep *ep);

const char *tw__tcp_node_name(const tcp_node *n);
uint64_t tw__tcp_node_instance(const tcp_node *n);
tw__poller *tw__tcp_node_poller(const tcp_node *n);

// The peer at `addr` that this node dials, made (dial and handshake,
// announcing link `ep`) when there is none, and shared with every other
// link that needs it.  With TLS the connection is TLS and the peer's
// certificate must name the party of peer_rank; a connection that another
// link made is used only when it matches both (else TW_EAUTH, logged).
// Referenced.  TW_OK, TW_ETIMEDOUT, TW_EAUTH, TW_EPROTO, TW_ECLOSED
// (*cancel), TW_ESYS.
int tw__tcp_node_dial(tcp_node *n, const char *addr, tcp_ep *ep,
    uint32_t peer_rank, int64_t deadline, const _Atomic int *cancel,
    tcp_peer **out);

// An OPEN for link `link_id` arrived from p: finds our channel to the
// sender (referenced, *out) or, when the link does not exist here yet,
// keeps the OPEN until it does (*out = NULL, TW_OK).  TW_EPROTO when the
// OPEN cannot be right (logged).
int tw__tcp_node_open_lookup(tcp_peer *p, const char *link_id,
    uint32_t peer_slot, const tw__tcp_open *o, tcp_chan **out);

// Lists a peer made by a handshake (the list's reference is the
// caller's); wakes what waits for it.
void tw__tcp_node_add_peer(tcp_node *n, tcp_peer *p);
// The peer failed: forget it (and its kept OPENs).
void tw__tcp_node_forget(tcp_peer *p);
// The peer's memory is gone (its last reference): a stopping node waits
// for every peer it made.
void tw__tcp_node_peer_freed(tcp_node *n);

// The live main-connection peer of process `instance` that connected to
// us (for its stripes), referenced, or NULL.
tcp_peer *tw__tcp_node_find_accepted(tcp_node *n, uint64_t instance);

// A peer whose listening address is `who` ("host:port") wants link
// `link_id`, which does not exist here: the anchors watching for it hear
// of it (tcp_anchor.h).
void tw__tcp_node_want(tcp_node *n, const char *link_id, const char *who);

// The endpoint of link `link_id` joined here, referenced, or NULL.
tcp_ep *tw__tcp_node_find_ep(tcp_node *n, const char *link_id);

// The node's TLS context, NULL while none of its links uses TLS.  Lives
// as long as the node.
tw__tls_ctx *tw__tcp_node_tls(tcp_node *n);

// A stranger whose rank is unknown (its TLS handshake failed, or it spoke
// TLS to a node without) failed authentication: every channel of the node
// that waits for its peer to connect reports TW_EAUTH rather than
// TW_ETIMEDOUT if nobody better comes.
void tw__tcp_node_note_auth(tcp_node *n);

// Whether peer p's connection suits rank `rank` of link ep: TLS for a TLS
// link and plaintext otherwise, and a certificate that names the party of
// that rank.  TW_OK, or TW_EAUTH with a log line.
int tw__tcp_tls_check(const tcp_ep *ep, uint32_t rank, tcp_peer *p);

// tcp_accept.c: the accepting side, run on the node's I/O thread.
typedef struct tcp_acceptor tcp_acceptor;
int tw__tcp_acceptor_new(tcp_node *n, tw__tcp_listener *l, tcp_acceptor **out);
// Closes the listener's registration and every handshake in progress.
// Not from the I/O thread.
void tw__tcp_acceptor_free(tcp_acceptor *a);
// Something a parked handshake may wait for happened (a link joined, a
// peer was listed): they look again.
void tw__tcp_acceptor_kick(tcp_acceptor *a);
// Handshakes in progress (for tests).
unsigned tw__tcp_acceptor_active(tcp_acceptor *a);
// For tests: how long an accepted connection may take for its first byte,
// for its whole handshake, and to wait for the link it names (0 keeps a
// value; the defaults are 2 s, 10 s and 2 s).  Applies to connections
// accepted later.
void tw__tcp_accept_set_waits(
    int64_t first_ns, int64_t total_ns, int64_t link_ns);
// For tests: called, when set, where a receiver handles a CREDIT_REQ,
// between reading how much its application took and storing the take
// count that makes a take grant credit itself (`due`, tcp.c, on_taken):
// a take in between must not leave the sender without credit.
extern void (*_Atomic tw__tcp_credit_req_hook)(void);

#endif // TW_TRANSPORT_TCP_TCP_H
