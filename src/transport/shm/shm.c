// shm://NAME: parties that are processes of one host.
//
// Design notes.
//
// Segments.  Each pair of parties shares one POSIX shared-memory segment,
// named from a hash of the link id and both addresses (shm_frame.h), that
// holds a small header and two tw_rings, one per direction (shm_seg.h).
// The lower rank creates it in test_send, the higher rank polls for it
// until the connect deadline; neither waits for the other inside open, so
// parties may start in any order.  A name that already exists belongs to
// a live process (the address is in use: TW_ESYS) or to a dead one (a
// crash left it behind: it is removed and created again).  As soon as the
// higher rank has mapped the segment the name is unlinked, so nothing stays
// in /dev/shm whatever happens to either process later; a segment whose
// peer never came is unlinked when its creator's channel is destroyed.
//
// Segments are sized by the party count (tw__shm_slot_msg, tw__shm_slots):
// up to 5 parties every lane has 32 slots of 32 KiB, up to 9 32 of 16 KiB,
// larger links fewer, so that the rings one party shares hold at most the
// same bytes whatever the count, and the memory of a host grows with the
// parties rather than with their square.
//
// Receiving.  Frames of the inbound ring are reassembled into messages and
// pushed into this party's mailbox (shared by all its channels, keyed by the
// sender's rank, as mem:// does) by whoever holds the channel's reader role
// (mc->role), which makes it the ring's one consumer.  Usually that is the
// progress thread of the channel's group: one thread reads the rings of up
// to TW_SHM_GRP_MAX peers (futex_waitv's limit), so that a process has one
// such thread, not one per peer (a thread per peer put a thousand threads
// on the CPUs of a 32-party link, and every message paid a switch between
// them).  It takes what every ring holds, then announces itself on each
// ring it found empty (the ring's consumer sleeper count, tw__ring_sleep_
// begin), looks again, and sleeps on all their futex words and its own at
// once: a sender bumps a ring's word only when its consumer announced
// itself, so a busy link makes no system calls.  Its own word is bumped to
// make it look at once: a channel joined or leaves, a reader left work
// behind, or room was made in the mailbox for a held-back message.  A
// channel leaves its group by waiting until the thread has ended the pass
// that may still use its ring.  On kernels without futex_waitv the thread
// naps briefly instead (platform/posix/futex.c).
//
// A thread that had to hand every message on would cost two thread
// wake-ups per message (the ring's futex, then the mailbox's condition
// variable), tens of microseconds against the ring's fraction of one.  So
// an application thread that receives and finds nothing takes the role and
// reads the ring itself until its message is there: spinning, and once
// SHM_SPIN_NS pass without a frame, asleep on the ring as its consumer, so
// that the peer's next frame wakes that thread and no other.  Meanwhile
// the progress thread leaves that ring alone: the peer's sends then find
// no sleeper and make no system call, and no third thread competes for the
// CPUs.  It notices readers by the role's value, or by a count that
// readers waiting for the role bump, and their leaving by a generation
// they bump (none costs them a clock read), and stays off the ring for
// SHM_PARK_NS after it found one, twice as long each time it finds one
// again, up to SHM_PARK_MAX_NS: in request/response traffic and streams
// the next receive is about to come, and on a host with no CPU to spare
// each of its wake-ups takes the CPU of a spinning party (a 16 MiB stream
// on 2 CPUs ran at a tenth of its speed when it woke every 250 us: the
// sender, kept off its CPU, made the receiver give up its spin, and the
// progress thread then received the rest through the mailbox).  A reader
// that gives up and is about to block, or that leaves work behind (a
// message held back by flow control), wakes it at once, and so does a
// peer that waits for this side to read (a full ring, or a wait for its
// messages' delivery: it kicks the ring's word, which the progress thread
// sleeps on while parked).  So a message that nobody polls for and nobody
// waits on waits at most about two SHM_PARK_MAX_NS for the progress thread,
// and the progress thread lets an application thread that asks for the
// ring have it after the frame it is taking.  Spinning only pays while every
// party can have a CPU: when a link has more parties than the host has
// online CPUs, a spinning receiver takes the CPU from the very party it
// waits for (collectives over 16 parties on 2 CPUs ran twice as slowly), so
// then nobody spins and the progress thread alone reads the rings.  The
// count is the host's, not this process's affinity mask: a process bound to
// one CPU (mpirun's default, taskset) usually has a peer bound to another,
// and spinning is what makes its latency.
//
// The reader role applies the mailbox's flow control: while this peer's
// unreceived messages, counted by tw__msg_cost, would exceed
// TW_OPT_RECV_BUFFER the message is held back, the ring fills up and the
// sender waits.  Nobody waits for room: the progress thread sleeps on the
// ring's control lane alone meanwhile, and whoever takes a message from
// the mailbox wakes it (ep_taken).  Control messages (acks, hellos) travel
// in their own lane and never wait behind held-back data: the role keeps
// draining that lane while it holds a data message.  A ring that reports the peer
// gone (its abort flag, or its process died) or a malformed frame closes
// the peer in the mailbox, so that receives return TW_EPEER once what was
// delivered has been drained, and makes sends to it fail with TW_EPEER.
//
// Sending.  A mutex per lane keeps one producer per lane.  A message is a
// DATA frame followed by CONT frames; a sender that gives up half way
// (deadline, cancel) leaves a note so that the next message on the lane
// starts with a CANCEL frame.  Synchronous messages of 64 KiB or more may
// go with one copy instead of two when the kernel lets the receiver read
// the sender's memory (process_vm_readv, probed once per pair in the
// hello): the sender offers the message with a LARGE frame and waits
// until the receiver has copied it.  The offer is a word in the segment
// that the receiver claims and the sender withdraws with compare-and-swap,
// so a sender that times out never leaves the receiver reading a buffer
// that the application has reused.  Which way is faster depends on the
// machine and its load (the ring's two copies run at once on two CPUs,
// each within cache while the message fits; process_vm_readv copies on one
// CPU after pinning every page of the sender's buffer): the ring moved 2
// to 3 times the bytes per second of the single copy from 64 KiB to 4 MiB
// on an AMD EPYC guest and twice at 16 MiB, 0.77 times on an Intel Xeon
// guest at 64 KiB and less beyond its caches.  So the sender measures both
// on the link, per size, and takes the faster (shm_pick.h).
// TAGWIRE_SHM_CMA=1 in a sender's environment takes the single copy from
// 64 KiB on always; TAGWIRE_SHM_CMA=0 in either process of a pair keeps it
// off between them.
//
// Trust.  The other process may write anything into the segment: frames
// are decoded by a pure, fuzzed function (shm_frame.c), counters read from
// the segment only decide when to stop waiting, and a malformed frame fails
// that peer with one log line.  Segments are created with mode 0600, and
// the peer is a process of the same user that could read our memory
// anyway, which is what process_vm_readv relies on.

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <tagwire/ring.h>

#include "core/bufpool.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/mailbox.h"
#include "core/names.h"
// The liveness test of the ring layer, which treats zombies as dead.
#include "platform/posix/futex.h"
#include "ring/ring_int.h"
#include "transport/shm/shm.h"
#include "transport/transport.h"

// Synchronous messages from this size on may cross with process_vm_readv
// when it works: as measured (shm_pick.h), or always when asked to
// (TAGWIRE_SHM_CMA=1).
#define SHM_LARGE_MIN TW_SHM_PICK_MIN
// How often a blocked sender looks at its cancel flag and its peer.
#define SHM_SEND_SLICE_US 10000
// How long a thread in tw_link_wait_pending sleeps before it looks at the
// delivered count again, woken or not (see rx_delivered).
#define SHM_WAIT_SLICE_US 1000
// How long the progress thread sleeps at once, and how often it looks
// whether the processes of the peers whose rings it sleeps on still live.
#define SHM_RX_SLICE_NS 100000000
#define SHM_LIVENESS_NS 100000000
// When a channel's ring is held by a probe, how soon the progress thread
// looks again.
#define SHM_RETRY_NS 50000
// How long a receive that finds nothing reads the ring itself after the
// last frame it saw: a reply on its way within this long needs no thread
// hand-off.
#define SHM_SPIN_NS 50000
// How long the progress thread stays off a ring after it found a reader
// there; each look that finds one again doubles it, up to SHM_PARK_MAX_NS.
#define SHM_PARK_NS 250000
#define SHM_PARK_MAX_NS 8000000
// Frames the role's holder takes at once before it lets go.
#define SHM_RX_BATCH 64
// Passes a reader spins for another's hold on the ring before it yields its
// CPU between passes (spin).
#define SHM_LOCK_TRIES 64
// Passes over an empty ring between two readings of the clock (see spin).
#define SHM_CLOCK_PASSES 8
// How long close and abort may wait to tell the peer.
#define SHM_CTL_TIMEOUT_NS 1000000000

_Atomic uint64_t tw__shm_large_copied;
_Thread_local uint64_t tw__shm_frames_read_inline;
_Atomic uint64_t tw__shm_direct_moved;
_Atomic uint64_t tw__shm_direct_adopted;
void (*tw__shm_own_begun_hook)(const char *key, const _Atomic int *readers);
_Atomic uint64_t tw__shm_frames_placed;
_Atomic uint64_t tw__shm_firsts_placed;
_Atomic uint64_t tw__shm_reader_naps;

// The futex calls take their word as a plain uint32_t, as they do words
// in shared memory; a group's wake word, this process's own, is an
// _Atomic uint32_t, which has the same size and representation (the
// kernel reads one aligned 32-bit word).
_Static_assert(
    sizeof(_Atomic uint32_t) == sizeof(uint32_t), "a futex word is 32 bits");
static uint32_t *wake_word(shm_grp *g)
{
	return (uint32_t *)&g->wake;
}

static void grp_wake(shm_grp *g)
{
	atomic_fetch_add(&g->wake, 1);
	tw__futex_wake(wake_word(g), 1);
}

// What a peer's hello points at, so that it can test process_vm_readv.
static const uint64_t shm_probe_word = UINT64_C(0x747768656c6c6f21);

// --- small helpers ------------------------------------------------------

static int shm_addr_check(const char *addr)
{
	if (strncmp(addr, "shm://", 6) != 0)
		return TW_EINVAL;
	return tw__valid_party_id(addr + 6) ? TW_OK : TW_EINVAL;
}

static bool peer_gone(shm_chan *mc)
{
	if (tw__shm_flag(&mc->peer_gone))
		return true;
	return __atomic_load_n(&mc->hdr->gone[!mc->side], __ATOMIC_ACQUIRE)
	    != 0;
}

// The part of a wait slice of `slice_us` that is left before `deadline`:
// 0 once it has passed (try once).
static int64_t slice_us(int64_t deadline, int64_t slice)
{
	if (deadline == TW_FOREVER)
		return slice;
	int64_t left = (deadline - tw__now_ns()) / 1000;
	if (left <= 0)
		return 0;
	return left < slice ? left : slice;
}

// --- the progress thread ---------------------------------------------------

typedef struct rx_lane {
	tw__shm_rx st;
	char key[TW_KEY_MAX];
	unsigned char *buf; // the message being assembled
	bool direct; // buf is the reading application's buffer
} rx_lane;

