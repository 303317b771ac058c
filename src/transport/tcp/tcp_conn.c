// A tcp:// connection: its life, its failure, heartbeats, and the reader
// role shared by the I/O thread and polling receivers.  The writer half
// is tcp_writer.c, the reader half tcp_reader.c; tcp_conn.h has the rules
// of the upcalls.
//
// Design notes.
//
// Failure never calls up from where it is found.  A write error found by
// a sender holding its own locks, a heartbeat that expires, a frame that
// cannot be accepted: each only marks the connection failed, shuts the
// socket down (which wakes every thread in a system call on it) and posts
// a task to the I/O thread, which takes the reader role, tells the owner
// about a frame it was given half of, and then calls ops->failed.  So the
// owner's failure handling runs with no lock of anybody held, after every
// frame upcall, exactly once.
//
// Lifetime.  The socket's registration on the poller and the descriptor
// live until the last reference goes, so that arming a failed connection
// is harmless rather than a use of freed memory; a failed connection is
// simply never armed again.
//
// Breaks and resumes.  A connection made with a down limit survives the
// loss of its socket: EOF, a reset, a write error or a silence of 3 H
// takes it down instead of failing it.  Down, nobody reads or writes, the
// reader abandons a frame it was given half of (its owner unclaims it),
// senders keep appending to the ring, and the owner is told (ops->down),
// whose side that dialed connects again.  tw__tcp_conn_resume then swaps
// the new socket in under both roles: the reader goes on after the last
// frame it handled, and the writer writes again, from its ring, every
// frame after the last one the peer says it handled.  Both ends agree on
// those numbers in the resume handshake, so nothing is lost, nothing
// arrives twice, and the order is kept.  A connection down for longer
// than its limit fails with TW_EPEER.  `epoch` counts the sockets, so
// that a late error of a replaced socket is not taken for a new break.
//
// Heartbeats.  With TW_OPT_HEARTBEAT_MS = H the I/O thread looks at the
// connection every H/4.  Silent for H/3, it sends a PING, which the peer
// answers whatever it is doing (its reader never stops, and no frame is
// long).  Without a sign of life for 3 H the peer is declared gone, which
// also finds a half-open connection (a host that died, a cable pulled: no
// FIN, no RST): three periods, so that a peer whose process waits a
// moment for a CPU (an overloaded machine) is not taken for a dead one.  Signs of life are bytes read, and bytes of ours that the
// peer's TCP acknowledged since the last look (TCP_INFO): a peer that
// takes our data is reading, even while its answer waits behind it.  The
// bytes the local socket takes prove nothing (they only fill a buffer),
// and neither do acknowledgements of nothing new (a frozen process's
// kernel still answers window probes).
//
// Memory.  A send ring that a burst grew gives its memory back once
// nothing was written for a whole look (H/4): the look trims it
// (tw__tcp_conn_trim); the peer's answer to a PING confirms what it holds,
// so an idle ring is back to its first size within H.

#include <errno.h>
#include <stdatomic.h>
#include <stddef.h>
#include <inttypes.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <linux/tcp.h>
#include <netinet/in.h>

#include "core/clock.h"
#include "core/log.h"
#include "core/sync.h"
#include "transport/tcp/tcp_conn_int.h"
#include "transport/tcp/tcp_sock.h"

// How long the I/O thread reads one connection before it lets the others
// (and the timers) have their turn: a few milliseconds, far below any
// heartbeat period, and long enough that a streaming connection is not
// handed back and forth.
#define IO_BUDGET_NS 5000000
// How often a waiter for an ack looks at its deadline and cancel flag, and
// how often it asks again.
#define ACK_SLICE_NS 10000000
#define ACK_REPING_NS 100000000
// A receive that posted its memory and waits as the reader sleeps in
// slices of this long (tw__tcp_conn_poll).
#define POLL_SLICE_MS 1
// Passes a poll watches another thread's reading before it yields its CPU
// between passes.
#define POLL_WATCH_PASSES 16
// What a sender between two frames of a long message spends reading at
// most (tw__tcp_conn_read_between).
#define READ_BETWEEN_NS 20000

static bool failed(const tcp_conn *c)
{
	return atomic_load_explicit(&c->failed, memory_order_acquire) != 0;
}

bool tw__tcp_conn_failed(const tcp_conn *c)
{
	return failed(c);
}

bool tw__tcp_conn_is_down(const tcp_conn *c)
{
	return atomic_load_explicit(&c->down, memory_order_acquire) != 0;
}

int64_t tw__tcp_conn_down_until(const tcp_conn *c)
{
	return atomic_load_explicit(&c->down_until, memory_order_relaxed);
}

const char *tw__tcp_conn_who(const tcp_conn *c)
{
	return c->who;
}

uint64_t tw__tcp_conn_peer_ack(const tcp_conn *c)
{
	return atomic_load_explicit(&c->peer_ack, memory_order_acquire);
}

