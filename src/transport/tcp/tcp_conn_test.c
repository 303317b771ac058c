// Tests of a tcp:// connection alone, over socketpair(2): framing both
// ways with payloads on either side of the connection's head buffer and
// of the frame limit, the upcalls and the rules they follow (failure is
// reported once, last, on the I/O thread, never from a sender's stack),
// PING answered without queueing a PONG per PING, acks held by the owner
// and released (with an ACK only to a peer that asked, and asks again), a
// clean end, EOF, and bytes that are not frames (after
// which nothing more is parsed).  The other end is a second connection or
// a raw socket that the test writes frames to by hand.  Waits are on
// condition variables with deadlines, never sleeps.
//
// Resumes: a stream of numbered frames whose socket is cut several times
// while it flows, each time resumed on a new socket pair with the numbers
// that each side's suspend reports: the receiver sees every frame exactly
// once and in order; a connection left down fails at its limit; a resume
// from a frame never sent fails the connection.

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/sync.h"
#include "testdata.h"
#include "testutil.h"
#include "transport/tcp/tcp_conn_int.h"

// What an owner saw.
typedef struct frame {
	uint8_t type;
	uint32_t slot;
	uint64_t seq;
	char key[64];
	size_t len;
	unsigned char *data;
	bool begun; // came through rx_begin/rx_end
	struct tpost *in_post; // being read into a posted buffer
	bool placed; // and read whole there
	pthread_t reader; // the thread that handed it up
} frame;

// A receive that the test thread posts while it polls
// (tw__tcp_conn_poll): a long frame that begins while it reads goes into
// buf, and moves out when the poll lets go first.
typedef struct tpost {
	unsigned char *buf;
	size_t cap;
	int unposts; // rx_unpost calls
	bool moved; // a frame moved out of buf
	tcp_conn *c;
	struct owner *o; // whose frames done() counts
	int want;
	pthread_mutex_t mtx; // for `polling`, with cv
	pthread_cond_t cv;
	bool polling; // the poll holds the reader role with this post
} tpost;

#define MAX_FRAMES 128

typedef struct owner {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	frame frames[MAX_FRAMES]; // by mtx
	int n; // by mtx
	bool failed; // by mtx
	int fail_status; // by mtx
	int failed_calls; // by mtx
	bool failed_on_io; // by mtx
	int after_failed; // frame upcalls after failed, by mtx
	int begun; // rx_begin calls, by mtx
	tw__poller *poller;
	// Taken by the failure upcall: a test holds it while it sends, so
	// that an upcall run from inside the send would deadlock.
	pthread_mutex_t gate;
	_Atomic uint64_t
	    hold_seq; // when set: hold acks from the frame it names
	tcp_conn *conn;
} owner;

static void owner_init(owner *o, tw__poller *p)
{
	memset(o, 0, sizeof(*o));
	pthread_mutex_init(&o->mtx, NULL);
	tw__cond_init(&o->cv);
	pthread_mutex_init(&o->gate, NULL);
	o->poller = p;
}

static void owner_fini(owner *o)
{
	for (int i = 0; i < o->n; i++)
		free(o->frames[i].data);
	pthread_mutex_destroy(&o->gate);
	pthread_cond_destroy(&o->cv);
	pthread_mutex_destroy(&o->mtx);
}

static frame *note(owner *o, const tw__tcp_hdr *h)
{
	pthread_mutex_lock(&o->mtx);
	if (o->failed)
		o->after_failed++;
	assert_true(o->n < MAX_FRAMES);
	frame *f = &o->frames[o->n];
	f->type = h->type;
	f->slot = h->slot;
	f->seq = h->seq;
	snprintf(f->key, sizeof(f->key), "%s", h->key ? h->key : "");
	f->len = (size_t)h->len;
	pthread_mutex_unlock(&o->mtx);
	return f;
}

static void publish(owner *o)
{
	pthread_mutex_lock(&o->mtx);
	o->frames[o->n].reader = pthread_self();
	o->n++;
	pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mtx);
}

static int up_frame(
    void *arg, tcp_conn *c, const tw__tcp_hdr *h, const unsigned char *payload)
{
	owner *o = arg;
	uint64_t hold = atomic_load(&o->hold_seq);
	if (hold != 0 && h->seq == hold) {
		(void)tw__tcp_conn_hold_acks(c, h->seq);
		tw__tcp_conn_rx_handled(c);
	}
	frame *f = note(o, h);
	f->data = malloc(f->len + 1);
	memcpy(f->data, payload, f->len);
	publish(o);
	return TW_OK;
}

static int up_begin(void *arg, tcp_conn *c, const tw__tcp_hdr *h,
    const unsigned char *head, unsigned char **dst, void **cookie)
{
	(void)c;
	owner *o = arg;
	frame *f = note(o, h);
	f->begun = true;
	tpost *tp = tw__tcp_conn_post(c);
	if (tp != NULL && f->len <= tp->cap) {
		f->in_post = tp;
		memcpy(tp->buf, head, TCP_CONN_HEAD);
		*dst = tp->buf + TCP_CONN_HEAD;
	} else {
		f->data = malloc(f->len);
		memcpy(f->data, head, TCP_CONN_HEAD);
		*dst = f->data + TCP_CONN_HEAD;
	}
	*cookie = f;
	pthread_mutex_lock(&o->mtx);
	o->begun++;
	pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mtx);
	return TW_OK;
}

static int up_end(
    void *arg, tcp_conn *c, const tw__tcp_hdr *h, void *cookie, bool ok)
{
	(void)c;
	(void)h;
	owner *o = arg;
	assert_ptr_equal(cookie, &o->frames[o->n]);
	frame *f = cookie;
	if (ok && f->in_post != NULL) {
		f->placed = true;
		f->data = malloc(f->len);
		memcpy(f->data, f->in_post->buf, f->len);
		f->in_post = NULL;
	}
	if (ok)
		publish(o);
	return TW_OK;
}

// The poll lets go: a frame half read into the posted buffer moves to
// memory of its own, and the reader follows it.
static int up_unpost(void *arg, tcp_conn *c, void *post)
{
	owner *o = arg;
	tpost *tp = post;
	tp->unposts++;
	frame *f = &o->frames[o->n];
	if (f->in_post == tp) {
		f->data = malloc(f->len);
		memcpy(f->data, tp->buf, f->len);
		tw__tcp_conn_rx_rebase(c, tp->buf, f->len, f->data);
		f->in_post = NULL;
		tp->moved = true;
	}
	return TW_OK;
}

static void up_failed(void *arg, tcp_conn *c, int status)
{
	(void)c;
	owner *o = arg;
	pthread_mutex_lock(&o->gate);
	pthread_mutex_unlock(&o->gate);
	pthread_mutex_lock(&o->mtx);
	o->failed = true;
	o->fail_status = status;
	o->failed_calls++;
	o->failed_on_io = tw__poller_on_thread(o->poller);
	pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mtx);
}

static const tcp_conn_ops test_ops = {
	.size = sizeof(tcp_conn_ops),
	.rx_frame = up_frame,
	.rx_begin = up_begin,
	.rx_end = up_end,
	.failed = up_failed,
	.rx_unpost = up_unpost,
};

static int64_t deadline_in(int64_t ms)
{
	return tw__now_ns() + tw_test_scale_ms(ms) * 1000000;
}

// Waits until o saw n frames (or failed, with want_fail).
static void wait_frames(owner *o, int n)
{
	int64_t dl = deadline_in(10000);
	pthread_mutex_lock(&o->mtx);
	while (
	    o->n < n && tw__cond_wait_until(&o->cv, &o->mtx, dl) != ETIMEDOUT)
		;
	int got = o->n;
	pthread_mutex_unlock(&o->mtx);
	assert_int_equal(got, n);
}

static void wait_failed(owner *o)
{
	int64_t dl = deadline_in(10000);
	pthread_mutex_lock(&o->mtx);
	while (!o->failed
	    && tw__cond_wait_until(&o->cv, &o->mtx, dl) != ETIMEDOUT)
		;
	bool failed = o->failed;
	pthread_mutex_unlock(&o->mtx);
	assert_true(failed);
}

static tcp_conn *make(owner *o, int fd, int64_t heartbeat_ms)
{
	tcp_conn_cfg cfg = { .fd = fd,
		.poller = o->poller,
		.ops = &test_ops,
		.owner = o,
		.who = "test peer",
		.heartbeat_ms = heartbeat_ms };
	tcp_conn *c;
	TW_PASS(tw__tcp_conn_new(&cfg, &c));
	o->conn = c;
	tw__tcp_conn_start(c);
	return c;
}

typedef struct pair {
	tw__poller *p;
	owner a, b;
	tcp_conn *ca, *cb;
} pair;

static void pair_up(pair *t)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	TW_PASS(tw__poller_new(&t->p));
	owner_init(&t->a, t->p);
	owner_init(&t->b, t->p);
	t->ca = make(&t->a, sv[0], 0);
	t->cb = make(&t->b, sv[1], 0);
}

// Fails both connections, waits for their upcalls, frees everything.
static void pair_down(pair *t)
{
	tw__tcp_conn_fail(t->ca, TW_EPEER, NULL);
	tw__tcp_conn_fail(t->cb, TW_EPEER, NULL);
	wait_failed(&t->a);
	wait_failed(&t->b);
	tw__tcp_conn_unref(t->ca);
	tw__tcp_conn_unref(t->cb);
	tw__poller_free(t->p);
	assert_int_equal(t->a.failed_calls, 1);
	assert_int_equal(t->b.failed_calls, 1);
	owner_fini(&t->a);
	owner_fini(&t->b);
}

static int send1(tcp_conn *c, uint8_t type, uint32_t slot, const char *key,
    const void *buf, size_t len, int flags, uint64_t *seq)
{
	struct iovec v = { (void *)buf, len };
	return tw__tcp_conn_send(c, type, slot, key, &v, len > 0 ? 1 : 0,
	    flags, deadline_in(10000), NULL, seq);
}

