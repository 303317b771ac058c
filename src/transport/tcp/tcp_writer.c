// The writer half of a tcp:// connection.
//
// Design notes.  Every frame is copied into one ring of the connection
// when it is numbered, and stays there until the peer says it has read
// it whole (the `received` field of its headers): a connection that
// breaks resumes on a new socket by writing again, from the ring, every
// frame after the last one the peer received (tcp_conn.c).  The copy is
// the price of that, and it buys more: tw_send returns once its frame is
// in the ring, and whoever writes next sends everything appended
// meanwhile with one writev, so frames batch by themselves under load.
//
// Whoever holds the writer role (`writing`) writes, without blocking, the
// bytes between `out` and `end`; a sender that finds the connection idle
// takes the role and writes its frame itself (no thread hand-off on the
// way out), and what the socket does not take is the I/O thread's to
// write when it drains.  The role's writev reads the ring outside the
// mutex: appends never touch the bytes between `base` and `end`, and a
// ring that grows while the role writes from it is kept (`stale`) until
// the writer lets go of it.
//
// Lending.  A long message's chunks are not copied: its sender lends
// their memory to the ring (tw__tcp_conn_send_lent), which reserves the
// chunk's bytes and writes them from the sender's memory, and once the
// last chunk is out the sender asks the peer to confirm (a PING) and waits
// for the answer before tw_send returns (tw__tcp_conn_reclaim).  The copy
// cost a third of a 1 MiB stream's time on loopback, where the answer
// comes within microseconds.  A peer that does not confirm within
// TX_LEND_WAIT_NS (a long or slow path, a busy reader) gets the copy
// after all: what it has not confirmed is copied into the reserved bytes
// before the sender's memory goes back, and the connection copies its
// next TX_LEND_BACKOFF long frames.  A connection that is down or failed
// has the copy at once; one that runs TLS, whose records hold on to their
// plaintext, never lends.
//
// Bounds.  Senders wait while the ring holds TX_RETAIN_MAX bytes that the
// peer has not confirmed (control frames never wait: they are few and
// small, and the I/O thread sends them).  The peer confirms at least every
// TX_RETAIN_MAX / 4 bytes it reads (tw__tcp_writer_rx_progress), so a
// stream never stalls on its own confirmations.
//
// Answers that the peer waits for (PONG) and acknowledgements that moved
// without a frame to carry them (ACK) are owed flags, not queued frames:
// whoever writes next appends one of each, however many were asked for
// meanwhile, so a peer that floods PINGs costs nothing but one PONG per
// write.
//
// Sequence numbers are assigned in stream order under the writer's mutex
// and published before the first byte leaves: the peer may acknowledge a
// frame before the write returns, and an ack of a frame not counted yet
// would look like a lie.

#include <errno.h>
#include <stdatomic.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/sync.h"
#include "transport/tcp/tcp_conn_int.h"

// Frames up to this payload size that follow the last write closely wait
// for the next writev (see tw__tcp_conn_send); larger ones go at once.
#define TX_COPY_MAX 16384
// How often a waiting sender looks at its deadline and cancel flag.
#define TX_SLICE_MS 10
// A small frame that follows the last write within this time is part of a
// stream: it waits for the next flush (see defer).
#define TX_BATCH_GAP_NS 3000
// A stream's sender flushes the frames that wait once they make this many
// bytes or the oldest waited half the deferral period; the flush timer
// writes them one period after the first, for a sender that stopped.  The
// period starts at TX_DEFER_MIN_NS and doubles, up to TX_DEFER_MAX_NS,
// while the stream goes on: a long stream's writes grow to a few thousand
// frames, and a short burst waits little.
#define TX_DEFER_BYTES 65536
#define TX_DEFER_MIN_NS 40000
#define TX_DEFER_MAX_NS 320000
// A stream's sender reads the clock for one deferred frame in this many.
#define TX_UNCLOCKED 32
// The most iovec parts of one frame's payload.
#define TX_PAY_MAX 2
// The most iovec parts of one write: the ring's two, plus lent payloads
// and the ring between them.
#define TX_IOV_MAX 16
// Payloads this long or longer may be lent (shorter ones copy faster
// than the round trip that lending costs).
#define TX_LEND_MIN 65536
// How long a lender waits for the peer's confirmation before it copies,
// and how much of it spinning on the socket (then asleep).  On loopback
// the answer takes 5 to 20 us after the last chunk; copying 1 MiB takes
// 50 to 100.  A peer much further away has the ring's copy.
#define TX_LEND_WAIT_NS 200000
#define TX_LEND_SPIN_NS 50000
// Frames copied rather than lent after a lender had to copy: a path whose
// answers are slow tries lending again every 8 MiB of chunks.
#define TX_LEND_BACKOFF 32

// TX_BATCH_GAP_NS and TX_DEFER_MIN_NS, unless a test changed them.
static _Atomic int64_t batch_gap_ns = TX_BATCH_GAP_NS;
static _Atomic int64_t defer_min_ns = TX_DEFER_MIN_NS;

static _Atomic int64_t lend_wait_ns = TX_LEND_WAIT_NS;

void tw__tcp_writer_set_lend_wait(int64_t ns)
{
	atomic_store_explicit(&lend_wait_ns, ns > 0 ? ns : TX_LEND_WAIT_NS,
	    memory_order_relaxed);
}

