// Inside a tcp:// connection: its writer half (tcp_writer.c), its reader
// half (tcp_reader.c) and what ties them (tcp_conn.c).  Nothing outside
// those three files includes this.

#ifndef TW_TRANSPORT_TCP_TCP_CONN_INT_H
#define TW_TRANSPORT_TCP_TCP_CONN_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/names.h"
#include "transport/tcp/tcp_conn.h"

// Bytes of frames that the peer has not confirmed (read whole) beyond
// which senders wait; the peer confirms every quarter of it.
#define TX_RETAIN_MAX ((uint64_t)16 << 20)
// The send ring's first size, and the frames its index holds at first;
// a trim (tw__tcp_conn_trim) goes no lower.
#define TX_RING_MIN ((size_t)64 << 10)
#define TX_INDEX_MIN 1024

// A frame's payload left in its sender's memory (tw__tcp_conn_send_lent):
// the ring's bytes [from, to) are reserved for it but written from `src`,
// until the peer confirms the frame or the sender takes its memory back
// (tw__tcp_conn_reclaim), which first copies what is unconfirmed into
// the ring (src NULL from then on).
typedef struct tcp_lent {
	uint64_t from, to;
	const unsigned char *src;
	const void *lender;
} tcp_lent;

// Lent payloads at once per connection: a 16 MiB message's chunks, the
// most the ring lets be unconfirmed, twice over.  Beyond it frames are
// copied.
#define TX_LENT_MAX 128

// The writer half (tcp_writer.c has the design).  Positions are byte
// counts since the connection was made; the byte at position x lives at
// buf[x % cap].  base <= out <= end: [base, out) is written and not yet
// confirmed by the peer, [out, end) not yet written.
typedef struct tcp_writer {
	pthread_mutex_t mtx;
	pthread_cond_t cv; // the role, room or the connection changed
	unsigned char *buf; // the ring (cap a power of two), by mtx
	size_t cap;
	unsigned char *stale; // a ring the role may still write from, by mtx
	unsigned stale_waits; // trims that wait for stale to go, by mtx
	uint64_t base, out, end; // by mtx
	uint64_t *fend; // end position of frame s at fend[s % fcap],
	size_t fcap; // for s in (released, seq], by mtx
	uint64_t released; // the last frame the peer confirmed, by mtx
	_Atomic uint64_t released_pub; // released, for a quick look
	_Atomic uint64_t rcvd_bytes; // rx.bytes when we last told `received`
	bool writing; // a thread holds the writer role, by mtx
	bool want_out; // the I/O thread writes when writable, by mtx
	bool down; // the socket broke: nobody writes until resumed, by mtx
	bool owe_pong; // a PING waits for its answer, by mtx
	bool owe_ack; // an ack moved that no frame carried yet, by mtx
	int64_t last_flush; // when the last write ended, by mtx
	// The last reading of the clock that a poll for this connection's
	// frames took (tw__tcp_conn_poll): any reading is a lower bound of
	// now, so a reply whose poll read the clock TX_BATCH_GAP_NS or more
	// after last_flush needs no clock of its own to be written at once.
	_Atomic int64_t clock_seen;
	// Frames of a stream wait for a flush (see defer in tcp_writer.c):
	// since when, and the timer that flushes them if the sender stops
	// (made at the first deferral; NULL before).  By mtx; `deferred` is
	// also looked at without it.
	_Atomic bool deferred;
	int64_t deferred_from;
	int64_t defer_ns; // the period (0: not set yet)
	unsigned unclocked; // deferred frames since the clock was read
	tw__pfd *dpfd;
	uint64_t seq; // the last number assigned, by mtx
	_Atomic uint64_t seq_pub; // seq, for readers outside mtx
	// Lent payloads in stream order, lent[i % TX_LENT_MAX] for i in
	// [lent_head, lent_tail); those before base leave.  By mtx.
	tcp_lent lent[TX_LENT_MAX];
	uint64_t lent_head, lent_tail;
	uint64_t writes; // writes that returned to the role, by mtx
	unsigned lend_skip; // frames to copy rather than lend, by mtx
	uint64_t lend_copies; // lent payloads copied after all, by mtx
} tcp_writer;