// Payloads on both sides of the head buffer and up to the frame limit
// arrive whole, in order, with their keys and slots, through rx_frame
// when they fit the head and rx_begin/rx_end when not.
static void test_framing(void **state)
{
	(void)state;
	pair t;
	pair_up(&t);
	static const size_t sizes[]
	    = { 0, 1, TCP_CONN_HEAD - 1, TCP_CONN_HEAD, TCP_CONN_HEAD + 1,
		      4096, 16384, 16385, 100000, TW_TCP_FRAME_MAX };
	enum { N = sizeof(sizes) / sizeof(sizes[0]) };
	unsigned char *buf = malloc(TW_TCP_FRAME_MAX);
	uint64_t last = 0;
	for (int i = 0; i < N; i++) {
		tw_test_fill(buf, sizes[i], 1, 2, (uint32_t)i);
		char key[32];
		snprintf(key, sizeof(key), "k:%d", i);
		uint64_t seq = 0;
		TW_PASS(send1(t.ca, TW_TCP_F_DATA, (uint32_t)i, key, buf,
		    sizes[i], 0, &seq));
		assert_true(seq == last + 1);
		last = seq;
	}
	wait_frames(&t.b, N);
	for (int i = 0; i < N; i++) {
		frame *f = &t.b.frames[i];
		char key[32];
		snprintf(key, sizeof(key), "k:%d", i);
		assert_int_equal(f->type, TW_TCP_F_DATA);
		assert_int_equal(f->slot, i);
		assert_string_equal(f->key, key);
		assert_int_equal(f->len, sizes[i]);
		assert_true(f->begun == (sizes[i] > TCP_CONN_HEAD));
		assert_true(tw_test_check(f->data, f->len, 1, 2, (uint32_t)i));
	}
	// And the other way, with a frame longer than the limit refused.
	TW_FAIL(send1(t.cb, TW_TCP_F_DATA, 0, "x", buf, TW_TCP_FRAME_MAX + 1,
	            0, NULL),
	    TW_EINVAL);
	TW_PASS(send1(t.cb, TW_TCP_F_DATA, 0, "x", "y", 1, 0, NULL));
	wait_frames(&t.a, 1);
	free(buf);
	pair_down(&t);
}

// A PING is answered: the sender's frames are acknowledged.
static void test_ping_ack(void **state)
{
	(void)state;
	pair t;
	pair_up(&t);
	uint64_t seq = 0;
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 0, "k", "v", 1, 0, &seq));
	TW_PASS(tw__tcp_conn_wait_ack(t.ca, seq, deadline_in(10000), NULL));
	assert_true(tw__tcp_conn_peer_ack(t.ca) >= seq);
	// A cancel flag that is set stops a wait that cannot end.
	_Atomic int cancel = 1;
	TW_FAIL(tw__tcp_conn_wait_ack(
	            t.ca, seq + 100, deadline_in(10000), &cancel),
	    TW_ECLOSED);
	TW_FAIL(tw__tcp_conn_wait_ack(
	            t.ca, seq + 100, tw__now_ns() + 20000000, NULL),
	    TW_ETIMEDOUT);
	pair_down(&t);
}

// The frames c has numbered so far.
static uint64_t numbered(tcp_conn *c)
{
	return atomic_load_explicit(&c->tx.seq_pub, memory_order_acquire);
}

// Whether c's peer acknowledges frame seq within 10 s, without asking it
// (tw__tcp_conn_wait_ack asks with a PING).
static bool acked_unasked(tcp_conn *c, uint64_t seq)
{
	int64_t deadline = deadline_in(10000);
	pthread_mutex_lock(&c->ack_mtx);
	atomic_fetch_add(&c->ack_waiters, 1);
	while (tw__tcp_conn_peer_ack(c) < seq && tw__now_ns() < deadline)
		(void)tw__cond_wait_until(&c->ack_cv, &c->ack_mtx, deadline);
	atomic_fetch_sub(&c->ack_waiters, 1);
	pthread_mutex_unlock(&c->ack_mtx);
	return tw__tcp_conn_peer_ack(c) >= seq;
}

// A thread that waits for c's peer to acknowledge frame seq.
typedef struct waiter {
	tcp_conn *c;
	uint64_t seq;
	int status;
} waiter;

static void *waiter_main(void *arg)
{
	waiter *w = arg;
	w->status
	    = tw__tcp_conn_wait_ack(w->c, w->seq, deadline_in(10000), NULL);
	return NULL;
}

// Sends frames *sa and *sb, the first or the second of which holds the
// acks, until the owner has seen `seen` frames in all; a waiter for the held
// one then asks (a PING) and gets no ack within 100 ms.
static void send_held(
    pair *t, bool hold_first, unsigned seen, uint64_t *sa, uint64_t *sb)
{
	uint64_t next = numbered(t->ca) + 1;
	atomic_store(&t->b.hold_seq, hold_first ? next : next + 1);
	TW_PASS(send1(t->ca, TW_TCP_F_DATA, 0, "k", "a", 1, 0, sa));
	TW_PASS(send1(t->ca, TW_TCP_F_DATA, 0, "k", "b", 1, 0, sb));
	wait_frames(&t->b, seen);
	uint64_t held = hold_first ? *sa : *sb;
	assert_int_equal(atomic_load(&t->b.hold_seq), held);
	TW_FAIL(
	    tw__tcp_conn_wait_ack(t->ca, held, tw__now_ns() + 100000000, NULL),
	    TW_ETIMEDOUT);
}

// An owner's hold keeps acks short of a frame until it is released; then
// the ack goes out without any frame of the owner to carry it, to a peer
// that asked for it (and only then: one ACK per long message would wake
// the peer once a message).
static int frames_now(owner *o)
{
	pthread_mutex_lock(&o->mtx);
	int n = o->n;
	pthread_mutex_unlock(&o->mtx);
	return n;
}

// A sender between two frames of a long message reads what came back
// itself (tw__tcp_conn_read_between), at once and on its own thread, and
// leaves the socket parked; it reads nothing while another thread holds
// the reader role.  A sender that then waits for room in its ring, which
// only the peer's acks free, hands the parked socket back to the I/O
// thread: with a park period of an hour, its frames here (more than
// TX_RETAIN_MAX) would wait for that hour otherwise.
static void test_read_between(void **state)
{
	(void)state;
	pair t;
	pair_up(&t);
	int64_t hour = INT64_C(3600) * 1000000000;
	tw__poller_set_park_ns(t.p, hour);
	// Past its budget, what a read leaves is the I/O thread's: a budget
	// of an hour, so that a preempted test still sees the park.
	tw__tcp_conn_set_read_between(hour);
	tw__tcp_conn_read_between(t.ca); // nothing there yet
	assert_true(tw__pfd_unpark(t.ca->pfd));
	assert_true(tw__pfd_park(t.ca->pfd)); // as it left it

	// The peer's first frame is written before its send returns.
	TW_PASS(send1(t.cb, TW_TCP_F_DATA, 1, "r1", "abc", 3, 0, NULL));
	pthread_mutex_lock(&t.ca->rx.mtx); // another reader
	tw__tcp_conn_read_between(t.ca);
	pthread_mutex_unlock(&t.ca->rx.mtx);
	assert_int_equal(frames_now(&t.a), 0);
	tw__tcp_conn_read_between(t.ca);
	assert_int_equal(frames_now(&t.a), 1);
	assert_string_equal(t.a.frames[0].key, "r1");
	assert_true(tw__pfd_unpark(t.ca->pfd));
	assert_true(tw__pfd_park(t.ca->pfd));

	enum { N = (int)(TX_RETAIN_MAX / TW_TCP_FRAME_MAX) + 8 };
	unsigned char *big = calloc(1, TW_TCP_FRAME_MAX);
	assert_non_null(big);
	for (int i = 0; i < N; i++)
		TW_PASS(send1(t.ca, TW_TCP_F_DATA, 1, "big", big,
		    TW_TCP_FRAME_MAX, 0, NULL));
	wait_frames(&t.b, N);
	free(big);
	tw__tcp_conn_set_read_between(0);
	pair_down(&t);
}

// Moves the hold on b's acks, and sends the ACK that the peer asked for
// when that frees it.
static void release(tcp_conn *c, uint64_t seq)
{
	if (tw__tcp_conn_hold_acks(c, seq))
		tw__tcp_conn_send_ack(c);
}

static void test_hold_acks(void **state)
{
	(void)state;
	pair t;
	pair_up(&t);
	// Nobody asked: the release sends nothing, and a waiter that asks
	// then gets the ack past the hold in the PONG.
	uint64_t s0 = 0;
	atomic_store(&t.b.hold_seq, numbered(t.ca) + 1);
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 0, "k", "0", 1, 0, &s0));
	wait_frames(&t.b, 1);
	assert_int_equal(atomic_load(&t.b.hold_seq), s0);
	uint64_t before = numbered(t.cb);
	assert_false(tw__tcp_conn_hold_acks(t.cb, UINT64_MAX));
	assert_int_equal(numbered(t.cb), before);
	TW_PASS(tw__tcp_conn_wait_ack(t.ca, s0, deadline_in(10000), NULL));

	// Asked while held: the release sends an ACK.
	uint64_t s1 = 0, s2 = 0;
	send_held(&t, false, 3, &s1, &s2);
	// The PONG to the waiter's PING carries the ack up to the hold; a
	// slow I/O thread may bring it after the waiter gave up.
	assert_true(acked_unasked(t.ca, s1));
	assert_true(tw__tcp_conn_peer_ack(t.ca) < s2);
	release(t.cb, UINT64_MAX);
	assert_true(acked_unasked(t.ca, s2));

	// Asked while held, and the hold moves on to a later frame: an ACK up
	// to it, and the ask stands until no frame holds the acks.
	uint64_t s3 = 0, s4 = 0;
	send_held(&t, true, 5, &s3, &s4);
	release(t.cb, s4);
	assert_true(acked_unasked(t.ca, s3));
	assert_true(tw__tcp_conn_peer_ack(t.ca) < s4);
	release(t.cb, UINT64_MAX);
	assert_true(acked_unasked(t.ca, s4));

	// A waiter asks again every 100 ms: an ask that is gone (cleared here
	// once its PONG went out short of the hold) does not leave it waiting
	// for traffic that may never come.
	uint64_t s5 = 0;
	atomic_store(&t.b.hold_seq, numbered(t.ca) + 1);
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 0, "k", "5", 1, 0, &s5));
	wait_frames(&t.b, 6);
	assert_int_equal(atomic_load(&t.b.hold_seq), s5);
	uint64_t pongs = numbered(t.cb), pings = numbered(t.ca);
	waiter w = { .c = t.ca, .seq = s5 };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, waiter_main, &w), 0);
	int64_t until = deadline_in(10000);
	while ((!atomic_load(&t.cb->rx.pinged) || numbered(t.cb) == pongs)
	    && tw__now_ns() < until)
		sched_yield();
	assert_true(atomic_exchange(&t.cb->rx.pinged, false));
	release(t.cb, UINT64_MAX);
	assert_int_equal(pthread_join(th, NULL), 0);
	TW_PASS(w.status);
	assert_true(numbered(t.ca) - pings >= 2);
	pair_down(&t);
}

