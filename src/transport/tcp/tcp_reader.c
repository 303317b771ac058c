// The reader half of a tcp:// connection.
//
// Design notes.  Whoever holds the reader role reads without blocking: a
// frame header and its key are decoded out of a 64 KiB buffer by the pure
// decoder (tcp_proto.c); the first TCP_CONN_HEAD bytes of the payload go
// to a small buffer of the connection, and the owner says where the rest
// goes, so that a payload is read straight into the memory the
// application will receive (once it is longer than what a copy out of the
// read buffer costs).  The reader never waits for anybody: what it hands
// up must not block (the owner's flow control sees to it).
//
// The first error is sticky: a reader that refused a frame leaves its
// payload unread, and nobody may take the next bytes for a header, so
// every later pump returns the same error until the connection is torn
// down.

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/sync.h"
#include "transport/tcp/tcp_conn_int.h"
#include "transport/tcp/tcp_sock.h"

#define RX_BUF 65536
// Payload bytes still missing from which the reader reads straight into
// their place instead of through its buffer.
#define RX_DIRECT_MIN 16384
// What the reader asks for after a large frame: enough for the next
// header and its head, little of the payload that would then be copied
// out of the buffer (large frames come in trains: the chunks of a long
// message).  After a small frame it asks for a whole buffer, so that many
// small frames come with one system call.
#define RX_AFTER_LARGE 1024

int tw__tcp_reader_init(tcp_reader *rx)
{
	memset(rx, 0, sizeof(*rx));
	pthread_mutex_init(&rx->mtx, NULL);
	if ((rx->in = malloc(RX_BUF)) == NULL)
		return TW_ENOMEM;
	tw__tcp_rx_init(&rx->st);
	atomic_store(&rx->hold, UINT64_MAX);
	atomic_store(&rx->last_rx, tw__now_ns());
	return TW_OK;
}

void tw__tcp_reader_fini(tcp_reader *rx)
{
	free(rx->in);
	pthread_mutex_destroy(&rx->mtx);
}

static int rx_proto(tcp_conn *c, const char *why)
{
	TW_ERROR("tcp", "malformed frame from %s: %s (%s); dropping it",
	    c->who, why, tw_err_name(TW_EPROTO));
	return TW_EPROTO;
}

// The heartbeat timer sees the count move (see tcp_conn.rx_seen).
static void got_bytes(tcp_conn *c, size_t n)
{
	atomic_fetch_add_explicit(&c->rx.bytes, n, memory_order_relaxed);
}

// Reads what the socket has into the read buffer.  TW_OK (some bytes),
// TW_EAGAIN (none now), TW_EPEER (EOF or an error).
static int fill(tcp_conn *c)
{
	tcp_reader *rx = &c->rx;
	if (rx->in_off == rx->in_len) {
		rx->in_off = rx->in_len = 0;
	} else if (rx->in_off > 0) {
		memmove(rx->in, rx->in + rx->in_off, rx->in_len - rx->in_off);
		rx->in_len -= rx->in_off;
		rx->in_off = 0;
	}
	size_t want = RX_BUF - rx->in_len;
	if (rx->after_large && want > RX_AFTER_LARGE)
		want = RX_AFTER_LARGE;
	size_t got = 0;
	int status = tw__tcp_conn_recv(c, rx->in + rx->in_len, want, &got);
	if (status == TW_OK) {
		rx->in_len += got;
		got_bytes(c, got);
	}
	return status;
}

// A header arrived: check it against the stream and get ready for its
// payload.
static int on_header(tcp_conn *c, const tw__tcp_hdr *h)
{
	tcp_reader *rx = &c->rx;
	const char *why = NULL;
	uint64_t sent
	    = atomic_load_explicit(&c->tx.seq_pub, memory_order_acquire);
	if (tw__tcp_rx_step(&rx->st, h, sent, &why) != TW_OK)
		return rx_proto(c, why);
	if (tw__tcp_writer_release(c, h->rcvd) != TW_OK)
		return rx_proto(c, "reception of a frame not written yet");
	// Sequentially consistent with the waiters' count, so that a waiter
	// either sees the new ack or is seen here.  An ack that did not move
	// (a one-way stream's) is no news to anybody: no store, which is a
	// full barrier per frame.  Only the reader stores it.
	if (atomic_load_explicit(&c->peer_ack, memory_order_relaxed)
	    != h->ack) {
		atomic_store(&c->peer_ack, h->ack);
		if (atomic_load(&c->ack_waiters) > 0) {
			pthread_mutex_lock(&c->ack_mtx);
			pthread_cond_broadcast(&c->ack_cv);
			pthread_mutex_unlock(&c->ack_mtx);
		}
	}
	rx->cur = *h;
	rx->after_large = h->len >= RX_DIRECT_MIN;
	if (h->key_len > 0)
		memcpy(rx->cur_key, h->key, h->key_len);
	rx->cur_key[h->key_len] = '\0';
	rx->cur.key = h->key_len > 0 ? rx->cur_key : NULL;
	rx->have = 0;
	rx->begun = false;
	rx->dst = NULL;
	rx->cookie = NULL;
	return TW_OK;
}

