// Connections of the tcp:// transport: one per pair of processes, shared
// by every link between them.
//
// Design notes.
//
// Reading.  The node's I/O thread (platform/posix/poller.h, epoll) reads a
// connection whenever it is readable, without blocking: a frame header and
// its key are decoded out of a 64 KiB buffer by the pure decoder
// (tcp_proto.c), and a payload is read straight into the buffer that the
// application will receive (once it is longer than what a copy out of the
// read buffer would cost).  A complete frame goes to its channel by the
// sender's slot.  The reader never waits for anybody: pushes into a
// mailbox cannot block, because senders keep within the credit that the
// receiver grants per link (tcp.c), which is what lets many links share
// one stream without one slow receiver stalling the others.
//
// Writing.  A sender that finds the connection idle writes its frame
// itself with one writev from its own memory: no thread hand-off on the
// way out.  Small frames that meet a busy connection or a full socket are
// copied into the connection's queue, and whoever writes next (a sender,
// or the I/O thread when the socket drains) sends the whole queue with one
// writev: frames batch by themselves under load.  Large frames are never
// copied: their sender waits for its turn and writes from its buffer.
//
// Sequence numbers and acks.  Every frame carries the next number of its
// direction and the last number the sender has handled from the peer; the
// numbers are assigned in stream order under the writer lock.  Acks end
// tw_link_wait_pending (a PING asks the peer for one at once).
//
// Heartbeats.  With TW_OPT_HEARTBEAT_MS = H the I/O thread looks at the
// connection every H/4: silent for H/3, it sends a PING, which the peer
// answers whatever it is doing (its I/O thread always reads); silent for
// H, the peer is declared gone, which also finds a half-open connection
// (a host that died or a cable pulled: no FIN, no RST).

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/names.h"
#include "core/sync.h"
#include "transport/tcp/tcp.h"

#define RX_BUF 65536
// Payload bytes still missing from which the reader reads straight into
// the message instead of through its buffer.
#define RX_DIRECT_MIN 16384
// Payloads up to this size are copied into the queue when they cannot go
// out at once; larger ones are written from the sender's memory.
#define TX_COPY_MAX 16384
// Queued bytes beyond which senders of small frames wait (control frames
// never do: they are few and small).
#define TX_QUEUE_MAX (4u << 20)
// How often a sender that waits looks at its deadline and cancel flag.
#define TX_SLICE_MS 10
// A small frame that follows the last write within this time waits for
// the I/O thread's next writev (see send_small).
#define TX_BATCH_GAP_NS 3000
// TW_OPT_STRIPES' largest value: connections per pair of processes.
#define STRIPES_MAX 64
// The largest slot number a peer may use: slots are allocated densely, so
// this bounds the links between two processes.
#define SLOT_MAX 65536

struct tcp_conn {
	tcp_conn *next; // node's list, protected by the node's mtx
	tcp_node *node;
	int fd;
	bool dialer;
	char *dialed; // dialer: the address as the links name it
	uint64_t peer_instance;
	unsigned char my_nonce[TW_TCP_NONCE_LEN];
	unsigned char peer_nonce[TW_TCP_NONCE_LEN];
	char who[TW_TCP_ADDR_MAX + 32]; // for log lines
	unsigned refs; // atomic
	int failed; // atomic

	// Striping: a main connection holds its extra connections (stripes,
	// referenced), each of which points back to it.
	tcp_conn *main_conn; // NULL for a main connection
	unsigned stripe; // 0 for a main connection
	tcp_conn *stripes[STRIPES_MAX - 1]; // by mtx; published by nstripes
	unsigned nstripes; // atomic
	uint64_t next_id; // atomic: ids of striped messages sent
	tcp_sx *sx; // reassembly of striped messages (main only)

	tw__pfd *pfd; // the socket on the node's poller
	tw__pfd *tpfd; // the heartbeat timer
	int tfd;
	int64_t heartbeat_ns;
	int64_t last_rx; // atomic, tw__now_ns

	// Channels by slot, and the waiters for acks.
	pthread_mutex_t mtx;
	pthread_cond_t cv; // peer_ack grew, or failed
	tcp_chan **mine; // [nmine]: our slot -> channel
	size_t nmine;
	tcp_chan **theirs; // [ntheirs]: the peer's slot -> channel
	size_t ntheirs;
	unsigned ack_waiters; // atomic

	// Writing.
	pthread_mutex_t tx_mtx;
	pthread_cond_t tx_cv; // the writer role or queue room came free
	unsigned char *q; // appended frames [0, q_len), by tx_mtx
	size_t q_len, q_cap;
	unsigned char *w; // the writer's frames [w_off, w_len): the role's
	size_t w_off, w_len, w_cap;
	size_t pending; // bytes in q and w not yet written, by tx_mtx
	bool writing; // a thread holds the writer role
	bool want_out; // the I/O thread should flush when writable
	int64_t last_flush; // when the last flush of the queue ended
	uint64_t tx_seq; // atomic: the last number assigned

	// Reading: whoever holds rx_mtx, the reader role (the I/O thread, or
	// an application thread polling for its message).
	pthread_mutex_t rx_mtx;
	tw__tcp_rx rxst;
	unsigned char *in;
	size_t in_off, in_len;
	bool in_payload; // the current frame's payload is being read
	tw__tcp_hdr cur;
	char cur_key[TW_KEY_MAX];
	unsigned char cur_fixed[TW_TCP_OPEN_LEN]; // OPEN, CREDIT payloads
	void *pay; // DATA payload (NULL: discarding, or a fixed one)
	bool discard;
	tcp_chan *cur_chan; // the channel cur names by its slot (referenced)
	void *chunk_entry; // and its entry, once the prefix is in
	unsigned char *chunk_dst;
	size_t pay_have;
	uint64_t rx_done; // atomic: the last frame fully handled
	uint64_t rx_bytes; // atomic: bytes read so far
	uint64_t peer_ack; // atomic
};

// --- small accessors ---------------------------------------------------------------

void tw__tcp_conn_ref(tcp_conn *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_ACQ_REL);
}