// A write that fails never runs the failure upcall on the sender's stack
// (whose locks the owner may need there): it runs once, on the I/O thread,
// after the send returned.
static void test_fail_deferred(void **state)
{
	(void)state;
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	tw__poller *p;
	TW_PASS(tw__poller_new(&p));
	owner o;
	owner_init(&o, p);
	// Held before anything can fail: the I/O thread may see the EOF
	// before any send does.
	pthread_mutex_lock(&o.gate);
	tcp_conn *c = make(&o, sv[0], 0);
	close(sv[1]);
	int status = TW_OK;
	for (int i = 0; i < 1000 && status == TW_OK; i++)
		status = send1(
		    c, TW_TCP_F_DATA, 0, "k", "v", 1, TCP_TX_NOWAIT, NULL);
	// The writer saw the broken socket (or the reader saw EOF first);
	// either way the sender got its status without the upcall.
	assert_true(tw__tcp_conn_failed(c));
	TW_FAIL(send1(c, TW_TCP_F_DATA, 0, "k", "v", 1, 0, NULL), TW_EPEER);
	pthread_mutex_lock(&o.mtx);
	assert_false(o.failed);
	pthread_mutex_unlock(&o.mtx);
	pthread_mutex_unlock(&o.gate);
	wait_failed(&o);
	assert_true(o.failed_on_io);
	assert_int_equal(o.fail_status, TW_EPEER);
	tw__tcp_conn_unref(c);
	tw__poller_free(p);
	assert_int_equal(o.failed_calls, 1);
	owner_fini(&o);
}

// A raw peer: one end is a connection, the other the test's socket.
typedef struct raw {
	tw__poller *p;
	owner o;
	tcp_conn *c;
	int fd;
	uint64_t seq; // frames the raw end sent
} raw;

static void raw_up(raw *r)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	TW_PASS(tw__poller_new(&r->p));
	owner_init(&r->o, r->p);
	r->c = make(&r->o, sv[0], 0);
	r->fd = sv[1];
	r->seq = 0;
}

static void raw_down(raw *r)
{
	close(r->fd);
	tw__tcp_conn_fail(r->c, TW_EPEER, NULL);
	wait_failed(&r->o);
	tw__tcp_conn_unref(r->c);
	tw__poller_free(r->p);
	assert_int_equal(r->o.failed_calls, 1);
	assert_int_equal(r->o.after_failed, 0);
	owner_fini(&r->o);
}

// Writes a frame by hand; returns its length.
static size_t raw_frame(
    raw *r, unsigned char *buf, uint8_t type, const char *key, uint64_t len)
{
	tw__tcp_hdr h = { .type = type,
		.key = key,
		.key_len = key ? strlen(key) : 0,
		.len = len,
		.seq = ++r->seq };
	return tw__tcp_hdr_encode(buf, TW_TCP_HDR_LEN + TW_KEY_MAX, &h);
}

static void raw_write(raw *r, const void *buf, size_t n)
{
	const unsigned char *p = buf;
	while (n > 0) {
		ssize_t w = send(r->fd, p, n, MSG_NOSIGNAL);
		assert_true(w > 0);
		p += w;
		n -= (size_t)w;
	}
}

// A peer that floods PINGs and reads nothing: the answers are owed, not
// queued one per PING, so the connection's memory stays bounded.
static void test_ping_flood(void **state)
{
	(void)state;
	raw r;
	raw_up(&r);
	enum { BATCH = 2048, ROUNDS = 200 };
	unsigned char *buf = malloc((size_t)BATCH * TW_TCP_HDR_LEN);
	for (int k = 0; k < ROUNDS; k++) {
		size_t n = 0;
		for (int i = 0; i < BATCH; i++)
			n += raw_frame(&r, buf + n, TW_TCP_F_PING, NULL, 0);
		// The connection reads them all (its reader never stops),
		// while its answers fill the socket that nobody reads.
		raw_write(&r, buf, n);
	}
	// Everything was read once the data frame behind them arrives.
	size_t n = raw_frame(&r, buf, TW_TCP_F_DATA, "k", 1);
	buf[n++] = 'z';
	raw_write(&r, buf, n);
	wait_frames(&r.o, 1);
	pthread_mutex_lock(&r.c->tx.mtx);
	size_t queued = r.c->tx.cap;
	pthread_mutex_unlock(&r.c->tx.mtx);
	// 409,600 PINGs: one PONG each would have been 13 MB queued.
	assert_true(queued <= 1u << 20);
	assert_false(tw__tcp_conn_failed(r.c));
	free(buf);
	raw_down(&r);
}

// Bytes that are not a frame fail the connection with TW_EPROTO, and what
// follows them is never taken for frames, whoever reads next.
static void test_garbage_sticky(void **state)
{
	(void)state;
	raw r;
	raw_up(&r);
	unsigned char buf[512];
	// A valid frame, then one of an unknown type, then what would be a
	// valid frame if anybody read on.
	size_t n = raw_frame(&r, buf, TW_TCP_F_DATA, "k", 0);
	n += raw_frame(&r, buf + n, TW_TCP_F_DATA, "k", 0);
	size_t bad = n;
	n += raw_frame(&r, buf + n, TW_TCP_F_PING, NULL, 0);
	buf[bad] = 0xEE; // an unknown type
	n += raw_frame(&r, buf + n, TW_TCP_F_DATA, "late", 0);
	raw_write(&r, buf, n);
	wait_failed(&r.o);
	assert_int_equal(r.o.fail_status, TW_EPROTO);
	// The two frames before the bad one arrived; nothing after it.
	pthread_mutex_lock(&r.o.mtx);
	int got = r.o.n;
	pthread_mutex_unlock(&r.o.mtx);
	assert_int_equal(got, 2);
	// A reader that comes later (an application thread polling) finds
	// the same error and parses nothing.
	pthread_mutex_lock(&r.c->rx.mtx);
	unsigned frames = 0;
	TW_FAIL(tw__tcp_reader_pump(r.c, 0, &frames), TW_EPROTO);
	pthread_mutex_unlock(&r.c->rx.mtx);
	assert_int_equal(frames, 0);
	raw_down(&r);
}

// BYE ends the connection cleanly (TW_ECLOSED to the owner); EOF without
// it is TW_EPEER.
static void test_bye_eof(void **state)
{
	(void)state;
	raw r;
	raw_up(&r);
	unsigned char buf[64];
	size_t n = raw_frame(&r, buf, TW_TCP_F_BYE, NULL, 0);
	raw_write(&r, buf, n);
	wait_failed(&r.o);
	assert_int_equal(r.o.fail_status, TW_ECLOSED);
	assert_true(r.o.failed_on_io);
	raw_down(&r);

	raw_up(&r);
	shutdown(r.fd, SHUT_WR);
	wait_failed(&r.o);
	assert_int_equal(r.o.fail_status, TW_EPEER);
	raw_down(&r);
}

// A frame half read when the connection fails is given back to the owner
// (rx_end with ok false), before the failure upcall.
static void test_half_frame(void **state)
{
	(void)state;
	raw r;
	raw_up(&r);
	unsigned char buf[TW_TCP_HDR_LEN + 8 + 1000];
	size_t n = raw_frame(&r, buf, TW_TCP_F_DATA, "half", 100000);
	memset(buf + n, 7, 1000);
	raw_write(&r, buf, n + 1000); // 1000 of 100000 bytes
	// The reader has begun the frame once its head is in; then EOF.
	int64_t dl = deadline_in(10000);
	pthread_mutex_lock(&r.o.mtx);
	while (r.o.begun == 0
	    && tw__cond_wait_until(&r.o.cv, &r.o.mtx, dl) != ETIMEDOUT)
		;
	pthread_mutex_unlock(&r.o.mtx);
	shutdown(r.fd, SHUT_WR);
	wait_failed(&r.o);
	pthread_mutex_lock(&r.o.mtx);
	assert_true(r.o.frames[0].begun);
	assert_int_equal(r.o.n, 0); // never published: it ended !ok
	pthread_mutex_unlock(&r.o.mtx);
	free(r.o.frames[0].data);
	r.o.frames[0].data = NULL;
	raw_down(&r);
}

// An application thread reads the connection itself (the reader role)
// until what it waits for arrived.
static bool got_one(void *arg)
{
	owner *o = arg;
	pthread_mutex_lock(&o->mtx);
	bool yes = o->n > 0;
	pthread_mutex_unlock(&o->mtx);
	return yes;
}

static void test_poll(void **state)
{
	(void)state;
	pair t;
	pair_up(&t);
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 3, "p", "abc", 3, 0, NULL));
	int64_t dl = deadline_in(10000);
	while (!got_one(&t.b) && tw__now_ns() < dl)
		(void)tw__tcp_conn_poll(
		    t.cb, 1000000, dl, got_one, &t.b, NULL, false);
	assert_true(got_one(&t.b));
	assert_int_equal(t.b.frames[0].len, 3);
	pair_down(&t);
}

// The poll's done(): whether the owner saw tp->want frames.  It tells
// the writer thread once this thread reads with its post.
static bool post_done(void *arg)
{
	tpost *tp = arg;
	if (tw__tcp_conn_post(tp->c) == tp) {
		pthread_mutex_lock(&tp->mtx);
		tp->polling = true;
		pthread_cond_broadcast(&tp->cv);
		pthread_mutex_unlock(&tp->mtx);
	}
	pthread_mutex_lock(&tp->o->mtx);
	bool yes = tp->o->n >= tp->want;
	pthread_mutex_unlock(&tp->o->mtx);
	return yes;
}

typedef struct post_writer {
	raw *r;
	tpost *tp;
	const unsigned char *bytes;
	size_t n;
	pthread_t th;
} post_writer;

// Waits until a poll holds the reader role with tp's post.
static void wait_polling(tpost *tp)
{
	pthread_mutex_lock(&tp->mtx);
	while (!tp->polling)
		pthread_cond_wait(&tp->cv, &tp->mtx);
	pthread_mutex_unlock(&tp->mtx);
}

// Writes the bytes once the poll reads with its post.
static void *post_write(void *arg)
{
	post_writer *w = arg;
	wait_polling(w->tp);
	raw_write(w->r, w->bytes, w->n);
	return NULL;
}

static void post_write_start(post_writer *w)
{
	pthread_mutex_lock(&w->tp->mtx);
	w->tp->polling = false;
	pthread_mutex_unlock(&w->tp->mtx);
	assert_int_equal(pthread_create(&w->th, NULL, post_write, w), 0);
}

// Polls with tp's post until `ms` passed or tp->want frames arrived.
static void poll_post(raw *r, tpost *tp, int64_t ms)
{
	int64_t dl = deadline_in(ms);
	while (!post_done(tp) && tw__now_ns() < dl)
		(void)tw__tcp_conn_poll(
		    r->c, 1000000, dl, post_done, tp, tp, true);
}

