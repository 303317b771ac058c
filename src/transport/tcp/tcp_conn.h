// A tcp:// connection: one socket, the frames on it, their sequence
// numbers and acknowledgements, heartbeats and failure.
//
// A connection knows nothing of links, channels or nodes.  It reports up
// through a const table of callbacks that its owner registers when it
// makes it (tcp_conn_ops), and it never calls anything else above it.
// The rules that make that safe:
//
//  - upcalls that deliver frames run in the reader role: on the I/O thread,
//    or on an application thread that reads the connection itself
//    (tw__tcp_conn_poll); one at a time per connection, in stream order;
//  - the failure upcall runs once, last, on the I/O thread, after every
//    frame upcall has returned, and never from inside a call of the owner:
//    a write that fails, a heartbeat that expires or a call of
//    tw__tcp_conn_fail only mark the connection failed and post it;
//  - no lock of the connection is held while an upcall runs but the reader
//    role itself (rx.mtx), which nothing above ever takes: an upcall may
//    send (tw__tcp_conn_send with TCP_TX_NOWAIT never blocks), but must
//    not poll the same connection.
//
// The connection handles the frames that concern only itself: PING is
// answered with one PONG (however many came meanwhile), PONG and ACK only
// carry their acknowledgement, BYE ends the connection.  Every other frame
// goes to its owner.
//
// Thread-safety: every function may be called from any thread.

#ifndef TW_TRANSPORT_TCP_TCP_CONN_H
#define TW_TRANSPORT_TCP_TCP_CONN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "platform/posix/poller.h"
#include "transport/tcp/tcp_proto.h"
#include "transport/tcp/tcp_tls.h"

typedef struct tcp_conn tcp_conn;

// Payload bytes that the connection reads itself before it asks its owner
// where the rest of a frame goes: every fixed payload fits.
#define TCP_CONN_HEAD 64

// What an owner remembers across the frames of one pump of a connection's
// reader (a lookup that hundreds of frames in a row share): its value,
// under which key and generation of the owner's, and whether it is set.
// Only the reader-role holder touches it; ops->rx_idle clears it.
typedef struct tcp_rx_memo {
	void *val;
	uint64_t gen;
	uint32_t key;
	bool set;
} tcp_rx_memo;

typedef struct tcp_conn_ops {
	size_t size; // sizeof(tcp_conn_ops) the owner was built with

	// A frame whose payload (h->len bytes, at most TCP_CONN_HEAD) is
	// whole in `payload`.  Returns TW_OK, or an error that fails the
	// connection (the callee has logged why).
	int (*rx_frame)(void *owner, tcp_conn *c, const tw__tcp_hdr *h,
	    const unsigned char *payload);

	// A frame with a longer payload: its first TCP_CONN_HEAD bytes are in
	// `head`.  The callee sets *dst to memory for the remaining
	// h->len - TCP_CONN_HEAD bytes (NULL: skip them) and *cookie to
	// anything it needs back in rx_end.  An error fails the connection
	// (rx_end is not called then).
	int (*rx_begin)(void *owner, tcp_conn *c, const tw__tcp_hdr *h,
	    const unsigned char *head, unsigned char **dst, void **cookie);

	// The frame begun by rx_begin is whole (ok), or will never be, since
	// the connection failed (!ok: the callee releases what it holds;
	// the return value is ignored).
	int (*rx_end)(void *owner, tcp_conn *c, const tw__tcp_hdr *h,
	    void *cookie, bool ok);

	// The connection failed or ended (status: TW_ECLOSED when the peer
	// ended it cleanly with BYE, TW_EPEER for EOF or a broken socket
	// that could not be resumed, TW_EPROTO for bytes it could not
	// accept, another code for a local failure).  Called once, last.
	void (*failed)(void *owner, tcp_conn *c, int status);

	// An application thread that posted a receive (tw__tcp_conn_poll's
	// `post`) is about to let go of the reader role: whatever the owner
	// placed in the memory of that receive must move elsewhere now,
	// since the next reader is another thread
	// (tw__tcp_conn_rx_rebase redirects the frame being read).  Reader
	// role held.  TW_OK, or an error that fails the connection.  May be
	// NULL for an owner that never passes a post.
	int (*rx_unpost)(void *owner, tcp_conn *c, void *post);

	// A pump of the connection's reader ends (tw__tcp_reader_pump) with
	// the reader's memo set (tw__tcp_conn_rx_memo): what the owner kept
	// there for the frames of one pump is to be let go, and what it
	// held back from the frames read (messages staged to be queued
	// together) handed on.  Reader role held.  TW_OK, or an error that
	// fails the connection.  May be NULL for an owner that never sets
	// the memo.
	int (*rx_idle)(void *owner, tcp_conn *c);

	// A resumable connection's socket broke (EOF, a reset, an error, or
	// a silence of 3 heartbeat periods): the connection is down, its
	// reader has stopped (tw__tcp_conn_received is final), and senders
	// keep appending until tw__tcp_conn_resume gives it a new socket.
	// Runs on the I/O thread with no lock held; may be NULL.
	void (*down)(void *owner, tcp_conn *c);
} tcp_conn_ops;