void tw__tcp_conn_unref(tcp_conn *c)
{
	if (__atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	if (c->fd >= 0)
		close(c->fd);
	if (c->tfd >= 0)
		close(c->tfd);
	for (unsigned i = 0; i < c->nstripes; i++)
		tw__tcp_conn_unref(c->stripes[i]);
	if (c->cur_chan != NULL)
		tw__tcp_chan_unref(c->cur_chan);
	tw__tcp_sx_free(c->sx);
	free(c->pay);
	free(c->in);
	free(c->q);
	free(c->w);
	free(c->mine);
	free(c->theirs);
	free(c->dialed);
	pthread_cond_destroy(&c->tx_cv);
	pthread_mutex_destroy(&c->tx_mtx);
	pthread_mutex_destroy(&c->rx_mtx);
	pthread_cond_destroy(&c->cv);
	pthread_mutex_destroy(&c->mtx);
	free(c);
}

bool tw__tcp_conn_failed(const tcp_conn *c)
{
	return tw__tcp_flag(&c->failed);
}

bool tw__tcp_conn_is_dialer(const tcp_conn *c)
{
	return c->dialer;
}

const char *tw__tcp_conn_dialed(const tcp_conn *c)
{
	return c->dialed;
}

uint64_t tw__tcp_conn_peer_instance(const tcp_conn *c)
{
	return c->peer_instance;
}

const char *tw__tcp_conn_who(const tcp_conn *c)
{
	return c->who;
}

const unsigned char *tw__tcp_conn_my_nonce(const tcp_conn *c)
{
	return c->my_nonce;
}

const unsigned char *tw__tcp_conn_peer_nonce(const tcp_conn *c)
{
	return c->peer_nonce;
}

tcp_node *tw__tcp_conn_node(const tcp_conn *c)
{
	return c->node;
}

uint64_t tw__tcp_conn_peer_ack(const tcp_conn *c)
{
	return __atomic_load_n(&c->peer_ack, __ATOMIC_ACQUIRE);
}

// --- slots ------------------------------------------------------------------------

static bool grow(tcp_chan ***v, size_t *n, size_t want)
{
	if (want <= *n)
		return true;
	size_t m = *n < 8 ? 8 : *n;
	while (m < want)
		m *= 2;
	tcp_chan **nv = realloc(*v, m * sizeof(*nv));
	if (nv == NULL)
		return false;
	memset(nv + *n, 0, (m - *n) * sizeof(*nv));
	*v = nv;
	*n = m;
	return true;
}

int tw__tcp_conn_bind(tcp_conn *c, tcp_chan *mc)
{
	pthread_mutex_lock(&c->mtx);
	int status = TW_OK;
	size_t s = 0;
	while (s < c->nmine && c->mine[s] != NULL)
		s++;
	if (tw__tcp_conn_failed(c))
		status = TW_EPEER;
	else if (s >= SLOT_MAX || !grow(&c->mine, &c->nmine, s + 1))
		status = TW_ENOMEM;
	if (status == TW_OK) {
		c->mine[s] = mc;
		mc->my_slot = (uint32_t)s;
	}
	pthread_mutex_unlock(&c->mtx);
	return status;
}

int tw__tcp_conn_map_peer(tcp_conn *c, tcp_chan *mc, uint32_t peer_slot)
{
	pthread_mutex_lock(&c->mtx);
	int status = TW_OK;
	if (peer_slot >= SLOT_MAX)
		status = TW_EPROTO;
	else if (!grow(&c->theirs, &c->ntheirs, (size_t)peer_slot + 1))
		status = TW_ENOMEM;
	else if (c->theirs[peer_slot] != NULL)
		status = TW_EPROTO; // the peer reused a slot it did not free
	else
		c->theirs[peer_slot] = mc;
	pthread_mutex_unlock(&c->mtx);
	return status;
}

void tw__tcp_conn_unbind(tcp_conn *c, tcp_chan *mc)
{
	pthread_mutex_lock(&c->mtx);
	if (mc->my_slot < c->nmine && c->mine[mc->my_slot] == mc)
		c->mine[mc->my_slot] = NULL;
	for (size_t i = 0; i < c->ntheirs; i++)
		if (c->theirs[i] == mc)
			c->theirs[i] = NULL;
	pthread_mutex_unlock(&c->mtx);
}

void tw__tcp_conn_unmap_peer(tcp_conn *c, uint32_t peer_slot)
{
	pthread_mutex_lock(&c->mtx);
	if (peer_slot < c->ntheirs)
		c->theirs[peer_slot] = NULL;
	pthread_mutex_unlock(&c->mtx);
}

// The channel the peer's slot names, referenced, or NULL.
static tcp_chan *chan_by_peer_slot(tcp_conn *c, uint32_t slot)
{
	pthread_mutex_lock(&c->mtx);
	tcp_chan *mc = slot < c->ntheirs ? c->theirs[slot] : NULL;
	if (mc != NULL)
		tw__tcp_chan_ref(mc);
	pthread_mutex_unlock(&c->mtx);
	return mc;
}

// --- writing ------------------------------------------------------------------------

static void arm(tcp_conn *c)
{
	// Under tx_mtx, so that the I/O thread's re-arming and a sender's
	// request for a flush cannot overwrite each other.
	if (c->pfd != NULL && !tw__tcp_conn_failed(c))
		(void)tw__pfd_arm(
		    c->pfd, TW__POLL_IN | (c->want_out ? TW__POLL_OUT : 0));
}

// Writes as much of iov as the socket takes now.  Advances iov.  TW_OK
// (all written), TW_EAGAIN (the socket is full), TW_EPEER.
static int write_some(tcp_conn *c, struct iovec **iov, int *n)
{
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
		size_t left = (size_t)w;
		while (left > 0) {
			size_t k = (*iov)[0].iov_len;
			size_t d = left < k ? left : k;
			(*iov)[0].iov_base = (char *)(*iov)[0].iov_base + d;
			(*iov)[0].iov_len -= d;
			left -= d;
			if ((*iov)[0].iov_len == 0) {
				(*iov)++;
				(*n)--;
			}
		}
	}
}