uint64_t tw__tcp_conn_rx_done(const tcp_conn *c)
{
	return atomic_load_explicit(&c->rx.done, memory_order_acquire);
}

void tw__tcp_conn_ref(tcp_conn *c)
{
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void tw__tcp_conn_unref(tcp_conn *c)
{
	if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
		return;
	if (c->pfd != NULL)
		tw__pfd_fini(c->pfd);
	if (c->tpfd != NULL)
		tw__pfd_fini(c->tpfd);
	if (c->tx.dpfd != NULL)
		tw__pfd_fini(c->tx.dpfd);
	tw__tls_free(c->tls);
	if (c->fd >= 0)
		close(c->fd);
	tw__tcp_writer_fini(&c->tx);
	tw__tcp_reader_fini(&c->rx);
	pthread_cond_destroy(&c->ack_cv);
	pthread_mutex_destroy(&c->ack_mtx);
	free(c);
}

uint64_t tw__tcp_conn_ack_out(const tcp_conn *c)
{
	// The hold is read first: an owner sets it before it lets done pass
	// the frame it holds.
	uint64_t hold
	    = atomic_load_explicit(&c->rx.hold, memory_order_acquire);
	uint64_t done
	    = atomic_load_explicit(&c->rx.done, memory_order_acquire);
	if (hold != UINT64_MAX && hold - 1 < done)
		done = hold - 1;
	return done;
}

bool tw__tcp_conn_hold_acks(tcp_conn *c, uint64_t seq)
{
	uint64_t old
	    = atomic_exchange_explicit(&c->rx.hold, seq, memory_order_acq_rel);
	if (old == UINT64_MAX || (seq != UINT64_MAX && seq <= old))
		return false;
	// The ack moved forward with no frame to carry it.  A peer that
	// waits for it (tw_link_wait_pending) has asked with a PING, whose
	// PONG carried the ack short of the hold: it gets an ACK frame, and
	// the ask stands until no message holds the ack back.  Nobody else
	// needs one, and one per long message would wake the peer's I/O
	// thread once a message.  The PING is looked at after the hold moved:
	// one that comes later is answered past the hold.
	return seq == UINT64_MAX ? atomic_exchange(&c->rx.pinged, false)
	                         : atomic_load(&c->rx.pinged);
}

void tw__tcp_conn_send_ack(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx.mtx);
	c->tx.owe_ack = true;
	pthread_mutex_unlock(&c->tx.mtx);
	tw__tcp_writer_kick(c);
}

void tw__tcp_conn_rx_handled(tcp_conn *c)
{
	atomic_store_explicit(
	    &c->rx.done, c->rx.cur.seq, memory_order_release);
}

tw__tls *tw__tcp_conn_tls(const tcp_conn *c)
{
	return c->tls;
}

int tw__tcp_conn_recv(tcp_conn *c, void *buf, size_t n, size_t *got)
{
	if (c->tls != NULL)
		return tw__tls_recv(c->tls, buf, n, got);
	return tw__tcp_recv(c->fd, buf, n, got);
}

bool tw__tcp_conn_rx_pending(tcp_conn *c)
{
	return c->tls != NULL && tw__tls_pending(c->tls);
}

void tw__tcp_conn_arm(tcp_conn *c)
{
	if (!failed(c) && !c->tx.down)
		(void)tw__pfd_arm(
		    c->pfd, TW__POLL_IN | (c->tx.want_out ? TW__POLL_OUT : 0));
}

// tw__tcp_conn_arm, for a caller that does not hold the writer's mutex.
static void arm_unlocked(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx.mtx);
	tw__tcp_conn_arm(c);
	pthread_mutex_unlock(&c->tx.mtx);
}

// --- failing ------------------------------------------------------------------

static void fail_task(void *arg)
{
	tcp_conn *c = arg;
	// The reader role: no frame upcall runs now or later.
	pthread_mutex_lock(&c->rx.mtx);
	tw__tcp_reader_abandon(c);
	pthread_mutex_unlock(&c->rx.mtx);
	c->ops->failed(c->owner, c,
	    atomic_load_explicit(&c->fail_status, memory_order_relaxed));
	tw__tcp_conn_unref(c);
}

void tw__tcp_conn_fail(tcp_conn *c, int status, const char *why)
{
	int zero = 0;
	if (!atomic_compare_exchange_strong(&c->failed, &zero, 1))
		return;
	atomic_store_explicit(&c->fail_status, status, memory_order_relaxed);
	if (why != NULL)
		TW_WARN(
		    "tcp", "closing the connection with %s: %s", c->who, why);
	// Under the writer's mutex: a resume may be swapping the socket.
	pthread_mutex_lock(&c->tx.mtx);
	shutdown(c->fd, SHUT_RDWR);
	pthread_cond_broadcast(&c->tx.cv);
	pthread_mutex_unlock(&c->tx.mtx);
	pthread_mutex_lock(&c->ack_mtx);
	pthread_cond_broadcast(&c->ack_cv);
	pthread_mutex_unlock(&c->ack_mtx);
	tw__tcp_conn_ref(c); // the task's
	tw__poller_post(c->poller, &c->fail_task);
}