// A poll with a post keeps the reader role past its idle time until its
// deadline; a long frame that begins meanwhile is read into the posted
// buffer, and one still incomplete when the poll lets go moves out of it
// (rx_unpost), its reader following: nothing touches the posted buffer
// after that.
static void test_poll_post(void **state)
{
	(void)state;
	enum { LEN = 100000, PART = 1000 };
	raw r;
	raw_up(&r);
	tpost tp = { .cap = LEN, .c = r.c, .o = &r.o, .want = 1 };
	tp.buf = malloc(LEN);
	pthread_mutex_init(&tp.mtx, NULL);
	tw__cond_init(&tp.cv);
	unsigned char *bytes = malloc(TW_TCP_HDR_LEN + 8 + LEN);

	// Nothing comes: the poll returns at its deadline, not at 1 ms idle.
	int64_t dl = deadline_in(100);
	assert_false(
	    tw__tcp_conn_poll(r.c, 1000000, dl, post_done, &tp, &tp, true));
	assert_true(tw__now_ns() >= dl);
	assert_int_equal(tp.unposts, 1);

	// A frame that begins while the poll reads lands in the buffer.
	size_t hn = raw_frame(&r, bytes, TW_TCP_F_DATA, "post", LEN);
	tw_test_fill(bytes + hn, LEN, 1, 2, 3);
	post_writer w = { &r, &tp, bytes, hn + LEN, 0 };
	post_write_start(&w);
	poll_post(&r, &tp, 10000);
	pthread_join(w.th, NULL);
	wait_frames(&r.o, 1);
	frame *f = &r.o.frames[0];
	assert_true(f->placed);
	assert_false(tp.moved);
	assert_true(tw_test_check(f->data, LEN, 1, 2, 3));

	// Half a frame, then the poll's deadline: the frame moves out, and
	// the rest goes where it went.
	hn = raw_frame(&r, bytes, TW_TCP_F_DATA, "post", LEN);
	tw_test_fill(bytes + hn, LEN, 4, 5, 6);
	w.n = hn + PART;
	tp.want = 2;
	post_write_start(&w);
	poll_post(&r, &tp, 300);
	pthread_join(w.th, NULL);
	pthread_mutex_lock(&r.o.mtx);
	int begun = r.o.begun, n = r.o.n;
	pthread_mutex_unlock(&r.o.mtx);
	assert_int_equal(begun, 2);
	assert_int_equal(n, 1);
	assert_true(tp.moved);
	memset(tp.buf, 0xee, LEN);
	raw_write(&r, bytes + hn + PART, LEN - PART);
	wait_frames(&r.o, 2);
	f = &r.o.frames[1];
	assert_false(f->placed);
	assert_true(tw_test_check(f->data, LEN, 4, 5, 6));
	for (size_t i = 0; i < LEN; i++)
		assert_int_equal(tp.buf[i], 0xee);

	raw_down(&r);
	pthread_cond_destroy(&tp.cv);
	pthread_mutex_destroy(&tp.mtx);
	free(tp.buf);
	free(bytes);
}

typedef struct park_sender {
	tcp_conn *c;
	tpost *tp;
	const char *key;
	pthread_t th;
} park_sender;

// Sends one frame once the poll holds the reader role.
static void *park_send(void *arg)
{
	park_sender *ps = arg;
	wait_polling(ps->tp);
	TW_PASS(send1(ps->c, TW_TCP_F_DATA, 3, ps->key, "abc", 3, 0, NULL));
	return NULL;
}

// Polls cb as the reader until frame number `want` arrives, sent by a
// thread once the poll reads.
static void poll_for(pair *t, tpost *tp, int want, const char *key)
{
	tp->want = want;
	pthread_mutex_lock(&tp->mtx);
	tp->polling = false;
	pthread_mutex_unlock(&tp->mtx);
	park_sender ps = { t->ca, tp, key, 0 };
	assert_int_equal(pthread_create(&ps.th, NULL, park_send, &ps), 0);
	int64_t dl = deadline_in(10000);
	while (!post_done(tp) && tw__now_ns() < dl)
		(void)tw__tcp_conn_poll(
		    t->cb, 1000000, dl, post_done, tp, tp, true);
	pthread_join(ps.th, NULL);
	wait_frames(&t->b, want);
}

// A pair whose park period is an hour, so that only what a test does ends
// a park, and a post for cb's polls.
static void park_pair_up(pair *t, tpost *tp)
{
	pair_up(t);
	tw__poller_set_park_ns(t->p, INT64_C(3600) * 1000000000);
	memset(tp, 0, sizeof(*tp));
	tp->c = t->cb;
	tp->o = &t->b;
	pthread_mutex_init(&tp->mtx, NULL);
	tw__cond_init(&tp->cv);
}

static void park_pair_down(pair *t, tpost *tp)
{
	pair_down(t);
	pthread_cond_destroy(&tp->cv);
	pthread_mutex_destroy(&tp->mtx);
}

// A poll that got its frame leaves the socket parked for the next one to
// claim without a system call.  A thread about to sleep on what only
// reading brings (tw__tcp_conn_sleep_begin) has the I/O thread watch it at
// once, and while it sleeps a poll that gets its frame re-arms instead of
// parking; tw__tcp_conn_unpark (a probe that found nothing) hands it back
// too.  The park period here is an hour: only these end a park.
static void test_poll_park(void **state)
{
	(void)state;
	pair t;
	tpost tp;
	park_pair_up(&t, &tp);

	poll_for(&t, &tp, 1, "p1");
	assert_true(tw__pfd_unpark(t.cb->pfd));
	assert_true(tw__pfd_park(t.cb->pfd)); // as the poll left it

	tw__tcp_conn_sleep_begin(t.cb);
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 3, "p2", "abc", 3, 0, NULL));
	wait_frames(&t.b, 2); // read by the I/O thread

	poll_for(&t, &tp, 3, "p3");
	assert_false(tw__pfd_unpark(t.cb->pfd));
	tw__tcp_conn_sleep_end(t.cb);
	assert_string_equal(t.b.frames[2].key, "p3");

	// Parked again, and handed back to the I/O thread by a caller that
	// looks without reading (a probe).
	poll_for(&t, &tp, 4, "p4");
	tw__tcp_conn_unpark(t.cb);
	assert_false(tw__pfd_unpark(t.cb->pfd));
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 3, "p5", "abc", 3, 0, NULL));
	wait_frames(&t.b, 5);

	park_pair_down(&t, &tp);
}

static void barrier_task(void *arg)
{
	atomic_store((_Atomic bool *)arg, true);
}

// Waits until a task posted now has run on the I/O thread: whatever
// callback it was running has returned.
static void io_barrier(pair *t)
{
	// Static: a task that never ran stays queued after the test fails.
	static _Atomic bool ran;
	static tw__poll_task task;
	atomic_store(&ran, false);
	task.fn = barrier_task;
	task.arg = (void *)&ran;
	tw__poller_post(t->p, &task);
	int64_t dl = deadline_in(10000);
	while (!atomic_load(&ran) && tw__now_ns() < dl)
		sched_yield();
	assert_true(atomic_load(&ran));
}

// Waits until the I/O thread has left cb's socket parked, and leaves it
// so: false when that did not happen within a few seconds.
static bool wait_parked(pair *t)
{
	int64_t dl = deadline_in(5000);
	while (!tw__pfd_unpark(t->cb->pfd)) {
		if (tw__now_ns() >= dl)
			return false;
		sched_yield();
	}
	assert_true(tw__pfd_park(t->cb->pfd));
	return true;
}

// An application thread that takes out of the mailbox what the I/O thread
// delivered (tw__tcp_conn_note_taken) has the I/O thread leave the socket
// parked after its next read, so that the application reads the next
// frame itself: the poll, not the I/O thread, hands it up.  Without a note
// the I/O thread keeps watching.  The park period is an hour.
static void test_note_taken(void **state)
{
	(void)state;
	pair t;
	tpost tp;
	park_pair_up(&t, &tp);

	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 3, "n1", "abc", 3, 0, NULL));
	wait_frames(&t.b, 1);
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 3, "n2", "abc", 3, 0, NULL));
	wait_frames(&t.b, 2); // the I/O thread re-armed after n1
	assert_false(pthread_equal(t.b.frames[1].reader, pthread_self()));

	// The note is for the next read: the I/O thread must have decided
	// about n2's (it looks at the note before it lets go of the role),
	// or it would take the note for that one and park for an hour.  A
	// task on the I/O thread runs once that callback has returned.  (The
	// test used to take and drop the role's mutex instead: a PING that
	// woke the I/O thread meanwhile found the role held and left the
	// socket to that holder, which re-arms as a reader would, but the
	// test did not, and n3 was never read.)
	io_barrier(&t);
	tw__tcp_conn_note_taken(t.cb);
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 3, "n3", "abc", 3, 0, NULL));
	wait_frames(&t.b, 3);
	assert_false(pthread_equal(t.b.frames[2].reader, pthread_self()));
	assert_true(wait_parked(&t));
	poll_for(&t, &tp, 4, "n4");
	assert_string_equal(t.b.frames[3].key, "n4");
	assert_true(pthread_equal(t.b.frames[3].reader, pthread_self()));

	park_pair_down(&t, &tp);
}

// Frames handed up by cb's reader so far.
static int frames_of(pair *t)
{
	pthread_mutex_lock(&t->b.mtx);
	int n = t->b.n;
	pthread_mutex_unlock(&t->b.mtx);
	return n;
}

// While an application thread waits for the reader role
// (tw__tcp_conn_poll), the I/O thread reads no more than it has handled:
// woken by a frame, it leaves the socket parked for the waiter to claim
// instead of reading it, and the waiter's poll hands up that frame and
// the next.  Without the waiter it reads as before.
static void test_app_wait(void **state)
{
	(void)state;
	pair t;
	tpost tp;
	park_pair_up(&t, &tp);

	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 3, "w1", "abc", 3, 0, NULL));
	wait_frames(&t.b, 1);
	assert_false(pthread_equal(t.b.frames[0].reader, pthread_self()));

	atomic_fetch_add(&t.cb->rx.app_wait, 1); // as a waiting poll does
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 3, "w2", "abc", 3, 0, NULL));
	assert_true(wait_parked(&t));
	assert_int_equal(frames_of(&t), 1);
	atomic_fetch_sub(&t.cb->rx.app_wait, 1);
	poll_for(&t, &tp, 3, "w3");
	assert_string_equal(t.b.frames[1].key, "w2");
	assert_true(pthread_equal(t.b.frames[1].reader, pthread_self()));
	assert_true(pthread_equal(t.b.frames[2].reader, pthread_self()));

	park_pair_down(&t, &tp);
}