// Writes queued frames without blocking; the caller holds the writer role
// and not tx_mtx.  The writer owns buffer w, appenders own q: the writer
// swaps them when w is done, so that nobody ever waits for anybody to
// append (the I/O thread appends its control frames and must never
// block).  TW_OK when everything queued is out, TW_EAGAIN, TW_EPEER.
static int flush_queue(tcp_conn *c)
{
	for (;;) {
		if (c->w_off == c->w_len) {
			pthread_mutex_lock(&c->tx_mtx);
			if (c->q_len == 0) {
				pthread_mutex_unlock(&c->tx_mtx);
				return TW_OK;
			}
			unsigned char *t = c->w;
			size_t tcap = c->w_cap;
			c->w = c->q;
			c->w_cap = c->q_cap;
			c->w_len = c->q_len;
			c->w_off = 0;
			c->q = t;
			c->q_cap = tcap;
			c->q_len = 0;
			pthread_mutex_unlock(&c->tx_mtx);
		}
		struct iovec one = { c->w + c->w_off, c->w_len - c->w_off };
		struct iovec *iov = &one;
		int n = 1;
		int status = write_some(c, &iov, &n);
		size_t done
		    = (c->w_len - c->w_off) - (n > 0 ? one.iov_len : 0);
		c->w_off += done;
		pthread_mutex_lock(&c->tx_mtx);
		c->pending -= done;
		pthread_cond_broadcast(&c->tx_cv);
		pthread_mutex_unlock(&c->tx_mtx);
		if (status != TW_OK)
			return status;
	}
}

// Appends bytes to the appenders' buffer.  tx_mtx held.
static int append(tcp_conn *c, const struct iovec *v, int n)
{
	size_t need = 0;
	for (int i = 0; i < n; i++)
		need += v[i].iov_len;
	if (c->q_len + need > c->q_cap) {
		size_t cap = c->q_cap < 4096 ? 4096 : c->q_cap;
		while (cap < c->q_len + need)
			cap *= 2;
		unsigned char *nq = realloc(c->q, cap);
		if (nq == NULL)
			return TW_ENOMEM;
		c->q = nq;
		c->q_cap = cap;
	}
	for (int i = 0; i < n; i++) {
		if (v[i].iov_len > 0)
			memcpy(c->q + c->q_len, v[i].iov_base, v[i].iov_len);
		c->q_len += v[i].iov_len;
	}
	c->pending += need;
	return TW_OK;
}

// Waits on tx_cv until `deadline` or a slice passes.  tx_mtx held.
// TW_OK, or why the sender must stop waiting.
static int tx_wait(tcp_conn *c, int64_t deadline, const int *cancel)
{
	if (tw__tcp_conn_failed(c))
		return TW_EPEER;
	if (cancel != NULL && tw__tcp_flag(cancel))
		return TW_ECLOSED;
	int64_t now = tw__now_ns();
	if (now >= deadline)
		return TW_ETIMEDOUT;
	int64_t until = now + TX_SLICE_MS * 1000000LL;
	(void)tw__cond_wait_until(
	    &c->tx_cv, &c->tx_mtx, until < deadline ? until : deadline);
	return TW_OK;
}

// Leaves the writer role.  tx_mtx held.  Queued bytes that nobody wrote
// become the I/O thread's to flush when the socket drains.
static void writer_done(tcp_conn *c)
{
	c->writing = false;
	if (c->pending > 0 && !c->want_out) {
		c->want_out = true;
		arm(c);
	}
	pthread_cond_broadcast(&c->tx_cv);
}

// Waits until fd can take more bytes (one slice at most).
static int wait_writable(tcp_conn *c)
{
	if (tw__tcp_conn_failed(c))
		return TW_EPEER;
	struct pollfd pfd = { .fd = c->fd, .events = POLLOUT };
	int rc = poll(&pfd, 1, TX_SLICE_MS);
	if (rc > 0 && (pfd.revents & (POLLERR | POLLHUP | POLLNVAL)) != 0)
		return TW_EPEER;
	return TW_OK;
}

// Takes the writer role and writes the queue without blocking; what the
// socket does not take is the I/O thread's to write.  Called with tx_mtx
// held and the role free; returns with tx_mtx released.
static void flush_as_writer(tcp_conn *c)
{
	c->writing = true;
	pthread_mutex_unlock(&c->tx_mtx);
	int status = flush_queue(c);
	pthread_mutex_lock(&c->tx_mtx);
	c->last_flush = tw__now_ns();
	writer_done(c);
	pthread_mutex_unlock(&c->tx_mtx);
	if (status == TW_EPEER)
		tw__tcp_conn_fail(c, NULL);
}

// The ack our frames carry: the last frame handled, but never an
// announcement of a striped message that is not complete, nor anything
// after it (tcp_stripe.c).  rx_done is read first: an announcement sets
// the hold before it counts as handled.
static uint64_t ack_out(const tcp_conn *c)
{
	uint64_t done = __atomic_load_n(&c->rx_done, __ATOMIC_ACQUIRE);
	if (c->sx != NULL) {
		uint64_t hold = tw__tcp_sx_hold(c->sx);
		if (hold != UINT64_MAX && hold - 1 < done)
			done = hold - 1;
	}
	return done;
}

// A small frame: into the queue, and out at once when nobody is writing.
static int send_small(tcp_conn *c, tw__tcp_hdr *h, const struct iovec *pay,
    int npay, int flags, int64_t deadline, const int *cancel, uint64_t *seq)
{
	unsigned char hdr[TW_TCP_HDR_LEN + TW_KEY_MAX];
	int status = TW_OK;
	pthread_mutex_lock(&c->tx_mtx);
	while (!(flags & TX_NOWAIT) && c->pending >= TX_QUEUE_MAX
	    && (status = tx_wait(c, deadline, cancel)) == TW_OK)
		;
	if (status == TW_OK && tw__tcp_conn_failed(c))
		status = TW_EPEER;
	if (status != TW_OK) {
		pthread_mutex_unlock(&c->tx_mtx);
		return status;
	}
	h->seq = c->tx_seq + 1;
	h->ack = ack_out(c);
	size_t hn = tw__tcp_hdr_encode(hdr, sizeof(hdr), h);
	struct iovec iov[3] = { { hdr, hn } };
	for (int i = 0; i < npay; i++)
		iov[1 + i] = pay[i];
	if ((status = append(c, iov, 1 + npay)) != TW_OK) {
		pthread_mutex_unlock(&c->tx_mtx);
		return status;
	}
	// Counted before the first byte leaves: the peer may acknowledge the
	// frame before the write returns, and an ack of a frame not counted
	// yet would look like a lie.
	__atomic_store_n(&c->tx_seq, h->seq, __ATOMIC_RELEASE);
	if (seq != NULL)
		*seq = h->seq;
	if (c->writing) {
		// The writer at work takes it along.
		pthread_mutex_unlock(&c->tx_mtx);
		return TW_OK;
	}
	// A sender that comes back right after the last write is streaming:
	// its frames wait for the I/O thread, which sends all that gathered
	// meanwhile with one writev, instead of one system call each.  A
	// sender that was quiet for a while (a reply, a request) writes at
	// once.  Control frames always go at once.
	int64_t now = tw__now_ns();
	if (!(flags & TX_NOWAIT)
	    && (c->want_out || now - c->last_flush < TX_BATCH_GAP_NS)) {
		if (!c->want_out) {
			c->want_out = true;
			arm(c);
		}
		pthread_mutex_unlock(&c->tx_mtx);
		return TW_OK;
	}
	flush_as_writer(c);
	return TW_OK; // queued frames are the connection's now
}