void tw__tcp_writer_set_defer(int64_t gap_ns, int64_t min_ns)
{
	atomic_store_explicit(&batch_gap_ns,
	    gap_ns > 0 ? gap_ns : TX_BATCH_GAP_NS, memory_order_relaxed);
	atomic_store_explicit(&defer_min_ns,
	    min_ns > 0 ? min_ns : TX_DEFER_MIN_NS, memory_order_relaxed);
}

int tw__tcp_writer_init(tcp_writer *tx)
{
	memset(tx, 0, sizeof(*tx));
	pthread_mutex_init(&tx->mtx, NULL);
	tw__cond_init(&tx->cv);
	tx->buf = malloc(TX_RING_MIN);
	tx->fend = malloc(TX_INDEX_MIN * sizeof(*tx->fend));
	if (tx->buf == NULL || tx->fend == NULL)
		return TW_ENOMEM;
	tx->cap = TX_RING_MIN;
	tx->fcap = TX_INDEX_MIN;
	return TW_OK;
}

void tw__tcp_writer_fini(tcp_writer *tx)
{
	free(tx->buf);
	free(tx->stale);
	free(tx->fend);
	pthread_cond_destroy(&tx->cv);
	pthread_mutex_destroy(&tx->mtx);
}

static bool failed(const tcp_conn *c)
{
	return atomic_load_explicit(&c->failed, memory_order_acquire) != 0;
}

static bool cancelled(const _Atomic int *cancel)
{
	return cancel != NULL
	    && atomic_load_explicit(cancel, memory_order_acquire);
}

// Advances iov past `done` bytes.
static void advance(struct iovec **iov, int *n, size_t done)
{
	while (done > 0) {
		size_t k = (*iov)[0].iov_len;
		size_t d = done < k ? done : k;
		(*iov)[0].iov_base = (char *)(*iov)[0].iov_base + d;
		(*iov)[0].iov_len -= d;
		done -= d;
		if ((*iov)[0].iov_len == 0) {
			(*iov)++;
			(*n)--;
		}
	}
}

// Writes as much of iov as the socket (through TLS when tls is set) takes
// now.  Advances iov.  TW_OK (all written), TW_EAGAIN (the socket is
// full), TW_EPEER.
static int write_some(int fd, tw__tls *tls, struct iovec **iov, int *n)
{
	if (tls != NULL) {
		while (*n > 0 && (*iov)[0].iov_len == 0) {
			(*iov)++;
			(*n)--;
		}
		if (*n == 0)
			return TW_OK;
		size_t took = 0;
		int status = tw__tls_writev(tls, *iov, *n, &took);
		advance(iov, n, took);
		return status;
	}
	for (;;) {
		while (*n > 0 && (*iov)[0].iov_len == 0) {
			(*iov)++;
			(*n)--;
		}
		if (*n == 0)
			return TW_OK;
		struct msghdr msg
		    = { .msg_iov = *iov, .msg_iovlen = (size_t)*n };
		ssize_t w = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return TW_EAGAIN;
			return TW_EPEER;
		}
		advance(iov, n, (size_t)w);
	}
}

// --- the ring -----------------------------------------------------------------

// `from` (a power of two) doubled until it reaches n.
static size_t pow2_from(size_t from, uint64_t n)
{
	while (from < n)
		from *= 2;
	return from;
}

// The run of the stream's bytes that starts at x (before `to`): where it
// is and how long (*k), up to the ring's wrap or a lent payload's
// border.  *lent: the bytes are the lender's, not the ring's.  *i walks
// the lent payloads (from lent_head, the caller's, only forward).
static const unsigned char *run_at(const tcp_writer *tx, uint64_t *i,
    uint64_t x, uint64_t to, size_t *k, bool *lent)
{
	while (*i < tx->lent_tail && tx->lent[*i % TX_LENT_MAX].to <= x)
		(*i)++;
	uint64_t stop = to;
	*lent = false;
	if (*i < tx->lent_tail) {
		const tcp_lent *e = &tx->lent[*i % TX_LENT_MAX];
		if (e->from > x) {
			stop = e->from < to ? e->from : to;
		} else {
			stop = e->to < to ? e->to : to;
			if (e->src != NULL) {
				*k = (size_t)(stop - x);
				*lent = true;
				return e->src + (x - e->from);
			}
		}
	}
	size_t at = (size_t)(x & (tx->cap - 1));
	*k = (size_t)(stop - x);
	if (*k > tx->cap - at)
		*k = tx->cap - at;
	return tx->buf + at;
}

// Copies n bytes from src into `ring` (cap bytes, a power of two) at
// stream position x on.
static void ring_copy_in(unsigned char *ring, size_t cap, uint64_t x,
    const unsigned char *src, size_t n)
{
	while (n > 0) {
		size_t at = (size_t)(x & (cap - 1));
		size_t k = cap - at < n ? cap - at : n;
		memcpy(ring + at, src, k);
		src += k;
		n -= k;
		x += k;
	}
}

// Copies n bytes from src into the ring at position x on.  tx.mtx held.
static void ring_fill(tcp_writer *tx, uint64_t x, const void *src, size_t n)
{
	ring_copy_in(tx->buf, tx->cap, x, src, n);
}