// A park that its timer ends (tw__pfd_park_fired) while the application
// took a message since the I/O thread last looked goes on, unread: the
// application reads for itself once it finds nothing more.  The next
// firing, with nothing taken meanwhile, reads.  A regression here shows
// as the first firing handing up the frame.  The park period is an hour:
// only the test's own firings end a park.
static void test_park_app_taking(void **state)
{
	(void)state;
	pair t;
	tpost tp;
	park_pair_up(&t, &tp);

	poll_for(&t, &tp, 1, "t1"); // read by the application: left parked
	TW_PASS(send1(t.ca, TW_TCP_F_DATA, 3, "t2", "abc", 3, 0, NULL));
	struct pollfd pfd = { .fd = t.cb->fd, .events = POLLIN };
	assert_int_equal(poll(&pfd, 1, 10000), 1); // t2 waits in the socket

	tw__tcp_conn_note_taken(t.cb);
	tw__pfd_park_fired(t.cb->pfd);
	assert_int_equal(frames_of(&t), 1);
	assert_false(atomic_load(&t.cb->rx.app_took));
	assert_true(tw__pfd_unpark(t.cb->pfd)); // parked again
	assert_true(tw__pfd_park(t.cb->pfd));

	tw__pfd_park_fired(t.cb->pfd); // nothing taken since: it reads
	assert_int_equal(frames_of(&t), 2);
	assert_string_equal(t.b.frames[1].key, "t2");
	assert_true(pthread_equal(t.b.frames[1].reader, pthread_self()));

	park_pair_down(&t, &tp);
}

// --- deferred writes ---------------------------------------------------------

// The frames of the writer that wait for a flush (see defer in
// tcp_writer.c).
static bool tx_waiting(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx.mtx);
	bool w = c->tx.out < c->tx.end
	    && atomic_load_explicit(&c->tx.deferred, memory_order_relaxed);
	pthread_mutex_unlock(&c->tx.mtx);
	return w;
}

static bool never(void *arg)
{
	(void)arg;
	return false;
}

// Sends `count` one-byte frames keyed d:<n>, n counting on from *n.
static void send_small(tcp_conn *c, int *n, int count)
{
	for (int i = 0; i < count; i++, (*n)++) {
		char key[16];
		snprintf(key, sizeof(key), "d:%d", *n);
		TW_PASS(send1(c, TW_TCP_F_DATA, 1, key, "x", 1, 0, NULL));
	}
}

// Small frames that follow each other closely wait for a flush that takes
// them along in one write, and nothing strands them: a poll or a sleep on
// the connection (a sender waiting for the answer) flushes at once, 64 KiB
// of them are written by their sender, and the flush timer writes those of
// a sender that stopped.  With a flush timer an hour away, only the first
// three can have sent what arrives.
static void test_defer(void **state)
{
	(void)state;
	pair t;
	pair_up(&t);
	int64_t hour = INT64_C(3600) * 1000000000;
	tw__tcp_writer_set_defer(INT64_MAX / 2, hour); // every one waits
	int n = 0;
	send_small(t.ca, &n, 3);
	assert_true(tx_waiting(t.ca));
	(void)tw__tcp_conn_poll(
	    t.ca, 0, tw__now_ns(), never, NULL, NULL, false);
	wait_frames(&t.b, n);
	assert_false(tx_waiting(t.ca));

	send_small(t.ca, &n, 3);
	assert_true(tx_waiting(t.ca));
	tw__tcp_conn_sleep_begin(t.ca);
	tw__tcp_conn_sleep_end(t.ca);
	wait_frames(&t.b, n);

	unsigned char *big = calloc(1, 16384);
	for (int i = 0; i < 4; i++, n++) {
		assert_true(i == 0 || tx_waiting(t.ca));
		TW_PASS(
		    send1(t.ca, TW_TCP_F_DATA, 1, "big", big, 16384, 0, NULL));
	}
	wait_frames(&t.b, n);
	free(big);

	tw__tcp_writer_set_defer(INT64_MAX / 2, 1000000); // a 1 ms timer
	send_small(t.ca, &n, 3);
	wait_frames(&t.b, n);
	assert_false(tx_waiting(t.ca));
	for (int i = 0; i < n; i++)
		assert_int_equal(
		    t.b.frames[i].len, i >= 6 && i < 10 ? 16384 : 1);
	tw__tcp_writer_set_defer(0, 0);
	pair_down(&t);
}

// The flush timers that fired before the frame now sent was deferred.
static _Atomic uint64_t runs_before;

// Holds the deferring sender, once its flush timer is set, until the
// timer fired: its I/O thread then looks at the writer while the sender
// is still at it.
static void armed_hook(void)
{
	int64_t until = deadline_in(10000);
	while (
	    atomic_load(&tw__tcp_flush_timer_runs) == atomic_load(&runs_before)
	    && tw__now_ns() < until)
		sched_yield();
}

// A flush timer that fires before its sender went on (a sender preempted
// there, or a timer due at once) still finds and writes the frame it was
// set for.  With the flag set after the timer, and looked at by the timer
// without the lock, its frame waited for the next write, here none.
static void test_defer_timer_first(void **state)
{
	(void)state;
	pair t;
	pair_up(&t);
	tw__tcp_writer_set_defer(INT64_MAX / 2, 1); // due at once
	atomic_store(&tw__tcp_defer_armed_hook, armed_hook);
	for (int n = 0; n < 20;) {
		uint64_t runs = atomic_load(&tw__tcp_flush_timer_runs);
		atomic_store(&runs_before, runs);
		send_small(t.ca, &n, 1);
		assert_true(atomic_load(&tw__tcp_flush_timer_runs) > runs);
		wait_frames(&t.b, n);
	}
	atomic_store(&tw__tcp_defer_armed_hook, NULL);
	tw__tcp_writer_set_defer(0, 0);
	pair_down(&t);
}

// Without a descriptor for a flush timer, the I/O thread writes a stream's
// frames, as when there was no deferral.
static void test_defer_no_timer(void **state)
{
	(void)state;
	pair t;
	pair_up(&t);
	struct rlimit old;
	tw_test_fd_squeeze(0, &old);
	tw__tcp_writer_set_defer(INT64_MAX / 2, 0);
	int n = 0;
	send_small(t.ca, &n, 5);
	assert_false(tx_waiting(t.ca));
	wait_frames(&t.b, n);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
	tw__tcp_writer_set_defer(0, 0);
	pair_down(&t);
}

// Lent payloads that had to be copied (tw__tcp_conn_reclaim), and those
// not yet confirmed.
static uint64_t lend_copies(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx.mtx);
	uint64_t n = c->tx.lend_copies;
	pthread_mutex_unlock(&c->tx.mtx);
	return n;
}

static uint64_t lent_count(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx.mtx);
	uint64_t n = c->tx.lent_tail - c->tx.lent_head;
	pthread_mutex_unlock(&c->tx.mtx);
	return n;
}

// --- resumes --------------------------------------------------------------------

#define RS_FRAMES 3000

static size_t rs_len(uint64_t i)
{
	static const size_t lens[]
	    = { 0, 10, 100, 5000, 70000, TW_TCP_FRAME_MAX };
	return lens[i % (sizeof(lens) / sizeof(lens[0]))];
}

// A receiver that checks the stream: frame i carries slot i and the bytes
// of tw_test_fill(i).
typedef struct rs_owner {
	pthread_mutex_t mtx;
	pthread_cond_t cv;
	uint64_t next; // the slot expected next
	int downs, failed;
	int fail_status;
	char err[160];
	unsigned char *cur; // a long frame being read
} rs_owner;

static void rs_check(rs_owner *o, const tw__tcp_hdr *h, const void *data)
{
	size_t len = rs_len(h->slot);
	bool same = h->len == len && tw_test_check(data, len, h->slot, 1, 2);
	pthread_mutex_lock(&o->mtx);
	if (o->err[0] == '\0' && h->slot != o->next)
		snprintf(o->err, sizeof(o->err), "frame %u after %llu",
		    (unsigned)h->slot, (unsigned long long)o->next - 1);
	else if (o->err[0] == '\0' && !same)
		snprintf(o->err, sizeof(o->err), "frame %u: wrong bytes",
		    (unsigned)h->slot);
	o->next++;
	pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mtx);
}

static int rs_frame(
    void *arg, tcp_conn *c, const tw__tcp_hdr *h, const unsigned char *p)
{
	(void)c;
	if (h->type == TW_TCP_F_DATA)
		rs_check(arg, h, p);
	return TW_OK;
}

static int rs_begin(void *arg, tcp_conn *c, const tw__tcp_hdr *h,
    const unsigned char *head, unsigned char **dst, void **cookie)
{
	(void)c;
	rs_owner *o = arg;
	o->cur = malloc((size_t)h->len);
	memcpy(o->cur, head, TCP_CONN_HEAD);
	*dst = o->cur + TCP_CONN_HEAD;
	*cookie = o->cur;
	return TW_OK;
}

static int rs_end(
    void *arg, tcp_conn *c, const tw__tcp_hdr *h, void *cookie, bool ok)
{
	(void)c;
	rs_owner *o = arg;
	if (ok)
		rs_check(o, h, cookie);
	free(cookie); // not ok: the frame comes again after the resume
	o->cur = NULL;
	return TW_OK;
}

static void rs_failed(void *arg, tcp_conn *c, int status)
{
	(void)c;
	rs_owner *o = arg;
	pthread_mutex_lock(&o->mtx);
	o->failed++;
	o->fail_status = status;
	pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mtx);
}

static void rs_down(void *arg, tcp_conn *c)
{
	(void)c;
	rs_owner *o = arg;
	pthread_mutex_lock(&o->mtx);
	o->downs++;
	pthread_cond_broadcast(&o->cv);
	pthread_mutex_unlock(&o->mtx);
}

static const tcp_conn_ops rs_ops = {
	.size = sizeof(tcp_conn_ops),
	.rx_frame = rs_frame,
	.rx_begin = rs_begin,
	.rx_end = rs_end,
	.failed = rs_failed,
	.down = rs_down,
};

static tcp_conn *rs_make(
    tw__poller *p, rs_owner *o, int fd, int64_t down_limit_ms)
{
	memset(o, 0, sizeof(*o));
	pthread_mutex_init(&o->mtx, NULL);
	tw__cond_init(&o->cv);
	tcp_conn_cfg cfg = { .fd = fd,
		.poller = p,
		.ops = &rs_ops,
		.owner = o,
		.who = "test peer",
		.down_limit_ms = down_limit_ms };
	tcp_conn *c;
	TW_PASS(tw__tcp_conn_new(&cfg, &c));
	tw__tcp_conn_start(c);
	return c;
}