// The state of reading the inbound ring, owned by the reader role.
typedef struct shm_rx_ctx {
	rx_lane lane[TW_SHM_LANES];
	// The key an application thread reads the ring for (NULL: none), and
	// whether a frame since it last looked may concern it (that key, a
	// control message, a namespace closed): otherwise it need not look.
	const char *want;
	size_t want_len;
	bool want_data; // want is a data key
	bool news;
	// Where that thread wants its message (tw_recv_into), NULL: nowhere.
	// A message of that key that fits, with none of its key waiting in
	// the mailbox, is assembled there and never enters the mailbox: that
	// saves an allocation (page faults, for large ones) and a copy.
	unsigned char *dst;
	size_t dst_cap;
	bool dst_used; // a message is being assembled there
	bool dst_done; // and is complete; dst_len bytes
	size_t dst_len;
	// A data message held back by flow control.
	bool pend;
	char pend_key[TW_KEY_MAX];
	void *pend_data;
	size_t pend_len;
	// A frame copied out of the ring: ep->slot_msg bytes.
	unsigned char slot[];
} rx_ctx;

// The peer is gone or broken: receives from it end once what was delivered
// is drained, sends to it fail.  When this side gives up on a live peer
// (a malformed frame), the peer is told through the segment so that its
// own sends and waits end too.
static void rx_fail(shm_chan *mc, int status)
{
	atomic_store(&mc->peer_gone, 1);
	if (status != TW_EPEER)
		tw__shm_seg_leave(mc, TW_SHM_GONE_FAILED);
	tw_mailbox_close_from(mc->ep->mb, mc->peer_rank);
}

static int rx_proto(shm_chan *mc, const char *why)
{
	LOGC(mc, TW_LOG_ERROR,
	    "malformed frame from %s (%s): %s (%s); dropping that peer",
	    mc->peer_id, mc->peer_addr, why, tw_err_name(TW_EPROTO));
	return TW_EPROTO;
}

static int rx_nomem(shm_chan *mc, size_t len)
{
	LOGC(mc, TW_LOG_ERROR,
	    "out of memory for a message of %zu bytes from %s; dropping "
	    "that peer",
	    len, mc->peer_id);
	return TW_ENOMEM;
}

// Takes the reader role for `who` if it is free.  One compare-and-swap, the
// role's only locked instruction: it is given back with a plain store.
static bool role_take(shm_chan *mc, unsigned who)
{
	unsigned free_ = SHM_ROLE_FREE;
	return atomic_load_explicit(&mc->role, memory_order_relaxed)
	    == SHM_ROLE_FREE
	    && atomic_compare_exchange_strong_explicit(&mc->role, &free_, who,
	        memory_order_acquire, memory_order_relaxed);
}

static void role_give(shm_chan *mc)
{
	atomic_store_explicit(&mc->role, SHM_ROLE_FREE, memory_order_release);
}

// Counts a message of `lane` as delivered: every message in `delivered`,
// which senders wait on, and data messages also in `delivered_data`, which
// says what a peer that has left received of the application's messages
// (shm_wait_until).
static void rx_delivered(shm_chan *mc, uint32_t lane)
{
	struct tw_shm_dir *d = &mc->hdr->dir[!mc->side];
	// Release is enough: the count is read only once this side has left,
	// which it publishes after (and a full fence here cost a few percent
	// of a small message's receive).
	if (lane == TW_SHM_LANE_DATA)
		__atomic_store_n(&d->delivered_data, ++mc->delivered_data,
		    __ATOMIC_RELEASE);
	uint64_t v = ++mc->delivered;
	// Store, then look for waiters, with no fence between: a full one
	// (the other half of a Dekker pair with the waiter's announcement)
	// cost a twentieth of an 8-byte stream's rate, for the rare
	// tw_link_wait_pending.  Without it, a waiter that announces itself
	// just as the count is stored may miss this wake-up: it looks at the
	// count again after SHM_WAIT_SLICE_US at most (shm_wait_until).
	__atomic_store_n(&d->delivered, v, __ATOMIC_RELEASE);
	if (__atomic_load_n(&d->waiters, __ATOMIC_RELAXED) != 0)
		tw_signal_notify(&d->delivered, v);
}

// Accounts for a push of a message of `lane` into the mailbox; frees
// `data` unless it went in.
static int rx_pushed(shm_chan *mc, uint32_t lane, int status, void *data)
{
	if (status != TW_OK)
		free(data);
	if (status == TW_OK) {
		rx_delivered(mc, lane);
		return TW_OK;
	}
	if (status == TW_ECLOSED && !tw__shm_flag(&mc->stop)) {
		// This side aborted or closed the message's namespace: nobody
		// can receive it, and for the sender it has arrived.
		rx_delivered(mc, lane);
		return TW_OK;
	}
	if (status == TW_ENOMEM) {
		LOGC(mc, TW_LOG_ERROR,
		    "out of memory queueing a message from %s; dropping "
		    "that peer",
		    mc->peer_id);
		return TW_ENOMEM;
	}
	return TW_ECLOSED; // stopping, or the peer was closed here
}

// One slice of pushing the held-back message.  TW_ETIMEDOUT: still held.
static int rx_push_pending(shm_chan *mc, rx_ctx *rx)
{
	int status = tw__mailbox_push_owned(mc->ep->mb, mc->peer_rank,
	    rx->pend_key, rx->pend_data, rx->pend_len, mc->ep->recv_buffer,
	    tw__now_ns(), &mc->stop);
	if (status == TW_ETIMEDOUT)
		return status;
	rx->pend = false;
	return rx_pushed(mc, TW_SHM_LANE_DATA, status, rx->pend_data);
}

// Whether an application thread reads for a data key, and `lane` is the
// one such a key comes in.
static bool rx_wanted_lane(const rx_ctx *rx, uint32_t lane)
{
	return lane == TW_SHM_LANE_DATA && rx->want != NULL && rx->want_data;
}

// Whether a key of `len` bytes (not terminated) that came in `lane` is the
// one an application thread reads for: then it is a data key in the data
// lane, which spares the checks that a key of any other kind needs.
static bool rx_wanted(
    const rx_ctx *rx, uint32_t lane, const char *key, size_t len)
{
	return rx_wanted_lane(rx, lane) && len == rx->want_len
	    && memcmp(key, rx->want, len) == 0;
}

// Whether the message of `key` starting now may go straight into the
// reading thread's buffer (see rx_ctx.dst); `wanted`: rx_wanted said so
// of `key`.
static bool rx_direct_ok(
    shm_chan *mc, rx_ctx *rx, bool wanted, const char *key, uint64_t total)
{
	if (!wanted || rx->dst == NULL || rx->dst_used || total > rx->dst_cap)
		return false;
	size_t len;
	// TW_EAGAIN: nothing of that key queued before it, and the key is
	// neither aborted nor closed.
	return tw__mailbox_idle_data(mc->ep->mb)
	    || tw_mailbox_probe(mc->ep->mb, mc->peer_rank, key, &len)
	    == TW_EAGAIN;
}

static int rx_direct_done(shm_chan *mc, rx_ctx *rx, size_t len)
{
	rx->dst_done = true;
	rx->dst_len = len;
	rx->news = true;
	rx_delivered(mc, TW_SHM_LANE_DATA);
	return TW_OK;
}

static void rx_news(rx_ctx *rx, uint32_t lane, const char *key)
{
	if (lane != TW_SHM_LANE_DATA || rx->want == NULL
	    || strcmp(key, rx->want) == 0)
		rx->news = true;
}

// Holds back a data message that found no room (ownership of data
// passes): rx_push_pending pushes it in slices, and the ring waits.
static void rx_hold(rx_ctx *rx, const char *key, void *data, size_t len)
{
	rx->pend = true;
	strcpy(rx->pend_key, key);
	rx->pend_data = data;
	rx->pend_len = len;
}

static int rx_deliver(shm_chan *mc, rx_ctx *rx, uint32_t lane, const char *key,
    void *data, size_t len)
{
	rx_news(rx, lane, key);
	if (lane == TW_SHM_LANE_CTL) {
		int status = tw__mailbox_push_owned(mc->ep->mb, mc->peer_rank,
		    key, data, len, UINT64_MAX, TW_FOREVER, &mc->stop);
		return rx_pushed(mc, TW_SHM_LANE_CTL, status, data);
	}
	rx_hold(rx, key, data, len);
	int status = rx_push_pending(mc, rx);
	return status == TW_ETIMEDOUT ? TW_OK : status;
}

// rx_deliver of the bytes of one frame, still in the ring: the mailbox
// copies them (a small message costs no allocation), and only a message
// held back needs memory of its own.
static int rx_deliver_copy(shm_chan *mc, rx_ctx *rx, uint32_t lane,
    const char *key, const void *src, size_t len)
{
	rx_news(rx, lane, key);
	bool ctl = lane == TW_SHM_LANE_CTL;
	int status = tw__mailbox_push_copy(mc->ep->mb, mc->peer_rank, key, src,
	    len, ctl ? UINT64_MAX : mc->ep->recv_buffer, ctl ? TW_FOREVER : 0,
	    &mc->stop);
	if (status != TW_ETIMEDOUT || ctl)
		return rx_pushed(mc, lane, status, NULL);
	void *data = NULL;
	if (len > 0) {
		if ((data = malloc(len)) == NULL)
			return rx_nomem(mc, len);
		memcpy(data, src, len);
	}
	rx_hold(rx, key, data, len);
	return TW_OK;
}

// A key must travel in the lane of its kind.
static bool rx_key_lane_ok(uint32_t lane, const char *key)
{
	return tw__key_is_ctl(key) == (lane == TW_SHM_LANE_CTL);
}

static int rx_large(
    shm_chan *mc, rx_ctx *rx, rx_lane *rl, const tw__shm_frame *f)
{
	struct tw_shm_dir *d = &mc->hdr->dir[!mc->side];
	uint64_t expect = f->seq;
	if (!__atomic_compare_exchange_n(&d->large_post, &expect,
	        f->seq | TW_SHM_LARGE_CLAIMED, false, __ATOMIC_SEQ_CST,
	        __ATOMIC_SEQ_CST)) {
		// The sender withdrew it in time.  It may even have offered a
		// later message since: a sender makes a new offer only once
		// the last one was copied (by us, so not this one) or
		// withdrawn.
		uint64_t offered = expect
		    & ~(TW_SHM_LARGE_CLAIMED | TW_SHM_LARGE_CANCELLED);
		if (expect == (f->seq | TW_SHM_LARGE_CANCELLED)
		    || offered > f->seq)
			return TW_OK;
		return rx_proto(mc, "large message not on offer");
	}
	if (f->addr > UINTPTR_MAX || f->total > SIZE_MAX)
		return rx_proto(mc, "large message out of address range");
	size_t total = (size_t)f->total;
	bool direct = rx_direct_ok(mc, rx,
	    rx_wanted(rx, TW_SHM_LANE_DATA, rl->key, strlen(rl->key)), rl->key,
	    total);
	unsigned char *buf = direct ? rx->dst : tw__pool_alloc(total);
	if (buf == NULL)
		return rx_nomem(mc, total);
	size_t done = 0;
	while (done < total) {
		struct iovec local = { buf + done, total - done };
		struct iovec remote
		    = { (void *)(uintptr_t)(f->addr + done), total - done };
		ssize_t k = process_vm_readv(
		    (pid_t)mc->peer_pid, &local, 1, &remote, 1, 0);
		if (k <= 0) {
			int err = errno;
			if (!direct)
				free(buf);
			if (k < 0 && err == ESRCH)
				return TW_EPEER;
			errno = err;
			LOGC(mc, TW_LOG_ERROR,
			    "cannot read a large message of %zu bytes from "
			    "%s (process %u): %m",
			    total, mc->peer_id, mc->peer_pid);
			return rx_proto(mc, "unreadable large message");
		}
		done += (size_t)k;
	}
	tw_signal_notify(&d->copied, f->seq);
	atomic_fetch_add_explicit(
	    &tw__shm_large_copied, 1, memory_order_relaxed);
	if (direct) {
		rx->dst_used = true;
		return rx_direct_done(mc, rx, total);
	}
	return rx_deliver(mc, rx, TW_SHM_LANE_DATA, rl->key, buf, total);
}