// Moves the ring's bytes from base on into a new ring of `cap` bytes
// (a power of two that holds them); the bytes reserved for lent
// payloads stay reserved, uncopied.  tx.mtx held.  TW_OK or TW_ENOMEM,
// with nothing changed.
static int ring_move(tcp_writer *tx, size_t cap)
{
	unsigned char *nb = malloc(cap);
	if (nb == NULL)
		return TW_ENOMEM;
	uint64_t i = tx->lent_head;
	for (uint64_t x = tx->base; x < tx->end;) {
		size_t k = 0;
		bool lent = false;
		const unsigned char *from
		    = run_at(tx, &i, x, tx->end, &k, &lent);
		if (!lent)
			ring_copy_in(nb, cap, x, from, k);
		x += k;
	}
	if (tx->writing && tx->stale == NULL)
		tx->stale = tx->buf; // the role may be writing from it
	else
		free(tx->buf);
	tx->buf = nb;
	tx->cap = cap;
	return TW_OK;
}

// Moves the index of frames (released, seq] into one of `fcap` entries
// (a power of two that holds them).  tx.mtx held.  TW_OK or TW_ENOMEM.
static int index_move(tcp_writer *tx, size_t fcap)
{
	uint64_t *nf = malloc(fcap * sizeof(*nf));
	if (nf == NULL)
		return TW_ENOMEM;
	for (uint64_t s = tx->released + 1; s <= tx->seq; s++)
		nf[s & (fcap - 1)] = tx->fend[s & (tx->fcap - 1)];
	free(tx->fend);
	tx->fend = nf;
	tx->fcap = fcap;
	return TW_OK;
}

// Room for `need` more bytes and one more frame in the index, growing
// both when needed.  tx.mtx held.  TW_OK or TW_ENOMEM.
static int make_room(tcp_writer *tx, size_t need)
{
	// Bytes from out on may still be in a write that has not returned,
	// even when the peer's ack already moved base past them (see
	// tw__tcp_writer_release): the kernel copied them, but nothing tells
	// this thread so before the write returns, so they are not written
	// over until out passed them.
	uint64_t keep = tx->out < tx->base ? tx->out : tx->base;
	uint64_t used = tx->end - keep;
	if (used + need > tx->cap
	    && ring_move(tx, pow2_from(tx->cap, used + need)) != TW_OK)
		return TW_ENOMEM;
	if (tx->seq + 1 - tx->released > tx->fcap
	    && index_move(tx, tx->fcap * 2) != TW_OK)
		return TW_ENOMEM;
	return TW_OK;
}

size_t tw__tcp_conn_trim(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	size_t freed = 0;
	pthread_mutex_lock(&tx->mtx);
	// A role that writes from the ring meanwhile keeps the old one as
	// ring_move leaves it (`stale`, as when the ring grows), and finds
	// the bytes after those it wrote in the new one: the peer confirmed
	// none it was not sent, so base is no further than out once the
	// write returns.
	size_t cap = pow2_from(TX_RING_MIN, tx->end - tx->base);
	size_t old = tx->cap;
	if (cap < old && ring_move(tx, cap) == TW_OK)
		freed += old - cap;
	size_t fcap = pow2_from(TX_INDEX_MIN, tx->seq - tx->released);
	size_t fold = tx->fcap;
	if (fcap < fold && index_move(tx, fcap) == TW_OK)
		freed += (fold - fcap) * sizeof(*tx->fend);
	// What is counted as given back is gone when this returns: an old
	// ring that a write in progress may read goes when that write
	// returns, which never waits on the peer.  Left to the writer, a
	// ring of up to 32 MiB outlived the trim that was to measure
	// memory without it (a preempted I/O thread keeps its role).
	while (tx->stale != NULL) {
		tx->stale_waits++;
		pthread_cond_wait(&tx->cv, &tx->mtx);
		tx->stale_waits--;
	}
	pthread_mutex_unlock(&tx->mtx);
	return freed;
}

void tw__tcp_writer_drop_stale(tcp_writer *tx)
{
	if (tx->stale == NULL)
		return;
	free(tx->stale);
	tx->stale = NULL;
	pthread_cond_broadcast(&tx->cv); // a trim may wait for it
}

static void put(tcp_writer *tx, const void *src, size_t n)
{
	ring_fill(tx, tx->end, src, n);
	tx->end += n;
}

// The stream's bytes [from, to) as at most `max` iovecs, from the ring
// and from lent payloads; fewer bytes when more parts would be needed.
// tx.mtx held.
static int segments(
    const tcp_writer *tx, uint64_t from, uint64_t to, struct iovec *v, int max)
{
	int n = 0;
	uint64_t i = tx->lent_head;
	while (from < to && n < max) {
		size_t k = 0;
		bool lent = false;
		const unsigned char *p = run_at(tx, &i, from, to, &k, &lent);
		v[n++] = (struct iovec) { (void *)p, k };
		from += k;
	}
	return n;
}

// Lent payloads that the peer confirmed (before base) leave.  tx.mtx
// held.
static void lent_drop(tcp_writer *tx)
{
	while (tx->lent_head < tx->lent_tail
	    && tx->lent[tx->lent_head % TX_LENT_MAX].to <= tx->base)
		tx->lent_head++;
}