static void rs_fini(rs_owner *o)
{
	pthread_cond_destroy(&o->cv);
	pthread_mutex_destroy(&o->mtx);
}

// Waits until `field` of o reaches n; returns it.
static int rs_wait(rs_owner *o, const int *field, int n)
{
	int64_t dl = deadline_in(10000);
	pthread_mutex_lock(&o->mtx);
	while (*field < n
	    && tw__cond_wait_until(&o->cv, &o->mtx, dl) != ETIMEDOUT)
		;
	int got = *field;
	pthread_mutex_unlock(&o->mtx);
	return got;
}

static uint64_t rs_next(rs_owner *o)
{
	pthread_mutex_lock(&o->mtx);
	uint64_t n = o->next;
	pthread_mutex_unlock(&o->mtx);
	return n;
}

typedef struct rs_sender {
	tcp_conn *c;
	bool lend; // long frames lent, their memory scribbled on once back
	int status;
	uint64_t sent;
	uint64_t lent;
} rs_sender;

static void *rs_send_main(void *arg)
{
	rs_sender *s = arg;
	unsigned char *buf = malloc(TW_TCP_FRAME_MAX);
	for (uint64_t i = 0; i < RS_FRAMES && s->status == TW_OK; i++) {
		size_t len = rs_len(i);
		tw_test_fill(buf, len, (uint32_t)i, 1, 2);
		struct iovec v = { buf, len };
		bool lent = false;
		uint64_t seq = 0;
		if (s->lend)
			s->status = tw__tcp_conn_send_lent(s->c, TW_TCP_F_DATA,
			    (uint32_t)i, "k", &v, len > 0 ? 1 : 0, s, &lent,
			    &seq);
		else
			s->status = tw__tcp_conn_send(s->c, TW_TCP_F_DATA,
			    (uint32_t)i, "k", &v, len > 0 ? 1 : 0, 0,
			    deadline_in(20000), NULL, NULL);
		if (lent) {
			tw__tcp_conn_reclaim(s->c, s, seq);
			memset(buf, 0xee, len);
			s->lent++;
		}
		s->sent = i + 1;
	}
	free(buf);
	return NULL;
}

// A poller and two connected ends that may be down for 10 s.
static void rs_up(
    tw__poller **p, rs_owner *oa, tcp_conn **a, rs_owner *ob, tcp_conn **b)
{
	TW_PASS(tw__poller_new(p));
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	*a = rs_make(*p, oa, sv[0], 10000);
	*b = rs_make(*p, ob, sv[1], 10000);
}

// Waits until ob has checked the stream's frames up to `at` (or the
// whole stream); returns how far it got.
static uint64_t rs_wait_next(rs_owner *o, uint64_t at)
{
	int64_t dl = deadline_in(10000);
	pthread_mutex_lock(&o->mtx);
	while (o->next < at && o->next < RS_FRAMES && o->err[0] == '\0'
	    && tw__cond_wait_until(&o->cv, &o->mtx, dl) != ETIMEDOUT)
		;
	uint64_t n = o->next;
	pthread_mutex_unlock(&o->mtx);
	return n;
}

// Cuts b's socket (the `cut`th time), waits until both ends are down and
// resumes both on a new socket pair.
static void rs_cut(
    tcp_conn *a, rs_owner *oa, tcp_conn *b, rs_owner *ob, int cut)
{
	pthread_mutex_lock(&b->tx.mtx);
	int bfd = b->fd;
	pthread_mutex_unlock(&b->tx.mtx);
	assert_int_equal(shutdown(bfd, SHUT_RDWR), 0);
	assert_int_equal(rs_wait(ob, &ob->downs, cut + 1), cut + 1);
	assert_int_equal(rs_wait(oa, &oa->downs, cut + 1), cut + 1);
	assert_true(tw__tcp_conn_is_down(a) && tw__tcp_conn_is_down(b));
	bool ok_a, ok_b;
	uint64_t ra = tw__tcp_conn_suspend(a, &ok_a);
	uint64_t rb = tw__tcp_conn_suspend(b, &ok_b);
	assert_true(ok_a && ok_b);
	int nv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, nv), 0);
	TW_PASS(tw__tcp_conn_resume(a, nv[0], NULL, rb));
	TW_PASS(tw__tcp_conn_resume(b, nv[1], NULL, ra));
}

// Ends the pair of rs_up, neither end having failed before: fails both
// and frees everything.
static void rs_teardown(
    tw__poller *p, tcp_conn *a, rs_owner *oa, tcp_conn *b, rs_owner *ob)
{
	assert_int_equal(oa->failed + ob->failed, 0);
	tw__tcp_conn_fail(a, TW_EPEER, NULL);
	tw__tcp_conn_fail(b, TW_EPEER, NULL);
	assert_int_equal(rs_wait(oa, &oa->failed, 1), 1);
	assert_int_equal(rs_wait(ob, &ob->failed, 1), 1);
	tw__tcp_conn_unref(a);
	tw__tcp_conn_unref(b);
	tw__poller_free(p);
	rs_fini(oa);
	rs_fini(ob);
}

// Checks that b got the whole stream, unharmed, with neither end failed;
// then ends the pair.
static void rs_end_check(
    tw__poller *p, tcp_conn *a, rs_owner *oa, tcp_conn *b, rs_owner *ob)
{
	rs_wait_next(ob, RS_FRAMES);
	if (ob->err[0] != '\0')
		fail_msg("%s", ob->err);
	assert_int_equal(rs_next(ob), RS_FRAMES);
	rs_teardown(p, a, oa, b, ob);
}

// The stream of test_resume_stream, cut as often while it flows; with
// `lend`, its long frames are lent (and the memory scribbled on once the
// sender has it back): a frame that the peer had not confirmed when the
// socket was cut goes again as it was sent.
static void resume_stream(bool lend)
{
	tw__poller *p;
	rs_owner oa, ob;
	tcp_conn *a, *b;
	rs_up(&p, &oa, &a, &ob, &b);
	rs_sender s = { .c = a, .lend = lend };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, rs_send_main, &s), 0);
	enum { CUTS = 6 };
	int cut = 0;
	for (; cut < CUTS; cut++) {
		// Wait for the stream to move on, then cut its socket.
		if (rs_wait_next(&ob, rs_next(&ob) + 100) >= RS_FRAMES)
			break;
		rs_cut(a, &oa, b, &ob, cut);
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	TW_PASS(s.status);
	// The stream was cut while it flowed, every time.
	assert_int_equal(cut, CUTS);
	if (lend)
		assert_true(s.lent > 0);
	rs_end_check(p, a, &oa, b, &ob);
}

static void test_resume_stream(void **state)
{
	(void)state;
	resume_stream(false);
}

static void test_resume_lent(void **state)
{
	(void)state;
	resume_stream(true);
}

// Sends frames [from, to) of the stream's check on a, as rs_send_main
// does; returns the last one's sequence number.
static uint64_t rs_send_frames(tcp_conn *a, uint32_t from, uint32_t to)
{
	unsigned char *buf = malloc(TW_TCP_FRAME_MAX);
	assert_non_null(buf);
	uint64_t seq = 0;
	for (uint32_t i = from; i < to; i++) {
		size_t len = rs_len(i);
		tw_test_fill(buf, len, i, 1, 2);
		TW_PASS(send1(a, TW_TCP_F_DATA, i, "k", buf, len, 0, &seq));
	}
	free(buf);
	return seq;
}

static size_t ring_cap(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx.mtx);
	size_t cap = c->tx.cap;
	pthread_mutex_unlock(&c->tx.mtx);
	return cap;
}

typedef struct trimmer {
	tcp_conn *c;
	rs_owner *o; // the receiving end: one trim per frame it checks
	_Atomic bool stop;
	size_t freed;
	unsigned trims; // calls that gave something back
} trimmer;

// Trims once each time the receiver checks another frame: often enough
// to fall between the stream's writes, growth and rewrites, and no busy
// loop that takes the CPU they need (a sanitizer build on two CPUs ran
// the test ten times slower with one).
static void *trim_main(void *arg)
{
	trimmer *t = arg;
	uint64_t seen = 0;
	while (!atomic_load(&t->stop)) {
		uint64_t n = rs_wait_next(t->o, seen + 1);
		if (n == seen) {
			// The whole stream is checked: trim until told to stop.
			sched_yield();
		}
		seen = n;
		size_t got = tw__tcp_conn_trim(t->c);
		t->freed += got;
		t->trims += got > 0;
	}
	return NULL;
}

