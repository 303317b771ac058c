// tcp://HOST:PORT: parties that are processes, on this host or others.
//
// Design notes.
//
// Listening.  A process listens once per address, whatever the number of
// links naming it (tcp_node.c); the handshake names the link and the rank,
// so the node hands each accepted connection to the right link's channel.
//
// Connecting.  Of each pair of parties the lower rank connects and the
// higher rank waits to be connected, so that two parties that start at the
// same moment never make two connections: there is no tie to break.  The
// lower rank retries until the connect timeout while the peer is not
// listening yet (tcp_sock.c).  This version keeps one connection per link
// and pair of parties; child links (spawn, sub) travel over their family's
// connections, as over every transport.
//
// Threads.  This version runs one receiver thread per connection with
// blocking reads, which gives flow control for free (the thread simply
// stops reading) and mirrors shm://.  The epoll poller
// (platform/posix/poller.h) is the intended home of this I/O once
// connections are shared among links; it is not used here yet.
//
// Receiving.  One thread per connection reads frames — the header and key
// into a small buffer, the payload straight into the buffer that the
// application will receive — and pushes them into the link's mailbox with
// the mailbox's flow control: while this peer's unreceived bytes exceed
// TW_OPT_RECV_BUFFER the thread stops reading, TCP's window fills, and the
// peer's sends wait.  Control messages are pushed without a limit.  EOF,
// a reset or a malformed frame closes the peer in the mailbox (receives
// return TW_EPEER once what was delivered is drained) and fails sends.
//
// Sending.  One writer at a time per connection.  A frame goes out with one
// writev of header, key and payload, from the caller's memory: tw_send
// returns when the bytes are in the kernel's socket buffer (TCP then
// delivers them unless the connection breaks, which the peer reports as
// TW_EPEER).  A send that runs into its deadline or is cancelled half way
// leaves the stream cut in the middle of a frame: the connection is then
// closed, since nothing after it could be framed.
//
// Waiting for delivery.  Every frame carries the sequence number of the
// last frame its sender has fully handled (pushed into the mailbox).
// tw_link_wait_pending sends a PING after its messages; the peer handles
// frames in order, so its PONG acknowledges everything before.

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/names.h"
#include "core/sync.h"
#include "transport/tcp/tcp.h"

// How often a blocked sender looks at its cancel flag and deadline.
#define TCP_SEND_SLICE_MS 10
// How long the receiver waits in one push held by flow control before it
// looks at its stop flag again.
#define TCP_PUSH_SLICE_NS 10000000
// How long close and abort may wait to tell the peer.
#define TCP_CTL_TIMEOUT_NS 1000000000

static int tcp_addr_check(const char *addr)
{
	char host[TW_TCP_ADDR_MAX + 1];
	uint16_t port;
	if (tw__tcp_addr_parse(addr, host, sizeof(host), &port) != TW_OK)
		return TW_EINVAL;
	return port != 0 ? TW_OK : TW_EINVAL;
}

// --- sending -------------------------------------------------------------------

static void wake_waiters(tcp_chan *mc)
{
	pthread_mutex_lock(&mc->mtx);
	pthread_cond_broadcast(&mc->cv);
	pthread_mutex_unlock(&mc->mtx);
}

// The peer is gone or broken: receives end once what was delivered is
// drained, sends fail.  Sends look at peer_gone first, so a peer seen
// closed by a receive can never be sent to afterwards.
static void peer_failed(tcp_chan *mc)
{
	__atomic_store_n(&mc->peer_gone, 1, __ATOMIC_SEQ_CST);
	tw_mailbox_close_from(mc->ep->mb, mc->peer_rank);
	wake_waiters(mc);
}

static int tx_check(tcp_chan *mc, const int *cancel)
{
	if (tw__tcp_flag(&mc->aborted)
	    || (cancel != NULL && tw__tcp_flag(cancel)))
		return TW_ECLOSED;
	if (tw__tcp_flag(&mc->peer_gone) || tw__tcp_flag(&mc->tx_broken))
		return TW_EPEER;
	return TW_OK;
}