// Numbers header h (its sequence number, our ack and what we received),
// and appends it with its payload.  tx.mtx held.  TW_OK, or TW_ENOMEM
// with nothing appended and no number taken.
// With a lender, the payload's last part is lent (see tcp_lent), not
// copied.
static int append(tcp_conn *c, tw__tcp_hdr *h, const struct iovec *pay,
    int npay, const void *lender)
{
	tcp_writer *tx = &c->tx;
	size_t need = TW_TCP_HDR_LEN + h->key_len + (size_t)h->len;
	if (make_room(tx, need) != TW_OK)
		return TW_ENOMEM;
	h->seq = tx->seq + 1;
	// Received first: the ack is never ahead of it.
	h->rcvd = tw__tcp_conn_rx_done(c);
	h->ack = tw__tcp_conn_ack_out(c);
	if (h->ack > h->rcvd)
		h->ack = h->rcvd;
	size_t at = (size_t)(tx->end & (tx->cap - 1));
	if (lender == NULL && tx->cap - at >= need) {
		// Contiguous room, as for nearly every frame: built in
		// place, without a copy of the header through the stack.
		unsigned char *p = tx->buf + at;
		p += tw__tcp_hdr_encode(p, need, h);
		for (int i = 0; i < npay; i++) {
			tw__tcp_copy_short(p, pay[i].iov_base, pay[i].iov_len);
			p += pay[i].iov_len;
		}
		tx->end += need;
	} else {
		unsigned char hdr[TW_TCP_HDR_LEN + TW_KEY_MAX];
		put(tx, hdr, tw__tcp_hdr_encode(hdr, sizeof(hdr), h));
		for (int i = 0; i < npay; i++) {
			if (lender != NULL && i == npay - 1) {
				tx->lent[tx->lent_tail++ % TX_LENT_MAX]
				    = (tcp_lent) { .from = tx->end,
					      .to = tx->end + pay[i].iov_len,
					      .src = pay[i].iov_base,
					      .lender = lender };
				tx->end += pay[i].iov_len;
			} else {
				put(tx, pay[i].iov_base, pay[i].iov_len);
			}
		}
	}
	tx->seq = h->seq;
	tx->fend[tx->seq & (tx->fcap - 1)] = tx->end;
	tx->owe_pong = tx->owe_ack = false;
	atomic_store_explicit(&tx->rcvd_bytes,
	    atomic_load_explicit(&c->rx.bytes, memory_order_relaxed),
	    memory_order_relaxed);
	atomic_store_explicit(&tx->seq_pub, tx->seq, memory_order_release);
	return TW_OK;
}

// Appends the owed answer, if any.  tx.mtx held.
static void append_owed(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	if (!tx->owe_pong && !tx->owe_ack)
		return;
	tw__tcp_hdr h
	    = { .type = tx->owe_pong ? TW_TCP_F_PONG : TW_TCP_F_ACK };
	if (append(c, &h, NULL, 0, NULL) != TW_OK) {
		// The peer waits for it: without it the stream may stall.
		pthread_mutex_unlock(&tx->mtx);
		tw__tcp_conn_fail(c, TW_ENOMEM, "out of memory");
		pthread_mutex_lock(&tx->mtx);
	}
}

// --- writing ------------------------------------------------------------------

// Writes what is appended, without blocking; the caller holds the writer
// role and tx.mtx, which is released around each write and held again on
// return (both callers go on under it: taking it once more per flush was
// two of the five lock round trips of a small frame's send).  TW_OK when
// everything is out, TW_EAGAIN, or TW_EPEER (the socket broke: epoch says
// which socket it was).
static int flush_ring(tcp_conn *c, unsigned *epoch)
{
	tcp_writer *tx = &c->tx;
	for (;;) {
		tw__tcp_writer_drop_stale(tx); // not written from any more
		if (tx->down)
			return TW_EAGAIN; // kept for the next socket
		// Owed answers join once the socket took everything: a peer
		// that floods PINGs and reads nothing gets one PONG per
		// drained socket, not one each.
		if (tx->out == tx->end)
			append_owed(c);
		struct iovec v[TX_IOV_MAX];
		int n = segments(tx, tx->out, tx->end, v, TX_IOV_MAX);
		if (n == 0)
			return TW_OK;
		int fd = c->fd;
		tw__tls *tls = c->tls;
		*epoch = c->epoch;
		pthread_mutex_unlock(&tx->mtx);
		size_t total = 0;
		for (int i = 0; i < n; i++)
			total += v[i].iov_len;
		struct iovec *iov = v;
		int left = n;
		int status = write_some(fd, tls, &iov, &left);
		size_t rest = 0;
		for (int i = 0; i < left; i++)
			rest += iov[i].iov_len;
		pthread_mutex_lock(&tx->mtx);
		tx->out += total - rest;
		tx->writes++; // no longer reads what a lender took back
		pthread_cond_broadcast(&tx->cv);
		if (status != TW_OK)
			return status;
	}
}

// Waits on tx.cv until a slice passes.  tx.mtx held.  TW_OK, or why the
// sender must stop waiting.
static int tx_wait(tcp_conn *c, int64_t deadline, const _Atomic int *cancel)
{
	if (failed(c))
		return TW_EPEER;
	if (cancelled(cancel))
		return TW_ECLOSED;
	int64_t now = tw__now_ns();
	if (now >= deadline)
		return TW_ETIMEDOUT;
	int64_t until = now + TX_SLICE_MS * 1000000LL;
	(void)tw__cond_wait_until(
	    &c->tx.cv, &c->tx.mtx, until < deadline ? until : deadline);
	return TW_OK;
}