// A trim keeps the frames the peer has not confirmed and gives back the
// rest, down to TX_RING_MIN; trims that run beside a stream cut and
// resumed twice (its writes, growth and rewrites from the ring) lose and
// change no byte of it.
static void test_trim(void **state)
{
	(void)state;
	tw__poller *p;
	rs_owner oa, ob;
	tcp_conn *a, *b;
	rs_up(&p, &oa, &a, &ob, &b);
	assert_int_equal(ring_cap(a), TX_RING_MIN);
	assert_int_equal(tw__tcp_conn_trim(a), 0);

	// Frames 0 to 23 of the stream's check (1.3 MiB, four of them
	// TW_TCP_FRAME_MAX long), then 24 to 29.  b reads them and confirms
	// none (it sends nothing, and confirms on its own only every
	// TX_RETAIN_MAX / 4), unless asked: the ring grows to hold the first
	// 24, and once b confirmed them at a's asking, holds the last six.
	uint64_t seq = rs_send_frames(a, 0, 24);
	TW_PASS(tw__tcp_conn_wait_ack(a, seq, deadline_in(10000), NULL));
	seq = rs_send_frames(a, 24, 30);
	assert_int_equal(rs_wait_next(&ob, 30), 30);
	size_t grown = ring_cap(a);
	assert_true(grown >= 4 * (size_t)TW_TCP_FRAME_MAX);
	pthread_mutex_lock(&a->tx.mtx);
	uint64_t unconfirmed = a->tx.end - a->tx.base;
	pthread_mutex_unlock(&a->tx.mtx);
	assert_true(unconfirmed > TW_TCP_FRAME_MAX
	    && unconfirmed < 2 * TW_TCP_FRAME_MAX);
	size_t need = TX_RING_MIN;
	while (need < unconfirmed)
		need *= 2;
	assert_int_equal(tw__tcp_conn_trim(a), grown - need);
	assert_int_equal(ring_cap(a), need);
	// Confirmed too, the last six go: the ring is back to its first
	// size, and a trim then has nothing to give.
	TW_PASS(tw__tcp_conn_wait_ack(a, seq, deadline_in(10000), NULL));
	assert_int_equal(tw__tcp_conn_trim(a), need - TX_RING_MIN);
	assert_int_equal(ring_cap(a), TX_RING_MIN);
	assert_int_equal(tw__tcp_conn_trim(a), 0);
	if (ob.err[0] != '\0')
		fail_msg("%s", ob.err);

	// The stream's check starts over at frame 0 of its own.
	pthread_mutex_lock(&ob.mtx);
	ob.next = 0;
	pthread_mutex_unlock(&ob.mtx);
	trimmer tr = { .c = a, .o = &ob };
	rs_sender s = { .c = a };
	pthread_t th, tt;
	assert_int_equal(pthread_create(&tt, NULL, trim_main, &tr), 0);
	assert_int_equal(pthread_create(&th, NULL, rs_send_main, &s), 0);
	for (int cut = 0; cut < 2; cut++) {
		rs_wait_next(&ob, RS_FRAMES / 3 * (uint64_t)(cut + 1));
		rs_cut(a, &oa, b, &ob, cut);
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	atomic_store(&tr.stop, true);
	assert_int_equal(pthread_join(tt, NULL), 0);
	TW_PASS(s.status);
	rs_end_check(p, a, &oa, b, &ob);
	// The trims beside the stream gave memory back.
	assert_true(tr.trims > 0 && tr.freed > 0);
}

typedef struct trim_call {
	tcp_conn *c;
	size_t freed;
	_Atomic bool done;
} trim_call;

static void *trim_call_main(void *arg)
{
	trim_call *t = arg;
	t->freed = tw__tcp_conn_trim(t->c);
	atomic_store(&t->done, true);
	return NULL;
}

// A trim while a write is in progress moves the ring, but returns only
// once the writer let go of the old one: what it counts as given back is
// gone by then.  The writer role is held here, as a write that has not
// returned would hold it.
static void test_trim_waits_for_writer(void **state)
{
	(void)state;
	tw__poller *p;
	rs_owner oa, ob;
	tcp_conn *a, *b;
	rs_up(&p, &oa, &a, &ob, &b);
	// Frames 0 to 5 of the stream's check (one TW_TCP_FRAME_MAX long)
	// grow the ring; confirmed, the ring holds nothing.
	uint64_t seq = rs_send_frames(a, 0, 6);
	TW_PASS(tw__tcp_conn_wait_ack(a, seq, deadline_in(10000), NULL));
	size_t grown = ring_cap(a);
	assert_true(grown > TX_RING_MIN);

	pthread_mutex_lock(&a->tx.mtx);
	assert_false(a->tx.writing);
	a->tx.writing = true;
	pthread_mutex_unlock(&a->tx.mtx);
	trim_call t = { .c = a };
	pthread_t th;
	assert_int_equal(pthread_create(&th, NULL, trim_call_main, &t), 0);
	// The trim moves the ring and waits for the old one to go; one that
	// returned with the old ring still there fails here.
	int64_t dl = deadline_in(10000);
	bool waiting = false;
	while (!waiting && !atomic_load(&t.done) && tw__now_ns() < dl) {
		pthread_mutex_lock(&a->tx.mtx);
		waiting = a->tx.stale_waits > 0;
		pthread_mutex_unlock(&a->tx.mtx);
		if (!waiting)
			sched_yield();
	}
	pthread_mutex_lock(&a->tx.mtx);
	bool stale = a->tx.stale != NULL;
	size_t cap = a->tx.cap;
	pthread_mutex_unlock(&a->tx.mtx);
	if (!waiting) {
		if (atomic_load(&t.done))
			assert_int_equal(pthread_join(th, NULL), 0);
		fail_msg("the trim %s, the old ring %s",
		    atomic_load(&t.done) ? "returned" : "never waited",
		    stale ? "still kept" : "gone");
	}
	assert_true(stale);
	assert_int_equal(cap, TX_RING_MIN);
	assert_false(atomic_load(&t.done));
	// The write returns.
	pthread_mutex_lock(&a->tx.mtx);
	a->tx.writing = false;
	tw__tcp_writer_drop_stale(&a->tx);
	pthread_mutex_unlock(&a->tx.mtx);
	tw__tcp_writer_kick(a); // whatever was appended meanwhile
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(t.freed, grown - TX_RING_MIN);
	assert_int_equal(rs_wait_next(&ob, 6), 6);
	if (ob.err[0] != '\0')
		fail_msg("%s", ob.err);
	rs_teardown(p, a, &oa, b, &ob);
}

// Two ends of a TCP connection on loopback (heartbeats look at TCP_INFO,
// which a socketpair lacks).
static void tcp_pair(int sv[2])
{
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = { .sin_family = AF_INET,
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	assert_int_equal(bind(l, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&sa, &len), 0);
	sv[0] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(
	    connect(sv[0], (struct sockaddr *)&sa, sizeof(sa)), 0);
	sv[1] = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(sv[1] >= 0);
	close(l);
}

// pair_up over TCP, with heartbeats of `heartbeat_ms`.
static void tcp_pair_up(pair *t, int64_t heartbeat_ms)
{
	int sv[2];
	tcp_pair(sv);
	TW_PASS(tw__poller_new(&t->p));
	owner_init(&t->a, t->p);
	owner_init(&t->b, t->p);
	t->ca = make(&t->a, sv[0], heartbeat_ms);
	t->cb = make(&t->b, sv[1], heartbeat_ms);
}

// With heartbeats, a ring that a burst grew goes back to its first size
// on its own once the connection idles: the look that finds it idle trims
// it, and the PING of an idle connection has the peer confirm the rest.
static void test_trim_idle(void **state)
{
	(void)state;
	pair t;
	// Heartbeats of 200 ms: a peer starved for 3 H would be dropped.
	tcp_pair_up(&t, tw_test_scale_ms(200));
	unsigned char *big = calloc(1, TW_TCP_FRAME_MAX);
	assert_non_null(big);
	TW_PASS(send1(
	    t.ca, TW_TCP_F_DATA, 1, "big", big, TW_TCP_FRAME_MAX, 0, NULL));
	free(big);
	assert_true(ring_cap(t.ca) > TX_RING_MIN);
	wait_frames(&t.b, 1);
	int64_t dl = deadline_in(10000);
	while (ring_cap(t.ca) > TX_RING_MIN && tw__now_ns() < dl) {
		struct timespec ms = { 0, 1000000 };
		nanosleep(&ms, NULL); // a look of the I/O thread, polled for
	}
	assert_int_equal(ring_cap(t.ca), TX_RING_MIN);
	pair_down(&t);
}

// The heartbeat timer, not the reader, notes when bytes last came (it sees
// the count move between its ticks): a side that only receives a steady
// stream never finds it quiet and never PINGs (the sender would see the
// PING); once the stream stops it does, within a few ticks.
static void test_heartbeat_rx_stamp(void **state)
{
	(void)state;
	pair t;
	int64_t h = tw_test_scale_ms(300);
	tcp_pair_up(&t, h);
	// A frame every 1/40 H for two H: b's timer ticks every H/4 and
	// would PING after H/3 without news.
	int n = 80;
	for (int i = 0; i < n; i++) {
		TW_PASS(send1(t.ca, TW_TCP_F_DATA, 1, "k", "x", 1, 0, NULL));
		struct timespec gap = { 0, (long)(h * 1000000 / 40) };
		nanosleep(&gap, NULL);
	}
	wait_frames(&t.b, n);
	assert_false(atomic_load(&t.ca->rx.pinged));
	// Quiet now: b asks within a few ticks.
	int64_t dl = deadline_in(10000);
	while (!atomic_load(&t.ca->rx.pinged) && tw__now_ns() < dl) {
		struct timespec ms = { 0, 1000000 };
		nanosleep(&ms, NULL); // the PING's arrival, polled for
	}
	assert_true(atomic_load(&t.ca->rx.pinged));
	pair_down(&t);
}

// --- lending -------------------------------------------------------------------

enum { LEND_LEN = 80 << 10 }; // lent (>= 64 KiB), and fits a socketpair

// Sends a CHUNK frame whose payload (a 4-byte prefix, then buf) may be
// lent; returns whether it was.
static bool send_lent(tcp_conn *c, uint32_t prefix, const unsigned char *buf,
    size_t len, const void *lender, uint64_t *seq)
{
	struct iovec v[2]
	    = { { &prefix, sizeof(prefix) }, { (void *)buf, len } };
	bool lent = true;
	TW_PASS(tw__tcp_conn_send_lent(
	    c, TW_TCP_F_CHUNK, 1, NULL, v, 2, lender, &lent, seq));
	return lent;
}

// A peer that confirms in time: the long payload is written from the
// sender's memory and never copied, the peer gets it whole, and once the
// memory is reclaimed the connection holds no loan.  Short payloads and
// frames without a lender are copied.
static void test_lend(void **state)
{
	(void)state;
	pair t;
	pair_up(&t);
	// The peer always answers in the end: no copy however slow it is.
	tw__tcp_writer_set_lend_wait(tw_test_scale_ms(60000) * 1000000);
	unsigned char *buf = malloc(LEND_LEN);
	assert_non_null(buf);
	tw_test_fill(buf, LEND_LEN, 1, 2, 3);
	int lender;
	uint64_t seq = 0;
	assert_true(send_lent(t.ca, 7, buf, LEND_LEN, &lender, &seq));
	assert_int_equal(lent_count(t.ca), 1);
	tw__tcp_conn_reclaim(t.ca, &lender, seq);
	assert_true(atomic_load(&t.ca->tx.released_pub) >= seq);
	assert_int_equal(lent_count(t.ca), 0);
	assert_int_equal(lend_copies(t.ca), 0);
	memset(buf, 0xee, LEND_LEN); // the caller's again
	// Too short to lend, and no lender: copied.
	assert_false(send_lent(t.ca, 8, buf, 1000, &lender, &seq));
	struct iovec v[2] = { { &seq, 4 }, { buf, LEND_LEN } };
	bool lent = true;
	TW_PASS(tw__tcp_conn_send_lent(
	    t.ca, TW_TCP_F_CHUNK, 1, NULL, v, 2, NULL, &lent, NULL));
	assert_false(lent);
	assert_int_equal(lent_count(t.ca), 0);
	wait_frames(&t.b, 3);
	frame *f = &t.b.frames[0];
	assert_int_equal(f->type, TW_TCP_F_CHUNK);
	assert_int_equal(f->len, 4 + LEND_LEN);
	uint32_t prefix;
	memcpy(&prefix, f->data, 4);
	assert_int_equal(prefix, 7);
	assert_true(tw_test_check(f->data + 4, LEND_LEN, 1, 2, 3));
	assert_int_equal(t.b.frames[1].len, 4 + 1000);
	assert_int_equal(t.b.frames[2].len, 4 + LEND_LEN);
	tw__tcp_writer_set_lend_wait(0);
	free(buf);
	pair_down(&t);
}

static void read_full(int fd, void *buf, size_t n)
{
	unsigned char *p = buf;
	while (n > 0) {
		ssize_t r = recv(fd, p, n, 0);
		assert_true(r > 0);
		p += r;
		n -= (size_t)r;
	}
}

// A peer that does not confirm in time (it reads nothing): the lender
// copies the payload into the ring before it takes its memory back, and
// the connection copies its next long payloads rather than lend them.
// The copy is what a resume sends again: after the sender reused its
// memory, the connection is resumed from the start on a new socket, and
// the frame arrives as it was sent.
static void test_lend_copy(void **state)
{
	(void)state;
	tw__poller *p;
	TW_PASS(tw__poller_new(&p));
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	rs_owner oa;
	tcp_conn *a = rs_make(p, &oa, sv[0], 10000);
	tw__tcp_writer_set_lend_wait(1000000); // 1 ms
	unsigned char *buf = malloc(LEND_LEN);
	assert_non_null(buf);
	tw_test_fill(buf, LEND_LEN, 4, 5, 6);
	int lender;
	uint64_t seq = 0;
	assert_true(send_lent(a, 9, buf, LEND_LEN, &lender, &seq));
	assert_int_equal(seq, 1);
	tw__tcp_conn_reclaim(a, &lender, seq);
	assert_int_equal(lend_copies(a), 1);
	assert_int_equal(lent_count(a), 1); // unconfirmed, in the ring now
	memset(buf, 0xee, LEND_LEN);
	assert_false(send_lent(a, 10, buf, LEND_LEN, &lender, &seq));
	// Resumed from the start: frame 1 comes again, from the ring.
	bool ok = false;
	(void)tw__tcp_conn_suspend(a, &ok);
	assert_true(ok);
	close(sv[1]);
	int nv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, nv), 0);
	struct timeval tv = { .tv_sec = tw_test_scale_ms(10000) / 1000 };
	assert_int_equal(
	    setsockopt(nv[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
	TW_PASS(tw__tcp_conn_resume(a, nv[0], NULL, 0));
	unsigned char hdr[TW_TCP_HDR_LEN];
	read_full(nv[1], hdr, sizeof(hdr));
	tw__tcp_hdr h;
	const char *why = NULL;
	assert_int_equal(
	    tw__tcp_hdr_decode(hdr, sizeof(hdr), TW_TCP_FRAME_MAX, &h, &why),
	    TW_TCP_HDR_LEN);
	assert_int_equal(h.type, TW_TCP_F_CHUNK);
	assert_int_equal(h.seq, 1);
	assert_int_equal(h.len, 4 + LEND_LEN);
	unsigned char *got = malloc(4 + LEND_LEN);
	assert_non_null(got);
	read_full(nv[1], got, 4 + LEND_LEN);
	uint32_t prefix;
	memcpy(&prefix, got, 4);
	assert_int_equal(prefix, 9);
	assert_true(tw_test_check(got + 4, LEND_LEN, 4, 5, 6));
	free(got);
	free(buf);
	tw__tcp_writer_set_lend_wait(0);
	tw__tcp_conn_fail(a, TW_EPEER, NULL);
	assert_int_equal(rs_wait(&oa, &oa.failed, 1), 1);
	close(nv[1]);
	tw__tcp_conn_unref(a);
	tw__poller_free(p);
	rs_fini(&oa);
}

// Down for longer than its limit: TW_EPEER.  A resume then, or one from a
// frame never sent, is refused.
static void test_resume_limits(void **state)
{
	(void)state;
	tw__poller *p;
	TW_PASS(tw__poller_new(&p));
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	rs_owner oa, ob;
	tcp_conn *a = rs_make(p, &oa, sv[0], 200);
	tcp_conn *b = rs_make(p, &ob, sv[1], 10000);
	pthread_mutex_lock(&b->tx.mtx);
	int bfd = b->fd;
	pthread_mutex_unlock(&b->tx.mtx);
	assert_int_equal(shutdown(bfd, SHUT_RDWR), 0);
	assert_int_equal(rs_wait(&oa, &oa.downs, 1), 1);
	assert_int_equal(rs_wait(&oa, &oa.failed, 1), 1);
	assert_int_equal(oa.fail_status, TW_EPEER);
	int nv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, nv), 0);
	TW_FAIL(tw__tcp_conn_resume(a, nv[0], NULL, 0), TW_EPEER);
	// b is down too; the peer claims a frame b never sent.
	assert_int_equal(rs_wait(&ob, &ob.downs, 1), 1);
	TW_FAIL(tw__tcp_conn_resume(b, nv[1], NULL, 5), TW_EPROTO);
	assert_int_equal(rs_wait(&ob, &ob.failed, 1), 1);
	assert_int_equal(ob.fail_status, TW_EPROTO);
	close(nv[0]);
	close(nv[1]);
	tw__tcp_conn_unref(a);
	tw__tcp_conn_unref(b);
	tw__poller_free(p);
	rs_fini(&oa);
	rs_fini(&ob);
}

typedef struct closer {
	tcp_conn *c;
	int64_t deadline;
	pthread_t t;
} closer;

static void *close_main(void *arg)
{
	closer *k = arg;
	tw__tcp_conn_close(k->c, k->deadline);
	return NULL;
}

// Reads frames by hand until the connection's BYE.
static void read_to_bye(int fd)
{
	for (;;) {
		unsigned char hdr[TW_TCP_HDR_LEN];
		read_full(fd, hdr, sizeof(hdr));
		tw__tcp_hdr h;
		const char *why = NULL;
		assert_int_equal(tw__tcp_hdr_decode(hdr, sizeof(hdr),
		                     TW_TCP_FRAME_MAX, &h, &why),
		    TW_TCP_HDR_LEN);
		assert_int_equal(h.len, 0);
		if (h.type == TW_TCP_F_BYE)
			return;
	}
}

// Closing reads on after the BYE until the peer ends its side: what the
// peer sent meanwhile arrives (its UNBIND, which says which of our
// messages it received, may cross our BYE), and the socket is not closed
// with bytes unread, which would reset the connection and lose for the
// peer our last frames that it had not read yet.  The peer's end of the
// socket is then a clean end (TW_ECLOSED), on a connection that could
// resume too: not a break.  A peer that never answers holds the close up
// to its deadline, not longer.
static void test_close_lingers(void **state)
{
	(void)state;
	raw r;
	raw_up(&r);
	closer k = { .c = r.c, .deadline = deadline_in(10000) };
	assert_int_equal(pthread_create(&k.t, NULL, close_main, &k), 0);
	read_to_bye(r.fd);
	unsigned char buf[TW_TCP_HDR_LEN + 8];
	size_t n = raw_frame(&r, buf, TW_TCP_F_DATA, "late", 1);
	buf[n++] = 'z';
	raw_write(&r, buf, n);
	assert_int_equal(shutdown(r.fd, SHUT_WR), 0);
	assert_int_equal(pthread_join(k.t, NULL), 0);
	wait_failed(&r.o);
	pthread_mutex_lock(&r.o.mtx);
	int got = r.o.n;
	bool late = got == 1 && strcmp(r.o.frames[0].key, "late") == 0;
	pthread_mutex_unlock(&r.o.mtx);
	assert_int_equal(got, 1);
	assert_true(late);
	pthread_mutex_lock(&r.o.mtx);
	int why = r.o.fail_status;
	pthread_mutex_unlock(&r.o.mtx);
	assert_int_equal(why, TW_ECLOSED);
	// Then EOF: the connection ended without a reset.
	assert_int_equal(recv(r.fd, buf, sizeof(buf), 0), 0);
	raw_down(&r);

	// A connection that could resume: the end that answers our BYE is
	// not a break to wait out.
	tw__poller *p;
	TW_PASS(tw__poller_new(&p));
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	rs_owner ro;
	tcp_conn *c = rs_make(p, &ro, sv[0], 10000);
	k = (closer) { .c = c, .deadline = deadline_in(10000) };
	assert_int_equal(pthread_create(&k.t, NULL, close_main, &k), 0);
	read_to_bye(sv[1]);
	assert_int_equal(shutdown(sv[1], SHUT_WR), 0);
	assert_int_equal(pthread_join(k.t, NULL), 0);
	assert_int_equal(rs_wait(&ro, &ro.failed, 1), 1);
	pthread_mutex_lock(&ro.mtx);
	why = ro.fail_status;
	int downs = ro.downs;
	pthread_mutex_unlock(&ro.mtx);
	assert_int_equal(why, TW_ECLOSED);
	assert_int_equal(downs, 0);
	close(sv[1]);
	tw__tcp_conn_unref(c);
	tw__poller_free(p);
	rs_fini(&ro);

	// Silent after the BYE: closed at the deadline.
	raw_up(&r);
	int64_t t0 = tw__now_ns();
	k = (closer) { .c = r.c, .deadline = t0 + 200000000 };
	assert_int_equal(pthread_create(&k.t, NULL, close_main, &k), 0);
	read_to_bye(r.fd);
	assert_int_equal(pthread_join(k.t, NULL), 0);
	assert_true(tw__now_ns() >= k.deadline);
	assert_true(tw__tcp_conn_failed(r.c));
	raw_down(&r);
}

#define T(name) cmocka_unit_test(test_##name)

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		T(framing),
		T(ping_ack),
		T(hold_acks),
		T(fail_deferred),
		T(ping_flood),
		T(garbage_sticky),
		T(bye_eof),
		T(half_frame),
		T(poll),
		T(poll_post),
		T(poll_park),
		T(note_taken),
		T(app_wait),
		T(park_app_taking),
		T(defer),
		T(read_between),
		T(defer_timer_first),
		T(defer_no_timer),
		T(trim),
		T(trim_waits_for_writer),
		T(trim_idle),
		T(heartbeat_rx_stamp),
		T(resume_stream),
		T(resume_lent),
		T(resume_limits),
		T(lend),
		T(lend_copy),
		T(close_lingers),
	};
	size_t count = sizeof(tests) / sizeof(tests[0]);
	if (argc > 1 && tw_test_select(tests, count, "test_", argv[1]) != 0)
		return 1;
	return cmocka_run_group_tests_name("tcp_conn", tests, NULL, NULL);
}