// --- going down and resuming -------------------------------------------------

// The reader role held: stops the reader of a connection that went down.
static void stop_reader(tcp_conn *c)
{
	tw__tcp_reader_abandon(c);
	atomic_store_explicit(&c->down, 2, memory_order_release);
}

static void down_task(void *arg)
{
	tcp_conn *c = arg;
	bool up = false;
	pthread_mutex_lock(&c->rx.mtx);
	if (atomic_load(&c->down) == 1)
		stop_reader(c);
	else
		up = atomic_load(&c->down) == 0; // resumed meanwhile
	pthread_mutex_unlock(&c->rx.mtx);
	if (!up && !failed(c) && c->ops->down != NULL)
		c->ops->down(c->owner, c);
	tw__tcp_conn_unref(c);
}

// Takes the connection down.  tx.mtx held.  Returns whether it was up.
static bool go_down(tcp_conn *c, int64_t until)
{
	if (failed(c) || c->tx.down)
		return false;
	c->tx.down = true;
	atomic_store_explicit(&c->down_until, until, memory_order_relaxed);
	atomic_store_explicit(&c->down, 1, memory_order_release);
	// Wakes a thread in a system call on it, and the I/O thread hears
	// nothing more of it until it is resumed.
	shutdown(c->fd, SHUT_RDWR);
	pthread_cond_broadcast(&c->tx.cv);
	return true;
}

void tw__tcp_conn_broken(tcp_conn *c, unsigned epoch, const char *what)
{
	// Once we close (our BYE on its way), the socket's end is the peer's
	// answer to it: a clean end, as its BYE would be.  Taken for a failure, it failed the whole
	// peer at once, and the peer's other connections ended without their
	// BYE: a stripe the peer then took for broken, and resumed against a
	// closed port, failed its side before the main connection's last
	// frames (acks) were read.
	if (atomic_load(&c->closing)) {
		tw__tcp_conn_fail(c, TW_ECLOSED, NULL);
		return;
	}
	if (c->down_limit_ns == 0) {
		tw__tcp_conn_fail(c, TW_EPEER, NULL);
		return;
	}
	pthread_mutex_lock(&c->tx.mtx);
	bool went
	    = epoch == c->epoch && go_down(c, tw__now_ns() + c->down_limit_ns);
	pthread_mutex_unlock(&c->tx.mtx);
	if (!went)
		return;
	TW_INFO("tcp",
	    "connection with %s broke (%s); waiting for it to be "
	    "resumed",
	    c->who, what);
	tw__tcp_conn_ref(c); // the task's
	tw__poller_post(c->poller, &c->down_task);
}

uint64_t tw__tcp_conn_suspend(tcp_conn *c, bool *ok)
{
	*ok = false;
	if (c->down_limit_ns == 0)
		return 0;
	// Down first: an application thread that reads the connection
	// (tw__tcp_conn_poll) sees it and lets go of the reader role.
	pthread_mutex_lock(&c->tx.mtx);
	(void)go_down(c, tw__now_ns() + c->down_limit_ns);
	pthread_mutex_unlock(&c->tx.mtx);
	pthread_mutex_lock(&c->rx.mtx);
	if (!failed(c) && atomic_load(&c->down) == 1)
		stop_reader(c);
	uint64_t done = tw__tcp_conn_rx_done(c);
	*ok = !failed(c) && atomic_load(&c->down) == 2;
	pthread_mutex_unlock(&c->rx.mtx);
	return done;
}

int tw__tcp_conn_resume(tcp_conn *c, int fd, tw__tls *tls, uint64_t peer_rcvd)
{
	tcp_writer *tx = &c->tx;
	pthread_mutex_lock(&c->rx.mtx);
	pthread_mutex_lock(&tx->mtx);
	// A writer still in a system call on the old socket finds it shut
	// down and lets go of the role.
	while (tx->writing && !failed(c))
		pthread_cond_wait(&tx->cv, &tx->mtx);
	int status = TW_OK;
	if (failed(c) || atomic_load(&c->down) == 0)
		status = TW_EPEER;
	else if (tw__tcp_writer_rewind(c, peer_rcvd) != TW_OK)
		status = TW_EPROTO;
	else if (tw__pfd_swap_fd(c->pfd, fd) != TW_OK)
		status = TW_ESYS;
	if (status != TW_OK) {
		pthread_mutex_unlock(&tx->mtx);
		pthread_mutex_unlock(&c->rx.mtx);
		if (status == TW_EPROTO)
			tw__tcp_conn_fail(c, TW_EPROTO,
			    "the peer resumes from a frame never sent");
		return status == TW_ESYS ? TW_EPEER : status;
	}
	if (atomic_load(&c->down) == 1)
		stop_reader(c); // the down task has not run yet
	tw__tcp_reader_resume(c);
	close(c->fd);
	c->fd = fd;
	tw__tls_free(c->tls);
	c->tls = tls;
	c->epoch++;
	c->last_acked = tw__now_ns();
	c->acked = 0;
	tx->down = false;
	atomic_store_explicit(&c->down, 0, memory_order_release);
	tx->want_out = tx->out < tx->end || tx->owe_ack || tx->owe_pong;
	pthread_cond_broadcast(&tx->cv);
	pthread_mutex_unlock(&tx->mtx);
	pthread_mutex_unlock(&c->rx.mtx);
	// Armed once the reader role is free: an event that found it taken
	// would not re-arm (on_socket leaves that to the role's holder).
	arm_unlocked(c);
	TW_INFO("tcp", "connection with %s resumed", c->who);
	return TW_OK;
}