// Leaves the writer role.  tx.mtx held.  Bytes that nobody wrote become
// the I/O thread's to write when the socket drains.
static void writer_done(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	tx->writing = false;
	tw__tcp_writer_drop_stale(tx);
	// Written, or the I/O thread's to write below.
	atomic_store_explicit(&tx->deferred, false, memory_order_relaxed);
	if ((tx->out < tx->end || tx->owe_pong || tx->owe_ack) && !tx->down
	    && !tx->want_out) {
		tx->want_out = true;
		tw__tcp_conn_arm(c);
	}
	pthread_cond_broadcast(&tx->cv);
}

// Takes the writer role and writes without blocking; what the socket does
// not take is the I/O thread's to write.  Called with tx.mtx held and the
// role free; returns with tx.mtx released.
static void flush_as_writer(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	tx->writing = true;
	unsigned epoch = 0;
	int status = flush_ring(c, &epoch);
	tx->last_flush = tw__now_ns();
	writer_done(c);
	pthread_mutex_unlock(&tx->mtx);
	if (status == TW_EPEER)
		tw__tcp_conn_broken(c, epoch, "writing");
}

_Atomic uint64_t tw__tcp_flush_timer_runs;

// Writes what waits, unless a writer at work takes it along.  With peek,
// a cheap look first whether anything waits at all; the flush timer takes
// the lock instead: its sender set the flag under it.
static void flush_deferred(tcp_conn *c, bool peek)
{
	tcp_writer *tx = &c->tx;
	if (peek && !atomic_load_explicit(&tx->deferred, memory_order_relaxed))
		return;
	pthread_mutex_lock(&tx->mtx);
	if (!atomic_load_explicit(&tx->deferred, memory_order_relaxed)
	    || tx->writing || tx->down || failed(c)) {
		pthread_mutex_unlock(&tx->mtx);
		return; // a writer at work takes them along
	}
	tx->defer_ns = 0; // from the least again
	flush_as_writer(c);
}

void tw__tcp_writer_flush_deferred(tcp_conn *c)
{
	flush_deferred(c, true);
}

static void on_flush_timer(tw__pfd *pfd, unsigned events, void *arg)
{
	(void)pfd;
	(void)events;
	atomic_fetch_add_explicit(
	    &tw__tcp_flush_timer_runs, 1, memory_order_relaxed);
	flush_deferred(arg, false);
}

// Sets the flush timer to fire at `at`, making it the first time.  tx.mtx
// held.  False when there is none to be had (logged).
static bool flush_timer_set(tcp_conn *c, int64_t at)
{
	tcp_writer *tx = &c->tx;
	if (tx->dpfd == NULL
	    && tw__ptimer_init(c->poller, on_flush_timer, c, &tx->dpfd)
	        != TW_OK) {
		TW_LOG_ONCE(TW_LOG_WARN, "tcp",
		    "cannot make a flush timer (%m); the I/O thread writes "
		    "streams");
		return false;
	}
	return tw__ptimer_set(tx->dpfd, at, 0) == TW_OK;
}

void (*_Atomic tw__tcp_defer_armed_hook)(void);

// A small frame that follows the last write closely is part of a stream:
// it waits for a flush that takes many along in one writev.  The sender
// flushes itself once the frames that wait make TX_DEFER_BYTES or the
// oldest waited half the period (returns false: flush now; the period
// doubles); a sender that stops before is flushed by the flush timer, a
// period after the first frame, or at once when it, or anyone, waits for
// what the peer answers (tw__tcp_writer_flush_deferred; the period starts
// over).  Handing every batch to the I/O thread instead cost an epoll_ctl,
// a wake-up and, on a CPU that the two threads share, two context switches
// per batch, a third of an 8-byte stream's time.  Without a timer the I/O
// thread writes, as then.  tx.mtx held.
static bool defer(tcp_conn *c, int64_t now)
{
	tcp_writer *tx = &c->tx;
	if (tx->defer_ns == 0)
		tx->defer_ns = atomic_load_explicit(
		    &defer_min_ns, memory_order_relaxed);
	if (atomic_load_explicit(&tx->deferred, memory_order_relaxed)) {
		if (tx->end - tx->out >= TX_DEFER_BYTES) {
			tx->defer_ns = 0; // the period did not matter
			return false;
		}
		if (now - tx->deferred_from < tx->defer_ns / 2)
			return true;
		if (tx->defer_ns < TX_DEFER_MAX_NS)
			tx->defer_ns = tx->defer_ns * 2 < TX_DEFER_MAX_NS
			    ? tx->defer_ns * 2
			    : TX_DEFER_MAX_NS;
		return false;
	}
	// Flagged before the timer is set: a timer that fires at once (its
	// thread may run before this one goes on) finds what it is for.
	atomic_store_explicit(&tx->deferred, true, memory_order_relaxed);
	tx->deferred_from = now;
	if (!flush_timer_set(c, now + tx->defer_ns)) {
		atomic_store_explicit(
		    &tx->deferred, false, memory_order_relaxed);
		tx->want_out = true;
		tw__tcp_conn_arm(c);
		return true;
	}
	void (*hook)(void) = atomic_load_explicit(
	    &tw__tcp_defer_armed_hook, memory_order_relaxed);
	if (hook != NULL)
		hook();
	return true;
}