typedef struct tcp_conn_cfg {
	int fd; // connected; the connection's from TW_OK on
	tw__tls *tls; // its TLS state once handshaken, or NULL; as fd
	tw__poller *poller; // the I/O thread
	const tcp_conn_ops *ops;
	void *owner; // must stay valid until ops->failed has returned
	const char *who; // the peer, for log lines
	int64_t heartbeat_ms; // 0: no heartbeats
	// How long a broken socket may wait for tw__tcp_conn_resume before
	// the connection fails with TW_EPEER (0: a broken socket fails it).
	int64_t down_limit_ms;
} tcp_conn_cfg;

// Makes a connection, not yet reading (tw__tcp_conn_start).  Referenced
// once for the caller.  TW_OK, TW_ENOMEM, TW_ESYS (logged); on failure
// cfg->fd and cfg->tls are still the caller's.
int tw__tcp_conn_new(const tcp_conn_cfg *cfg, tcp_conn **out);

// Starts reading.  Separate from making, so that the owner can list the
// connection before its first frame can arrive.
void tw__tcp_conn_start(tcp_conn *c);

void tw__tcp_conn_ref(tcp_conn *c);
void tw__tcp_conn_unref(tcp_conn *c);

// Fails the connection (idempotent; the first status wins): the socket is
// shut down, queued frames are dropped, waiters wake with TW_EPEER, and
// ops->failed(status) runs on the I/O thread soon after.  Never calls up
// itself.  `why` goes into a warning (NULL: no line).
void tw__tcp_conn_fail(tcp_conn *c, int status, const char *why);

// Ends the connection cleanly: a BYE after everything queued, waiting
// until `deadline` for it to leave and for the peer to end its side in
// answer (reading meanwhile, so that the socket is not reset), then as
// tw__tcp_conn_fail.
void tw__tcp_conn_close(tcp_conn *c, int64_t deadline);

bool tw__tcp_conn_failed(const tcp_conn *c);

// Whether the connection is down (its socket broke) and not yet resumed.
bool tw__tcp_conn_is_down(const tcp_conn *c);

// When a connection that is down fails unless resumed (tw__now_ns scale;
// meaningless while it is up).
int64_t tw__tcp_conn_down_until(const tcp_conn *c);

// Takes the connection down now (if it is up and resumable), as a break
// of its socket would, and stops its reader.  Returns the last frame
// handled (what a resume handshake tells the peer), or 0 with *ok false
// when the connection failed or cannot be resumed.  Waits for an
// application thread that reads the connection (tw__tcp_conn_poll) to see
// it down and let go; not from an upcall of this connection.
uint64_t tw__tcp_conn_suspend(tcp_conn *c, bool *ok);

// Gives a down connection its new socket `fd` (connected, its resume
// handshake done; `tls`: its TLS state, NULL for plaintext, which a TLS
// connection must not get): frames after `peer_rcvd`, the last one the peer
// handled, are written again from the connection's ring, and reading
// goes on after the last frame handled here.  Not from an upcall of this
// connection.  TW_OK (fd and tls are the connection's), TW_EPEER (failed,
// or not down; fd and tls stay the caller's), TW_EPROTO (peer_rcvd names
// frames never sent or already confirmed: the connection fails; fd and
// tls stay the caller's).
int tw__tcp_conn_resume(tcp_conn *c, int fd, tw__tls *tls, uint64_t peer_rcvd);
// The connection's TLS state, NULL for plaintext.  Lives as long as c.
tw__tls *tw__tcp_conn_tls(const tcp_conn *c);
const char *tw__tcp_conn_who(const tcp_conn *c);

// Frame-sending flags.
enum {
	TCP_TX_NOWAIT = 1, // never block: copied into the queue (control)
	// A small frame that the caller follows at once with a large one on
	// the same connection, which takes it along in its writev: it is
	// queued and not written now (an announcement and its first chunk).
	TCP_TX_MORE = 2,
};