static void set_done(tcp_conn *c, uint64_t seq)
{
	atomic_store_explicit(&c->rx.done, seq, memory_order_release);
}

// The whole frame cur is in (its payload in head when short).
static int dispatch(tcp_conn *c)
{
	tcp_reader *rx = &c->rx;
	const tw__tcp_hdr *h = &rx->cur;
	int status = TW_OK;
	switch (h->type) {
	case TW_TCP_F_PING:
		set_done(c, h->seq);
		// Before the PONG is numbered: a hold that moves later sees
		// it, and sends the ack that the PONG could not carry.
		atomic_store(&rx->pinged, true);
		pthread_mutex_lock(&c->tx.mtx);
		c->tx.owe_pong = true;
		pthread_mutex_unlock(&c->tx.mtx);
		tw__tcp_writer_kick(c);
		return TW_OK;
	case TW_TCP_F_PONG:
	case TW_TCP_F_ACK:
		set_done(c, h->seq);
		return TW_OK; // the header said it all
	case TW_TCP_F_BYE:
		set_done(c, h->seq);
		return TW_ECLOSED; // a clean end: see tcp_conn_ops.failed
	default:
		break;
	}
	if (rx->begun) {
		rx->begun = false;
		status = c->ops->rx_end(c->owner, c, h, rx->cookie, true);
	} else {
		status = c->ops->rx_frame(c->owner, c, h, rx->head);
	}
	// The owner may have counted it as handled earlier (for a message it
	// delivered, before the application could see it); done only grows.
	if (atomic_load_explicit(&rx->done, memory_order_relaxed) < h->seq)
		set_done(c, h->seq);
	return status;
}

// Moves payload bytes of the current frame from the read buffer or the
// socket (unless `more` is false: then only from the buffer).  TW_OK
// (progress or the frame is whole), TW_EAGAIN, or an error.
static int payload(tcp_conn *c, bool more)
{
	tcp_reader *rx = &c->rx;
	uint64_t len = rx->cur.len;
	size_t head_len = len < TCP_CONN_HEAD ? (size_t)len : TCP_CONN_HEAD;
	unsigned char *dst;
	size_t want;
	if (rx->have < head_len) {
		dst = rx->head + rx->have;
		want = head_len - rx->have;
	} else {
		if (!rx->begun) {
			int status = c->ops->rx_begin(c->owner, c, &rx->cur,
			    rx->head, &rx->dst, &rx->cookie);
			if (status != TW_OK)
				return status;
			rx->begun = true;
		}
		want = (size_t)(len - rx->have);
		dst = rx->dst != NULL ? rx->dst + (rx->have - TCP_CONN_HEAD)
		                      : NULL;
	}
	size_t avail = rx->in_len - rx->in_off;
	if (avail > 0) {
		size_t k = avail < want ? avail : want;
		if (dst != NULL)
			memcpy(dst, rx->in + rx->in_off, k);
		rx->in_off += k;
		rx->have += k;
		return TW_OK;
	}
	if (!more)
		return TW_EAGAIN;
	if (dst == NULL || want < RX_DIRECT_MIN)
		return fill(c);
	size_t got = 0;
	int status = tw__tcp_conn_recv(c, dst, want, &got);
	if (status == TW_OK) {
		rx->have += got;
		got_bytes(c, got);
	}
	return status;
}