// Whether a small frame of a stream that is deferred already may wait
// without a look at the clock: only one in TX_UNCLOCKED looks whether the
// oldest frame waited half the period.  The clock was a fifth of an 8-byte
// stream's sending time; a flush that comes TX_UNCLOCKED frames late at
// most is still bounded by the flush timer (one period) and by
// TX_DEFER_BYTES.  tx.mtx held.
static bool defer_unclocked(tcp_writer *tx)
{
	if (!atomic_load_explicit(&tx->deferred, memory_order_relaxed)
	    || tx->want_out || tx->end - tx->out >= TX_DEFER_BYTES)
		return false;
	return ++tx->unclocked % TX_UNCLOCKED != 0;
}

// Waits until the socket can take more bytes (one slice at most), for a
// sender that waits for room in the ring.  tx.mtx held; released while
// waiting.
static void wait_writable(tcp_conn *c)
{
	int fd = c->fd;
	pthread_mutex_unlock(&c->tx.mtx);
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	(void)poll(&pfd, 1, TX_SLICE_MS);
	pthread_mutex_lock(&c->tx.mtx);
}

// A large frame's sender writes until its frame (ending at `mine`) is out,
// taking turns with other writers: the thread that made the bytes pushes
// them into the socket, rather than handing them to the I/O thread, and a
// stream of large frames runs at the speed of the socket, not of the
// ring.  Stops early, the frame left to the next writer, when the
// connection breaks or at `deadline` or *cancel.  tx.mtx held; released.
static void write_own(
    tcp_conn *c, uint64_t mine, int64_t deadline, const _Atomic int *cancel)
{
	tcp_writer *tx = &c->tx;
	while (tx->out < mine && !tx->down && !failed(c)) {
		if (tx->writing) {
			if (tx_wait(c, deadline, cancel) != TW_OK)
				break;
			continue;
		}
		tx->writing = true;
		unsigned epoch = 0;
		int status = flush_ring(c, &epoch);
		tx->last_flush = tw__now_ns();
		tx->writing = false;
		tw__tcp_writer_drop_stale(tx);
		pthread_cond_broadcast(&tx->cv);
		if (status == TW_EPEER) {
			pthread_mutex_unlock(&tx->mtx);
			tw__tcp_conn_broken(c, epoch, "writing");
			return;
		}
		if (status == TW_EAGAIN && tx->out < mine) {
			if (tw__now_ns() >= deadline || cancelled(cancel))
				break;
			wait_writable(c);
		}
	}
	// What is left is the I/O thread's, unless another writer has it.
	if (!tx->writing && tx->out < tx->end && !tx->down && !tx->want_out) {
		tx->want_out = true;
		tw__tcp_conn_arm(c);
	}
	pthread_mutex_unlock(&tx->mtx);
}

// Whether a frame's payload, whose last part is `last`, is lent rather
// than copied, for a lender (see Lending).  tx.mtx held.
static bool lends(tcp_conn *c, const void *lender, const struct iovec *last)
{
	tcp_writer *tx = &c->tx;
	if (lender == NULL || last->iov_len < TX_LEND_MIN || c->tls != NULL
	    || tx->down || tx->lent_tail - tx->lent_head >= TX_LENT_MAX)
		return false;
	if (tx->lend_skip > 0) {
		tx->lend_skip--;
		return false;
	}
	return true;
}