// The reader half.  Whoever holds mtx (the reader role) reads: the I/O
// thread, or an application thread polling for its message.
typedef struct tcp_reader {
	pthread_mutex_t mtx;
	tw__tcp_rx st; // sequence and ack checks
	int err; // the first error: nothing is parsed after it
	unsigned char *in; // read buffer [in_off, in_len)
	size_t in_off, in_len;
	bool in_payload; // the current frame's payload is being read
	bool after_large; // the current or last frame was large
	tw__tcp_hdr cur;
	char cur_key[TW_KEY_MAX];
	unsigned char head[TCP_CONN_HEAD];
	size_t have; // payload bytes of cur read so far
	bool begun; // rx_begin said where the rest goes
	unsigned char *dst; // and here it is (NULL: skipped)
	void *cookie;
	void *post; // the polling thread's (tw__tcp_conn_poll), or NULL
	_Atomic uint64_t done; // the last frame handled
	_Atomic uint64_t hold; // the owner's: no ack from this number on
	_Atomic bool pinged; // a PING came since the hold last moved
	_Atomic bool io_more; // the I/O thread stopped with bytes left
	// An application thread took a message the I/O thread had delivered
	// (tw__tcp_conn_note_taken) since the I/O thread last read.
	_Atomic bool app_took;
	// Application threads polling for the reader role while another
	// thread holds it (tw__tcp_conn_poll): the I/O thread reads no more
	// than it has handled and leaves the socket parked for them.
	_Atomic unsigned app_wait;
	_Atomic uint64_t bytes; // read so far
	// The heartbeat timer's last tick that saw bytes arrive since the tick
	// before (see rx_seen), or when the connection (re)started.
	_Atomic int64_t last_rx;
	// Threads asleep on what only reading brings (tw__tcp_conn_sleep_
	// begin): while there are any, no reader leaves the socket parked.
	_Atomic unsigned sleepers;
	tcp_rx_memo memo; // the owner's (ops->rx_idle); reader role
} tcp_reader;

struct tcp_conn {
	_Atomic unsigned refs;
	int fd; // changed by a resume, under both roles (rx.mtx, tx.mtx)
	unsigned epoch; // resumes so far, by tx.mtx
	tw__tls *tls; // NULL: plaintext; else every byte goes through it
	tw__poller *poller;
	tw__pfd *pfd; // the socket; finished when the connection is freed
	tw__pfd *tpfd; // the heartbeat timer (tw__ptimer)
	int64_t heartbeat_ns;
	uint64_t acked; // the peer's TCP acknowledgements, by the timer
	int64_t last_acked; // when they last moved, by the timer
	// rx.bytes at the timer's last tick: the timer, not the reader, stamps
	// last_rx when the count moved.  A clock read per read was about a
	// twentieth of the time from a small message's arrival to the reply's
	// write; a stamp up to one tick (a quarter heartbeat) late only ever
	// finds the peer silent later, never sooner.
	uint64_t rx_seen;
	const tcp_conn_ops *ops;
	void *owner;
	char who[TW_TCP_ADDR_MAX + 32];
	_Atomic int failed;
	_Atomic int fail_status;
	// We close (tw__tcp_conn_close), set before our BYE goes out: the end
	// of the socket is the peer's answer, not a break to resume from.
	_Atomic bool closing;
	tw__poll_task fail_task;
	tw__poll_task rx_task; // reads what TLS holds already, at start

	// A broken socket that may be replaced (tw__tcp_conn_resume).
	int64_t down_limit_ns; // 0: a break fails the connection
	_Atomic int down; // 1: down; 2: and the reader has stopped
	_Atomic int64_t down_until; // then it fails
	tw__poll_task down_task;

	// Waiting for acks.
	_Atomic uint64_t peer_ack;
	pthread_mutex_t ack_mtx;
	pthread_cond_t ack_cv;
	_Atomic unsigned ack_waiters;

	tcp_writer tx;
	tcp_reader rx;
};

// --- tcp_conn.c -------------------------------------------------------------

// The ack our frames carry: the last frame handled, held short of the
// owner's hold.
uint64_t tw__tcp_conn_ack_out(const tcp_conn *c);

// (Re-)arms the socket for reading, and for writing when the I/O thread
// has queued bytes to flush.  tx.mtx held.
void tw__tcp_conn_arm(tcp_conn *c);

// The socket of `epoch` broke (an error writing or reading): the
// connection goes down when it may be resumed, else fails.  A break of a
// socket that a resume replaced already is ignored.  `what`: for the log.
void tw__tcp_conn_broken(tcp_conn *c, unsigned epoch, const char *what);