// Writes the whole iovec, waiting in slices for room in the socket.
static int tx_writev(tcp_chan *mc, struct iovec *iov, int n, int64_t deadline,
    const int *cancel)
{
	struct msghdr msg = { .msg_iov = iov, .msg_iovlen = (size_t)n };
	for (;;) {
		while (msg.msg_iovlen > 0 && msg.msg_iov[0].iov_len == 0) {
			msg.msg_iov++;
			msg.msg_iovlen--;
		}
		if (msg.msg_iovlen == 0)
			return TW_OK;
		ssize_t w = sendmsg(mc->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w >= 0) {
			size_t left = (size_t)w;
			while (left > 0) {
				size_t k = msg.msg_iov[0].iov_len;
				if (left < k) {
					msg.msg_iov[0].iov_base
					    = (char *)msg.msg_iov[0].iov_base
					    + left;
					msg.msg_iov[0].iov_len -= left;
					left = 0;
				} else {
					left -= k;
					msg.msg_iov[0].iov_len = 0;
					msg.msg_iov++;
					msg.msg_iovlen--;
				}
			}
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return TW_EPEER;
		int status = tx_check(mc, cancel);
		if (status != TW_OK)
			return status;
		if (tw__now_ns() >= deadline)
			return TW_ETIMEDOUT;
		struct pollfd pfd = { .fd = mc->fd, .events = POLLOUT };
		(void)poll(&pfd, 1, TCP_SEND_SLICE_MS);
	}
}

// Sends one frame.  Called with tx_mtx held.
static int tx_frame_locked(tcp_chan *mc, uint8_t type, const char *key,
    const void *buf, size_t len, int64_t deadline, const int *cancel)
{
	unsigned char hdr[TW_TCP_HDR_LEN + TW_KEY_MAX];
	tw__tcp_hdr h = { .type = type,
		.len = len,
		.seq = mc->tx_seq + 1,
		.ack = __atomic_load_n(&mc->rx_done, __ATOMIC_ACQUIRE),
		.key = key,
		.key_len = key != NULL ? strlen(key) : 0 };
	size_t hn = tw__tcp_hdr_encode(hdr, sizeof(hdr), &h);
	if (hn == 0)
		return TW_EINVAL;
	struct iovec iov[2] = { { hdr, hn }, { (void *)buf, len } };
	// Counted before the first byte leaves: the peer may acknowledge the
	// frame before the write returns, and an ack of a frame not counted
	// yet would look like a lie.
	__atomic_store_n(&mc->tx_seq, h.seq, __ATOMIC_RELEASE);
	int status = tx_writev(mc, iov, 2, deadline, cancel);
	if (status == TW_OK)
		return TW_OK;
	// Cut short: whatever was written of the frame cannot be taken back,
	// so the stream is over.  A frame that never started would leave it
	// intact, but telling the two apart is not worth the complexity.
	__atomic_store_n(&mc->tx_broken, 1, __ATOMIC_SEQ_CST);
	shutdown(mc->fd, SHUT_RDWR);
	return status;
}

static int tx_lock(tcp_chan *mc, int64_t deadline, const int *cancel)
{
	// The lock is held only while a frame is written, which itself waits
	// in slices; a waiter here waits in slices too, and looks at its
	// cancel flag and its deadline in between.  The slice is timed on
	// the wall clock (what pthread_mutex_timedlock takes); a clock jump
	// only stretches or shortens one slice, and the deadline itself is
	// checked on the monotonic clock.
	for (;;) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += TCP_SEND_SLICE_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (pthread_mutex_timedlock(&mc->tx_mtx, &ts) == 0)
			return TW_OK;
		int status = tx_check(mc, cancel);
		if (status != TW_OK)
			return status;
		if (tw__now_ns() >= deadline)
			return TW_ETIMEDOUT;
	}
}

static int tx_frame(tcp_chan *mc, uint8_t type, const char *key,
    const void *buf, size_t len, int64_t deadline, const int *cancel)
{
	int status = tx_lock(mc, deadline, cancel);
	if (status != TW_OK)
		return status;
	status = tx_check(mc, cancel);
	if (status == TW_OK)
		status = tx_frame_locked(
		    mc, type, key, buf, len, deadline, cancel);
	pthread_mutex_unlock(&mc->tx_mtx);
	return status;
}