// Tries process_vm_readv on the word the peer's hello points at.
static bool rx_probe_cma(shm_chan *mc, const tw__shm_frame *f)
{
	if (mc->cma_min == SIZE_MAX)
		return false;
	uint64_t v = 0;
	struct iovec local = { &v, sizeof(v) };
	struct iovec remote = { (void *)(uintptr_t)f->addr, sizeof(v) };
	ssize_t k = f->addr > UINTPTR_MAX
	    ? -1
	    : process_vm_readv((pid_t)f->pid, &local, 1, &remote, 1, 0);
	if (k == (ssize_t)sizeof(v) && v == f->value)
		return true;
	if (k < 0)
		LOGC(mc, TW_LOG_INFO,
		    "process_vm_readv from %s (process %u) fails: %m; "
		    "large messages go through the ring",
		    mc->peer_id, f->pid);
	else
		LOGC(mc, TW_LOG_INFO,
		    "process_vm_readv from %s (process %u) reads the wrong "
		    "bytes; large messages go through the ring",
		    mc->peer_id, f->pid);
	return false;
}

static int rx_hello(shm_chan *mc, uint32_t lane, const tw__shm_frame *f)
{
	if (lane != TW_SHM_LANE_CTL || mc->peer_pid != 0)
		return rx_proto(mc, "unexpected hello");
	mc->peer_pid = f->pid;
	mc->cma_rx = rx_probe_cma(mc, f);
	__atomic_store_n(&mc->hdr->cma[!mc->side],
	    mc->cma_rx ? TW_SHM_CMA_YES : TW_SHM_CMA_NO, __ATOMIC_RELEASE);
	// Both sides are attached now: the name can go.
	tw__shm_seg_unlink_once(mc);
	int status = tw__chanbase_hello_arrived(&mc->base, &mc->stop);
	if (status == TW_ENOMEM)
		return rx_nomem(mc, 0);
	// TW_ECLOSED: this side aborted or is stopping; nobody waits for it.
	return TW_OK;
}

// The commonest frame of all: a whole message, in one slot, of the key the
// reading thread waits for, that goes into its buffer.  Checks what
// tw__shm_frame_decode, tw__shm_rx_step and rx_direct_ok check of exactly
// that case (the key, equal to the wanted one, is valid), in one pass over
// the header, and copies the payload: the general path made a small
// message's whole receive a sixth more instructions.  False, with nothing
// changed, for any other frame, which the general path judges.
static bool rx_whole_wanted(shm_chan *mc, rx_ctx *rx, uint32_t lane,
    uint32_t route, uint64_t corr, const unsigned char *p, size_t n,
    size_t *len)
{
	if (route != TW_SHM_F_DATA || !rx_wanted_lane(rx, lane)
	    || rx->dst == NULL)
		return false;
	tw__shm_rx *st = &rx->lane[lane].st;
	size_t klen = rx->want_len;
	if (st->in_msg || corr != st->next_seq || n < TW_SHM_DATA_HDR + klen)
		return false;
	uint16_t k;
	uint64_t total;
	memcpy(&k, p, sizeof(k));
	memcpy(&total, p + 2, sizeof(total));
	size_t data_len = n - TW_SHM_DATA_HDR - klen;
	if (k != klen || total != data_len || total > st->max_total
	    || memcmp(p + TW_SHM_DATA_HDR, rx->want, klen) != 0
	    || !rx_direct_ok(mc, rx, true, rx->want, total))
		return false;
	st->cur_seq = corr;
	st->total = st->got = total;
	st->next_seq++;
	rx->dst_used = true;
	if (data_len > 0)
		memcpy(rx->dst, p + TW_SHM_DATA_HDR + klen, data_len);
	*len = data_len;
	return true;
}

// Handles the frame of `n` bytes at `at`: rx->slot, or where rx_place put
// it.  With `from` > 0, a first frame's header and key are rx->slot[0..from)
// and its payload, n - from bytes, at `at`.
static int rx_frame(shm_chan *mc, rx_ctx *rx, uint32_t lane, uint32_t route,
    uint64_t corr, const void *at, size_t from, size_t n)
{
	size_t whole;
	if (from == 0
	    && rx_whole_wanted(mc, rx, lane, route, corr, at, n, &whole))
		return rx_direct_done(mc, rx, whole);
	rx_lane *rl = &rx->lane[lane];
	tw__shm_frame f;
	const char *why = NULL;
	int act = from == 0
	    ? tw__shm_frame_decode(route, corr, at, n, &f, &why)
	    : tw__shm_frame_decode_split(
	        corr, rx->slot, from, at, n - from, &f, &why);
	if (act == TW_OK)
		act = tw__shm_rx_step(&rl->st, &f, &why);
	if (act < 0)
		return rx_proto(mc, why);
	if (act != TW_SHM_RX_HELLO && lane == TW_SHM_LANE_CTL
	    && mc->peer_pid == 0)
		return rx_proto(mc, "message before the hello");
	switch (act) {
	case TW_SHM_RX_FIRST:
	case TW_SHM_RX_LARGE: {
		bool wanted = rx_wanted(rx, lane, f.key, f.key_len);
		memcpy(rl->key, f.key, f.key_len);
		rl->key[f.key_len] = '\0';
		if (!wanted && !rx_key_lane_ok(lane, rl->key))
			return rx_proto(mc, "key in the wrong lane");
		if (act == TW_SHM_RX_LARGE) {
			if (lane != TW_SHM_LANE_DATA || !mc->cma_rx)
				return rx_proto(
				    mc, "unexpected large message");
			return rx_large(mc, rx, rl, &f);
		}
		if (rl->st.total > SIZE_MAX)
			return rx_nomem(mc, SIZE_MAX);
		// A first frame placed in rx->dst was judged so by
		// rx_place_first a moment ago.
		if (f.data == rx->dst
		    || rx_direct_ok(mc, rx, wanted, rl->key, rl->st.total)) {
			rx->dst_used = true;
			if (f.data_len > 0 && f.data != rx->dst)
				memcpy(rx->dst, f.data, f.data_len);
			if (!rl->st.in_msg)
				return rx_direct_done(mc, rx, f.data_len);
			rl->buf = rx->dst;
			rl->direct = true;
			return TW_OK;
		}
		if (!rl->st.in_msg)
			return rx_deliver_copy(
			    mc, rx, lane, rl->key, f.data, f.data_len);
		if ((rl->buf = tw__pool_alloc((size_t)rl->st.total)) == NULL)
			return rx_nomem(mc, (size_t)rl->st.total);
		if (f.data_len > 0)
			memcpy(rl->buf, f.data, f.data_len);
		if (tw__shm_own_begun_hook != NULL)
			tw__shm_own_begun_hook(rl->key, &mc->readers);
		return TW_OK;
	}
	case TW_SHM_RX_CONT: {
		unsigned char *to = rl->buf + (rl->st.got - f.data_len);
		if (f.data != to)
			memcpy(to, f.data, f.data_len);
		if (!rl->st.in_msg && rl->direct) {
			rl->buf = NULL;
			rl->direct = false;
			return rx_direct_done(mc, rx, (size_t)rl->st.total);
		}
		if (!rl->st.in_msg) {
			void *data = rl->buf;
			rl->buf = NULL;
			return rx_deliver(
			    mc, rx, lane, rl->key, data, (size_t)rl->st.total);
		}
		return TW_OK;
	}
	case TW_SHM_RX_CANCEL:
		if (rl->direct) {
			rl->direct = false;
			rx->dst_used = false; // the next message may use it
		} else {
			free(rl->buf);
		}
		rl->buf = NULL;
		return TW_OK;
	case TW_SHM_RX_CLOSE_NS:
	case TW_SHM_RX_ABORT_NS: {
		if (lane != TW_SHM_LANE_DATA)
			return rx_proto(
			    mc, "namespace frame in the wrong lane");
		char ns[TW_LINK_ID_MAX + 1];
		memcpy(ns, f.key, f.key_len);
		ns[f.key_len] = '\0';
		// One mailbox call makes receives there drain and then fail,
		// and sends there fail (tw__mailbox_peer_left), together.
		rx->news = true;
		int status = act == TW_SHM_RX_ABORT_NS
		    ? tw__mailbox_peer_abort_ns(mc->ep->mb, mc->peer_rank, ns)
		    : tw__mailbox_close_ns(mc->ep->mb, mc->peer_rank, ns);
		return status == TW_ENOMEM ? rx_nomem(mc, 0) : TW_OK;
	}
	case TW_SHM_RX_HELLO:
		return rx_hello(mc, lane, &f);
	default:
		return rx_proto(mc, "unknown action");
	}
}

// Takes what the control lane holds now, without waiting.
static int rx_drain_ctl(shm_chan *mc, rx_ctx *rx)
{
	for (;;) {
		uint32_t route;
		uint64_t corr;
		size_t n;
		int status = tw_ring_recv(mc->in, TW_SHM_LANE_CTL, rx->slot,
		    mc->ep->slot_msg, &n, &route, &corr, 0);
		if (status == TW_ETIMEDOUT)
			return TW_OK;
		if (status != TW_OK)
			return status;
		status = rx_frame(
		    mc, rx, TW_SHM_LANE_CTL, route, corr, rx->slot, 0, n);
		if (status != TW_OK)
			return status;
	}
}

// The least payload of a first frame that rx_place_first places.
#define SHM_PLACE_MIN 256