// Waits, up to `deadline`, for the peer to end the connection after our
// BYE (it closes its side once it read it), reading what it sends
// meanwhile.  A socket closed with bytes in its receive queue resets the
// connection instead of ending it, and a reset throws away what the peer
// had not read yet of ours: our last frames, the UNBIND whose ack tells
// the peer which of its messages arrived here among them.  A peer that
// was still writing (a CREDIT, an ACK) as we closed then learnt of its
// write's failure before it read them, and took messages this side had
// received for lost.
static void linger(tcp_conn *c, int64_t deadline)
{
	tw__tcp_conn_sleep_begin(c);
	pthread_mutex_lock(&c->tx.mtx);
	while (!failed(c) && !c->tx.down && tw__now_ns() < deadline)
		(void)tw__cond_wait_until(&c->tx.cv, &c->tx.mtx, deadline);
	pthread_mutex_unlock(&c->tx.mtx);
	tw__tcp_conn_sleep_end(c);
}

void tw__tcp_conn_close(tcp_conn *c, int64_t deadline)
{
	// Before the BYE: the peer's answer to it may be read before this
	// thread goes on.
	atomic_store(&c->closing, true);
	if (tw__tcp_conn_send(c, TW_TCP_F_BYE, 0, NULL, NULL, 0, TCP_TX_NOWAIT,
	        0, NULL, NULL)
	        == TW_OK
	    && tw__tcp_writer_drain(c, deadline) == TW_OK)
		linger(c, deadline);
	tw__tcp_conn_fail(c, TW_EPEER, NULL);
}

// --- the I/O thread ----------------------------------------------------------

static void leave_reader(tcp_conn *c, bool park, int64_t now);

void tw__tcp_conn_note_taken(tcp_conn *c)
{
	// Loaded first: the line is the reader's, and a store per message
	// would pull it away from the thread that reads.
	if (!atomic_load_explicit(&c->rx.app_took, memory_order_relaxed))
		atomic_store_explicit(
		    &c->rx.app_took, true, memory_order_relaxed);
}

// Whether the writer waits for the socket to become writable, which only
// an armed registration tells.
static bool want_out(tcp_conn *c)
{
	pthread_mutex_lock(&c->tx.mtx);
	bool out = c->tx.want_out;
	pthread_mutex_unlock(&c->tx.mtx);
	return out;
}

// A park that the timer ended (TW__POLL_PARK) while the application took
// messages out of the mailbox since the I/O thread last looked: it reads
// for itself once the mailbox runs dry, and the park goes on.  Reading here
// instead filled the mailbox with up to IO_BUDGET_NS of frames, which the
// application took longer to drain than a park period: the timer fired
// again, and a stream of small messages stayed with this thread, a
// contended mailbox lock per message (less than half the rate).  A stream
// the application stopped taking is read at the next firing.  Not when the
// application may not take the role (io_more) or TLS holds bytes that the
// socket will not announce.  Reader role held.
static bool parked_consumer(tcp_conn *c, unsigned events)
{
	return (events & TW__POLL_PARK) && !atomic_load(&c->rx.io_more)
	    && !tw__tcp_conn_rx_pending(c)
	    && atomic_exchange(&c->rx.app_took, false);
}