// A large frame: written from the caller's memory once every frame queued
// before it is out.
static int send_large(tcp_conn *c, tw__tcp_hdr *h, const struct iovec *pay,
    int npay, int64_t deadline, const int *cancel, uint64_t *seq)
{
	unsigned char hdr[TW_TCP_HDR_LEN + TW_KEY_MAX];
	int status = TW_OK;
	pthread_mutex_lock(&c->tx_mtx);
	for (;;) {
		if (tw__tcp_conn_failed(c)) {
			status = TW_EPEER;
			break;
		}
		if (!c->writing) {
			if (c->pending == 0)
				break; // our turn, and nothing ahead of us
			// Drain what is queued ahead of us ourselves.
			c->writing = true;
			pthread_mutex_unlock(&c->tx_mtx);
			status = flush_queue(c);
			if (status == TW_EAGAIN)
				status = wait_writable(c);
			pthread_mutex_lock(&c->tx_mtx);
			c->writing = false;
			pthread_cond_broadcast(&c->tx_cv);
			if (status != TW_OK)
				break;
			continue;
		}
		if ((status = tx_wait(c, deadline, cancel)) != TW_OK)
			break;
		if (cancel != NULL && tw__tcp_flag(cancel)) {
			status = TW_ECLOSED;
			break;
		}
		if (tw__now_ns() >= deadline) {
			status = TW_ETIMEDOUT;
			break;
		}
	}
	if (status != TW_OK) {
		if (c->pending > 0 && !c->writing && !c->want_out) {
			c->want_out = true;
			arm(c);
		}
		pthread_mutex_unlock(&c->tx_mtx);
		if (status == TW_EPEER)
			tw__tcp_conn_fail(c, NULL);
		return status;
	}
	c->writing = true;
	h->seq = c->tx_seq + 1;
	h->ack = ack_out(c);
	__atomic_store_n(&c->tx_seq, h->seq, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&c->tx_mtx);
	if (seq != NULL)
		*seq = h->seq;
	size_t hn = tw__tcp_hdr_encode(hdr, sizeof(hdr), h);
	struct iovec iov[3] = { { hdr, hn } };
	for (int i = 0; i < npay; i++)
		iov[1 + i] = pay[i];
	struct iovec *v = iov;
	int n = 1 + npay;
	// Started, it is finished: the receiver keeps reading (credit), so
	// only a dead connection stops it, and that fails it.
	while ((status = write_some(c, &v, &n)) == TW_EAGAIN)
		if ((status = wait_writable(c)) != TW_OK)
			break;
	pthread_mutex_lock(&c->tx_mtx);
	writer_done(c);
	pthread_mutex_unlock(&c->tx_mtx);
	if (status != TW_OK) {
		tw__tcp_conn_fail(c, NULL);
		return TW_EPEER;
	}
	return TW_OK;
}

int tw__tcp_conn_send(tcp_conn *c, uint8_t type, uint32_t slot,
    const char *key, const void *payload, size_t len, int flags,
    int64_t deadline, const int *cancel, uint64_t *seq)
{
	tw__tcp_hdr h = { .type = type,
		.slot = slot,
		.len = len,
		.key = key,
		.key_len = key != NULL ? strlen(key) : 0 };
	if (h.key_len >= TW_KEY_MAX)
		return TW_EINVAL;
	struct iovec pay = { (void *)payload, len };
	if (len <= TX_COPY_MAX || (flags & TX_NOWAIT))
		return send_small(
		    c, &h, &pay, 1, flags, deadline, cancel, seq);
	return send_large(c, &h, &pay, 1, deadline, cancel, seq);
}

int tw__tcp_conn_send_chunk(tcp_conn *c, uint32_t slot,
    const tw__tcp_chunk *ck, const void *bytes, size_t n)
{
	unsigned char prefix[TW_TCP_CHUNK_PREFIX];
	tw__tcp_chunk_encode(prefix, ck);
	struct iovec pay[2]
	    = { { prefix, sizeof(prefix) }, { (void *)bytes, n } };
	tw__tcp_hdr h = {
		.type = TW_TCP_F_CHUNK, .slot = slot, .len = sizeof(prefix) + n
	};
	// Once the announcement is out the chunks must follow: no deadline.
	if (n <= TX_COPY_MAX)
		return send_small(c, &h, pay, 2, 0, TW_FOREVER, NULL, NULL);
	return send_large(c, &h, pay, 2, TW_FOREVER, NULL, NULL);
}

uint64_t tw__tcp_conn_next_id(tcp_conn *c)
{
	return __atomic_add_fetch(&c->next_id, 1, __ATOMIC_RELAXED);
}

tcp_sx *tw__tcp_conn_sx(const tcp_conn *c)
{
	return c->sx;
}

unsigned tw__tcp_conn_stripe(const tcp_conn *c)
{
	return c->stripe;
}

int tw__tcp_conn_add_stripe(tcp_conn *c, tcp_conn *s)
{
	pthread_mutex_lock(&c->mtx);
	unsigned n = __atomic_load_n(&c->nstripes, __ATOMIC_RELAXED);
	int status = TW_OK;
	if (tw__tcp_conn_failed(c) || n >= STRIPES_MAX - 1)
		status = TW_EPROTO;
	else {
		tw__tcp_conn_ref(s);
		c->stripes[n] = s;
		__atomic_store_n(&c->nstripes, n + 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&c->mtx);
	return status;
}

tcp_conn *tw__tcp_conn_pick(tcp_conn *c, uint64_t i)
{
	unsigned n = __atomic_load_n(&c->nstripes, __ATOMIC_ACQUIRE);
	unsigned k = (unsigned)(i % (n + 1));
	return k == 0 ? c : c->stripes[k - 1];
}

// The I/O thread's part of writing: the socket drained.
static void on_writable(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx_mtx);
	c->want_out = false;
	if (c->writing || c->pending == 0) {
		pthread_mutex_unlock(&c->tx_mtx);
		return;
	}
	flush_as_writer(c);
}