// The first frame of the message the reading thread waits for, when it
// may start in that thread's buffer (rx_direct_ok; rx_frame takes the
// placement as that answer): its payload goes there.  At the first ask,
// the header and the key wanted are peeked at; at the second they are in
// rx->slot, where the other side cannot change them, and must decode as
// the wanted key's with no more payload than the message holds.
static void *rx_place_first(shm_chan *mc, rx_ctx *rx, tw__ring_placing *p)
{
	if (p->lane != TW_SHM_LANE_DATA || rx->want == NULL || !rx->want_data
	    || rx->dst == NULL || rx->dst_used || rx->lane[p->lane].st.in_msg)
		return NULL;
	size_t head = TW_SHM_DATA_HDR + rx->want_len;
	if (p->have == 0) {
		// A small payload costs less to copy twice than to place.
		if (p->len >= head + SHM_PLACE_MIN)
			p->peek = head;
		return NULL;
	}
	// Exactly the header and a key of the wanted length, or not ours.
	tw__shm_frame f;
	const char *why;
	if (tw__shm_frame_decode(
	        TW_SHM_F_DATA, p->corr, rx->slot, p->have, &f, &why)
	        != TW_OK
	    || f.data_len != 0 || memcmp(f.key, rx->want, f.key_len) != 0
	    || p->len - p->have > f.total
	    || !rx_direct_ok(mc, rx, true, rx->want, f.total))
		return NULL;
	p->from = head;
	atomic_store_explicit(&tw__shm_firsts_placed,
	    atomic_load_explicit(&tw__shm_firsts_placed, memory_order_relaxed)
	        + 1,
	    memory_order_relaxed);
	return rx->dst;
}

// Where a frame's payload goes straight from the ring (tw__ring_place_fn):
// a continuation of the message in progress in its lane, that fits what is
// left of it, into the memory that message is assembled in (the receiving
// application's buffer or the message's own), or the first frame of the
// message the reading thread waits for (rx_place_first), sparing a copy
// through rx->slot.  The fields are the slot's as read once; rx_frame
// then checks the frame as any other, and one that fails it fails the
// message, whose memory it only wrote within the message's bounds.
static void *rx_place(void *arg, tw__ring_placing *p)
{
	shm_chan *mc = arg;
	rx_ctx *rx = mc->rxc;
	if (p->route == TW_SHM_F_DATA)
		return rx_place_first(mc, rx, p);
	if (p->route != TW_SHM_F_CONT)
		return NULL;
	rx_lane *rl = &rx->lane[p->lane];
	if (!rl->st.in_msg || rl->buf == NULL || p->corr != rl->st.cur_seq
	    || p->len > rl->st.total - rl->st.got)
		return NULL;
	// Not a locked add: that waits for the stores of the copy before it
	// to drain, and cost more than the rest of this function.
	atomic_store_explicit(&tw__shm_frames_placed,
	    atomic_load_explicit(&tw__shm_frames_placed, memory_order_relaxed)
	        + 1,
	    memory_order_relaxed);
	return rl->buf + rl->st.got;
}

// Takes what the ring holds now into the mailbox, at most `max` frames
// (counted in *frames).  TW_OK: the ring is empty or `max` was reached;
// TW_ETIMEDOUT: a data message is held back by flow control, so no more
// data may be taken; anything else ends reading.  Reader role held.
static int rx_pump(shm_chan *mc, rx_ctx *rx, unsigned max, unsigned *frames)
{
	int status;
	if (rx->pend) {
		status = rx_push_pending(mc, rx);
		if (status == TW_ETIMEDOUT) {
			// Held back: keep control messages flowing.
			status = rx_drain_ctl(mc, rx);
			return status == TW_OK ? TW_ETIMEDOUT : status;
		}
		if (status != TW_OK)
			return status;
	}
	while (*frames < max) {
		uint32_t lane, route;
		uint64_t corr;
		size_t n;
		void *at = rx->slot;
		size_t from = 0;
		status = tw__ring_recv_any_placed(mc->in, &lane, rx->slot,
		    mc->ep->slot_msg, &n, &route, &corr, rx_place, mc, &at,
		    &from);
		if (status == TW_ETIMEDOUT)
			return TW_OK;
		if (status == TW_ETRUNC)
			return rx_proto(mc, "slot larger than the ring's");
		if (status == TW_EPROTO)
			return rx_proto(mc, "corrupt ring");
		if (status != TW_OK)
			return status; // TW_EPEER, TW_ECLOSED
		++*frames;
		status = rx_frame(mc, rx, lane, route, corr, at, from, n);
		if (status != TW_OK)
			return status;
		if (rx->pend) {
			// Held back until the mailbox has room: the sender
			// gets the slots taken so far now, not then.
			status = tw__ring_release(mc->in);
			if (status == TW_EPROTO)
				return rx_proto(mc, "corrupt ring");
			return TW_ETIMEDOUT;
		}
		if (rx->dst_done)
			return TW_OK;
		// The progress thread (or a probe) lets an application
		// thread that waits for the ring have it at once: its message
		// may yet go straight into its buffer.
		if (atomic_load_explicit(&mc->readers, memory_order_relaxed)
		        > 0
		    && atomic_load_explicit(&mc->role, memory_order_relaxed)
		        == SHM_ROLE_OTHER)
			return TW_OK;
	}
	return TW_OK;
}

// Reading has ended with `status` (TW_OK or TW_ECLOSED when this side
// stops): from now on nobody reads the ring.  Once.
static void rx_end(shm_chan *mc, int status)
{
	if (atomic_exchange(&mc->rx_dead, 1) != 0)
		return;
	if (status == TW_EPEER)
		LOGC(mc, TW_LOG_DEBUG, "peer %s (%s) left", mc->peer_id,
		    mc->peer_addr);
	if (status != TW_OK && status != TW_ECLOSED)
		rx_fail(mc, status);
}

// Keeps ep->held, which tells whoever frees room in the mailbox to wake the
// progress threads, in step with the held-back message.  Reader role held.
static void rx_note_held(shm_chan *mc)
{
	int held = mc->rxc->pend ? 1 : 0;
	if (held == atomic_load_explicit(&mc->held, memory_order_relaxed))
		return;
	atomic_store(&mc->held, held);
	if (held)
		atomic_fetch_add(&mc->ep->held, 1);
	else
		atomic_fetch_sub(&mc->ep->held, 1);
}

// What a pass of the progress thread found of one channel.
enum { GRP_IDLE, GRP_BUSY, GRP_SKIP, GRP_PARKED };

// Whether the peer waits for this side to read: a lane of the inbound ring
// is full, or the peer waits for its messages to be delivered.  Both kick
// the ring as they begin to wait (tx_put2, shm_wait_until).
static bool rx_needed(shm_chan *mc)
{
	return tw__ring_looks_full(mc->in)
	    || __atomic_load_n(
	           &mc->hdr->dir[!mc->side].waiters, __ATOMIC_RELAXED)
	    != 0;
}

// Takes what one channel's ring holds, if nobody else reads it now.  On
// GRP_SKIP, *until is when to look again (unchanged: when woken); on
// GRP_PARKED also, and *kick and *kseq are the word to sleep on meanwhile
// and its value, which the peer bumps when it needs the ring read.
static int grp_pump(
    shm_chan *mc, int64_t now, int64_t *until, uint32_t **kick, uint32_t *kseq)
{
	if (tw__shm_flag(&mc->rx_dead) || tw__shm_flag(&mc->stop))
		return GRP_SKIP;
	// Sampled before looking: a kick from now on ends the sleep at once.
	*kick = tw__ring_kick_word(mc->in, kseq);
	bool reading = atomic_load(&mc->readers) > 0
	    || atomic_load_explicit(&mc->role, memory_order_relaxed)
	        == SHM_ROLE_APP;
	uint32_t gen
	    = atomic_load_explicit(&mc->park_gen, memory_order_relaxed);
	bool came = gen != mc->park_seen;
	mc->park_seen = gen;
	bool urgent = atomic_exchange(&mc->unpark, 0) != 0;
	if (urgent && !reading) {
		mc->park_from = 0;
	} else if (reading || came) {
		// A reader polls the ring, or did since the last look: it may
		// well be back.  Each look that finds one doubles the time to
		// the next, so that a ring the application keeps reading
		// costs this thread few wake-ups (each one takes a CPU from a
		// spinning party on a host with no CPU to spare, and a party
		// kept off its CPU for long makes the other one give up its
		// spin).
		mc->park_ns = mc->park_from == 0        ? SHM_PARK_NS
		    : mc->park_ns < SHM_PARK_MAX_NS / 2 ? 2 * mc->park_ns
		                                        : SHM_PARK_MAX_NS;
		mc->park_from = now;
	}
	if (reading
	    || (mc->park_from != 0 && now < mc->park_from + mc->park_ns
	        && !rx_needed(mc))) {
		*until = mc->park_from + mc->park_ns;
		return GRP_PARKED;
	}
	if (!role_take(mc, SHM_ROLE_OTHER)) {
		// A probe, for a few system calls at most, or a reader that
		// came meanwhile.
		*until = now + SHM_RETRY_NS;
		return GRP_SKIP;
	}
	mc->park_from = 0;
	unsigned frames = 0;
	int status = TW_OK;
	bool was_held = atomic_load(&mc->held) != 0;
	if (!tw__shm_flag(&mc->rx_dead)) {
		status = rx_pump(mc, mc->rxc, SHM_RX_BATCH, &frames);
		rx_note_held(mc);
	}
	role_give(mc);
	if (status == TW_ETIMEDOUT) {
		// Held back.  Room made before ep_taken could see `held`
		// raised would wake nobody: one more try after raising it.
		return frames > 0 || !was_held ? GRP_BUSY : GRP_IDLE;
	}
	if (status != TW_OK) {
		rx_end(mc, status);
		return GRP_SKIP;
	}
	return frames > 0 ? GRP_BUSY : GRP_IDLE;
}

static void *grp_main(void *arg)
{
	shm_grp *g = arg;
	pthread_setname_np(pthread_self(), "tw-shm-rx");
	shm_chan *snap[TW_SHM_GRP_MAX];
	uint32_t *word[TW_SHM_GRP_MAX + 1];
	uint32_t seq[TW_SHM_GRP_MAX + 1];
	tw_ring *slept[TW_SHM_GRP_MAX];
	int64_t next_live = tw__now_ns() + SHM_LIVENESS_NS;
	while (!tw__shm_flag(&g->stop)) {
		// Sampled before looking at anything: a wake-up from now on
		// ends the sleep below at once.
		word[0] = wake_word(g);
		seq[0] = atomic_load(&g->wake);
		pthread_mutex_lock(&g->mtx);
		size_t n = g->n;
		memcpy(snap, g->chan, n * sizeof(snap[0]));
		pthread_mutex_unlock(&g->mtx);

		int64_t now = tw__now_ns();
		int64_t until = now + SHM_RX_SLICE_NS;
		bool busy = false;
		// Parked rings' kick words first, then the rings slept on.
		unsigned nw = 1, ns = 0;
		for (size_t i = 0; i < n; i++) {
			int64_t again = until;
			int what = grp_pump(
			    snap[i], now, &again, &word[nw], &seq[nw]);
			if (what == GRP_BUSY)
				busy = true;
			if (what == GRP_PARKED)
				nw++;
			if ((what == GRP_SKIP || what == GRP_PARKED)
			    && again < until)
				until = again;
			if (what != GRP_IDLE)
				snap[i] = NULL;
		}

		// Announce ourselves on every ring we may sleep on, then
		// re-check it: a frame published after that bumps its word.
		// Looking for dead processes costs system calls per peer,
		// so only now and then, and only for rings about to be slept
		// on (the others are being read).
		bool live = now >= next_live;
		if (live)
			next_live = now + SHM_LIVENESS_NS;
		for (size_t i = 0; i < n && !busy; i++) {
			shm_chan *mc = snap[i];
			if (mc == NULL)
				continue;
			// A held-back message waits for room in the mailbox
			// (ep_taken wakes us), control frames never wait.
			uint32_t mask = atomic_load(&mc->held)
			    ? UINT32_C(1) << TW_SHM_LANE_CTL
			    : (UINT32_C(1) << TW_SHM_LANES) - 1;
			int status = tw__ring_sleep_begin(
			    mc->in, mask, live, &word[nw], &seq[nw]);
			if (status == TW_EAGAIN) {
				slept[ns++] = mc->in;
				nw++;
			} else if (status == TW_OK) {
				busy = true;
			} else if (atomic_load(&mc->held)) {
				// What was delivered still goes in; sends
				// to a dead peer stop now.
				if (status == TW_EPEER)
					atomic_store(&mc->peer_gone, 1);
			} else {
				if (status == TW_EPROTO)
					status = rx_proto(mc, "corrupt ring");
				rx_end(mc, status);
			}
		}
		// After a pass that moved frames, a receiver woken by them may
		// be waiting for this CPU (threads bound to one CPU, more
		// threads than CPUs): it goes first, takes the ring back (see
		// shm_recv_until) and its messages skip the mailbox, where
		// this thread would otherwise go on filling the mailbox for
		// the rest of its time slice.  With a CPU to spare, the yield
		// returns at once.
		if (!busy)
			tw__futex_waitv(word, seq, nw, until);
		else
			sched_yield();
		for (unsigned i = 0; i < ns; i++)
			tw__ring_sleep_end(slept[i]);

		pthread_mutex_lock(&g->mtx);
		g->pass++;
		pthread_cond_broadcast(&g->passed);
		pthread_mutex_unlock(&g->mtx);
	}
	return NULL;
}