static void on_socket(tw__pfd *pfd, unsigned events, void *arg)
{
	(void)pfd;
	tcp_conn *c = arg;
	if (failed(c) || tw__tcp_conn_is_down(c))
		return; // the failure task has it, or a resume will arm it
	bool rearm = true, leave = false;
	if (events & (TW__POLL_IN | TW__POLL_ERR)) {
		// An application thread that holds the reader role reads for
		// us, and re-arms or parks the registration when it lets go:
		// re-armed now, it would only fire again at once.  (A parked
		// registration that nobody claimed comes here too, readable
		// or not: see poller.h.)
		if (pthread_mutex_trylock(&c->rx.mtx) != 0) {
			rearm = false;
		} else if (parked_consumer(c, events)) {
			pthread_mutex_unlock(&c->rx.mtx);
			leave = true;
		} else {
			unsigned frames = 0;
			int status
			    = tw__tcp_reader_pump(c, IO_BUDGET_NS, &frames);
			unsigned epoch = c->epoch;
			// An application thread takes what we deliver as it
			// comes, or waits for the role: the stream is left to
			// it, parked as after its own reads, and it reads for
			// itself (once the mailbox runs dry).  Kept by this
			// thread (re-armed), a stream of small messages cost
			// a wake-up and two contended locks per message, and
			// on two CPUs it stayed so: the application found each
			// message in the mailbox and never read.  A writer
			// waiting for room needs the registration armed: then
			// a waiting poll may have this thread woken for
			// nothing until it takes the role or gives up (its
			// idle time, TCP_SPIN_NS for a receive).
			leave = status == TW_OK
			    && (atomic_exchange(&c->rx.app_took, false)
			        || atomic_load(&c->rx.app_wait) != 0);
			if (leave)
				atomic_store(&c->rx.io_more, false);
			pthread_mutex_unlock(&c->rx.mtx);
			if (status != TW_OK) {
				// EOF or a reset is how a peer's end looks:
				// a debug line, not a warning.
				TW_DEBUG("tcp", "connection %s ends: %s",
				    c->who, tw_err_name(status));
				if (status == TW_EPEER)
					tw__tcp_conn_broken(
					    c, epoch, "reading");
				else
					tw__tcp_conn_fail(c, status, NULL);
				return;
			}
		}
	}
	if (events & TW__POLL_OUT)
		tw__tcp_writer_on_writable(c);
	if (rearm && leave && !want_out(c))
		leave_reader(c, true, 0);
	else if (rearm)
		arm_unlocked(c);
}

// The bytes of ours that the peer's TCP has acknowledged (0 where the
// kernel does not say).
static uint64_t acked_bytes(int fd)
{
	struct tcp_info ti;
	memset(&ti, 0, sizeof(ti));
	socklen_t len = sizeof(ti);
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0
	    || len < offsetof(struct tcp_info, tcpi_bytes_acked)
	            + sizeof(ti.tcpi_bytes_acked))
		return 0;
	return ti.tcpi_bytes_acked;
}

static void on_timer(tw__pfd *pfd, unsigned events, void *arg)
{
	(void)events;
	tcp_conn *c = arg;
	if (failed(c)) {
		(void)tw__ptimer_set(pfd, 0, 0);
		return;
	}
	uint64_t ticks = tw__ptimer_ticks(pfd);
	int64_t now = tw__now_ns();
	if (tw__tcp_conn_is_down(c)) {
		int64_t until = atomic_load_explicit(
		    &c->down_until, memory_order_relaxed);
		if (now >= until) {
			char why[96];
			snprintf(why, sizeof(why),
			    "not resumed within %" PRId64 " ms (%s)",
			    c->down_limit_ns / 1000000, tw_err_name(TW_EPEER));
			tw__tcp_conn_fail(c, TW_EPEER, why);
			(void)tw__ptimer_set(pfd, 0, 0);
		}
		return;
	}
	if (c->heartbeat_ns == 0)
		return; // watching a break only
	// Ticks missed mean that this process did not run (a stalled
	// machine, a debugger, a sanitizer's pause): the silence is ours as
	// much as the peer's, so the peer gets a fresh period, not the blame.
	if (ticks > 2) {
		atomic_store_explicit(
		    &c->rx.last_rx, now, memory_order_relaxed);
		c->last_acked = now;
	}
	uint64_t rx_bytes
	    = atomic_load_explicit(&c->rx.bytes, memory_order_relaxed);
	if (rx_bytes != c->rx_seen) {
		c->rx_seen = rx_bytes;
		atomic_store_explicit(
		    &c->rx.last_rx, now, memory_order_relaxed);
	}
	// The socket and what is known of it change in a resume, under
	// the writer's mutex.
	pthread_mutex_lock(&c->tx.mtx);
	uint64_t acked = acked_bytes(c->fd);
	if (acked != c->acked) {
		c->acked = acked;
		c->last_acked = now;
	}
	int64_t tx_idle = now - c->last_acked;
	unsigned epoch = c->epoch;
	bool trim = c->tx.cap > TX_RING_MIN && !c->tx.writing
	    && now - c->tx.last_flush >= c->heartbeat_ns / 4;
	pthread_mutex_unlock(&c->tx.mtx);
	if (trim)
		(void)tw__tcp_conn_trim(c);
	int64_t rx_idle
	    = now - atomic_load_explicit(&c->rx.last_rx, memory_order_relaxed);
	int64_t idle = rx_idle < tx_idle ? rx_idle : tx_idle;
	if (idle >= 3 * c->heartbeat_ns) {
		char why[96];
		snprintf(why, sizeof(why),
		    "no sign of life for %" PRId64 " ms (%s)", idle / 1000000,
		    tw_err_name(TW_EPEER));
		if (c->down_limit_ns == 0) {
			tw__tcp_conn_fail(c, TW_EPEER, why);
			return;
		}
		// A silent peer has had its 3 H already: one more period to
		// come back on a new connection.
		pthread_mutex_lock(&c->tx.mtx);
		bool went
		    = epoch == c->epoch && go_down(c, now + c->heartbeat_ns);
		pthread_mutex_unlock(&c->tx.mtx);
		if (went) {
			TW_INFO("tcp", "connection with %s: %s", c->who, why);
			tw__tcp_conn_ref(c);
			tw__poller_post(c->poller, &c->down_task);
		}
		return;
	}
	if (rx_idle >= c->heartbeat_ns / 3)
		(void)tw__tcp_conn_send(c, TW_TCP_F_PING, 0, NULL, NULL, 0,
		    TCP_TX_NOWAIT, 0, NULL, NULL);
}