static int tcp_xsend(tw_channel *c, const char *key, const void *buf,
    size_t len, int flags, int64_t deadline, const int *cancel)
{
	tcp_chan *mc = c->impl;
	if (tw__tcp_flag(&mc->aborted))
		return TW_ECLOSED;
	if (!tw__tcp_flag(&mc->attached))
		return TW_EPEER;
	size_t klen = strlen(key);
	if (klen == 0 || klen >= TW_KEY_MAX || (buf == NULL && len > 0))
		return TW_EINVAL;
	if (tw__nsset_holds(&mc->peer_aborted, key))
		return TW_EPEER;
	int status
	    = tx_frame(mc, TW_TCP_F_DATA, key, buf, len, deadline, cancel);
	if (status == TW_EPEER
	    && (tw__tcp_flag(&mc->aborted)
	        || (cancel != NULL && tw__tcp_flag(cancel))))
		status = TW_ECLOSED;
	return status;
}

static int tcp_send(
    tw_channel *c, const char *key, const void *buf, size_t len)
{
	return tcp_xsend(c, key, buf, len, 0, TW_FOREVER, NULL);
}

// Tells the peer that namespace `ns` was closed or aborted here, after the
// data sent before, waiting a bounded time.
static void tx_ns(tcp_chan *mc, uint8_t type, const char *ns)
{
	if (!tw__tcp_flag(&mc->attached) || tw__tcp_flag(&mc->peer_gone))
		return;
	int status = tx_frame(
	    mc, type, ns, NULL, 0, tw__now_ns() + TCP_CTL_TIMEOUT_NS, NULL);
	if (status != TW_OK && status != TW_EPEER)
		LOGC(mc, TW_LOG_WARN, "cannot tell %s that %s %s: %s",
		    mc->peer_id, ns,
		    type == TW_TCP_F_ABORT_NS ? "aborted" : "closed",
		    tw_strerror(status));
}

// --- the receiver thread ----------------------------------------------------------

// Reads exactly n bytes.  TW_OK, or TW_EPEER at EOF, a reset or a stop.
static int rx_read(tcp_chan *mc, void *buf, size_t n)
{
	unsigned char *p = buf;
	while (n > 0) {
		ssize_t r = recv(mc->fd, p, n, 0);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		return TW_EPEER;
	}
	return TW_OK;
}

static int rx_proto(tcp_chan *mc, const char *why)
{
	LOGC(mc, TW_LOG_ERROR,
	    "malformed frame from %s (%s): %s (%s); dropping that peer",
	    mc->peer_id, mc->peer_addr, why, tw_err_name(TW_EPROTO));
	return TW_EPROTO;
}

// Pushes a message into the mailbox, in slices so that a stop is seen.
static int rx_push(tcp_chan *mc, const char *key, void *data, size_t len)
{
	uint64_t limit
	    = tw__key_is_ctl(key) ? UINT64_MAX : mc->ep->recv_buffer;
	for (;;) {
		int status = tw__mailbox_push_owned(mc->ep->mb, mc->peer_rank,
		    key, data, len, limit, tw__now_ns() + TCP_PUSH_SLICE_NS,
		    &mc->stop);
		if (status == TW_ETIMEDOUT && !tw__tcp_flag(&mc->stop))
			continue;
		if (status != TW_OK)
			free(data);
		if (status == TW_OK)
			return TW_OK;
		if (status == TW_ECLOSED && !tw__tcp_flag(&mc->stop))
			return TW_OK; // namespace aborted here: dropped
		if (status == TW_ENOMEM) {
			LOGC(mc, TW_LOG_ERROR,
			    "out of memory queueing a message from %s; "
			    "dropping that peer",
			    mc->peer_id);
			return TW_ENOMEM;
		}
		return TW_ECLOSED; // stopping, or the peer closed here
	}
}