// --- the reader role ----------------------------------------------------------

// Tells the progress thread that a reader left; `urgent`: it must take the
// ring back now rather than after its park.
static void reader_left(shm_chan *mc, bool urgent)
{
	if (urgent) {
		atomic_store(&mc->unpark, 1);
		grp_wake(mc->grp);
		return;
	}
	// Readers of other threads may bump it at once and one bump be lost:
	// any change will do.
	uint32_t gen
	    = atomic_load_explicit(&mc->park_gen, memory_order_relaxed);
	atomic_store_explicit(&mc->park_gen, gen + 1, memory_order_relaxed);
}

// One pass of an application thread over the ring, reader role held: it
// never waits for room in the mailbox (a held-back message is the receiver
// thread's to push).
static int reader_pump(shm_chan *mc, unsigned *frames)
{
	if (tw__shm_flag(&mc->rx_dead))
		return TW_ECLOSED;
	int status = rx_pump(mc, mc->rxc, SHM_RX_BATCH, frames);
	rx_note_held(mc);
	tw__shm_frames_read_inline += *frames;
	return status;
}

// Whether an application thread may read the ring now.
static bool readable(shm_chan *mc)
{
	return tw__shm_flag(&mc->attached) && mc->rx_started
	    && !tw__shm_flag(&mc->rx_dead) && !tw__shm_flag(&mc->stop);
}

// Ends a reader's claim on its buffer: a message half assembled there
// moves to memory of its own, for whoever reads on.  Reader role held.
static int rx_direct_release(shm_chan *mc, rx_ctx *rx)
{
	rx_lane *rl = &rx->lane[TW_SHM_LANE_DATA];
	int status = TW_OK;
	if (rl->direct) {
		size_t total = (size_t)rl->st.total, got = (size_t)rl->st.got;
		unsigned char *copy = malloc(total);
		if (copy != NULL)
			memcpy(copy, rl->buf, got);
		else
			status = rx_nomem(mc, total);
		rl->buf = copy;
		rl->direct = false;
		atomic_fetch_add_explicit(
		    &tw__shm_direct_moved, 1, memory_order_relaxed);
	}
	rx->dst = NULL;
	rx->dst_used = false;
	rx->dst_done = false;
	rx->want = NULL;
	return status;
}

// The reverse of rx_direct_release, for a reader that takes the role with
// a buffer: a message of its key that another reader (the progress
// thread, which held the ring when this one came) began to assemble in
// memory of its own moves into that buffer, when it may go there at all
// (rx_direct_ok), and its rest is placed there.  Only the bytes received
// so far are copied, and the memory of its own, most of whose pages were
// never touched, goes back before they cost a fault each; otherwise a
// large message that began a moment too early took an allocation as
// large, faulted in page by page, and a second copy through the mailbox.
// Reader role held.
static void rx_adopt(shm_chan *mc, rx_ctx *rx)
{
	rx_lane *rl = &rx->lane[TW_SHM_LANE_DATA];
	if (!rl->st.in_msg || rl->direct || rl->buf == NULL || rx->pend
	    || !rx_direct_ok(mc, rx,
	        rx_wanted(rx, TW_SHM_LANE_DATA, rl->key, strlen(rl->key)),
	        rl->key, rl->st.total))
		return;
	memcpy(rx->dst, rl->buf, (size_t)rl->st.got);
	tw__pool_free(rl->buf);
	rl->buf = rx->dst;
	rl->direct = true;
	rx->dst_used = true;
	atomic_fetch_add_explicit(
	    &tw__shm_direct_adopted, 1, memory_order_relaxed);
}

// Sleeps until the peer publishes a frame or kicks the ring, this side
// stops, the peer leaves or `deadline` passes (TW_OK but for the stop and
// the peer's leaving), for a reader whose spin found nothing: it stays the
// ring's consumer, so the peer's next frame wakes it and no other thread.
// Handing the ring to the progress thread instead cost a second wake-up
// (the mailbox's) per message, and a message already half way into the
// reader's buffer a move to memory of its own and another copy; on a host
// with no CPU to spare the progress thread's running also took the CPU of
// a spinning party.  Reader role held.
static int rx_await(shm_chan *mc, int64_t deadline)
{
	uint32_t *word, seq;
	int status = tw__ring_sleep_begin(
	    mc->in, (UINT32_C(1) << TW_SHM_LANES) - 1, 1, &word, &seq);
	if (status != TW_EAGAIN)
		return status;
	int64_t nap = SHM_RX_SLICE_NS, left = deadline - tw__now_ns();
	if (deadline != TW_FOREVER && left < nap)
		nap = left > 0 ? left : 0;
	atomic_fetch_add_explicit(
	    &tw__shm_reader_naps, 1, memory_order_relaxed);
	if (!tw__shm_flag(&mc->stop) && !tw__chanbase_aborted(&mc->base))
		tw__futex_wait(word, seq, nap);
	tw__ring_sleep_end(mc->in);
	if (tw__shm_flag(&mc->stop) || tw__chanbase_aborted(&mc->base))
		return TW_ECLOSED;
	return TW_OK;
}

// Reads the ring in this thread while `key` has not arrived, until
// `deadline` passes: spinning, and once SHM_SPIN_NS pass without a frame,
// asleep on the ring (rx_await).  A thread that finds the role held spins
// for it as long, then leaves the ring to its holder and waits in the
// mailbox.  With `dst`, a message of `key` of at most `cap` bytes may land
// there directly: then *len is set and the result is true.
static bool spin(shm_chan *mc, const char *key, int64_t *deadline, void *dst,
    size_t cap, size_t *len)
{
	if (mc->ep->spin_ns == 0 || !readable(mc))
		return false;
	bool ctl = tw__key_is_ctl(key);
	if (tw__rxbox_ready_kind(&mc->base.rx, key, ctl)) {
		// Still a receiving application: the progress thread stays
		// off the ring.
		reader_left(mc, false);
		return false;
	}
	// A progress thread asleep on the ring wakes at the next frame, sees
	// us and leaves the ring to us: by the role's value when we hold it,
	// by the count of readers while we wait for it.
	bool reading = role_take(mc, SHM_ROLE_APP), counted = !reading;
	if (counted)
		atomic_fetch_add(&mc->readers, 1);
	bool got = false, urgent = false, direct = false;
	int status = TW_OK;
	// The budget starts at the first pass that finds nothing: a message
	// already there costs no clock read (one is about a twentieth of a
	// small message's whole receive).
	int64_t until = 0;
	bool posted = false;
	for (unsigned pass = 0;; pass++) {
		if (!reading)
			reading = role_take(mc, SHM_ROLE_APP);
		if (reading && !posted) {
			posted = true;
			mc->rxc->want = key;
			mc->rxc->want_len = strlen(key);
			mc->rxc->want_data = !ctl;
			mc->rxc->dst = dst;
			mc->rxc->dst_cap = cap;
			if (dst != NULL)
				rx_adopt(mc, mc->rxc);
		}
		unsigned frames = 0;
		if (reading) {
			status = reader_pump(mc, &frames);
			if (status != TW_OK) {
				// Held back (TW_ETIMEDOUT) is the receiver
				// thread's to push; anything else ends
				// reading, which wakes it too.
				urgent = true;
				break;
			}
			if (mc->rxc->dst_done) {
				got = direct = true;
				*len = mc->rxc->dst_len;
				break;
			}
		}
		bool look = reading ? frames > 0 && mc->rxc->news : true;
		if (reading)
			mc->rxc->news = false;
		if (look
		    && (got = tw__rxbox_ready_kind(&mc->base.rx, key, ctl)))
			break;
		// The clock is read at the first pass that finds nothing, after
		// one that found frames, and every SHM_CLOCK_PASSES passes in
		// between: a read costs about as much as a pass over an empty
		// ring, and the fewer there are, the sooner a frame is seen.
		if (until == 0 || frames > 0 || pass % SHM_CLOCK_PASSES == 0) {
			int64_t now = tw__now_ns();
			if (until == 0)
				*deadline = tw__deadline_fix(*deadline);
			if (frames > 0 || until == 0)
				until = now + mc->ep->spin_ns;
			if (now >= *deadline)
				break;
			if (now >= until && reading) {
				status = rx_await(mc, *deadline);
				if (status != TW_OK) {
					urgent = true;
					break;
				}
				if ((got = tw__rxbox_ready_kind(
				         &mc->base.rx, key, ctl)))
					break;
				until = tw__now_ns() + mc->ep->spin_ns;
				continue;
			}
			if (now >= until)
				break;
		}
		// Spinning for the ring only helps while whoever holds it (the
		// progress thread amid one batch, a probe, another receiving
		// thread) runs on another CPU.  On ours (threads bound to one
		// CPU, more threads than CPUs) the spin keeps it from letting
		// go, and the whole budget is lost: after a few passes, let it
		// run.  Elsewhere this costs one cheap system call per pass.
		if (!reading && pass >= SHM_LOCK_TRIES)
			sched_yield();
		else
			tw__cpu_relax();
	}
	if (reading) {
		int st = rx_direct_release(mc, mc->rxc);
		if (st != TW_OK && (status == TW_OK || status == TW_ETIMEDOUT))
			status = st;
		role_give(mc);
	}
	if (status != TW_OK && status != TW_ETIMEDOUT)
		rx_end(mc, status);
	if (counted)
		atomic_fetch_sub(&mc->readers, 1);
	// A caller that is about to block needs the progress thread back on
	// the ring now; one that got its message, or gives up anyway, leaves
	// it parked.
	if (!got && *deadline > tw__now_ns())
		urgent = true;
	reader_left(mc, urgent);
	return direct;
}

