// Internals of the shm:// transport, shared by its files (shm.c: channels,
// receiver and sender; shm_seg.c: creating, finding and joining segments)
// and looked at by its tests.

#ifndef TW_TRANSPORT_SHM_SHM_H
#define TW_TRANSPORT_SHM_SHM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <tagwire/ring.h>

#include "core/log.h"
#include "core/mailbox.h"
#include "platform/posix/futex.h"
#include "transport/chanbase.h"
#include "transport/shm/shm_frame.h"
#include "transport/shm/shm_pick.h"
#include "transport/shm/shm_seg.h"

// Messages this process received with process_vm_readv.
extern _Atomic uint64_t tw__shm_large_copied;
// Frames the calling thread took from rings itself (the reader role),
// rather than a progress thread: per thread, so that counting costs a
// receive no locked instruction.
extern _Thread_local uint64_t tw__shm_frames_read_inline;
// Messages begun in a reading application's buffer and moved to memory of
// their own because that reader left before they were complete.
extern _Atomic uint64_t tw__shm_direct_moved;
// Messages begun in memory of their own (another thread held the ring) and
// moved into the buffer of the application thread that then read for them.
extern _Atomic uint64_t tw__shm_direct_adopted;
// For tests: called by the reader that has just put the first frame of a
// message of several frames, of `key`, into memory of its own (no reading
// application's buffer took it), with the count of application threads
// then waiting for the ring, which it may watch.  NULL: nothing is called.
extern void (*tw__shm_own_begun_hook)(
    const char *key, const _Atomic int *readers);
// Continuation frames this process put straight from the ring where their
// message is assembled, without a copy through the reader's slot buffer.
// Exact while one channel is read at a time (readers of different channels
// may bump it at once and lose a bump): a figure for tests.
extern _Atomic uint64_t tw__shm_frames_placed;
// First frames put straight from the ring into the buffer of the reading
// application thread that waits for their message; as exact as the above.
extern _Atomic uint64_t tw__shm_firsts_placed;
// Times a receiving application thread went to sleep on a ring it reads
// (its spin found nothing): a figure for tests.
extern _Atomic uint64_t tw__shm_reader_naps;

// The inbound ring hands taken slots back to the sender in batches of up
// to this many (half its slots at most) while it holds more
// messages (tw__ring_set_release): one
// locked exchange per message, on a line the waiting sender keeps reading,
// cost a stream a quarter of its rate.
#define SHM_RELEASE_EVERY 16

// The progress thread of a group of channels (see "Receiving" in shm.c).
// A group holds at most TW_SHM_GRP_MAX channels: the thread sleeps on one
// futex word per channel and its own, futex_waitv's limit.
// TAGWIRE_SHM_GROUP_MAX=N in the environment makes groups smaller, so
// that tests of a few parties run several groups.
#define TW_SHM_GRP_MAX (TW_FUTEX_WAITV_MAX - 1)
typedef struct shm_grp {
	pthread_mutex_t mtx;
	pthread_cond_t passed; // signalled as the thread ends a pass
	struct shm_chan **chan; // attached channels, by mtx
	size_t n; // by mtx
	uint64_t pass; // passes ended, by mtx
	bool started; // by mtx
	pthread_t thread;
	_Atomic uint32_t wake; // futex word, bumped to wake the thread
	_Atomic int stop;
	struct shm_ep *ep;
} shm_grp;

// This party's side of a link: the mailbox that all its channels deliver
// into, and the progress threads; freed with the last channel.
typedef struct shm_ep {
	tw_mailbox *mb;
	char *link_id;
	uint64_t recv_buffer;
	uint64_t max_msg;
	int64_t spin_ns; // how long receives and full sends spin; 0 = never
	uint32_t slots; // ring slots per lane, by the party count
	uint32_t slot_msg; // a slot's payload, likewise
	size_t grp_max; // channels per group, at most TW_SHM_GRP_MAX
	size_t ngrp;
	shm_grp *grp;
	_Atomic unsigned held; // channels holding a message back
	_Atomic unsigned refs;
} shm_ep;

// One lane of the outbound ring.
typedef struct shm_tx {
	pthread_mutex_t mtx;
	uint64_t seq; // the last message number used, protected by mtx
	uint64_t partial; // a message left half sent, 0 = none; by mtx
	unsigned char *scratch; // ep->slot_msg bytes, protected by mtx
	// Messages of this lane handed to the ring: written under mtx (no
	// locked instruction per message), read by shm_wait_until.
	_Atomic uint64_t sent;
} shm_tx;