static int rx_frame(tcp_chan *mc, tw__tcp_rx *st, unsigned char *hbuf)
{
	tw__tcp_hdr h;
	const char *why = NULL;
	int status = rx_read(mc, hbuf, TW_TCP_HDR_LEN);
	if (status != TW_OK)
		return status;
	int rv = tw__tcp_hdr_decode(
	    hbuf, TW_TCP_HDR_LEN, mc->ep->max_msg, &h, &why);
	if (rv == TW_EAGAIN) {
		// The key follows; its length was checked against its limit.
		size_t klen = (size_t)hbuf[2] << 8 | hbuf[3];
		status = rx_read(mc, hbuf + TW_TCP_HDR_LEN, klen);
		if (status != TW_OK)
			return status;
		rv = tw__tcp_hdr_decode(
		    hbuf, TW_TCP_HDR_LEN + klen, mc->ep->max_msg, &h, &why);
	}
	if (rv < 0)
		return rx_proto(mc, why);
	uint64_t sent = __atomic_load_n(&mc->tx_seq, __ATOMIC_ACQUIRE);
	if (tw__tcp_rx_step(st, &h, sent, &why) != TW_OK)
		return rx_proto(mc, why);
	__atomic_store_n(&mc->peer_ack, h.ack, __ATOMIC_RELEASE);
	char key[TW_KEY_MAX];
	if (h.key_len > 0) {
		memcpy(key, h.key, h.key_len);
		key[h.key_len] = '\0';
	}
	void *data = NULL;
	if (h.len > 0) {
		// Straight into the buffer the application will receive.
		if ((data = malloc((size_t)h.len)) == NULL) {
			LOGC(mc, TW_LOG_ERROR,
			    "out of memory for a message of %llu bytes from "
			    "%s; dropping that peer",
			    (unsigned long long)h.len, mc->peer_id);
			return TW_ENOMEM;
		}
		if ((status = rx_read(mc, data, (size_t)h.len)) != TW_OK) {
			free(data);
			return status;
		}
	}
	switch (h.type) {
	case TW_TCP_F_DATA:
		tw__nsset_forget_key(&mc->peer_aborted, key);
		status = rx_push(mc, key, data, (size_t)h.len);
		break;
	case TW_TCP_F_CLOSE_NS:
		tw__mailbox_close_ns(mc->ep->mb, mc->peer_rank, key);
		break;
	case TW_TCP_F_ABORT_NS:
		tw__nsset_add(&mc->peer_aborted, key);
		tw__mailbox_close_ns(mc->ep->mb, mc->peer_rank, key);
		break;
	case TW_TCP_F_PING:
		// Everything before it is handled: answer at once.
		__atomic_store_n(&mc->rx_done, h.seq, __ATOMIC_RELEASE);
		status = tx_frame(mc, TW_TCP_F_PONG, NULL, NULL, 0,
		    tw__now_ns() + TCP_CTL_TIMEOUT_NS, &mc->stop);
		if (status == TW_ETIMEDOUT)
			status = TW_OK; // the peer will notice otherwise
		break;
	case TW_TCP_F_BYE:
		free(data);
		return TW_EPEER;
	default:
		break; // OPEN, ACK, PONG: the header said it all
	}
	if (h.type != TW_TCP_F_DATA)
		free(data);
	__atomic_store_n(&mc->rx_done, h.seq, __ATOMIC_RELEASE);
	if (h.type == TW_TCP_F_PONG)
		wake_waiters(mc);
	return status;
}

static void *rx_main(void *arg)
{
	tcp_chan *mc = arg;
	tw__tcp_rx st;
	tw__tcp_rx_init(&st);
	unsigned char *hbuf = malloc(TW_TCP_HDR_LEN + TW_KEY_MAX);
	int status = hbuf != NULL ? TW_OK : TW_ENOMEM;
	while (status == TW_OK && !tw__tcp_flag(&mc->stop))
		status = rx_frame(mc, &st, hbuf);
	free(hbuf);
	if (status != TW_OK && !tw__tcp_flag(&mc->stop)) {
		// A broken peer gets its connection closed, so that it sees
		// this side gone too.
		if (status != TW_EPEER)
			shutdown(mc->fd, SHUT_RDWR);
		peer_failed(mc);
	}
	return NULL;
}

