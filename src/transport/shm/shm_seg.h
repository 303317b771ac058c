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
#define TW_SHM_SEG_VERSION 3u

// Ring geometry: 32 slots per lane, of 32 KiB for links of up to 5 parties
// (a segment of about 4 MiB) and of 16 KiB for larger ones; from 10
// parties on, fewer slots per lane (down to TW_SHM_SLOTS_MIN).  Whatever
// the party count, the rings of one party hold at most TW_SHM_PARTY_KIB
// (4 MiB) of slots per lane and direction: memory grows with the parties,
// not with their square.  A long message crosses in frames of a slot each,
// each costing the same to hand over whatever its size: 32 KiB slots
// moved 10 to 25% more bytes per second than 16 KiB ones from 64 KiB to
// 16 MiB on an AMD EPYC guest, and 16 KiB 10 to 15% more than 8 KiB.
// Fewer slots instead would cost small messages their rate (a stream
// hands slots back in batches of a quarter of a lane).
#define TW_SHM_LANES 2u
#define TW_SHM_LANE_DATA 0u
#define TW_SHM_LANE_CTL 1u
#define TW_SHM_SLOTS 32u
#define TW_SHM_SLOTS_MIN 4u
#define TW_SHM_PARTY_KIB 4096u
// Slots of 32 KiB in small links, 16 KiB in large ones, each a cache line
// longer: slots 4 KiB apart map every slot's first line, which holds a
// small message whole, to the same sets of the caches, and 32 of them
// crowded the sets of a 16-way cache out of lines the stream still
// needed (8-byte messages lost an eighth of their rate to it).  A slot's
// payload, the ring's max_msg, is that less the ring's slot header (24
// bytes); TW_SHM_MAX_MSG bounds every link's.
#define TW_SHM_SLOT_PAD 64u
#define TW_SHM_SLOT_MSG(kib) ((kib)*1024u + TW_SHM_SLOT_PAD - 24u)
#define TW_SHM_MAX_MSG TW_SHM_SLOT_MSG(32u)
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

static inline size_t tw__shm_peers(size_t parties)
{
	return parties > 1 ? parties - 1 : 1;
}

// A slot's size in KiB (without its pad) in a link of `parties`: 32 while
// the party's rings stay within TW_SHM_PARTY_KIB per lane and direction.
static inline uint32_t tw__shm_slot_kib(size_t parties)
{
	return tw__shm_peers(parties) * TW_SHM_SLOTS * 32u <= TW_SHM_PARTY_KIB
	    ? 32u
	    : 16u;
}

// A slot's payload in a link of `parties`: both sides derive it, and a
// segment of another layout is refused.
static inline uint32_t tw__shm_slot_msg(size_t parties)
{
	return TW_SHM_SLOT_MSG(tw__shm_slot_kib(parties));
}

// Slots per lane for a link of `parties`, likewise.
static inline uint32_t tw__shm_slots(size_t parties)
{
	size_t kib = tw__shm_slot_kib(parties);
	uint32_t slots = TW_SHM_SLOTS;
	while (slots > TW_SHM_SLOTS_MIN
	    && tw__shm_peers(parties) * slots * kib > TW_SHM_PARTY_KIB)
		slots /= 2;
	return slots;
}

// The size of one ring, the offset of ring `side` and the whole segment,
// for rings of `slots` slots per lane of `msg` bytes each.
static inline size_t tw__shm_ring_size(uint32_t slots, uint32_t msg)
{
	size_t n = tw_ring_bytes(TW_SHM_LANES, slots, msg);
	return (n + 4095) & ~(size_t)4095;
}

static inline size_t tw__shm_ring_off(int side, uint32_t slots, uint32_t msg)
{
	return TW_SHM_RING0_OFF + (size_t)side * tw__shm_ring_size(slots, msg);
}

static inline size_t tw__shm_seg_size(uint32_t slots, uint32_t msg)
{
	return TW_SHM_RING0_OFF + 2 * tw__shm_ring_size(slots, msg);
}

#endif // TW_TRANSPORT_SHM_SEG_H