static int shm_recv_until(
    tw_channel *c, const char *key, int64_t deadline, tw_buf *out)
{
	shm_chan *mc = c->impl;
	(void)spin(mc, key, &deadline, NULL, 0, NULL);
	int status = tw__rxbox_recv_until(c, key, deadline, out);
	// A receiver that had to block (spin woke the progress thread) and
	// got its message is likely to receive again at once: the progress
	// thread, which would otherwise go on filling the mailbox while this
	// thread waits for a CPU, leaves the ring to it again.
	if (status == TW_OK && mc->ep->spin_ns > 0)
		reader_left(mc, false);
	return status;
}

static int shm_recv(
    tw_channel *c, const char *key, int64_t timeout_ms, tw_buf *out)
{
	return shm_recv_until(c, key, tw__deadline_ms(timeout_ms), out);
}

static int shm_recv_into(tw_channel *c, const char *key, int64_t deadline,
    void *buf, size_t cap, size_t *len)
{
	shm_chan *mc = c->impl;
	if (spin(mc, key, &deadline, buf, cap, len))
		return TW_OK;
	int status = tw__rxbox_recv_into(c, key, deadline, buf, cap, len);
	if (status == TW_OK && mc->ep->spin_ns > 0)
		reader_left(mc, false); // here again soon: see shm_recv_until
	return status;
}

// A probe takes what the ring holds first (without waiting), so that a
// polling application sees messages without a thread hand-off.
static int shm_probe(tw_channel *c, const char *key, size_t *len)
{
	shm_chan *mc = c->impl;
	int status = tw__rxbox_probe(c, key, len);
	if (status != TW_EAGAIN || !readable(mc)
	    || !role_take(mc, SHM_ROLE_OTHER))
		return status;
	unsigned frames = 0;
	status = reader_pump(mc, &frames);
	role_give(mc);
	if (status == TW_ETIMEDOUT)
		reader_left(mc, true);
	else if (status != TW_OK)
		rx_end(mc, status);
	return tw__rxbox_probe(c, key, len);
}

// --- sending ----------------------------------------------------------------

// TW_OK while a send may go on: TW_ECLOSED once cancelled or aborted,
// TW_EPEER once the peer is gone.
static int tx_check(shm_chan *mc, const _Atomic int *cancel)
{
	if (tw__chanbase_aborted(&mc->base) || tw__chanbase_cancelled(cancel))
		return TW_ECLOSED;
	if (peer_gone(mc))
		return TW_EPEER;
	return TW_OK;
}

// Takes a lane's mutex, giving up on cancel, peer loss or the deadline:
// the holder may be a sender that waits for room until its own deadline.
static int tx_lock(
    shm_chan *mc, shm_tx *tx, int64_t deadline, const _Atomic int *cancel)
{
	if (pthread_mutex_trylock(&tx->mtx) == 0)
		return TW_OK;
	for (;;) {
		int status = tx_check(mc, cancel);
		if (status != TW_OK)
			return status;
		int64_t us = slice_us(deadline, SHM_SEND_SLICE_US);
		if (us == 0)
			return TW_ETIMEDOUT;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		int64_t ns = ts.tv_nsec + us * 1000;
		ts.tv_sec += (time_t)(ns / 1000000000);
		ts.tv_nsec = (long)(ns % 1000000000);
		if (pthread_mutex_timedlock(&tx->mtx, &ts) == 0)
			return TW_OK;
	}
}

// What a send into the outbound ring that ended with `status` returns.
static int tx_ring_status(shm_chan *mc, int status, const _Atomic int *cancel)
{
	if (status == TW_EPROTO) {
		// The peer scribbled on the ring's indices.
		rx_proto(mc, "corrupt ring");
		rx_fail(mc, TW_EPROTO);
		return TW_EPEER;
	}
	// The ring says TW_ECLOSED once this side left the segment: after an
	// abort that is right, after giving up on a broken peer it is the
	// peer's failure.
	if (status == TW_ECLOSED && tx_check(mc, cancel) == TW_EPEER)
		status = TW_EPEER;
	return status; // TW_OK, TW_EPEER, TW_ECLOSED
}

// Puts one frame into the outbound ring, waiting for room until `deadline`
// in slices so that cancel and peer loss are noticed.  Lane mutex held.
// Sends the frame data[0..n) followed by more[0..n_more) (a payload sent
// from where the caller has it) as one slot.
static int tx_put2(shm_chan *mc, uint32_t lane, uint32_t type,
    const void *data, size_t n, const void *more, size_t n_more, uint64_t seq,
    int64_t deadline, const _Atomic int *cancel)
{
	// A full ring usually means a receiver that is busy copying out what
	// it took: spinning as long as a reader would wait for a frame keeps
	// the sender off the futex, whose wake-up costs the receiver a system
	// call and the sender a trip through the scheduler.
	int status;
	int64_t spin_until = 0;
	for (;;) {
		status = tw__ring_send2(
		    mc->out, lane, type, data, n, more, n_more, seq, 0);
		if (status != TW_ETIMEDOUT)
			break;
		int64_t now = tw__now_ns();
		if (spin_until == 0) {
			spin_until = now + mc->ep->spin_ns;
			deadline = tw__deadline_fix(deadline);
		}
		if (now >= spin_until || now >= deadline
		    || tx_check(mc, cancel) != TW_OK)
			break;
		tw__cpu_relax();
	}
	// The peer's progress thread may be parked while its application
	// reads elsewhere: a full ring needs it now (rx_needed).
	if (status == TW_ETIMEDOUT)
		tw__ring_kick(mc->out);
	while (status == TW_ETIMEDOUT) {
		// Then in slices, so that cancel and peer loss are noticed.
		if ((status = tx_check(mc, cancel)) != TW_OK)
			return status;
		if (deadline != TW_FOREVER && tw__now_ns() >= deadline)
			return TW_ETIMEDOUT;
		int64_t us = slice_us(deadline, SHM_SEND_SLICE_US);
		status = tw__ring_send2(
		    mc->out, lane, type, data, n, more, n_more, seq, us);
	}
	return tx_ring_status(mc, status, cancel);
}

static int tx_put(shm_chan *mc, uint32_t lane, uint32_t type, const void *data,
    size_t n, uint64_t seq, int64_t deadline, const _Atomic int *cancel)
{
	return tx_put2(
	    mc, lane, type, data, n, NULL, 0, seq, deadline, cancel);
}

// Ends a message that an earlier send left half way.  Lane mutex held.
static int tx_unwind(
    shm_chan *mc, uint32_t lane, int64_t deadline, const _Atomic int *cancel)
{
	shm_tx *tx = &mc->tx[lane];
	if (tx->partial == 0)
		return TW_OK;
	int status = tx_put(
	    mc, lane, TW_SHM_F_CANCEL, NULL, 0, tx->partial, deadline, cancel);
	if (status == TW_OK)
		tx->partial = 0;
	return status;
}

static int tx_chunked(shm_chan *mc, uint32_t lane, const char *key,
    size_t klen, const unsigned char *buf, size_t len, int64_t deadline,
    const _Atomic int *cancel)
{
	shm_tx *tx = &mc->tx[lane];
	uint64_t seq = tx->seq + 1;
	size_t slot_msg = mc->ep->slot_msg;
	size_t first = slot_msg - TW_SHM_DATA_HDR - klen;
	if (first >= len) {
		// One frame, built in its slot when the ring has room: no
		// copy through scratch, and none of the waiting's set-up.
		void *slot;
		int status = tw__ring_claim(mc->out, lane, &slot);
		if (status == TW_OK)
			status = tw__ring_publish(mc->out, lane, TW_SHM_F_DATA,
			    tw__shm_put_data(
			        slot, slot_msg, key, klen, len, buf, len),
			    seq);
		if (status != TW_EAGAIN) {
			if ((status = tx_ring_status(mc, status, cancel))
			    == TW_OK)
				tx->seq = seq;
			return status;
		}
		first = len;
	}
	// The header and key in scratch, the payload from where it is.
	size_t n
	    = tw__shm_put_data(tx->scratch, slot_msg, key, klen, len, NULL, 0);
	int status = tx_put2(mc, lane, TW_SHM_F_DATA, tx->scratch, n, buf,
	    first, seq, deadline, cancel);
	if (status != TW_OK)
		return status;
	tx->seq = seq;
	for (size_t off = first; off < len;) {
		size_t k = len - off < slot_msg ? len - off : slot_msg;
		status = tx_put(mc, lane, TW_SHM_F_CONT, buf + off, k, seq,
		    deadline, cancel);
		if (status != TW_OK) {
			tx->partial = seq;
			return status;
		}
		off += k;
	}
	return TW_OK;
}

static int tx_large(shm_chan *mc, const char *key, size_t klen,
    const void *buf, size_t len, int64_t deadline, const _Atomic int *cancel)
{
	shm_tx *tx = &mc->tx[TW_SHM_LANE_DATA];
	struct tw_shm_dir *d = &mc->hdr->dir[mc->side];
	uint64_t seq = tx->seq + 1;
	__atomic_store_n(&d->large_post, seq, __ATOMIC_SEQ_CST);
	size_t n = tw__shm_put_large(tx->scratch, mc->ep->slot_msg, key, klen,
	    len, (uint64_t)(uintptr_t)buf);
	int status = tx_put(mc, TW_SHM_LANE_DATA, TW_SHM_F_LARGE, tx->scratch,
	    n, seq, deadline, cancel);
	if (status != TW_OK)
		return status;
	tx->seq = seq;
	bool claimed = false; // the receiver is copying: only it can end this
	// The copy takes about a nanosecond a byte: waiting that long (and as
	// long as a reader waits for a frame) by spinning spares both sides a
	// futex sleep and wake-up per message.
	int64_t spin_until = mc->ep->spin_ns == 0
	    ? 0
	    : tw__now_ns() + mc->ep->spin_ns + (int64_t)len;
	for (;;) {
		if (__atomic_load_n(&d->copied, __ATOMIC_ACQUIRE) >= seq)
			return TW_OK;
		int64_t now = tw__now_ns();
		if (now < spin_until && now < deadline
		    && tx_check(mc, cancel) == TW_OK) {
			tw__cpu_relax();
			continue;
		}
		// A receiver that copied the message and then left (its last
		// message, before it closed) marked the copy first: look again,
		// or a delivered message would fail.
		if (peer_gone(mc))
			return __atomic_load_n(&d->copied, __ATOMIC_ACQUIRE)
			        >= seq
			    ? TW_OK
			    : TW_EPEER;
		if (!claimed) {
			status = tx_check(mc, cancel);
			if (status == TW_OK && deadline != TW_FOREVER
			    && tw__now_ns() >= deadline)
				status = TW_ETIMEDOUT;
			if (status != TW_OK) {
				uint64_t expect = seq;
				if (__atomic_compare_exchange_n(&d->large_post,
				        &expect, seq | TW_SHM_LARGE_CANCELLED,
				        false, __ATOMIC_SEQ_CST,
				        __ATOMIC_SEQ_CST))
					return status;
				claimed = true;
			}
		}
		tw_signal_wait(&d->copied, seq, SHM_SEND_SLICE_US);
	}
}

