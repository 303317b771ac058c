// The layout of the segment two shm:// parties share, used by the transport
// and by its tests (which play a misbehaving peer).
//
//   header     4 cache lines, below
//   ring 0     at TW_SHM_RING0_OFF: what side 0 (the lower rank) sends
//   ring 1     right after it: what side 1 sends
//
// Each ring has two lanes: lane 0 carries data messages and the control
// frames that must stay in order with them (namespace close and abort,
// cancel), lane 1 the link's control messages (acks, hellos), which must
// never wait behind data that flow control holds back.
//
// Everything in the segment may be written by the other process: the
// transport reads each field once into a local and checks it, and takes the
// geometry from the constants below, never from the segment.  Hence the
// fields are plain integers accessed through the __atomic builtins, not
// _Atomic ones: the layout is shared with another process and fixed by
// the static assertions below, and every access is an explicit, single
// atomic load or store into a local (the futex and signal calls take
// these words as plain integers too).

#ifndef TW_TRANSPORT_SHM_SEG_H
#define TW_TRANSPORT_SHM_SEG_H

#include <stddef.h>
#include <stdint.h>

#include <tagwire/ring.h>

#define TW_SHM_SEG_MAGIC UINT64_C(0x31676573746d6873) // "shmtseg1" in LE
#define TW_SHM_SEG_VERSION 2u

// Ring geometry: up to 32 slots of 16 KiB per lane, so a segment of a
// small link is about 2 MiB.  Larger links get fewer slots per lane (down
// to TW_SHM_SLOTS_MIN) so that the rings of one party hold at most about
// TW_SHM_PARTY_SLOTS slots per lane and direction whatever the party count:
// memory grows with the parties, not with their square.  16 KiB slots
// rather than twice as many of 8 KiB: a long message crosses in half as
// many frames, each costing the same to hand over whatever its size, which
// gave 10 to 15% more bytes per second from 1 to 16 MiB.
#define TW_SHM_LANES 2u
#define TW_SHM_LANE_DATA 0u
#define TW_SHM_LANE_CTL 1u
#define TW_SHM_SLOTS 32u
#define TW_SHM_SLOTS_MIN 4u
#define TW_SHM_PARTY_SLOTS 256u
#define TW_SHM_MAX_MSG (16384u - 24u)
#define TW_SHM_RING0_OFF 4096u

enum { TW_SHM_STATE_INIT = 0, TW_SHM_STATE_READY = 1 };
// Why a side left (gone[]): it closed, aborted, or failed its peer.
enum {
	TW_SHM_GONE_CLOSED = 1,
	TW_SHM_GONE_ABORTED = 2,
	TW_SHM_GONE_FAILED = 3
};
// Whether process_vm_readv can read what a side sends (cma[]).
enum { TW_SHM_CMA_UNKNOWN = 0, TW_SHM_CMA_YES = 1, TW_SHM_CMA_NO = 2 };

// large_post values: the sequence number of the large message on offer,
// with one of these bits once the receiver claimed it or the sender
// withdrew it.
#define TW_SHM_LARGE_CLAIMED (UINT64_C(1) << 62)
#define TW_SHM_LARGE_CANCELLED (UINT64_C(1) << 63)

// Per direction (indexed by the sending side), on its own cache line.
struct tw_shm_dir {
	uint64_t delivered; // messages pushed into the receiver's mailbox
	uint64_t copied; // the last large message the receiver copied
	uint64_t large_post; // the large message on offer, see above
	uint32_t waiters; // sender threads waiting for `delivered`
	uint32_t pad0;
	uint64_t delivered_data; // of `delivered`, those of the data lane
	uint8_t pad1[64 - 40];
};

struct tw_shm_seg_hdr {
	// Line 0: written by the creator before state becomes READY.
	uint64_t magic;
	uint32_t version;
	uint32_t creator_pid;
	uint64_t seg_size;
	uint64_t ring_off[2];
	uint64_t ring_size;
	uint32_t state; // TW_SHM_STATE_*
	uint32_t unlinked; // non-zero once someone removed the name
	uint8_t pad0[8];

	// Line 1: per side.
	uint32_t pid[2]; // the attached process, 0 = none yet
	uint32_t gone[2]; // TW_SHM_GONE_*, 0 = still there
	uint32_t cma[2]; // TW_SHM_CMA_* for messages that side sends
	uint8_t pad1[64 - 24];

	// Lines 2 and 3.
	struct tw_shm_dir dir[2];
};

_Static_assert(sizeof(struct tw_shm_dir) == 64, "one line per direction");
_Static_assert(sizeof(struct tw_shm_seg_hdr) == 256, "four header lines");
_Static_assert(offsetof(struct tw_shm_seg_hdr, pid) == 64, "line 1");

// Slots per lane for a link of `parties`: both sides derive it, and a
// segment of another size is refused.
static inline uint32_t tw__shm_slots(size_t parties)
{
	uint32_t slots = TW_SHM_SLOTS;
	while (slots > TW_SHM_SLOTS_MIN
	    && (parties > 1 ? parties - 1 : 1) * slots > TW_SHM_PARTY_SLOTS)
		slots /= 2;
	return slots;
}

// The size of one ring, the offset of ring `side` and the whole segment,
// for rings of `slots` slots per lane.
static inline size_t tw__shm_ring_size(uint32_t slots)
{
	size_t n = tw_ring_bytes(TW_SHM_LANES, slots, TW_SHM_MAX_MSG);
	return (n + 4095) & ~(size_t)4095;
}

static inline size_t tw__shm_ring_off(int side, uint32_t slots)
{
	return TW_SHM_RING0_OFF + (size_t)side * tw__shm_ring_size(slots);
}

static inline size_t tw__shm_seg_size(uint32_t slots)
{
	return TW_SHM_RING0_OFF + 2 * tw__shm_ring_size(slots);
}

#endif // TW_TRANSPORT_SHM_SEG_H