static int pump(tcp_conn *c, int64_t budget_ns, unsigned *frames)
{
	tcp_reader *rx = &c->rx;
	int64_t until = budget_ns > 0 ? tw__now_ns() + budget_ns : 0;
	uint64_t bytes
	    = atomic_load_explicit(&rx->bytes, memory_order_relaxed);
	bool more = true;
	for (;;) {
		if (atomic_load_explicit(&c->failed, memory_order_acquire)
		    || atomic_load_explicit(&c->down, memory_order_acquire))
			return TW_EPEER;
		// Past its time the pump still handles what it has read, but
		// reads no more: the socket stays readable, and the poller
		// comes back to it after the others had their turn.  The
		// clock is read once per system call that read something.
		uint64_t b
		    = atomic_load_explicit(&rx->bytes, memory_order_relaxed);
		if (until != 0 && more && b != bytes) {
			bytes = b;
			more = tw__now_ns() < until;
		}
		if (!rx->in_payload) {
			tw__tcp_hdr h;
			const char *why = NULL;
			int rv = tw__tcp_hdr_decode(rx->in + rx->in_off,
			    rx->in_len - rx->in_off, TW_TCP_FRAME_MAX, &h,
			    &why);
			if (rv == TW_EAGAIN) {
				// Bytes that TLS holds are read like those of
				// the read buffer: the socket will not say.
				if (!more && !tw__tcp_conn_rx_pending(c)) {
					atomic_store(&rx->io_more, true);
					return TW_OK;
				}
				// The I/O thread lets an application thread
				// that waits for the role read on, before it
				// reads more itself: what it read is handled,
				// and whatever is left is the socket's to tell
				// (see app_took in tcp_conn.c).  Not while a
				// thread sleeps on what reading brings: then
				// the I/O thread keeps the socket watched.
				if (budget_ns > 0
				    && atomic_load_explicit(
				           &rx->app_wait, memory_order_relaxed)
				        != 0
				    && atomic_load(&rx->sleepers) == 0
				    && !tw__tcp_conn_rx_pending(c)) {
					atomic_store(&rx->io_more, false);
					return TW_OK;
				}
				int status = fill(c);
				if (status == TW_EAGAIN) {
					atomic_store(&rx->io_more, false);
					return TW_OK;
				}
				if (status != TW_OK)
					return status;
				continue;
			}
			if (rv < 0)
				return rx_proto(c, why);
			int status = on_header(c, &h);
			if (status != TW_OK)
				return status;
			rx->in_off += (size_t)rv;
			rx->in_payload = true;
		}
		if (rx->have < rx->cur.len) {
			int status
			    = payload(c, more || tw__tcp_conn_rx_pending(c));
			if (status == TW_EAGAIN) {
				atomic_store(&rx->io_more, !more);
				return TW_OK;
			}
			if (status != TW_OK)
				return status;
			continue;
		}
		rx->in_payload = false;
		int status = dispatch(c);
		if (status != TW_OK)
			return status;
		(*frames)++;
		tw__tcp_writer_rx_progress(c);
		if (budget_ns == 0 && rx->in_off == rx->in_len
		    && !tw__tcp_conn_rx_pending(c))
			return TW_OK;
	}
}

int tw__tcp_reader_pump(tcp_conn *c, int64_t budget_ns, unsigned *frames)
{
	tcp_reader *rx = &c->rx;
	if (rx->err != TW_OK)
		return rx->err;
	int status = pump(c, budget_ns, frames);
	if (rx->memo.set && c->ops->rx_idle != NULL) {
		int st = c->ops->rx_idle(c->owner, c);
		if (status == TW_OK)
			status = st;
	}
	if (status != TW_OK)
		rx->err = status;
	return status;
}

void tw__tcp_reader_abandon(tcp_conn *c)
{
	tcp_reader *rx = &c->rx;
	if (rx->begun) {
		rx->begun = false;
		(void)c->ops->rx_end(c->owner, c, &rx->cur, rx->cookie, false);
	}
	if (rx->err == TW_OK)
		rx->err = TW_EPEER;
}

void tw__tcp_reader_resume(tcp_conn *c)
{
	tcp_reader *rx = &c->rx;
	// What was read of a frame not handled comes again, whole.
	rx->in_off = rx->in_len = 0;
	rx->in_payload = false;
	rx->after_large = false;
	rx->have = 0;
	rx->dst = NULL;
	rx->cookie = NULL;
	rx->err = TW_OK;
	tw__tcp_rx_resume(
	    &rx->st, atomic_load_explicit(&rx->done, memory_order_acquire));
	atomic_store(&rx->io_more, false);
	atomic_store(&rx->last_rx, tw__now_ns());
}