tcp_rx_memo *tw__tcp_conn_rx_memo(tcp_conn *c)
{
	return &c->rx.memo;
}

void *tw__tcp_conn_post(const tcp_conn *c)
{
	return c->rx.post;
}

void tw__tcp_conn_rx_rebase(
    tcp_conn *c, const unsigned char *from, size_t len, unsigned char *to)
{
	tcp_reader *rx = &c->rx;
	uintptr_t at = (uintptr_t)rx->dst, base = (uintptr_t)from;
	if (rx->begun && rx->dst != NULL && at >= base && at - base <= len)
		rx->dst = to != NULL ? to + (at - base) : NULL;
}

void tw__tcp_conn_unpark(tcp_conn *c)
{
	if (tw__pfd_unpark(c->pfd))
		arm_unlocked(c);
}

// A reader lets go of the role, having read the socket dry.  Whatever
// arrives from now on is the I/O thread's again; but a reader that got what
// it waited for is likely to be back at once (the reply to a request, the
// next message of a stream), and re-arming the registration now only to
// disarm it then cost two system calls per message: it leaves it parked
// (poller.h), unless a thread sleeps on what only reading brings.
// `now`: a recent reading of the clock, or 0 (see tw__pfd_park_at).
static void leave_reader(tcp_conn *c, bool park, int64_t now)
{
	if (park && !failed(c) && !tw__tcp_conn_is_down(c)
	    && (now != 0 ? tw__pfd_park_at(c->pfd, now)
	                 : tw__pfd_park(c->pfd))) {
		// A sleeper counts itself, then claims a parked registration;
		// we park, then look for sleepers (both seq_cst): one of the
		// two sees the other.
		if (atomic_load(&c->rx.sleepers) != 0)
			tw__tcp_conn_unpark(c);
		return;
	}
	arm_unlocked(c);
}

// Takes the reader role unless another thread has it or the I/O thread
// paused the stream for its other connections (io_more: taken over,
// reading would no longer overlap with that thread's work on what was
// read).  While we read, a wake-up of the I/O thread would only take a
// CPU from us or from the peer: the registration is disarmed (parked by
// the last reader, it is still).
static bool take_reader(tcp_conn *c)
{
	if (atomic_load(&c->rx.io_more)
	    || pthread_mutex_trylock(&c->rx.mtx) != 0)
		return false;
	if (!tw__pfd_unpark(c->pfd)) {
		pthread_mutex_lock(&c->tx.mtx);
		if (!failed(c))
			(void)tw__pfd_arm(
			    c->pfd, c->tx.want_out ? TW__POLL_OUT : 0);
		pthread_mutex_unlock(&c->tx.mtx);
	}
	return true;
}

// READ_BETWEEN_NS, unless a test changed it.
static _Atomic int64_t read_between_ns = READ_BETWEEN_NS;

void tw__tcp_conn_set_read_between(int64_t ns)
{
	atomic_store_explicit(&read_between_ns, ns > 0 ? ns : READ_BETWEEN_NS,
	    memory_order_relaxed);
}

void tw__tcp_conn_read_between(tcp_conn *c)
{
	if (failed(c) || tw__tcp_conn_is_down(c) || !take_reader(c))
		return;
	unsigned frames = 0;
	int status = tw__tcp_reader_pump(c,
	    atomic_load_explicit(&read_between_ns, memory_order_relaxed),
	    &frames);
	unsigned epoch = c->epoch;
	// Bytes left past the budget (io_more) are the I/O thread's.
	bool park = status == TW_OK && !atomic_load(&c->rx.io_more);
	pthread_mutex_unlock(&c->rx.mtx);
	leave_reader(c, park, 0);
	if (status == TW_EPEER)
		tw__tcp_conn_broken(c, epoch, "reading");
	else if (status != TW_OK)
		tw__tcp_conn_fail(c, status, NULL);
}

void tw__tcp_conn_sleep_begin(tcp_conn *c)
{
	atomic_fetch_add(&c->rx.sleepers, 1);
	tw__tcp_conn_unpark(c);
	// What it waits for may be the answer to frames still waiting.
	tw__tcp_writer_flush_deferred(c);
}

void tw__tcp_conn_sleep_end(tcp_conn *c)
{
	atomic_fetch_sub(&c->rx.sleepers, 1);
}