int tw__tcp_conn_wait_ack(
    tcp_conn *c, uint64_t seq, int64_t deadline, const int *cancel)
{
	if (tw__tcp_conn_peer_ack(c) >= seq)
		return TW_OK;
	int status = tw__tcp_conn_send(
	    c, TW_TCP_F_PING, 0, NULL, NULL, 0, TX_NOWAIT, 0, NULL, NULL);
	pthread_mutex_lock(&c->mtx);
	__atomic_add_fetch(&c->ack_waiters, 1, __ATOMIC_SEQ_CST);
	while (status == TW_OK && tw__tcp_conn_peer_ack(c) < seq) {
		if (tw__tcp_conn_failed(c))
			status = TW_EPEER;
		else if (cancel != NULL && tw__tcp_flag(cancel))
			status = TW_ECLOSED;
		else if (tw__now_ns() >= deadline)
			status = TW_ETIMEDOUT;
		else {
			int64_t until = tw__now_ns() + TX_SLICE_MS * 1000000LL;
			(void)tw__cond_wait_until(&c->cv, &c->mtx,
			    until < deadline ? until : deadline);
		}
	}
	__atomic_sub_fetch(&c->ack_waiters, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&c->mtx);
	if (status == TW_EPEER && tw__tcp_conn_peer_ack(c) >= seq)
		status = TW_OK;
	return status;
}

// --- failing -------------------------------------------------------------------------