// Reads what the socket (or TLS) has, at most n bytes, without blocking:
// tw__tcp_recv's contract, and TW_EAUTH / TW_EPROTO from TLS.
int tw__tcp_conn_recv(tcp_conn *c, void *buf, size_t n, size_t *got);

// Whether TLS holds bytes that a read returns without the socket being
// readable (never for plaintext).
bool tw__tcp_conn_rx_pending(tcp_conn *c);

// --- tcp_writer.c ----------------------------------------------------------

int tw__tcp_writer_init(tcp_writer *tx);
void tw__tcp_writer_fini(tcp_writer *tx);

// The socket drained: the I/O thread flushes what is queued.
void tw__tcp_writer_on_writable(tcp_conn *c);

// Sends the owed PONG or ACK now when nobody writes (else the writer at
// work takes it along).  Never blocks.
void tw__tcp_writer_kick(tcp_conn *c);
// Writes the frames that wait for a flush (see defer), if any, unless a
// writer is at work.  Any thread; a cheap look when none wait.
void tw__tcp_writer_flush_deferred(tcp_conn *c);
// For tests: how close to the last write a small frame must follow to be
// deferred, and the least deferral period (also when it starts over); 0
// restores the default.  For the whole process.
void tw__tcp_writer_set_defer(int64_t gap_ns, int64_t min_ns);
// For tests: when set, called by a sender that deferred its frame once the
// flush timer is set (tx.mtx held); and how often a flush timer fired.
extern void (*_Atomic tw__tcp_defer_armed_hook)(void);
extern _Atomic uint64_t tw__tcp_flush_timer_runs;
// For tests: the most that tw__tcp_conn_read_between spends reading; 0
// restores the default.  For the whole process.
void tw__tcp_conn_set_read_between(int64_t ns);

// For tests: how long tw__tcp_conn_reclaim waits for the peer before it
// copies; 0 restores the default.  For the whole process.
void tw__tcp_writer_set_lend_wait(int64_t ns);

// The writer role no longer reads the ring it kept (stale), if any: it
// goes, and a trim that waits for it is woken.  tx.mtx held.
void tw__tcp_writer_drop_stale(tcp_writer *tx);

// Wakes every thread waiting in the writer half (the connection failed).
void tw__tcp_writer_wake(tcp_conn *c);

// Waits until the queue is out or `deadline`.  TW_OK or why not.
int tw__tcp_writer_drain(tcp_conn *c, int64_t deadline);

// The peer read every frame up to `rcvd` whole: they leave the ring.
// TW_OK, or TW_EPROTO (a frame never sent).
int tw__tcp_writer_release(tcp_conn *c, uint64_t rcvd);

// The reader moved on: when it read a quarter of the peer's bound since
// we last told the peer how far, an ACK goes out to say it.
void tw__tcp_writer_rx_progress(tcp_conn *c);

// A resume: the peer received every frame up to peer_rcvd; the next
// write starts with the frame after it.  tx.mtx held, the role free, the
// connection down.  TW_OK or TW_EPROTO (a number out of range).
int tw__tcp_writer_rewind(tcp_conn *c, uint64_t peer_rcvd);

// --- tcp_reader.c ----------------------------------------------------------

int tw__tcp_reader_init(tcp_reader *rx);
void tw__tcp_reader_fini(tcp_reader *rx);

// Reads and handles frames until the socket is empty or it has read for
// `budget_ns` (the I/O thread's share for this connection, so that one
// busy peer cannot starve the others and their heartbeats).  With 0, an
// application thread's poll: no limit, but it returns as soon as a frame
// ends with nothing more read, without asking the socket again (the
// poller looks whether that frame was what it waits for first; a reply
// that came saves a system call on its way to the application).
// Reader role held.  Returns TW_OK, or why the connection must fail (and
// records it).
int tw__tcp_reader_pump(tcp_conn *c, int64_t budget_ns, unsigned *frames);

// The connection failed or went down: tells the owner about a frame it
// was given half of (which a resume sends again), and reads no more.
// Reader role held.
void tw__tcp_reader_abandon(tcp_conn *c);

// A resume: the next frame is the one after the last handled, read from
// the new socket.  Reader role held, after tw__tcp_reader_abandon.
void tw__tcp_reader_resume(tcp_conn *c);

#endif // TW_TRANSPORT_TCP_TCP_CONN_INT_H