// Sleeps until the socket is readable, for at most a slice (the
// connection's failure, a suspend and another connection's news are seen
// between slices) and never past `deadline`.  Reader role held.
static void wait_readable(tcp_conn *c, int64_t deadline)
{
	int64_t slice = tw__now_ns() + (int64_t)POLL_SLICE_MS * 1000000;
	(void)tw__tcp_wait_fd(
	    c->fd, POLLIN, deadline < slice ? deadline : slice, NULL);
}

void (*_Atomic tw__tcp_post_hook)(void);

bool tw__tcp_conn_poll(tcp_conn *c, int64_t idle_ns, int64_t deadline,
    bool (*done)(void *arg), void *arg, void *post, bool keep)
{
	keep = keep && post != NULL;
	bool got = false, reading = false, waiting = false;
	unsigned passes = 0;
	int status = TW_OK;
	// The last reading of the clock, which the park at the end takes
	// (up to one pass old): the message that ends a wait comes in a
	// pass that reads no clock, and the reply's write waits for none.
	int64_t seen = tw__now_ns();
	int64_t until = seen + idle_ns;
	uint64_t bytes
	    = atomic_load_explicit(&c->rx.bytes, memory_order_relaxed);
	// A receive most likely waits for the answer to what it sent.
	tw__tcp_writer_flush_deferred(c);
	for (;;) {
		if (failed(c)) {
			got = true; // the failure is news too
			break;
		}
		if (tw__tcp_conn_is_down(c))
			break; // the I/O thread delivers once it is resumed
		// The reader role is held for the whole poll once taken; while
		// the I/O thread has it, what it reads is looked for instead.
		if (!reading && take_reader(c)) {
			reading = true;
			if (waiting) {
				atomic_fetch_sub(&c->rx.app_wait, 1);
				waiting = false;
			}
			c->rx.post = post;
			void (*hook)(void) = atomic_load_explicit(
			    &tw__tcp_post_hook, memory_order_relaxed);
			if (post != NULL && hook != NULL)
				hook();
		}
		if (!reading && !waiting) {
			atomic_fetch_add(&c->rx.app_wait, 1);
			waiting = true;
		}
		unsigned frames = 0;
		if (reading
		    && (status = tw__tcp_reader_pump(c, 0, &frames))
		        != TW_OK) {
			got = status != TW_EPEER || c->down_limit_ns == 0;
			break;
		}
		if ((frames > 0 || !reading) && (got = done(arg)))
			break;
		// Bytes flowing (a large message on its way, its chunks too)
		// keep us reading: read as they come, they cost no wake-up of
		// the I/O thread per socket event, which on a busy CPU took a
		// third of a long message's time.  While another thread reads
		// them, they are no reason to keep a CPU spinning here, which
		// that thread or the sender needs.
		int64_t now = seen = tw__now_ns();
		uint64_t b
		    = atomic_load_explicit(&c->rx.bytes, memory_order_relaxed);
		if (b != bytes) {
			bytes = b;
			if (reading)
				until = now + idle_ns;
		}
		if (now >= deadline)
			break;
		// Watching another thread read only helps while it runs on
		// another CPU.  On ours (threads bound to one CPU, more
		// threads than CPUs) the watch keeps it from running: after a
		// few passes, let it.  Elsewhere this costs one cheap system
		// call per pass.  A receive with a post watches on: it wants
		// the role as soon as it is free, to place its message (on a
		// shared CPU, yielding let the I/O thread read on, and 1 MiB
		// messages arrived a sixth slower).
		if (!reading && !keep && ++passes >= POLL_WATCH_PASSES) {
			sched_yield();
			seen = 0; // may be long ago now
		}
		if (now >= until) {
			// A receive that posted its memory waits as the reader,
			// asleep on the socket rather than spinning, so that a
			// long message for it can be placed there as it comes.
			if (!reading || !keep)
				break;
			if ((got = done(arg)))
				break;
			wait_readable(c, deadline);
			seen = 0;
		}
	}
	if (waiting)
		atomic_fetch_sub(&c->rx.app_wait, 1);
	// Stored once a microsecond at most: the line is the writer's.
	if (seen != 0
	    && seen
	            - atomic_load_explicit(
	                &c->tx.clock_seen, memory_order_relaxed)
	        >= 1000)
		atomic_store_explicit(
		    &c->tx.clock_seen, seen, memory_order_relaxed);
	unsigned epoch = 0;
	if (reading) {
		epoch = c->epoch;
		if (post != NULL && c->ops->rx_unpost != NULL) {
			int st = c->ops->rx_unpost(c->owner, c, post);
			if (st != TW_OK && status == TW_OK)
				status = st;
		}
		c->rx.post = NULL;
		pthread_mutex_unlock(&c->rx.mtx);
		leave_reader(c, got && status == TW_OK, seen);
	}
	if (status == TW_EPEER)
		tw__tcp_conn_broken(c, epoch, "reading");
	else if (status != TW_OK)
		tw__tcp_conn_fail(c, status, NULL);
	return got;
}