// `broken`: the connection failed (rather than merely ended), which a
// stripe passes on to its main connection.
static void conn_fail(tcp_conn *c, const char *why, bool broken)
{
	if (__atomic_exchange_n(&c->failed, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	if (why != NULL)
		TW_WARN(
		    "tcp", "closing the connection with %s: %s", c->who, why);
	tw__tcp_conn_ref(c);
	tw__tcp_node_forget(c);
	shutdown(c->fd, SHUT_RDWR);
	// A main connection and its stripes stand and fall together: a
	// striped message needs all of them.
	if (c->sx != NULL)
		tw__tcp_sx_fail(c->sx);
	unsigned ns = __atomic_load_n(&c->nstripes, __ATOMIC_ACQUIRE);
	for (unsigned i = 0; i < ns; i++)
		tw__tcp_conn_fail(c->stripes[i], NULL);
	// A stripe that merely ended (EOF, a reset: the peer closing, which
	// its main connection will show in order after the frames before it)
	// leaves the main connection alone; a broken one takes it along.  A
	// sender that cannot write a chunk fails the main connection itself.
	if (c->main_conn != NULL && broken)
		conn_fail(c->main_conn, why, true);
	// No callback runs once these return (or, from our own callback,
	// none runs after it).
	tw__pfd_fini(c->pfd);
	if (c->tpfd != NULL)
		tw__pfd_fini(c->tpfd);
	pthread_mutex_lock(&c->tx_mtx);
	pthread_cond_broadcast(&c->tx_cv);
	pthread_mutex_unlock(&c->tx_mtx);
	// Every bound channel learns that its peer is gone.
	pthread_mutex_lock(&c->mtx);
	size_t n = c->nmine;
	tcp_chan **v = n > 0 ? calloc(n, sizeof(*v)) : NULL;
	for (size_t i = 0; v != NULL && i < n; i++)
		if ((v[i] = c->mine[i]) != NULL)
			tw__tcp_chan_ref(v[i]);
	pthread_cond_broadcast(&c->cv);
	pthread_mutex_unlock(&c->mtx);
	for (size_t i = 0; v != NULL && i < n; i++) {
		if (v[i] != NULL) {
			tw__tcp_chan_conn_failed(v[i]);
			tw__tcp_chan_unref(v[i]);
		}
	}
	free(v);
	tw__tcp_conn_unref(c); // the node's
	tw__tcp_conn_unref(c); // ours, above
}

void tw__tcp_conn_fail(tcp_conn *c, const char *why)
{
	conn_fail(c, why, why != NULL);
}

// --- reading ---------------------------------------------------------------------------

static int rx_proto(tcp_conn *c, const char *why)
{
	TW_ERROR("tcp", "malformed frame from %s: %s (%s); dropping it",
	    c->who, why, tw_err_name(TW_EPROTO));
	return TW_EPROTO;
}

// Handles the complete frame c->cur (payload in c->pay or cur_fixed).
static int rx_dispatch(tcp_conn *c)
{
	tw__tcp_hdr *h = &c->cur;
	const char *key = h->key_len > 0 ? c->cur_key : NULL;
	void *data = c->pay;
	c->pay = NULL;
	int status = TW_OK;
	if (c->stripe > 0 && h->type != TW_TCP_F_CHUNK
	    && h->type != TW_TCP_F_BYE && h->type != TW_TCP_F_PING
	    && h->type != TW_TCP_F_PONG && h->type != TW_TCP_F_ACK) {
		free(data);
		return rx_proto(
		    c, "a frame that only a main connection carries");
	}
	// Handled as of now: a message pushed below may be popped, and the
	// popping thread's next frame (an UNBIND, say) must acknowledge it.
	// A push can fail only when the connection fails with it (a peer
	// that overran its credit, or no memory), and then no ack matters.
	// An announcement counts once it holds the acks back (below).
	if (h->type != TW_TCP_F_STRIPED)
		__atomic_store_n(&c->rx_done, h->seq, __ATOMIC_RELEASE);
	// The frame's channel, found once when its header came.
	tcp_chan *mc = c->cur_chan;
	c->cur_chan = NULL;
	switch (h->type) {
	case TW_TCP_F_CHUNK: {
		void *entry = c->chunk_entry;
		c->chunk_entry = NULL;
		c->chunk_dst = NULL;
		tcp_conn *m = c->main_conn != NULL ? c->main_conn : c;
		if (mc != NULL && entry != NULL)
			status = tw__tcp_sx_chunk_end(m->sx, mc, entry);
		break;
	}
	case TW_TCP_F_OPEN: {
		tw__tcp_open o;
		if (tw__tcp_open_decode(c->cur_fixed, TW_TCP_OPEN_LEN, &o)
		    != TW_OK) {
			status = rx_proto(c, "malformed OPEN");
			break;
		}
		tcp_chan *to = NULL;
		status = tw__tcp_node_open_lookup(c, h, &o, &to);
		if (status == TW_OK && to != NULL) {
			status = tw__tcp_chan_on_open(c, to, h, &o);
			tw__tcp_chan_unref(to);
		}
		break;
	}
	case TW_TCP_F_DATA:
	case TW_TCP_F_STRIPED:
	case TW_TCP_F_CLOSE_NS:
	case TW_TCP_F_ABORT_NS:
	case TW_TCP_F_UNBIND:
	case TW_TCP_F_CREDIT:
	case TW_TCP_F_CREDIT_REQ: {
		if (mc == NULL) {
			// The link went away here while the peer was still
			// sending: dropped (its sender learns from our UNBIND).
			free(data);
			break;
		}
		bool fixed = h->type == TW_TCP_F_CREDIT
		    || h->type == TW_TCP_F_STRIPED;
		status = tw__tcp_chan_on_frame(
		    mc, h, key, fixed ? (void *)c->cur_fixed : data);
		if (fixed)
			free(data);
		break;
	}
	case TW_TCP_F_PING:
		// Everything before it is handled: answer at once.
		status = tw__tcp_conn_send(c, TW_TCP_F_PONG, 0, NULL, NULL, 0,
		    TX_NOWAIT, 0, NULL, NULL);
		if (status == TW_EPEER)
			status = TW_OK; // failing already
		break;
	case TW_TCP_F_BYE:
		free(data);
		status = TW_EPEER;
		break;
	default:
		free(data);
		break; // ACK, PONG: the header said it all
	}
	if (mc != NULL)
		tw__tcp_chan_unref(mc);
	if (h->type == TW_TCP_F_STRIPED)
		__atomic_store_n(&c->rx_done, h->seq, __ATOMIC_RELEASE);
	return status;
}

// Whether frames of this type concern the link of their slot.
static bool frame_names_slot(uint8_t type)
{
	switch (type) {
	case TW_TCP_F_DATA:
	case TW_TCP_F_STRIPED:
	case TW_TCP_F_CHUNK:
	case TW_TCP_F_CLOSE_NS:
	case TW_TCP_F_ABORT_NS:
	case TW_TCP_F_UNBIND:
	case TW_TCP_F_CREDIT:
	case TW_TCP_F_CREDIT_REQ:
		return true;
	default:
		return false;
	}
}

// A frame header arrived: check it and get ready for its payload.
static int rx_header(tcp_conn *c, const tw__tcp_hdr *h)
{
	const char *why = NULL;
	uint64_t sent = __atomic_load_n(&c->tx_seq, __ATOMIC_ACQUIRE);
	if (tw__tcp_rx_step(&c->rxst, h, sent, &why) != TW_OK)
		return rx_proto(c, why);
	// Sequentially consistent with the waiters' count, so that a waiter
	// either sees the new ack or is seen here.
	__atomic_store_n(&c->peer_ack, h->ack, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&c->ack_waiters, __ATOMIC_SEQ_CST) > 0) {
		pthread_mutex_lock(&c->mtx);
		pthread_cond_broadcast(&c->cv);
		pthread_mutex_unlock(&c->mtx);
	}
	c->cur = *h;
	if (h->key_len > 0)
		memcpy(c->cur_key, h->key, h->key_len);
	c->cur_key[h->key_len] = '\0';
	c->cur.key = c->cur_key;
	c->pay = NULL;
	c->discard = false;
	c->pay_have = 0;
	// The channel a frame of a link goes to, found once for the frame
	// (on a stripe, through its main connection's slots).
	if (frame_names_slot(h->type)) {
		tcp_conn *m = c->main_conn != NULL ? c->main_conn : c;
		c->cur_chan = chan_by_peer_slot(m, h->slot);
	}
	if (h->type == TW_TCP_F_CHUNK) {
		// Its place in the message once the prefix is in.
		c->discard = c->cur_chan == NULL;
		if (c->cur_chan != NULL
		    && h->len - TW_TCP_CHUNK_PREFIX > c->cur_chan->ep->max_msg)
			return rx_proto(
			    c, "chunk larger than the link allows");
		return TW_OK;
	}
	if (h->type != TW_TCP_F_DATA || h->len == 0)
		return TW_OK; // fixed payloads go to cur_fixed
	// The limit of the link it is for, before anything is allocated.
	if (c->cur_chan == NULL) {
		c->discard = true;
		return TW_OK;
	}
	if (h->len > c->cur_chan->ep->max_msg)
		return rx_proto(c, "message larger than the link allows");
	if ((c->pay = malloc((size_t)h->len)) == NULL) {
		TW_ERROR("tcp",
		    "out of memory for a message of %" PRIu64
		    " bytes from %s; dropping the connection",
		    h->len, c->who);
		return TW_ENOMEM;
	}
	return TW_OK;
}

// Reads what the socket has into the read buffer.  TW_OK (some bytes),
// TW_EAGAIN (none now), TW_EPEER (EOF or an error).
static int rx_fill(tcp_conn *c)
{
	if (c->in_off == c->in_len) {
		c->in_off = c->in_len = 0;
	} else if (c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	for (;;) {
		ssize_t r = recv(c->fd, c->in + c->in_len, RX_BUF - c->in_len,
		    MSG_DONTWAIT);
		if (r > 0) {
			c->in_len += (size_t)r;
			__atomic_add_fetch(
			    &c->rx_bytes, (uint64_t)r, __ATOMIC_RELAXED);
			__atomic_store_n(
			    &c->last_rx, tw__now_ns(), __ATOMIC_RELAXED);
			return TW_OK;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return TW_EAGAIN;
		return TW_EPEER;
	}
}

// Where the next payload bytes of the current frame go (NULL: nowhere,
// they are skipped) and at most how many of them.  A chunk's prefix goes
// to cur_fixed, and once it is in, the chunk's bytes go straight into
// their place in the message.
static int rx_dst(tcp_conn *c, unsigned char **dst, size_t *want)
{
	size_t have = c->pay_have;
	if (c->cur.type != TW_TCP_F_CHUNK) {
		*dst = c->pay != NULL ? (unsigned char *)c->pay + have
		    : c->cur.type != TW_TCP_F_DATA ? c->cur_fixed + have
		                                   : NULL; // discarding
		return TW_OK;
	}
	if (have < TW_TCP_CHUNK_PREFIX) {
		*dst = c->cur_fixed + have;
		*want = TW_TCP_CHUNK_PREFIX - have;
		return TW_OK;
	}
	if (!c->discard && c->chunk_entry == NULL) {
		tw__tcp_chunk ck;
		tcp_conn *m = c->main_conn != NULL ? c->main_conn : c;
		size_t n = (size_t)c->cur.len - TW_TCP_CHUNK_PREFIX;
		int status = tw__tcp_chunk_decode(
		    c->cur_fixed, TW_TCP_CHUNK_PREFIX, &ck);
		if (status == TW_OK)
			status = tw__tcp_sx_chunk_begin(m->sx, c->cur_chan,
			    c->cur.slot, &ck, n, &c->chunk_entry,
			    &c->chunk_dst);
		if (status == TW_EPROTO)
			return rx_proto(
			    c, "a chunk that does not fit its message");
		if (status != TW_OK)
			return status;
	}
	*dst = c->discard ? NULL : c->chunk_dst + (have - TW_TCP_CHUNK_PREFIX);
	return TW_OK;
}

// Reads and handles frames until the socket is empty.  TW_OK when it is,
// or why the connection must close.
static int rx_pump(tcp_conn *c, unsigned *frames)
{
	for (;;) {
		if (tw__tcp_conn_failed(c))
			return TW_EPEER;
		if (!c->in_payload) {
			tw__tcp_hdr h;
			const char *why = NULL;
			int rv = tw__tcp_hdr_decode(c->in + c->in_off,
			    c->in_len - c->in_off, (uint64_t)1 << 40, &h,
			    &why);
			if (rv == TW_EAGAIN) {
				int status = rx_fill(c);
				if (status == TW_EAGAIN)
					return TW_OK;
				if (status != TW_OK)
					return status;
				continue;
			}
			if (rv < 0)
				return rx_proto(c, why);
			int status = rx_header(c, &h);
			c->in_off += (size_t)rv;
			if (status != TW_OK)
				return status;
			c->in_payload = true;
		}
		size_t want = (size_t)c->cur.len - c->pay_have;
		if (want > 0) {
			size_t avail = c->in_len - c->in_off;
			unsigned char *dst = NULL;
			int status = rx_dst(c, &dst, &want);
			if (status != TW_OK)
				return status;
			if (avail > 0) {
				size_t k = avail < want ? avail : want;
				if (dst != NULL)
					memcpy(dst, c->in + c->in_off, k);
				c->in_off += k;
				c->pay_have += k;
			} else if (dst != NULL && want >= RX_DIRECT_MIN) {
				ssize_t r
				    = recv(c->fd, dst, want, MSG_DONTWAIT);
				if (r > 0) {
					c->pay_have += (size_t)r;
					__atomic_add_fetch(&c->rx_bytes,
					    (uint64_t)r, __ATOMIC_RELAXED);
					__atomic_store_n(&c->last_rx,
					    tw__now_ns(), __ATOMIC_RELAXED);
				} else if (r < 0 && errno == EINTR) {
					continue;
				} else if (r < 0
				    && (errno == EAGAIN
				        || errno == EWOULDBLOCK)) {
					return TW_OK;
				} else {
					return TW_EPEER;
				}
			} else {
				status = rx_fill(c);
				if (status == TW_EAGAIN)
					return TW_OK;
				if (status != TW_OK)
					return status;
			}
			continue;
		}
		c->in_payload = false;
		int status = rx_dispatch(c);
		if (status != TW_OK)
			return status;
		(*frames)++;
	}
}

static void on_socket(tw__pfd *pfd, unsigned events, void *arg)
{
	(void)pfd;
	tcp_conn *c = arg;
	tw__tcp_conn_ref(c);
	bool rearm = true;
	if (events & (TW__POLL_IN | TW__POLL_ERR)) {
		// An application thread that holds the reader role reads for
		// us, and re-arms the registration when it lets go: re-armed
		// now, it would only fire again at once.
		if (pthread_mutex_trylock(&c->rx_mtx) == 0) {
			unsigned frames = 0;
			int status = rx_pump(c, &frames);
			pthread_mutex_unlock(&c->rx_mtx);
			if (status != TW_OK) {
				// EOF or a reset is how a peer's end looks: no
				// log line but a debug one.
				TW_DEBUG("tcp",
				    "connection %s (stripe %u) ends: %s",
				    c->who, c->stripe, tw_err_name(status));
				conn_fail(c, NULL, status != TW_EPEER);
				tw__tcp_conn_unref(c);
				return;
			}
		} else {
			rearm = false;
		}
	}
	if (events & TW__POLL_OUT)
		on_writable(c);
	if (rearm) {
		pthread_mutex_lock(&c->tx_mtx);
		arm(c);
		pthread_mutex_unlock(&c->tx_mtx);
	}
	tw__tcp_conn_unref(c);
}

bool tw__tcp_conn_poll(tcp_conn *c, int64_t idle_ns, int64_t deadline,
    bool (*done)(void *arg), void *arg)
{
	bool got = false, reading = false;
	int status = TW_OK;
	int64_t until = tw__now_ns() + idle_ns;
	uint64_t bytes = __atomic_load_n(&c->rx_bytes, __ATOMIC_RELAXED);
	for (;;) {
		if (tw__tcp_conn_failed(c)) {
			got = true; // the failure is news too
			break;
		}
		// The reader role is held for the whole poll once taken; while
		// the I/O thread has it, what it reads is looked for instead.
		if (!reading && pthread_mutex_trylock(&c->rx_mtx) == 0) {
			reading = true;
			// While we read, a wake-up of the I/O thread would
			// only take a CPU from us or from the peer.
			pthread_mutex_lock(&c->tx_mtx);
			if (!tw__tcp_conn_failed(c))
				(void)tw__pfd_arm(
				    c->pfd, c->want_out ? TW__POLL_OUT : 0);
			pthread_mutex_unlock(&c->tx_mtx);
		}
		unsigned frames = 0;
		if (reading && (status = rx_pump(c, &frames)) != TW_OK) {
			got = true;
			break;
		}
		if ((frames > 0 || !reading) && (got = done(arg)))
			break;
		// Bytes flowing (a large message on its way) keep us reading.
		int64_t now = tw__now_ns();
		uint64_t b = __atomic_load_n(&c->rx_bytes, __ATOMIC_RELAXED);
		if (b != bytes) {
			bytes = b;
			until = now + idle_ns;
		}
		if (now >= until || now >= deadline)
			break;
	}
	if (reading) {
		pthread_mutex_unlock(&c->rx_mtx);
		// Whatever arrives from now on is the I/O thread's again.
		pthread_mutex_lock(&c->tx_mtx);
		arm(c);
		pthread_mutex_unlock(&c->tx_mtx);
	}
	if (status != TW_OK)
		tw__tcp_conn_fail(c, NULL);
	return got;
}

static void on_timer(tw__pfd *pfd, unsigned events, void *arg)
{
	(void)events;
	tcp_conn *c = arg;
	uint64_t ticks = 1;
	while (read(c->tfd, &ticks, sizeof(ticks)) < 0 && errno == EINTR)
		;
	int64_t now = tw__now_ns();
	// Ticks missed mean that this process did not run (a stalled
	// machine, a debugger, a sanitizer's pause): the silence is ours as
	// much as the peer's, so the peer gets a fresh period, not the blame.
	if (ticks > 2)
		__atomic_store_n(&c->last_rx, now, __ATOMIC_RELAXED);
	int64_t idle = now - __atomic_load_n(&c->last_rx, __ATOMIC_RELAXED);
	if (idle >= c->heartbeat_ns) {
		char why[96];
		snprintf(why, sizeof(why),
		    "no sign of life for %" PRId64 " ms (%s)", idle / 1000000,
		    tw_err_name(TW_EPEER));
		tw__tcp_conn_fail(c, why);
		return;
	}
	if (idle >= c->heartbeat_ns / 3)
		(void)tw__tcp_conn_send(c, TW_TCP_F_PING, 0, NULL, NULL, 0,
		    TX_NOWAIT, 0, NULL, NULL);
	(void)tw__pfd_arm(pfd, TW__POLL_IN);
}

// --- making one -----------------------------------------------------------------------

static int start_timer(tcp_conn *c, int64_t heartbeat_ms)
{
	c->heartbeat_ns = heartbeat_ms * 1000000;
	c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
	if (c->tfd < 0) {
		TW_ERROR("tcp", "cannot make a heartbeat timer: %m");
		return TW_ESYS;
	}
	int64_t tick = c->heartbeat_ns / 4;
	struct itimerspec its = {
		.it_interval = { tick / 1000000000, tick % 1000000000 },
		.it_value = { tick / 1000000000, tick % 1000000000 },
	};
	if (timerfd_settime(c->tfd, 0, &its, NULL) != 0) {
		TW_ERROR("tcp", "cannot start a heartbeat timer: %m");
		return TW_ESYS;
	}
	int status = tw__pfd_init(
	    tw__tcp_node_poller(c->node), c->tfd, on_timer, c, &c->tpfd);
	if (status == TW_OK)
		status = tw__pfd_arm(c->tpfd, TW__POLL_IN);
	return status;
}

int tw__tcp_conn_new(tcp_node *n, const tcp_conn_info *info, tcp_conn **out)
{
	tcp_conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return TW_ENOMEM;
	c->fd = -1;
	c->tfd = -1;
	c->refs = 1; // the node's list
	c->node = n;
	c->dialer = info->dialer;
	c->peer_instance = info->peer->instance;
	memcpy(c->my_nonce, info->peer->my_nonce, TW_TCP_NONCE_LEN);
	memcpy(c->peer_nonce, info->peer->nonce, TW_TCP_NONCE_LEN);
	snprintf(c->who, sizeof(c->who), "%s", info->peer->addr);
	pthread_mutex_init(&c->mtx, NULL);
	tw__cond_init(&c->cv);
	pthread_mutex_init(&c->tx_mtx, NULL);
	tw__cond_init(&c->tx_cv);
	pthread_mutex_init(&c->rx_mtx, NULL);
	tw__tcp_rx_init(&c->rxst);
	c->last_rx = tw__now_ns();
	c->in = malloc(RX_BUF);
	c->dialed = info->dialed != NULL ? strdup(info->dialed) : NULL;
	c->main_conn = info->main;
	c->stripe = info->stripe;
	if (info->main == NULL)
		c->sx = tw__tcp_sx_new();
	if (c->in == NULL || (info->dialed != NULL && c->dialed == NULL)
	    || (info->main == NULL && c->sx == NULL)) {
		tw__tcp_conn_unref(c);
		return TW_ENOMEM;
	}
	int status = tw__pfd_init(
	    tw__tcp_node_poller(n), info->fd, on_socket, c, &c->pfd);
	if (status != TW_OK) {
		tw__tcp_conn_unref(c);
		return status;
	}
	c->fd = info->fd;
	if (info->heartbeat_ms > 0)
		status = start_timer(c, info->heartbeat_ms);
	if (status != TW_OK) {
		tw__pfd_fini(c->pfd);
		c->fd = -1; // the caller's to close
		tw__tcp_conn_unref(c);
		return status;
	}
	*out = c;
	return TW_OK;
}

void tw__tcp_conn_start(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx_mtx);
	arm(c);
	pthread_mutex_unlock(&c->tx_mtx);
}

tcp_conn *tw__tcp_conn_next(const tcp_conn *c)
{
	return c->next;
}

tcp_conn **tw__tcp_conn_nextp(tcp_conn *c)
{
	return &c->next;
}

void tw__tcp_conn_set_next(tcp_conn *c, tcp_conn *next)
{
	c->next = next;
}

void tw__tcp_conn_close(tcp_conn *c, int64_t deadline)
{
	if (tw__tcp_conn_send(
	        c, TW_TCP_F_BYE, 0, NULL, NULL, 0, TX_NOWAIT, 0, NULL, NULL)
	    == TW_OK) {
		pthread_mutex_lock(&c->tx_mtx);
		while ((c->pending > 0 || c->writing)
		    && tx_wait(c, deadline, NULL) == TW_OK)
			;
		pthread_mutex_unlock(&c->tx_mtx);
	}
	tw__tcp_conn_fail(c, NULL);
}