// Liveness of an idle connection: TCP keepalive probes every heartbeat
// period (whole seconds, at least one: the kernel's unit), three missed
// ones and the connection breaks, which the receiver reports as TW_EPEER.
// This finds a peer whose host died or whose network went away without
// an EOF (a half-open connection).  TCP_USER_TIMEOUT is not set: it would
// also break a connection whose receiver merely holds back data for flow
// control.
static void set_keepalive(tcp_chan *mc, int fd)
{
	int64_t ms = mc->ep->heartbeat_ms;
	if (ms <= 0)
		return;
	int secs = (int)((ms + 999) / 1000);
	int one = 1, cnt = 3;
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) != 0
	    || setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &secs, sizeof(secs))
	        != 0
	    || setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &secs, sizeof(secs))
	        != 0
	    || setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt))
	        != 0)
		LOGC(mc, TW_LOG_WARN,
		    "cannot turn on keepalive towards %s: %m", mc->peer_id);
}

int tw__tcp_chan_attach(tcp_chan *mc, int fd)
{
	pthread_mutex_lock(&mc->mtx);
	if (tw__tcp_flag(&mc->attached) || tw__tcp_flag(&mc->stop)) {
		pthread_mutex_unlock(&mc->mtx);
		return TW_EPEER;
	}
	mc->fd = fd;
	set_keepalive(mc, fd);
	__atomic_store_n(&mc->attached, 1, __ATOMIC_RELEASE);
	int rc = pthread_create(&mc->rx_thread, NULL, rx_main, mc);
	if (rc != 0) {
		__atomic_store_n(&mc->attached, 0, __ATOMIC_RELEASE);
		mc->fd = -1;
		pthread_mutex_unlock(&mc->mtx);
		errno = rc;
		LOGC(mc, TW_LOG_ERROR, "cannot start a receiver thread: %m");
		return TW_ESYS;
	}
	mc->rx_started = true;
	pthread_cond_broadcast(&mc->cv);
	pthread_mutex_unlock(&mc->mtx);
	return TW_OK;
}

// --- receiving and the other channel ops ------------------------------------------

static int tcp_wait_pending(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	if (tw__tcp_flag(&mc->aborted))
		return TW_ECLOSED;
	if (!tw__tcp_flag(&mc->attached))
		return TW_OK;
	uint64_t target = __atomic_load_n(&mc->tx_seq, __ATOMIC_ACQUIRE);
	if (__atomic_load_n(&mc->peer_ack, __ATOMIC_ACQUIRE) >= target)
		return TW_OK;
	int status = tx_frame(mc, TW_TCP_F_PING, NULL, NULL, 0,
	    tw__now_ns() + TCP_CTL_TIMEOUT_NS, NULL);
	pthread_mutex_lock(&mc->mtx);
	while (status == TW_OK
	    && __atomic_load_n(&mc->peer_ack, __ATOMIC_ACQUIRE) < target) {
		if ((status = tx_check(mc, NULL)) != TW_OK)
			break;
		pthread_cond_wait(&mc->cv, &mc->mtx);
	}
	pthread_mutex_unlock(&mc->mtx);
	if (status == TW_EPEER
	    && __atomic_load_n(&mc->peer_ack, __ATOMIC_ACQUIRE) >= target)
		status = TW_OK;
	return status;
}

static void tcp_abort(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	__atomic_store_n(&mc->aborted, 1, __ATOMIC_SEQ_CST);
	tw_mailbox_abort(mc->ep->mb);
	// The peer sees the connection end: TW_EPEER there.  First, if no
	// send is under way, a BYE tells it what we handled (it never
	// waits: abort must be immediate), so that its wait for delivery of
	// messages that did arrive ends well.
	pthread_mutex_lock(&mc->mtx);
	if (tw__tcp_flag(&mc->attached)) {
		if (pthread_mutex_trylock(&mc->tx_mtx) == 0) {
			if (!tw__tcp_flag(&mc->tx_broken))
				(void)tx_frame_locked(
				    mc, TW_TCP_F_BYE, NULL, NULL, 0, 0, NULL);
			pthread_mutex_unlock(&mc->tx_mtx);
		}
		shutdown(mc->fd, SHUT_RDWR);
	}
	pthread_cond_broadcast(&mc->cv);
	pthread_mutex_unlock(&mc->mtx);
}