static int shm_xsend(tw_channel *c, const char *key, const void *buf,
    size_t len, int flags, int64_t deadline, const _Atomic int *cancel)
{
	shm_chan *mc = c->impl;
	if (tw__chanbase_aborted(&mc->base))
		return TW_ECLOSED;
	if (!tw__shm_flag(&mc->attached))
		return TW_EPEER;
	int status = tx_check(mc, cancel);
	if (status != TW_OK)
		return status;
	size_t klen = strlen(key);
	if (klen == 0 || klen >= TW_KEY_MAX || (buf == NULL && len > 0))
		return TW_EINVAL;
	// The peer closed or aborted the key's namespace (what it says about
	// that travels in order with its data, see rx_frame).
	if (tw__mailbox_peer_left(mc->ep->mb, mc->peer_rank, key))
		return TW_EPEER;
	uint32_t lane
	    = tw__key_is_ctl(key) ? TW_SHM_LANE_CTL : TW_SHM_LANE_DATA;
	shm_tx *tx = &mc->tx[lane];
	// The deadline may be lazy (tw__deadline_lazy_ms): a message of one
	// frame that finds the lane free and room in the ring, most of them,
	// never reads the clock.  tx_put fixes it when it must wait; anything
	// that waits or puts more than one frame has it fixed first, so that
	// every wait counts from the same point.
	if (pthread_mutex_trylock(&tx->mtx) != 0) {
		deadline = tw__deadline_fix(deadline);
		if ((status = tx_lock(mc, tx, deadline, cancel)) != TW_OK)
			return status;
	}
	// An asynchronous send returns before the receiver could copy from
	// the caller's buffer: it always takes the ring.
	bool large = lane == TW_SHM_LANE_DATA && !(flags & TW__SEND_ASYNC)
	    && len >= mc->cma_min
	    && __atomic_load_n(&mc->hdr->cma[mc->side], __ATOMIC_ACQUIRE)
	        == TW_SHM_CMA_YES;
	// The faster way on this link, as measured (shm_pick.h).
	bool timed = large && mc->cma_pick;
	if (timed)
		large = tw__shm_pick_way(&mc->pick, len) == TW_SHM_PICK_SINGLE;
	int64_t t0 = timed ? tw__now_ns() : 0;
	if (tx->partial != 0 || large
	    || len > mc->ep->slot_msg - TW_SHM_DATA_HDR - klen)
		deadline = tw__deadline_fix(deadline);
	status = tx_unwind(mc, lane, deadline, cancel);
	if (status == TW_OK) {
		status = large
		    ? tx_large(mc, key, klen, buf, len, deadline, cancel)
		    : tx_chunked(
		        mc, lane, key, klen, buf, len, deadline, cancel);
	}
	if (timed && status == TW_OK)
		tw__shm_pick_note(&mc->pick, len,
		    large ? TW_SHM_PICK_SINGLE : TW_SHM_PICK_RING,
		    tw__now_ns() - t0);
	if (status == TW_OK)
		atomic_store_explicit(&tx->sent,
		    atomic_load_explicit(&tx->sent, memory_order_relaxed) + 1,
		    memory_order_release);
	pthread_mutex_unlock(&tx->mtx);
	return tw__chanbase_send_status(&mc->base, status, cancel);
}

static int shm_send(
    tw_channel *c, const char *key, const void *buf, size_t len)
{
	return shm_xsend(c, key, buf, len, 0, TW_FOREVER, NULL);
}

// Sends a namespace frame in the data lane, after the data sent before it,
// waiting a bounded time: close and abort must not hang on a stuck peer.
static void tx_ns(shm_chan *mc, uint32_t type, const char *ns)
{
	if (!tw__shm_flag(&mc->attached) || peer_gone(mc))
		return;
	size_t n = strlen(ns);
	int64_t deadline = tw__now_ns() + SHM_CTL_TIMEOUT_NS;
	shm_tx *tx = &mc->tx[TW_SHM_LANE_DATA];
	int status = tx_lock(mc, tx, deadline, NULL);
	if (status != TW_OK)
		goto out;
	status = tx_unwind(mc, TW_SHM_LANE_DATA, deadline, NULL);
	if (status == TW_OK) {
		uint64_t seq = tx->seq + 1;
		status = tx_put(
		    mc, TW_SHM_LANE_DATA, type, ns, n, seq, deadline, NULL);
		if (status == TW_OK)
			tx->seq = seq;
	}
	pthread_mutex_unlock(&tx->mtx);
out:
	if (status != TW_OK && status != TW_EPEER)
		LOGC(mc, TW_LOG_WARN, "cannot tell %s that %s %s: %s",
		    mc->peer_id, ns,
		    type == TW_SHM_F_ABORT_NS ? "aborted" : "closed",
		    tw_strerror(status));
}

// --- receiving and the other channel ops -------------------------------------

// Waits until the peer's mailbox has every message sent so far.  A peer
// that leaves first fails the wait only if it missed a data message: a
// throttle ack or a hello still in the ring then is lost to nobody, and
// whether the peer's reader took it before the peer closed is a matter of
// thread timing.
static int shm_wait_until(
    tw_channel *c, int64_t deadline, const _Atomic int *cancel)
{
	shm_chan *mc = c->impl;
	if (tw__chanbase_aborted(&mc->base))
		return TW_ECLOSED;
	if (!tw__shm_flag(&mc->attached))
		return TW_OK;
	// The peer counts the messages of both lanes together.
	uint64_t target_data = atomic_load(&mc->tx[TW_SHM_LANE_DATA].sent);
	uint64_t target
	    = target_data + atomic_load(&mc->tx[TW_SHM_LANE_CTL].sent);
	struct tw_shm_dir *d = &mc->hdr->dir[mc->side];
	if (__atomic_load_n(&d->delivered, __ATOMIC_ACQUIRE) >= target)
		return TW_OK;
	int status = TW_OK;
	__atomic_add_fetch(&d->waiters, 1, __ATOMIC_SEQ_CST);
	// What the ring holds may wait for the peer's parked progress
	// thread, which our waiting now calls for (rx_needed).
	if (__atomic_load_n(&d->delivered, __ATOMIC_SEQ_CST) < target)
		tw__ring_kick(mc->out);
	while (__atomic_load_n(&d->delivered, __ATOMIC_SEQ_CST) < target) {
		if ((status = tx_check(mc, cancel)) != TW_OK) {
			// A peer publishes its last count before it leaves.
			if (status == TW_EPEER
			    && __atomic_load_n(
			           &d->delivered_data, __ATOMIC_SEQ_CST)
			        >= target_data)
				status = TW_OK;
			break;
		}
		int64_t us = slice_us(deadline, SHM_WAIT_SLICE_US);
		if (us == 0) {
			status = TW_ETIMEDOUT;
			break;
		}
		tw_signal_wait(&d->delivered, target, us);
	}
	__atomic_sub_fetch(&d->waiters, 1, __ATOMIC_SEQ_CST);
	return status;
}

static int shm_wait_pending(tw_channel *c)
{
	return shm_wait_until(c, TW_FOREVER, NULL);
}

static void shm_abort(tw_channel *c)
{
	shm_chan *mc = c->impl;
	tw__chanbase_set_aborted(&mc->base);
	tw_mailbox_abort(mc->ep->mb);
	if (tw__shm_flag(&mc->attached))
		tw__shm_seg_leave(mc, TW_SHM_GONE_ABORTED);
}

static void shm_abort_ns(tw_channel *c, const char *ns)
{
	shm_chan *mc = c->impl;
	tw__mailbox_abort_ns(mc->ep->mb, ns);
	// A receiver asleep on the ring (rx_await) looks at the mailbox.
	if (tw__shm_flag(&mc->attached))
		tw__ring_kick(mc->in);
	// The root link's abort ends the whole channel (ops.abort follows):
	// leaving the segment now, rather than sending a frame, lets the peer
	// see sends fail no later than receives.
	if (strcmp(ns, mc->ep->link_id) == 0) {
		if (tw__shm_flag(&mc->attached))
			tw__shm_seg_leave(mc, TW_SHM_GONE_ABORTED);
		return;
	}
	tx_ns(mc, TW_SHM_F_ABORT_NS, ns);
}

// What the peer sent there before it hears of the close is dropped when it
// arrives (and counted as delivered, rx_pushed): its sender may be waiting
// for that.
static void shm_close_ns(tw_channel *c, const char *ns)
{
	shm_chan *mc = c->impl;
	tw__mailbox_drop_ns(mc->ep->mb, mc->peer_rank, ns);
	if (tw__shm_flag(&mc->attached))
		tw__ring_kick(mc->in);
	tx_ns(mc, TW_SHM_F_CLOSE_NS, ns);
}

// --- the handshake ---------------------------------------------------------

static int grp_join(shm_chan *mc);

static int tx_hello(shm_chan *mc, int64_t deadline)
{
	shm_tx *tx = &mc->tx[TW_SHM_LANE_CTL];
	pthread_mutex_lock(&tx->mtx);
	uint64_t seq = tx->seq + 1;
	size_t n = tw__shm_put_hello(tx->scratch, mc->ep->slot_msg,
	    TW_SHM_PROTO_VERSION, (uint32_t)getpid(),
	    (uint64_t)(uintptr_t)&shm_probe_word, shm_probe_word);
	int status = tx_put(mc, TW_SHM_LANE_CTL, TW_SHM_F_HELLO, tx->scratch,
	    n, seq, deadline, NULL);
	if (status == TW_OK)
		tx->seq = seq;
	pthread_mutex_unlock(&tx->mtx);
	return status;
}

static int shm_test_send(tw_channel *c, int64_t timeout_ms)
{
	shm_chan *mc = c->impl;
	int64_t deadline = tw__deadline_ms(timeout_ms);
	if (tw__shm_flag(&mc->attached))
		return TW_OK;
	int status = mc->side == 0 ? tw__shm_seg_create(mc)
	                           : tw__shm_seg_open(mc, deadline);
	if (status != TW_OK)
		return status;
	if (mc->rxc == NULL) {
		if ((mc->rxc = calloc(1, sizeof(*mc->rxc) + mc->ep->slot_msg))
		    == NULL)
			return TW_ENOMEM;
		for (uint32_t i = 0; i < TW_SHM_LANES; i++)
			tw__shm_rx_init(&mc->rxc->lane[i].st, mc->ep->max_msg);
	}
	atomic_store_explicit(&mc->attached, 1, memory_order_release);
	if ((status = grp_join(mc)) != TW_OK)
		return status;
	return tx_hello(mc, deadline);
}

static int shm_test_recv(tw_channel *c)
{
	shm_chan *mc = c->impl;
	int status = tw__chanbase_test_recv(c);
	// Also wait until the peer has taken our hello and said whether it
	// can read our memory, so that the first large message already
	// knows its path.  Its receiver does that at once, whatever its
	// application is doing.
	int64_t nap = 20000;
	while (status == TW_OK
	    && __atomic_load_n(&mc->hdr->cma[mc->side], __ATOMIC_ACQUIRE)
	        == TW_SHM_CMA_UNKNOWN) {
		if ((status = tx_check(mc, NULL)) != TW_OK)
			break;
		if (tw__now_ns() >= mc->base.connect_deadline) {
			status = TW_ETIMEDOUT;
			break;
		}
		tw__shm_nap(nap);
		if (nap < 1000000)
			nap *= 2;
	}
	return status;
}