// Sends one frame of `type` for `slot` with key `key` (NULL: none) and the
// payload iov[0..niov) (at most 2 parts; TW_TCP_FRAME_MAX bytes, plus a
// chunk's prefix).  The frame is copied into the connection's ring, kept
// there until the peer has read it (a resumed connection sends it again),
// and written at once or by the next writer; the call returns once it is
// copied.  While the ring holds TX_RETAIN_MAX bytes that the peer has not
// confirmed, a sender waits until `deadline` (which may be lazy:
// core/clock.h) or *cancel (atomic, may be NULL); a TCP_TX_NOWAIT frame
// never waits.  A connection that is down
// takes frames all the same, for its next socket.  *seq (may be NULL)
// receives the frame's sequence number.  TW_OK, TW_EPEER (failed),
// TW_ETIMEDOUT, TW_ECLOSED (cancelled), TW_ENOMEM, TW_EINVAL (too long).
int tw__tcp_conn_send(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, const struct iovec *iov, int niov, int flags,
    int64_t deadline, const _Atomic int *cancel, uint64_t *seq);

// tw__tcp_conn_send (flags 0) that stores the frame's sequence number in
// *mark while it holds the lock under which frames are numbered: a mark
// that only such calls store, and others only raise (by compare-and-swap,
// with a number this connection gave out), never goes back, however many
// threads send, without a compare-and-swap per frame.  `key_len` is
// strlen(key), which the caller measured already.
int tw__tcp_conn_send_mark(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, size_t key_len, const struct iovec *iov, int niov,
    int64_t deadline, const _Atomic int *cancel, _Atomic uint64_t *mark);

// tw__tcp_conn_send without a deadline or cancel, whose payload's
// last part (iov[niov - 1]) may be lent rather than copied (*lent says
// whether it was): the connection writes it from the caller's memory,
// which must stay as it is until tw__tcp_conn_reclaim(c, lender, seq)
// for this frame's number or a later one's has returned.  `lender`: the
// caller's token, the same for every frame to reclaim at once and unique
// among the connection's senders meanwhile.  Only long payloads are lent,
// and never over TLS or a connection that is down.  Returns as
// tw__tcp_conn_send.
int tw__tcp_conn_send_lent(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, const struct iovec *iov, int niov, const void *lender,
    bool *lent, uint64_t *seq);
// Takes back the memory that `lender` lent, frames up to `seq`: waits
// for the peer to confirm them, asking it with a PING and reading the
// connection meanwhile, 200 us at most (none when the connection is down
// or failed), then copies what it has not confirmed into the ring (sent
// from there as if it had been copied at first) and waits for a write
// that may still read the memory.  The memory is the caller's again when
// it returns.  Not from an upcall of this connection.
void tw__tcp_conn_reclaim(tcp_conn *c, const void *lender, uint64_t seq);
// Asks the peer to confirm frame `seq` (a PING) unless it has: for a
// lender of several connections, which asks them all before it reclaims
// from each (the asks of tw__tcp_conn_reclaim would follow one another).
void tw__tcp_conn_ask(tcp_conn *c, uint64_t seq);
// Gives back what the connection's send ring holds beyond the frames the
// peer has not confirmed: the ring grows with the bytes in flight (a
// power of two, 32 MiB at most) and keeps its size until trimmed here.
// Returns the bytes freed, all of them gone by then: a write in progress
// that may still read the old ring is waited for (it never waits on the
// peer).  Thread-safe; not from the thread that holds the writer role.
size_t tw__tcp_conn_trim(tcp_conn *c);

// For tests: when set, called by a poll with a post (below) once it took
// the reader role, which it holds from then on while it keeps it.
extern void (*_Atomic tw__tcp_post_hook)(void);

// Reads the connection from the calling thread, without blocking, until
// done(arg) says that what the caller waits for has arrived (checked after
// every batch of frames), until nothing has arrived for idle_ns, or until
// `deadline`: a receiver that polls briefly gets its message without a
// hand-off from the I/O thread, and one whose large message is arriving
// keeps reading it.  While another thread reads, only done() is watched,
// and the I/O thread, if it is that thread, leaves the socket parked for
// this poll to claim once it has handled what it read.
// With a `post` (the owner's record of a receive that this thread
// posted, whose memory upcalls may fill, since nobody else reads
// meanwhile; they see it through tw__tcp_conn_post), ops->rx_unpost runs
// before the role goes back; with `keep` too, a poll that holds the
// reader role keeps it past idle_ns until done() or `deadline`, asleep
// on the socket while nothing comes (a long message for the post may be
// on its way).  A poll that got what it waited for leaves the
// socket parked (poller.h): the next poll claims it back without a system
// call, and the I/O thread takes it back within a park period, or at once
// for a thread asleep between tw__tcp_conn_sleep_begin and _end.  A poll
// first writes the frames of a stream that wait for a flush (it most
// likely waits for their answer).  Returns whether done() said so, or the
// connection failed meanwhile.
bool tw__tcp_conn_poll(tcp_conn *c, int64_t idle_ns, int64_t deadline,
    bool (*done)(void *arg), void *arg, void *post, bool keep);