// tw__tcp_conn_send, and tw__tcp_conn_send_lent with a lender.
static int send_frame(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, size_t key_len, const struct iovec *iov, int niov,
    int flags, int64_t deadline, const _Atomic int *cancel, uint64_t *seq,
    _Atomic uint64_t *mark, const void *lender, bool *lent)
{
	tcp_writer *tx = &c->tx;
	size_t len = 0;
	for (int i = 0; i < niov; i++)
		len += iov[i].iov_len;
	tw__tcp_hdr h = { .type = type,
		.slot = slot,
		.len = len,
		.key = key,
		.key_len = key_len };
	// The peer refuses longer frames (by dropping the connection).
	size_t max = type == TW_TCP_F_CHUNK
	    ? TW_TCP_FRAME_MAX + TW_TCP_CHUNK_PREFIX
	    : TW_TCP_FRAME_MAX;
	if (h.key_len >= TW_KEY_MAX || niov > TX_PAY_MAX || len > max)
		return TW_EINVAL;
	size_t need = TW_TCP_HDR_LEN + h.key_len + len;
	int status = TW_OK;
	bool sleeping = false;
	pthread_mutex_lock(&tx->mtx);
	for (;;) {
		if (failed(c)) {
			status = TW_EPEER;
			break;
		}
		if (tx->end - tx->base + need <= TX_RETAIN_MAX)
			break;
		if (flags & TCP_TX_NOWAIT) {
			// Control frames pass the bound, not twice over: a
			// peer that confirms nothing it reads is broken.
			if (tx->end - tx->base + need <= 2 * TX_RETAIN_MAX)
				break;
			pthread_mutex_unlock(&tx->mtx);
			tw__tcp_conn_fail(c, TW_EPROTO,
			    "the peer confirms none of the frames it reads");
			return TW_EPEER;
		}
		// The ring is full of frames the peer has not confirmed.
		// Bytes not yet written are ours to write meanwhile.
		if (!tx->writing && !tx->down && tx->out < tx->end) {
			flush_as_writer(c);
			pthread_mutex_lock(&tx->mtx);
			if (tx->end - tx->base + need > TX_RETAIN_MAX
			    && !tx->writing && !tx->down && tx->out < tx->end)
				wait_writable(c);
			continue;
		}
		// Room comes with the peer's ack: the I/O thread reads it,
		// even from a socket that a reader (this sender between two
		// chunks too) left parked.
		if (!sleeping) {
			sleeping = true;
			pthread_mutex_unlock(&tx->mtx);
			tw__tcp_conn_sleep_begin(c);
			pthread_mutex_lock(&tx->mtx);
			continue;
		}
		deadline = tw__deadline_fix(deadline); // may be lazy
		if ((status = tx_wait(c, deadline, cancel)) != TW_OK)
			break;
	}
	if (sleeping)
		tw__tcp_conn_sleep_end(c);
	if (status == TW_OK) {
		lender = niov > 0 && lends(c, lender, &iov[niov - 1]) ? lender
		                                                      : NULL;
		if (lent != NULL)
			*lent = lender != NULL;
	}
	if (status == TW_OK && append(c, &h, iov, niov, lender) != TW_OK) {
		pthread_mutex_unlock(&tx->mtx);
		TW_ERROR("tcp", "out of memory for a frame of %zu bytes to %s",
		    need, c->who);
		return TW_ENOMEM;
	}
	if (status != TW_OK) {
		pthread_mutex_unlock(&tx->mtx);
		return status;
	}
	if (seq != NULL)
		*seq = h.seq;
	if (mark != NULL)
		atomic_store_explicit(mark, h.seq, memory_order_release);
	if (len > TX_COPY_MAX && !(flags & TCP_TX_NOWAIT)) {
		write_own(c, tx->end, tw__deadline_fix(deadline), cancel);
		return TW_OK;
	}
	// The writer at work takes it along; a connection that is down
	// sends it on its next socket; the caller's next frame takes an
	// announcement along.
	if (tx->writing || tx->down || (flags & TCP_TX_MORE)) {
		pthread_mutex_unlock(&tx->mtx);
		return TW_OK;
	}
	// A sender of small frames that comes back right after the last
	// write is streaming: its frames wait for a flush that sends all
	// that gathered meanwhile with one writev (defer), instead of one
	// system call each; the I/O thread's, when it has the socket's
	// room to wait for.  A sender that was quiet for a while (a reply, a
	// request) writes at once, and so does every control frame.
	if (!(flags & TCP_TX_NOWAIT) && len <= TX_COPY_MAX) {
		if (defer_unclocked(tx)) {
			pthread_mutex_unlock(&tx->mtx);
			return TW_OK;
		}
		int64_t gap = atomic_load_explicit(
		    &batch_gap_ns, memory_order_relaxed);
		bool deferred = atomic_load_explicit(
		    &tx->deferred, memory_order_relaxed);
		int64_t now = atomic_load_explicit(
		    &tx->clock_seen, memory_order_relaxed);
		if (deferred || now - tx->last_flush < gap)
			now = tw__now_ns();
		if (tx->want_out
		    || ((deferred || now - tx->last_flush < gap)
		        && defer(c, now))) {
			pthread_mutex_unlock(&tx->mtx);
			return TW_OK;
		}
	}
	flush_as_writer(c);
	return TW_OK;
}

int tw__tcp_conn_send(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, const struct iovec *iov, int niov, int flags,
    int64_t deadline, const _Atomic int *cancel, uint64_t *seq)
{
	return send_frame(c, type, slot, key, key != NULL ? strlen(key) : 0,
	    iov, niov, flags, deadline, cancel, seq, NULL, NULL, NULL);
}

int tw__tcp_conn_send_mark(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, size_t key_len, const struct iovec *iov, int niov,
    int64_t deadline, const _Atomic int *cancel, _Atomic uint64_t *mark)
{
	return send_frame(c, type, slot, key, key_len, iov, niov, 0, deadline,
	    cancel, NULL, mark, NULL, NULL);
}

int tw__tcp_conn_send_lent(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, const struct iovec *iov, int niov, const void *lender,
    bool *lent, uint64_t *seq)
{
	*lent = false;
	return send_frame(c, type, slot, key, key != NULL ? strlen(key) : 0,
	    iov, niov, 0, TW_FOREVER, NULL, seq, NULL, lender, lent);
}

typedef struct confirm_wait {
	tcp_conn *c;
	uint64_t seq;
} confirm_wait;

// Whether the lender has nothing to wait for: the peer confirmed its
// frames, or will not soon.
static bool confirmed(void *arg)
{
	const confirm_wait *w = arg;
	return atomic_load_explicit(
	           &w->c->tx.released_pub, memory_order_relaxed)
	    >= w->seq
	    || failed(w->c) || tw__tcp_conn_is_down(w->c);
}

void tw__tcp_conn_ask(tcp_conn *c, uint64_t seq)
{
	confirm_wait w = { c, seq };
	// The peer's answer says how far it read, at once.
	if (!confirmed(&w))
		(void)tw__tcp_conn_send(c, TW_TCP_F_PING, 0, NULL, NULL, 0,
		    TCP_TX_NOWAIT, 0, NULL, NULL);
}