// --- life cycle -------------------------------------------------------------

// Adds an attached channel to its group, starting the group's thread with
// its first channel.
static int grp_join(shm_chan *mc)
{
	shm_grp *g = mc->grp;
	int status = TW_OK;
	pthread_mutex_lock(&g->mtx);
	if (!g->started) {
		if (pthread_create(&g->thread, NULL, grp_main, g) == 0)
			g->started = true;
		else
			status = TW_ESYS;
	}
	if (status == TW_OK)
		g->chan[g->n++] = mc;
	pthread_mutex_unlock(&g->mtx);
	// Its ring joins the words the thread sleeps on at its next pass.
	grp_wake(g);
	if (status != TW_OK) {
		LOGC(mc, TW_LOG_ERROR, "cannot start a progress thread: %m");
		return status;
	}
	mc->rx_started = true;
	return TW_OK;
}

// Takes a channel out of its group and waits until the group's thread has
// ended the pass that may still use it (its ring among the words it
// sleeps on), after which the channel may go.
static void grp_leave(shm_chan *mc)
{
	shm_grp *g = mc->grp;
	pthread_mutex_lock(&g->mtx);
	for (size_t i = 0; i < g->n; i++) {
		if (g->chan[i] == mc) {
			g->chan[i] = g->chan[--g->n];
			break;
		}
	}
	uint64_t target = g->pass + 1;
	grp_wake(g);
	while (g->pass < target)
		pthread_cond_wait(&g->passed, &g->mtx);
	pthread_mutex_unlock(&g->mtx);
	if (atomic_exchange(&mc->held, 0) != 0)
		atomic_fetch_sub(&mc->ep->held, 1);
}

// Room was made in the mailbox: a progress thread holding a message back
// may go on.
static void ep_taken(void *arg, uint32_t from, uint64_t taken)
{
	(void)from;
	(void)taken;
	shm_ep *ep = arg;
	if (atomic_load(&ep->held) == 0)
		return;
	for (size_t i = 0; i < ep->ngrp; i++)
		grp_wake(&ep->grp[i]);
}

static void ep_free(shm_ep *ep)
{
	for (size_t i = 0; i < ep->ngrp; i++) {
		shm_grp *g = &ep->grp[i];
		pthread_mutex_lock(&g->mtx);
		bool started = g->started;
		pthread_mutex_unlock(&g->mtx);
		if (started) {
			atomic_store(&g->stop, 1);
			grp_wake(g);
			pthread_join(g->thread, NULL);
		}
		pthread_mutex_destroy(&g->mtx);
		pthread_cond_destroy(&g->passed);
		free(g->chan);
	}
	free(ep->grp);
	tw_mailbox_free(ep->mb);
	free(ep->link_id);
	free(ep);
}

static void ep_unref(shm_ep *ep)
{
	if (atomic_fetch_sub_explicit(&ep->refs, 1, memory_order_acq_rel) != 1)
		return;
	ep_free(ep);
}

static void chan_free(shm_chan *mc)
{
	if (mc->rxc != NULL) {
		if (mc->rxc->pend)
			free(mc->rxc->pend_data);
		for (uint32_t i = 0; i < TW_SHM_LANES; i++)
			free(mc->rxc->lane[i].buf);
		free(mc->rxc);
	}
	for (uint32_t i = 0; i < TW_SHM_LANES; i++) {
		pthread_mutex_destroy(&mc->tx[i].mtx);
		free(mc->tx[i].scratch);
	}
	free(mc->peer_id);
	free(mc->peer_addr);
	free(mc);
}

static void shm_destroy(tw_channel *c)
{
	shm_chan *mc = c->impl;
	// The receiver goes first, so that every count it publishes precedes
	// the news that this side is gone: a peer that sees us gone and then
	// finds its messages counted as delivered knows they arrived.
	atomic_store(&mc->stop, 1);
	if (tw__shm_flag(&mc->attached))
		tw_ring_abort(mc->in, 1);
	if (mc->rx_started)
		grp_leave(mc);
	if (tw__shm_flag(&mc->attached))
		tw__shm_seg_leave(mc, TW_SHM_GONE_CLOSED);
	if (mc->hdr != NULL) {
		tw__shm_seg_unlink_once(mc); // the peer never came
		tw__shm_seg_unmap(mc);
	}
	shm_ep *ep = mc->ep;
	chan_free(mc);
	ep_unref(ep);
}

static const tw_channel_ops shm_ops = {
	.send = shm_send,
	.send_async = NULL,
	.recv = shm_recv,
	.test_send = shm_test_send,
	.test_recv = shm_test_recv,
	.wait_pending = shm_wait_pending,
	.abort = shm_abort,
	.destroy = shm_destroy,
	.size = sizeof(tw_channel_ops),
};

static const tw__chan_xops shm_xops = {
	.size = sizeof(tw__chan_xops),
	.send = shm_xsend,
	.recv = shm_recv_until,
	.recv_into = shm_recv_into,
	.probe = shm_probe,
	.abort_ns = shm_abort_ns,
	.close_ns = shm_close_ns,
	.open_ns = tw__chanbase_open_ns,
	.unreceived_peak = tw__rxbox_peak,
	.ns_entries = tw__rxbox_ns_entries,
	.trim = tw__no_trim,
	.wait_pending = shm_wait_until,
	.lazy_deadline = 1,
};

static tw__chanbase *chan_new(const tw__link_cfg *cfg, void *arg, size_t peer)
{
	shm_ep *ep = arg;
	shm_chan *mc = calloc(1, sizeof(*mc));
	if (mc == NULL)
		return NULL;
	for (uint32_t i = 0; i < TW_SHM_LANES; i++) {
		pthread_mutex_init(&mc->tx[i].mtx, NULL);
		mc->tx[i].scratch = malloc(ep->slot_msg);
	}
	mc->peer_id = strdup(cfg->parties[peer].id);
	mc->peer_addr = strdup(cfg->parties[peer].addr);
	if (mc->tx[0].scratch == NULL || mc->tx[1].scratch == NULL
	    || mc->peer_id == NULL || mc->peer_addr == NULL) {
		chan_free(mc);
		return NULL;
	}
	tw__chanbase_init(&mc->base, &shm_ops, ep->mb, ep->link_id, cfg, peer);
	mc->ep = ep;
	mc->self_rank = (uint32_t)cfg->self;
	mc->peer_rank = (uint32_t)peer;
	mc->side = cfg->self < peer ? 0 : 1;
	size_t other = peer < cfg->self ? peer : peer - 1;
	mc->grp = &ep->grp[other / ep->grp_max];
	size_t lo = cfg->self < peer ? cfg->self : peer;
	size_t hi = cfg->self < peer ? peer : cfg->self;
	tw__shm_seg_name(mc->seg_name, cfg->link_id, cfg->parties[lo].addr,
	    cfg->parties[hi].addr);
	// The single-copy path for the longest messages, or as asked (see
	// the top of this file); a receiver that refuses it says so in its
	// answer to the hello, so that is enough to turn it off.
	const char *cma = getenv("TAGWIRE_SHM_CMA");
	mc->cma_min = SHM_LARGE_MIN;
	mc->cma_pick = cma == NULL || cma[0] == '\0';
	if (cma != NULL && strcmp(cma, "0") == 0)
		mc->cma_min = SIZE_MAX;
	return &mc->base;
}

// Frees a channel that never ran (open failed half way).
static void chan_drop(tw__chanbase *b)
{
	chan_free((shm_chan *)b);
}

// The host's online CPUs (not this process's affinity; see the top).
static size_t cpus_online(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (size_t)n : 1;
}

// Opens this party's endpoint with a channel to every peer i for which
// want[i] (every peer when want is NULL); chans[i] stays NULL for the
// others.  Ring sizes follow cfg->size, which both sides of a pair agree
// on, whatever subset each of them opens.
static int shm_open_ep(
    const tw__link_cfg *cfg, const bool *want, tw_channel **chans)
{
	size_t npeers = 0;
	for (size_t i = 0; i < cfg->size; i++) {
		chans[i] = NULL;
		npeers += i != cfg->self && (want == NULL || want[i]);
	}
	if (npeers == 0)
		return TW_OK; // nobody to talk to
	shm_ep *ep = calloc(1, sizeof(*ep));
	if (ep == NULL)
		return TW_ENOMEM;
	ep->mb = tw__chanbase_mailbox_new(); // see shm_close_ns
	ep->link_id = strdup(cfg->link_id);
	ep->recv_buffer = (uint64_t)cfg->opts[TW_OPT_RECV_BUFFER];
	ep->spin_ns = npeers + 1 <= cpus_online() ? SHM_SPIN_NS : 0;
	ep->max_msg = (uint64_t)cfg->opts[TW_OPT_MAX_MSG_SIZE];
	ep->slots = tw__shm_slots(cfg->size);
	ep->slot_msg = tw__shm_slot_msg(cfg->size);
	ep->grp_max = TW_SHM_GRP_MAX;
	const char *gmax = getenv("TAGWIRE_SHM_GROUP_MAX");
	if (gmax != NULL) {
		long v = strtol(gmax, NULL, 10);
		if (v >= 1 && v < TW_SHM_GRP_MAX)
			ep->grp_max = (size_t)v;
	}
	ep->ngrp = (cfg->size - 1 + ep->grp_max - 1) / ep->grp_max;
	ep->grp = calloc(ep->ngrp, sizeof(*ep->grp));
	bool ok = ep->mb != NULL && ep->link_id != NULL && ep->grp != NULL;
	for (size_t i = 0; ep->grp != NULL && i < ep->ngrp; i++) {
		shm_grp *g = &ep->grp[i];
		g->ep = ep;
		pthread_mutex_init(&g->mtx, NULL);
		pthread_cond_init(&g->passed, NULL);
		if ((g->chan = calloc(TW_SHM_GRP_MAX, sizeof(*g->chan)))
		    == NULL)
			ok = false;
	}
	if (ok)
		tw__mailbox_on_taken(ep->mb, ep_taken, ep);
	if (ok)
		ok = tw__chanbase_open_some(
		         cfg, want, ep, chan_new, chan_drop, chans)
		    == TW_OK;
	if (!ok) {
		if (ep->grp == NULL)
			ep->ngrp = 0;
		ep_free(ep);
		return TW_ENOMEM;
	}
	atomic_init(&ep->refs, (unsigned)npeers);
	return TW_OK;
}

static int shm_open_link(const tw__link_cfg *cfg, tw_channel **chans)
{
	return shm_open_ep(cfg, NULL, chans);
}

int tw__shm_open_peers(
    const tw__link_cfg *cfg, const bool *want, tw_channel **chans)
{
	return shm_open_ep(cfg, want, chans);
}

const tw__transport tw__shm_transport = {
	.scheme = "shm",
	.addr_check = shm_addr_check,
	.open = shm_open_link,
	.ops = &shm_ops,
	.xops = &shm_xops,
};