// Reads what has arrived, without blocking and for at most a few tens of
// microseconds, when no other thread reads: for a thread between two
// frames of a long message.  The acks and credit that come back while it
// streams then cost no wake-up of the I/O thread each: on a CPU that the
// I/O thread shares with the receiving process, those wake-ups preempted
// the receiver, and on one it shares with the sender, they met the
// sender's lock on the socket and slept again.  Like a poll that got what
// it waited for, it leaves the socket parked.
void tw__tcp_conn_read_between(tcp_conn *c);

// Brackets a sleep of the calling thread on what only reading the
// connection brings: a message, credit, an ack.  A reader that got its
// message leaves the socket to the I/O thread lazily (up to a park period
// later, see poller.h), expecting to be back at once; while a thread
// sleeps between these two calls, the I/O thread watches the socket at
// once.  sleep_begin also writes the frames of a stream that wait for a
// flush, whose answer the sleeper may be waiting for.  Never blocks.
void tw__tcp_conn_sleep_begin(tcp_conn *c);
void tw__tcp_conn_sleep_end(tcp_conn *c);

// Says that an application thread took a message out of the owner's
// mailbox.  The I/O thread, when it next reads the connection, then
// leaves the socket parked as a poll that got its message does, instead
// of watching it: the application reads for itself once the mailbox runs
// dry, rather than taking each message from the I/O thread behind a
// contended lock and a wake-up.  Sleepers (sleep_begin) and a writer
// waiting for room still have it watched.  One relaxed load (and a store
// when the flag was clear); never blocks.
void tw__tcp_conn_note_taken(tcp_conn *c);

// Hands a parked socket back to the I/O thread at once, for a caller that
// looks for messages without reading (a probe that found nothing): what
// arrives then reaches the mailbox as it would have before the park.
// Costs one atomic load when nothing is parked.  Never blocks.
void tw__tcp_conn_unpark(tcp_conn *c);

// From an upcall: the post of the application thread that reads the
// connection (tw__tcp_conn_poll), or NULL when the I/O thread reads or
// the thread posted nothing.
void *tw__tcp_conn_post(const tcp_conn *c);

// The reader's memo (tcp_rx_memo), from the connection's callbacks.
tcp_rx_memo *tw__tcp_conn_rx_memo(tcp_conn *c);

// From ops->rx_unpost: the frame being read had its payload going into
// from[0..len); the rest goes to the same place in to[0..len).
void tw__tcp_conn_rx_rebase(
    tcp_conn *c, const unsigned char *from, size_t len, unsigned char *to);

// The highest sequence number of ours that the peer has acknowledged.
uint64_t tw__tcp_conn_peer_ack(const tcp_conn *c);

// Waits until the peer acknowledges frame `seq`, asking with a PING.
// TW_OK, TW_EPEER (failed first), TW_ETIMEDOUT, TW_ECLOSED (*cancel).
int tw__tcp_conn_wait_ack(
    tcp_conn *c, uint64_t seq, int64_t deadline, const _Atomic int *cancel);

// The owner's hold on acknowledgements: nothing from frame `seq` on is
// acknowledged (UINT64_MAX: no hold).  For a frame that is handled only
// when frames of other connections have arrived (a striped message's
// announcement).  True when the hold moved forward and the peer asked for
// the ack (a PING): the owner then calls tw__tcp_conn_send_ack once what
// the hold kept back is delivered, not before (an ack tells the peer that
// its messages are in the mailbox).
bool tw__tcp_conn_hold_acks(tcp_conn *c, uint64_t seq);
// Sends an ACK now, unless a writer at work takes the ack along.  Never
// blocks.
void tw__tcp_conn_send_ack(tcp_conn *c);

// The sequence number of the last frame that went to the owner whole.
uint64_t tw__tcp_conn_rx_done(const tcp_conn *c);

// From a frame upcall: the frame counts as handled from now on (acks may
// cover it) rather than once the upcall returns.  For a message that the
// owner hands to an application, whose next frame (a reply, an UNBIND)
// must acknowledge it.  An owner that holds acks (above) sets the hold
// first.
void tw__tcp_conn_rx_handled(tcp_conn *c);

#endif // TW_TRANSPORT_TCP_TCP_CONN_H