static void tcp_abort_ns(tw_channel *c, const char *ns)
{
	tcp_chan *mc = c->impl;
	tw__mailbox_abort_ns(mc->ep->mb, ns);
	// The root link's abort ends the whole connection (ops.abort
	// follows); a child's travels as a frame.
	if (strcmp(ns, mc->ep->link_id) == 0)
		return;
	tx_ns(mc, TW_TCP_F_ABORT_NS, ns);
}

static void tcp_close_ns(tw_channel *c, const char *ns)
{
	tx_ns(c->impl, TW_TCP_F_CLOSE_NS, ns);
}

static void tcp_open_ns(tw_channel *c, const char *ns)
{
	tcp_chan *mc = c->impl;
	tw__mailbox_reopen_ns(mc->ep->mb, ns);
	tw__nsset_forget_ns(&mc->peer_aborted, ns);
}

// --- the handshake ------------------------------------------------------------------

static int tcp_test_send(tw_channel *c, int64_t timeout_ms)
{
	tcp_chan *mc = c->impl;
	int64_t deadline = tw__deadline_ms(timeout_ms);
	int status = TW_OK;
	if (tw__tcp_flag(&mc->attached)) {
		// connected already
	} else if (mc->ep->self_rank < mc->peer_rank) {
		char host[TW_TCP_ADDR_MAX + 1];
		uint16_t port;
		int fd = -1;
		if (tw__tcp_addr_parse(
		        mc->peer_addr, host, sizeof(host), &port)
		    != TW_OK)
			return TW_EINVAL;
		tw__tcp_hs_self me = { .link_id = mc->ep->link_id,
			.rank = mc->ep->self_rank,
			.instance = tw__tcp_node_instance(mc->ep->node),
			.addr = tw__tcp_node_name(mc->ep->node),
			.secret = mc->ep->secret,
			.secret_len = mc->ep->secret_len };
		tw__tcp_hs_peer peer;
		for (;;) {
			status = tw__tcp_dial(
			    host, port, deadline, &mc->aborted, &fd);
			if (status != TW_OK)
				return status;
			status = tw__tcp_handshake(
			    fd, &me, NULL, NULL, deadline, &peer);
			// Closed without an answer: the peer's process listens
			// (another link shares the address) but has not
			// created this link yet.  Try again until the timeout.
			if (status != TW_EPEER || tw__now_ns() >= deadline
			    || tw__tcp_flag(&mc->aborted))
				break;
			close(fd);
			struct timespec ts = { 0, 20000000 };
			nanosleep(&ts, NULL);
		}
		if (status == TW_OK && peer.rank != mc->peer_rank) {
			LOGC(mc, TW_LOG_ERROR,
			    "%s answered as rank %u, not %u", mc->peer_addr,
			    (unsigned)peer.rank, (unsigned)mc->peer_rank);
			status = TW_EPROTO;
		}
		if (status == TW_OK)
			status = tw__tcp_chan_attach(mc, fd);
		if (status != TW_OK) {
			close(fd);
			return status == TW_EPEER ? TW_EPROTO : status;
		}
	} else {
		// The peer connects to us: wait for the node to hand its
		// connection over.
		pthread_mutex_lock(&mc->mtx);
		while (!tw__tcp_flag(&mc->attached)
		    && !tw__tcp_flag(&mc->aborted)
		    && !tw__tcp_flag(&mc->auth_failed)) {
			if (tw__cond_wait_until(&mc->cv, &mc->mtx, deadline)
			    == ETIMEDOUT)
				break;
		}
		pthread_mutex_unlock(&mc->mtx);
		if (tw__tcp_flag(&mc->aborted))
			return TW_ECLOSED;
		if (!tw__tcp_flag(&mc->attached))
			return tw__tcp_flag(&mc->auth_failed) ? TW_EAUTH
			                                      : TW_ETIMEDOUT;
	}
	char key[TW_KEY_MAX];
	tw__key_ctl(key, mc->ep->link_id, "hello");
	return tcp_xsend(c, key, NULL, 0, 0, deadline, NULL);
}