// Who holds a channel's reader role: nobody, an application thread that
// receives (the progress thread then parks), or the progress thread or a
// probe.
enum { SHM_ROLE_FREE, SHM_ROLE_APP, SHM_ROLE_OTHER };

typedef struct shm_chan {
	tw__chanbase base; // first: the shared ops find it at impl
	shm_ep *ep;
	char seg_name[TW_SHM_SEG_NAME_LEN];
	char *peer_id;
	char *peer_addr;
	uint32_t self_rank;
	uint32_t peer_rank;
	int side; // 0: this party has the lower rank of the pair
	// The least synchronous message that crosses by process_vm_readv
	// (SIZE_MAX: none; see TAGWIRE_SHM_CMA in shm.c).
	size_t cma_min;
	// Whether `pick` chooses the way (no TAGWIRE_SHM_CMA) or every
	// message from cma_min on takes the single copy.
	bool cma_pick;
	tw__shm_pick pick; // under the data lane's tx mutex

	// Set by test_send before `attached`, constant afterwards.
	void *mem;
	size_t mem_size;
	struct tw_shm_seg_hdr *hdr;
	tw_ring *out;
	tw_ring *in;
	_Atomic int attached;

	shm_tx tx[TW_SHM_LANES];

	shm_grp *grp;
	bool rx_started; // in its group, constant afterwards
	_Atomic int stop; // cancels the receiver's pushes
	_Atomic int peer_gone;

	// The reader role (see "Receiving" in shm.c): whoever holds it
	// (SHM_ROLE_APP or SHM_ROLE_OTHER, taken from SHM_ROLE_FREE by
	// compare-and-swap, acquire; given back by a release store) is the
	// inbound ring's only consumer and owns what follows it.
	_Atomic unsigned role;
	struct shm_rx_ctx *rxc;
	uint32_t peer_pid;
	bool cma_rx; // process_vm_readv reads the peer's memory
	_Atomic int held; // counted in ep->held; set in the reader role
	uint64_t delivered;
	uint64_t delivered_data;

	// Application threads polling the ring that found the role taken (one
	// that holds it says so by the role's value).
	_Atomic int readers;
	// Bumped whenever a reader leaves (or receives from the mailbox): the
	// progress thread leaves the ring alone while it keeps changing.  A
	// count rather than a time: a reader that got its message at once
	// reads no clock.
	_Atomic uint32_t park_gen;
	// Set by a reader that needs the progress thread on the ring now.
	_Atomic int unpark;
	// The progress thread's own: park_gen as it last saw it, when it last
	// found a reader (0: not since it last read the ring itself), and how
	// long it then stays off.
	uint32_t park_seen;
	int64_t park_from;
	int64_t park_ns;
	_Atomic int rx_dead; // reading has ended for good
} shm_chan;

#define LOGC(mc, level, ...)                                                  \
	TW_LOGL(level, "shm", (mc)->ep->link_id, (mc)->self_rank, __VA_ARGS__)

static inline bool tw__shm_flag(const _Atomic int *p)
{
	return atomic_load_explicit(p, memory_order_acquire) != 0;
}

static inline void tw__shm_nap(int64_t ns)
{
	struct timespec ts
	    = { (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
	nanosleep(&ts, NULL);
}

// The lower rank creates the pair's segment, removing one that a dead
// process left behind and refusing one that a live process holds (the
// address is in use: TW_ESYS).  Returns TW_OK with the rings attached.
int tw__shm_seg_create(shm_chan *mc);

// The higher rank waits until `deadline` for the segment to be ready, then
// checks and joins it and removes its name.  TW_OK, TW_ETIMEDOUT,
// TW_ECLOSED (aborted meanwhile), TW_ESYS (in use), TW_EPROTO (not a
// segment of this version).
int tw__shm_seg_open(shm_chan *mc, int64_t deadline);

// Removes the segment's name, once per segment whoever gets there first.
void tw__shm_seg_unlink_once(shm_chan *mc);

// Marks this side gone in the segment (keeping the first reason) and ends
// the other side's waits on both rings.
void tw__shm_seg_leave(shm_chan *mc, uint32_t why);

// Detaches the rings and unmaps the segment.  NULL-safe parts.
void tw__shm_seg_unmap(shm_chan *mc);

#endif // TW_TRANSPORT_SHM_SHM_H
