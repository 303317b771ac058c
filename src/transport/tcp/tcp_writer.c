// The writer half of a tcp:// connection.
//
// Design notes.  A sender that finds the connection idle takes the writer
// role and writes its frame itself with one writev from its own memory:
// no thread hand-off on the way out.  Small frames that meet a busy
// connection or a full socket are copied into the queue, and whoever
// writes next (a sender, or the I/O thread once the socket drains) sends
// the whole queue with one writev, so frames batch by themselves under
// load.  Larger frames are never copied: their sender waits for its turn
// and writes from its buffer.  No frame is longer than TW_TCP_FRAME_MAX
// (plus a chunk's prefix), so no frame holds the connection for long.
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

// Payloads up to this size are copied into the queue when they cannot go
// out at once; larger ones are written from the sender's memory.
#define TX_COPY_MAX 16384
// Queued bytes beyond which senders of small frames wait (control frames
// never do: they are few and small).
#define TX_QUEUE_MAX (4u << 20)
// How often a waiting sender looks at its deadline and cancel flag.
#define TX_SLICE_MS 10
// A small frame that follows the last write within this time waits for
// the I/O thread's next writev (see send_small).
#define TX_BATCH_GAP_NS 3000
// The most iovec parts of one frame: header and key, then the payload.
#define TX_IOV_MAX 3

int tw__tcp_writer_init(tcp_writer *tx)
{
	memset(tx, 0, sizeof(*tx));
	pthread_mutex_init(&tx->mtx, NULL);
	tw__cond_init(&tx->cv);
	return TW_OK;
}