static int tcp_test_recv(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	char key[TW_KEY_MAX];
	tw__key_ctl(key, mc->ep->link_id, "hello");
	tw_buf b = { 0 };
	int status = tw__mailbox_pop_until(
	    mc->ep->mb, mc->peer_rank, key, mc->connect_deadline, &b);
	tw_buf_free(&b);
	return status;
}

// --- life cycle -------------------------------------------------------------------

void tw__tcp_ep_ref(tcp_ep *ep)
{
	__atomic_add_fetch(&ep->refs, 1, __ATOMIC_ACQ_REL);
}

void tw__tcp_ep_unref(tcp_ep *ep)
{
	if (__atomic_sub_fetch(&ep->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	tw_mailbox_free(ep->mb);
	free(ep->link_id);
	if (ep->secret != NULL) {
		memset(ep->secret, 0, ep->secret_len);
		free(ep->secret);
	}
	free(ep->chans);
	pthread_mutex_destroy(&ep->mtx);
	free(ep);
}

static void chan_free(tcp_chan *mc)
{
	tw__nsset_fini(&mc->peer_aborted);
	pthread_mutex_destroy(&mc->tx_mtx);
	pthread_cond_destroy(&mc->cv);
	pthread_mutex_destroy(&mc->mtx);
	free(mc->peer_id);
	free(mc->peer_addr);
	free(mc);
}

static void tcp_destroy(tw_channel *c)
{
	tcp_chan *mc = c->impl;
	tcp_ep *ep = mc->ep;
	// No new connection may reach the link once it starts closing.
	tw__tcp_node_leave(ep);
	pthread_mutex_lock(&ep->mtx);
	ep->chans[mc->peer_rank] = NULL;
	pthread_mutex_unlock(&ep->mtx);
	pthread_mutex_lock(&mc->mtx);
	__atomic_store_n(&mc->stop, 1, __ATOMIC_SEQ_CST);
	bool attached = tw__tcp_flag(&mc->attached);
	bool started = mc->rx_started;
	pthread_mutex_unlock(&mc->mtx);
	// The receiver stops first, so that the BYE below carries the final
	// count of what it handled: a peer waiting in wait_pending then
	// learns that its last messages arrived before it learns that we
	// are gone (shm:// publishes its count the same way).
	if (attached)
		shutdown(mc->fd, SHUT_RD);
	tw__mailbox_kick(ep->mb); // a receiver held by flow control
	if (started)
		pthread_join(mc->rx_thread, NULL);
	if (attached) {
		if (!tw__tcp_flag(&mc->aborted)
		    && !tw__tcp_flag(&mc->peer_gone))
			(void)tx_frame(mc, TW_TCP_F_BYE, NULL, NULL, 0,
			    tw__now_ns() + TCP_CTL_TIMEOUT_NS, NULL);
		shutdown(mc->fd, SHUT_RDWR);
		close(mc->fd);
	}
	chan_free(mc);
	tw__tcp_ep_unref(ep);
}

static const tw_channel_ops tcp_ops = {
	.send = tcp_send,
	.send_async = NULL,
	.recv = tw__rxbox_recv,
	.test_send = tcp_test_send,
	.test_recv = tcp_test_recv,
	.wait_pending = tcp_wait_pending,
	.abort = tcp_abort,
	.destroy = tcp_destroy,
};

static const tw__chan_xops tcp_xops = {
	.size = sizeof(tw__chan_xops),
	.send = tcp_xsend,
	.recv = tw__rxbox_recv_until,
	.recv_into = tw__rxbox_recv_into,
	.probe = tw__rxbox_probe,
	.abort_ns = tcp_abort_ns,
	.close_ns = tcp_close_ns,
	.open_ns = tcp_open_ns,
	.unreceived_peak = tw__rxbox_peak,
};

static tcp_chan *chan_new(const tw__link_cfg *cfg, tcp_ep *ep, size_t peer)
{
	tcp_chan *mc = calloc(1, sizeof(*mc));
	if (mc == NULL)
		return NULL;
	pthread_mutex_init(&mc->mtx, NULL);
	tw__cond_init(&mc->cv);
	pthread_mutex_init(&mc->tx_mtx, NULL);
	tw__nsset_init(&mc->peer_aborted);
	mc->fd = -1;
	mc->peer_id = strdup(cfg->parties[peer].id);
	mc->peer_addr = strdup(cfg->parties[peer].addr);
	if (mc->peer_id == NULL || mc->peer_addr == NULL) {
		chan_free(mc);
		return NULL;
	}
	mc->ch.ops = &tcp_ops;
	mc->ch.impl = mc;
	mc->rx = (tw__rxbox) { ep->mb, (uint32_t)peer };
	mc->ep = ep;
	mc->peer_rank = (uint32_t)peer;
	mc->connect_deadline
	    = tw__deadline_ms(cfg->opts[TW_OPT_CONNECT_TIMEOUT_MS]);
	return mc;
}

static int tcp_open_link(const tw__link_cfg *cfg, tw_channel **chans)
{
	if (cfg->size < 2)
		return TW_OK; // a link of one party has nobody to talk to
	tcp_ep *ep = calloc(1, sizeof(*ep));
	if (ep == NULL)
		return TW_ENOMEM;
	pthread_mutex_init(&ep->mtx, NULL);
	ep->mb = tw_mailbox_new();
	ep->link_id = strdup(cfg->link_id);
	ep->chans = calloc(cfg->size, sizeof(*ep->chans));
	ep->self_rank = (uint32_t)cfg->self;
	ep->size = (uint32_t)cfg->size;
	ep->recv_buffer = (uint64_t)cfg->opts[TW_OPT_RECV_BUFFER];
	ep->max_msg = (uint64_t)cfg->opts[TW_OPT_MAX_MSG_SIZE];
	ep->heartbeat_ms = cfg->opts[TW_OPT_HEARTBEAT_MS];
	if (cfg->secret != NULL && cfg->secret_len > 0) {
		ep->secret = malloc(cfg->secret_len);
		if (ep->secret != NULL) {
			memcpy(ep->secret, cfg->secret, cfg->secret_len);
			ep->secret_len = cfg->secret_len;
		}
	}
	int status = TW_ENOMEM;
	if (ep->mb == NULL || ep->link_id == NULL || ep->chans == NULL
	    || (cfg->secret_len > 0 && ep->secret == NULL))
		goto err_free;
	for (size_t i = 0; i < cfg->size; i++) {
		if (i == cfg->self)
			continue;
		tcp_chan *mc = chan_new(cfg, ep, i);
		if (mc == NULL)
			goto err_free;
		ep->chans[i] = mc;
		ep->refs++;
	}
	// Joining the node makes the link reachable: last, once everything
	// a connection could need exists.
	status = tw__tcp_node_join(cfg->parties[cfg->self].addr, ep);
	if (status != TW_OK)
		goto err_free;
	for (size_t i = 0; i < cfg->size; i++)
		if (i != cfg->self)
			chans[i] = &ep->chans[i]->ch;
	return TW_OK;

err_free:
	for (size_t i = 0; ep->chans != NULL && i < cfg->size; i++)
		if (ep->chans[i] != NULL)
			chan_free(ep->chans[i]);
	if (ep->mb != NULL)
		tw_mailbox_free(ep->mb);
	free(ep->link_id);
	free(ep->secret);
	free(ep->chans);
	pthread_mutex_destroy(&ep->mtx);
	free(ep);
	return status;
}

const tw__transport tw__tcp_transport = {
	.scheme = "tcp",
	.addr_check = tcp_addr_check,
	.open = tcp_open_link,
	.xops = &tcp_xops,
};