void tw__tcp_conn_reclaim(tcp_conn *c, const void *lender, uint64_t seq)
{
	tcp_writer *tx = &c->tx;
	confirm_wait w = { c, seq };
	if (!confirmed(&w)) {
		tw__tcp_conn_ask(c, seq);
		int64_t limit = tw__now_ns()
		    + atomic_load_explicit(
		        &lend_wait_ns, memory_order_relaxed);
		(void)tw__tcp_conn_poll(
		    c, TX_LEND_SPIN_NS, limit, confirmed, &w, NULL, false);
		if (!confirmed(&w)) {
			tw__tcp_conn_sleep_begin(c);
			pthread_mutex_lock(&tx->mtx);
			while (!confirmed(&w) && tw__now_ns() < limit)
				(void)tw__cond_wait_until(
				    &tx->cv, &tx->mtx, limit);
			pthread_mutex_unlock(&tx->mtx);
			tw__tcp_conn_sleep_end(c);
		}
	}
	pthread_mutex_lock(&tx->mtx);
	bool taken = false;
	// A failed connection sends nothing again: nothing to copy.
	bool copy = !failed(c);
	for (uint64_t i = tx->lent_head; i < tx->lent_tail; i++) {
		tcp_lent *e = &tx->lent[i % TX_LENT_MAX];
		if (e->lender != lender || e->src == NULL)
			continue;
		if (copy)
			ring_fill(
			    tx, e->from, e->src, (size_t)(e->to - e->from));
		e->src = NULL;
		taken = true;
	}
	if (taken) {
		if (copy) {
			tx->lend_copies++;
			tx->lend_skip = TX_LEND_BACKOFF;
		}
		// A write that the role began before may still read the
		// lender's memory: it has returned once `writes` moved.
		uint64_t writes = tx->writes;
		while (tx->writing && tx->writes == writes)
			pthread_cond_wait(&tx->cv, &tx->mtx);
	}
	pthread_mutex_unlock(&tx->mtx);
}

void tw__tcp_writer_on_writable(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	pthread_mutex_lock(&tx->mtx);
	tx->want_out = false;
	if (tx->writing || tx->down
	    || (tx->out == tx->end && !tx->owe_pong && !tx->owe_ack)) {
		pthread_mutex_unlock(&tx->mtx);
		return;
	}
	flush_as_writer(c);
}

void tw__tcp_writer_kick(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	pthread_mutex_lock(&tx->mtx);
	if (tx->writing || tx->down || failed(c)) {
		pthread_mutex_unlock(&tx->mtx);
		return; // the writer at work appends it when its batch ends
	}
	flush_as_writer(c);
}

void tw__tcp_writer_wake(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx.mtx);
	pthread_cond_broadcast(&c->tx.cv);
	pthread_mutex_unlock(&c->tx.mtx);
}

int tw__tcp_writer_drain(tcp_conn *c, int64_t deadline)
{
	tcp_writer *tx = &c->tx;
	int status = TW_OK;
	pthread_mutex_lock(&tx->mtx);
	// A connection that is down sends nothing until it is resumed:
	// closing it has nothing to wait for.
	while ((tx->out < tx->end || tx->writing) && !tx->down
	    && (status = tx_wait(c, deadline, NULL)) == TW_OK)
		;
	if (status == TW_OK && tx->down)
		status = TW_EPEER;
	pthread_mutex_unlock(&tx->mtx);
	return status;
}

int tw__tcp_writer_release(tcp_conn *c, uint64_t rcvd)
{
	tcp_writer *tx = &c->tx;
	if (rcvd
	    <= atomic_load_explicit(&tx->released_pub, memory_order_relaxed))
		return TW_OK;
	int status = TW_OK;
	pthread_mutex_lock(&tx->mtx);
	if (rcvd > tx->released) {
		// The peer may have read bytes before our write returned, so
		// base may pass out for a moment: those bytes are the
		// kernel's already, and out catches up.
		uint64_t at = tx->fend[rcvd & (tx->fcap - 1)];
		if (rcvd > tx->seq) {
			status = TW_EPROTO; // never sent
		} else {
			tx->base = at;
			tx->released = rcvd;
			lent_drop(tx);
			atomic_store_explicit(
			    &tx->released_pub, rcvd, memory_order_relaxed);
			pthread_cond_broadcast(&tx->cv);
		}
	}
	pthread_mutex_unlock(&tx->mtx);
	return status;
}

void tw__tcp_writer_rx_progress(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	uint64_t b = atomic_load_explicit(&c->rx.bytes, memory_order_relaxed);
	if (b - atomic_load_explicit(&tx->rcvd_bytes, memory_order_relaxed)
	    < TX_RETAIN_MAX / 4)
		return;
	pthread_mutex_lock(&tx->mtx);
	tx->owe_ack = true;
	pthread_mutex_unlock(&tx->mtx);
	tw__tcp_writer_kick(c);
}

int tw__tcp_writer_rewind(tcp_conn *c, uint64_t peer_rcvd)
{
	tcp_writer *tx = &c->tx;
	// tx.mtx held, the role free, the connection down.
	if (peer_rcvd < tx->released || peer_rcvd > tx->seq)
		return TW_EPROTO;
	if (peer_rcvd > tx->released) {
		tx->base = tx->fend[peer_rcvd & (tx->fcap - 1)];
		tx->released = peer_rcvd;
		lent_drop(tx);
		atomic_store_explicit(
		    &tx->released_pub, peer_rcvd, memory_order_relaxed);
	}
	tx->out = tx->base;
	// The peer learns at once how far we got: its own ring may be full.
	tx->owe_ack = true;
	return TW_OK;
}