void tw__tcp_writer_fini(tcp_writer *tx)
{
	free(tx->q);
	free(tx->w);
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

// Writes as much of iov as the socket takes now.  Advances iov.  TW_OK
// (all written), TW_EAGAIN (the socket is full), TW_EPEER.
static int write_some(tcp_conn *c, struct iovec **iov, int *n)
{
	if (c->tls != NULL) {
		while (*n > 0 && (*iov)[0].iov_len == 0) {
			(*iov)++;
			(*n)--;
		}
		if (*n == 0)
			return TW_OK;
		size_t took = 0;
		int status = tw__tls_writev(c->tls, *iov, *n, &took);
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
		ssize_t w = sendmsg(c->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
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

// Appends bytes to the appenders' buffer.  tx.mtx held.
static int append(tcp_writer *tx, const struct iovec *v, int n)
{
	size_t need = 0;
	for (int i = 0; i < n; i++)
		need += v[i].iov_len;
	if (tx->q_len + need > tx->q_cap) {
		size_t cap = tx->q_cap < 4096 ? 4096 : tx->q_cap;
		while (cap < tx->q_len + need)
			cap *= 2;
		unsigned char *nq = realloc(tx->q, cap);
		if (nq == NULL)
			return TW_ENOMEM;
		tx->q = nq;
		tx->q_cap = cap;
	}
	for (int i = 0; i < n; i++) {
		if (v[i].iov_len > 0)
			memcpy(tx->q + tx->q_len, v[i].iov_base, v[i].iov_len);
		tx->q_len += v[i].iov_len;
	}
	tx->pending += need;
	return TW_OK;
}

// Numbers header h (its next sequence number, our current ack) and
// encodes it into hdr.  tx.mtx held.  Returns the header's length.  Any
// frame carries what an owed PONG or ACK would: the latest ack, and a sign
// of life.
static size_t number(tcp_conn *c, tw__tcp_hdr *h, unsigned char *hdr)
{
	tcp_writer *tx = &c->tx;
	h->seq = ++tx->seq;
	h->ack = tw__tcp_conn_ack_out(c);
	tx->owe_pong = tx->owe_ack = false;
	atomic_store_explicit(&tx->seq_pub, tx->seq, memory_order_release);
	return tw__tcp_hdr_encode(hdr, TW_TCP_HDR_LEN + TW_KEY_MAX, h);
}

// Appends the owed answer, if any.  tx.mtx held.
static void append_owed(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	if (!tx->owe_pong && !tx->owe_ack)
		return;
	unsigned char hdr[TW_TCP_HDR_LEN + TW_KEY_MAX];
	tw__tcp_hdr h
	    = { .type = tx->owe_pong ? TW_TCP_F_PONG : TW_TCP_F_ACK };
	struct iovec v = { hdr, number(c, &h, hdr) };
	if (append(tx, &v, 1) != TW_OK) {
		// Nothing was queued, but the number is taken: the stream
		// cannot go on without it.
		pthread_mutex_unlock(&tx->mtx);
		tw__tcp_conn_fail(c, TW_ENOMEM, "out of memory");
		pthread_mutex_lock(&tx->mtx);
	}
}

// The appended frames become the writer's batch (whose buffer, written,
// becomes the appenders').  tx.mtx held, the writer role too, and the
// batch before written out.
static void swap(tcp_writer *tx)
{
	unsigned char *t = tx->w;
	size_t tcap = tx->w_cap;
	tx->w = tx->q;
	tx->w_cap = tx->q_cap;
	tx->w_len = tx->q_len;
	tx->w_off = 0;
	tx->q = t;
	tx->q_cap = tcap;
	tx->q_len = 0;
}

// Writes queued frames without blocking; the caller holds the writer role
// and not tx.mtx.  TW_OK when everything queued is out, TW_EAGAIN,
// TW_EPEER.
static int flush_queue(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	for (;;) {
		if (tx->w_off == tx->w_len) {
			pthread_mutex_lock(&tx->mtx);
			append_owed(c);
			if (tx->q_len == 0) {
				pthread_mutex_unlock(&tx->mtx);
				return TW_OK;
			}
			swap(tx);
			pthread_mutex_unlock(&tx->mtx);
		}
		struct iovec one
		    = { tx->w + tx->w_off, tx->w_len - tx->w_off };
		struct iovec *iov = &one;
		int n = 1;
		int status = write_some(c, &iov, &n);
		size_t done
		    = (tx->w_len - tx->w_off) - (n > 0 ? one.iov_len : 0);
		tx->w_off += done;
		pthread_mutex_lock(&tx->mtx);
		tx->pending -= done;
		pthread_cond_broadcast(&tx->cv);
		pthread_mutex_unlock(&tx->mtx);
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

// Leaves the writer role.  tx.mtx held.  Queued bytes that nobody wrote
// become the I/O thread's to flush when the socket drains.
static void writer_done(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	tx->writing = false;
	if ((tx->pending > 0 || tx->owe_pong || tx->owe_ack)
	    && !tx->want_out) {
		tx->want_out = true;
		tw__tcp_conn_arm(c);
	}
	pthread_cond_broadcast(&tx->cv);
}

// Waits until the socket can take more bytes (one slice at most).
static int wait_writable(tcp_conn *c)
{
	if (failed(c))
		return TW_EPEER;
	struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
	int rc = poll(&pfd, 1, TX_SLICE_MS);
	if (rc > 0 && (pfd.revents & (POLLERR | POLLNVAL)) != 0)
		return TW_EPEER;
	return TW_OK;
}

// Takes the writer role and writes the queue without blocking; what the
// socket does not take is the I/O thread's to write.  Called with tx.mtx
// held and the role free; returns with tx.mtx released.
static void flush_as_writer(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	tx->writing = true;
	pthread_mutex_unlock(&tx->mtx);
	int status = flush_queue(c);
	pthread_mutex_lock(&tx->mtx);
	tx->last_flush = tw__now_ns();
	writer_done(c);
	pthread_mutex_unlock(&tx->mtx);
	if (status == TW_EPEER)
		tw__tcp_conn_fail(c, TW_EPEER, NULL);
}

// A small frame: into the queue, and out at once when nobody is writing.
static int send_small(tcp_conn *c, tw__tcp_hdr *h, const struct iovec *pay,
    int npay, int flags, int64_t deadline, const _Atomic int *cancel,
    uint64_t *seq)
{
	tcp_writer *tx = &c->tx;
	unsigned char hdr[TW_TCP_HDR_LEN + TW_KEY_MAX];
	int status = TW_OK;
	pthread_mutex_lock(&tx->mtx);
	while (!(flags & TCP_TX_NOWAIT) && tx->pending >= TX_QUEUE_MAX
	    && (status = tx_wait(c, deadline, cancel)) == TW_OK)
		;
	if (status == TW_OK && failed(c))
		status = TW_EPEER;
	if (status != TW_OK) {
		pthread_mutex_unlock(&tx->mtx);
		return status;
	}
	struct iovec iov[TX_IOV_MAX] = { { hdr, number(c, h, hdr) } };
	for (int i = 0; i < npay; i++)
		iov[1 + i] = pay[i];
	if ((status = append(tx, iov, 1 + npay)) != TW_OK) {
		// The number is taken: a gap would break the stream.
		pthread_mutex_unlock(&tx->mtx);
		tw__tcp_conn_fail(c, TW_ENOMEM, "out of memory");
		return status;
	}
	if (seq != NULL)
		*seq = h->seq;
	if (tx->writing) {
		// The writer at work takes it along.
		pthread_mutex_unlock(&tx->mtx);
		return TW_OK;
	}
	// A sender that comes back right after the last write is streaming:
	// its frames wait for the I/O thread, which sends all that gathered
	// meanwhile with one writev, instead of one system call each.  A
	// sender that was quiet for a while (a reply, a request) writes at
	// once.  Control frames always go at once.
	if (flags & TCP_TX_MORE) {
		// The caller's next frame (a large one) takes it along.
		pthread_mutex_unlock(&tx->mtx);
		return TW_OK;
	}
	int64_t now = tw__now_ns();
	if (!(flags & TCP_TX_NOWAIT)
	    && (tx->want_out || now - tx->last_flush < TX_BATCH_GAP_NS)) {
		if (!tx->want_out) {
			tx->want_out = true;
			tw__tcp_conn_arm(c);
		}
		pthread_mutex_unlock(&tx->mtx);
		return TW_OK;
	}
	flush_as_writer(c);
	return TW_OK; // queued frames are the connection's now
}

// A larger frame: written from the caller's memory once every frame
// queued before it is out; what is queued goes in the same writev, ahead
// of it.
static int send_large(tcp_conn *c, tw__tcp_hdr *h, const struct iovec *pay,
    int npay, int64_t deadline, const _Atomic int *cancel, uint64_t *seq)
{
	tcp_writer *tx = &c->tx;
	unsigned char hdr[TW_TCP_HDR_LEN + TW_KEY_MAX];
	int status = TW_OK;
	pthread_mutex_lock(&tx->mtx);
	for (;;) {
		if (failed(c)) {
			status = TW_EPEER;
			break;
		}
		if (!tx->writing) {
			if (tx->w_off == tx->w_len)
				break; // our turn
			// A batch that a writer left half written goes first,
			// and the frames queued behind it.
			tx->writing = true;
			pthread_mutex_unlock(&tx->mtx);
			status = flush_queue(c);
			if (status == TW_EAGAIN)
				status = wait_writable(c);
			pthread_mutex_lock(&tx->mtx);
			tx->writing = false;
			pthread_cond_broadcast(&tx->cv);
			if (status != TW_OK)
				break;
			continue;
		}
		if ((status = tx_wait(c, deadline, cancel)) != TW_OK)
			break;
	}
	if (status != TW_OK) {
		writer_done(c);
		pthread_mutex_unlock(&tx->mtx);
		if (status == TW_EPEER)
			tw__tcp_conn_fail(c, TW_EPEER, NULL);
		return status;
	}
	tx->writing = true;
	if (tx->q_len > 0) {
		// Every frame numbered before ours is in q: it becomes the
		// batch that our writev starts with.
		swap(tx);
	}
	size_t queued = tx->w_len - tx->w_off;
	struct iovec iov[1 + TX_IOV_MAX];
	int n = 0;
	if (queued > 0)
		iov[n++] = (struct iovec) { tx->w + tx->w_off, queued };
	iov[n++] = (struct iovec) { hdr, number(c, h, hdr) };
	pthread_mutex_unlock(&tx->mtx);
	if (seq != NULL)
		*seq = h->seq;
	for (int i = 0; i < npay; i++)
		iov[n++] = pay[i];
	struct iovec *v = iov;
	// Started, it is finished: the peer keeps reading (credit), so only
	// a broken connection stops it, and that fails it.
	while ((status = write_some(c, &v, &n)) == TW_EAGAIN)
		if ((status = wait_writable(c)) != TW_OK)
			break;
	// How much of the queued batch went out: all of it once the writev
	// moved past its part.
	size_t sent = queued == 0 ? 0
	    : v > iov             ? queued
	                          : queued - iov[0].iov_len;
	pthread_mutex_lock(&tx->mtx);
	tx->w_off += sent;
	tx->pending -= sent;
	writer_done(c);
	pthread_mutex_unlock(&tx->mtx);
	if (status != TW_OK) {
		tw__tcp_conn_fail(c, TW_EPEER, NULL);
		return TW_EPEER;
	}
	return TW_OK;
}

int tw__tcp_conn_send(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, const struct iovec *iov, int niov, int flags,
    int64_t deadline, const _Atomic int *cancel, uint64_t *seq)
{
	size_t len = 0;
	for (int i = 0; i < niov; i++)
		len += iov[i].iov_len;
	tw__tcp_hdr h = { .type = type,
		.slot = slot,
		.len = len,
		.key = key,
		.key_len = key != NULL ? strlen(key) : 0 };
	// The peer refuses longer frames (by dropping the connection).
	size_t max = type == TW_TCP_F_CHUNK
	    ? TW_TCP_FRAME_MAX + TW_TCP_CHUNK_PREFIX
	    : TW_TCP_FRAME_MAX;
	if (h.key_len >= TW_KEY_MAX || niov > TX_IOV_MAX - 1 || len > max)
		return TW_EINVAL;
	if (len <= TX_COPY_MAX || (flags & TCP_TX_NOWAIT))
		return send_small(
		    c, &h, iov, niov, flags, deadline, cancel, seq);
	return send_large(c, &h, iov, niov, deadline, cancel, seq);
}

void tw__tcp_writer_on_writable(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	pthread_mutex_lock(&tx->mtx);
	tx->want_out = false;
	if (tx->writing
	    || (tx->pending == 0 && !tx->owe_pong && !tx->owe_ack)) {
		pthread_mutex_unlock(&tx->mtx);
		return;
	}
	flush_as_writer(c);
}

void tw__tcp_writer_kick(tcp_conn *c)
{
	tcp_writer *tx = &c->tx;
	pthread_mutex_lock(&tx->mtx);
	if (tx->writing || failed(c)) {
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
	while ((tx->pending > 0 || tx->writing)
	    && (status = tx_wait(c, deadline, NULL)) == TW_OK)
		;
	pthread_mutex_unlock(&tx->mtx);
	return status;
}