int tw__tcp_conn_wait_ack(
    tcp_conn *c, uint64_t seq, int64_t deadline, const _Atomic int *cancel)
{
	if (tw__tcp_conn_peer_ack(c) >= seq)
		return TW_OK;
	int status = TW_OK;
	int64_t pinged = 0; // when we last asked; 0: not yet
	tw__tcp_conn_sleep_begin(c);
	pthread_mutex_lock(&c->ack_mtx);
	atomic_fetch_add(&c->ack_waiters, 1);
	while (status == TW_OK && tw__tcp_conn_peer_ack(c) < seq) {
		if (pinged == 0 || tw__now_ns() - pinged >= ACK_REPING_NS) {
			// Asked, and again now and then: the peer's ACK comes
			// when a long message that holds it back is complete,
			// and only when it was asked (tw__tcp_conn_hold_acks).
			pthread_mutex_unlock(&c->ack_mtx);
			status = tw__tcp_conn_send(c, TW_TCP_F_PING, 0, NULL,
			    NULL, 0, TCP_TX_NOWAIT, 0, NULL, NULL);
			pinged = tw__now_ns();
			pthread_mutex_lock(&c->ack_mtx);
			continue;
		}
		if (failed(c))
			status = TW_EPEER;
		else if (cancel != NULL
		    && atomic_load_explicit(cancel, memory_order_acquire))
			status = TW_ECLOSED;
		else if (tw__now_ns() >= deadline)
			status = TW_ETIMEDOUT;
		else {
			int64_t until = tw__now_ns() + ACK_SLICE_NS;
			(void)tw__cond_wait_until(&c->ack_cv, &c->ack_mtx,
			    until < deadline ? until : deadline);
		}
	}
	atomic_fetch_sub(&c->ack_waiters, 1);
	pthread_mutex_unlock(&c->ack_mtx);
	tw__tcp_conn_sleep_end(c);
	if (status == TW_EPEER && tw__tcp_conn_peer_ack(c) >= seq)
		status = TW_OK;
	return status;
}

// --- making one -----------------------------------------------------------------

static int start_timer(tcp_conn *c, int64_t heartbeat_ms, int fd)
{
	c->heartbeat_ns = heartbeat_ms * 1000000;
	c->last_acked = tw__now_ns();
	c->acked = acked_bytes(fd);
	int status = tw__ptimer_init(c->poller, on_timer, c, &c->tpfd);
	if (status == TW_ESYS)
		TW_ERROR("tcp", "cannot make a heartbeat timer: %m");
	return status;
}

// The handshake's last read may have brought frames along into TLS's
// buffer, where the socket's readiness cannot announce them: the I/O
// thread reads them as if it had.
static void rx_task(void *arg)
{
	tcp_conn *c = arg;
	on_socket(c->pfd, TW__POLL_IN, c);
	tw__tcp_conn_unref(c);
}

int tw__tcp_conn_new(const tcp_conn_cfg *cfg, tcp_conn **out)
{
	tcp_conn *c = calloc(1, sizeof(*c));
	if (c == NULL)
		return TW_ENOMEM;
	c->fd = -1;
	atomic_init(&c->refs, 1);
	c->poller = cfg->poller;
	c->ops = cfg->ops;
	c->owner = cfg->owner;
	snprintf(c->who, sizeof(c->who), "%s", cfg->who);
	c->fail_task.fn = fail_task;
	c->fail_task.arg = c;
	c->down_task.fn = down_task;
	c->down_task.arg = c;
	c->down_limit_ns = cfg->down_limit_ms * 1000000;
	c->rx_task.fn = rx_task;
	c->rx_task.arg = c;
	pthread_mutex_init(&c->ack_mtx, NULL);
	tw__cond_init(&c->ack_cv);
	tw__tcp_writer_init(&c->tx);
	int status = tw__tcp_reader_init(&c->rx);
	if (status == TW_OK)
		status
		    = tw__pfd_init(c->poller, cfg->fd, on_socket, c, &c->pfd);
	if (status == TW_OK
	    && (cfg->heartbeat_ms > 0 || cfg->down_limit_ms > 0))
		status = start_timer(c, cfg->heartbeat_ms, cfg->fd);
	if (status != TW_OK) {
		tw__tcp_conn_unref(c); // fd stays the caller's
		return status;
	}
	c->fd = cfg->fd;
	c->tls = cfg->tls;
	*out = c;
	return TW_OK;
}

void tw__tcp_conn_start(tcp_conn *c)
{
	arm_unlocked(c);
	// Without heartbeats the timer only watches how long a break lasts.
	int64_t tick
	    = c->heartbeat_ns > 0 ? c->heartbeat_ns / 4 : c->down_limit_ns / 8;
	if (c->tpfd != NULL && tick > 0)
		(void)tw__ptimer_set(c->tpfd, tw__now_ns() + tick, tick);
	if (tw__tcp_conn_rx_pending(c)) {
		tw__tcp_conn_ref(c); // the task's
		tw__poller_post(c->poller, &c->rx_task);
	}
}
