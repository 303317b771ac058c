// Choosing, per size of message, between the shm:// ring's two copies and
// the single copy of process_vm_readv, from what each took on this link.
//
// Which is faster between 64 KiB and 4 MiB depends on the machine: the
// ring's copies run at once on two CPUs, each within cache, while the
// single copy runs on one CPU after pinning the sender's pages; on one
// Intel Xeon guest the single copy moved 1.3 times the bytes at 64 KiB to
// 256 KiB, on an AMD EPYC guest the ring 2 to 3 times.  So the sender
// measures: each size class (a power of two from 64 KiB to 2 MiB) keeps a
// moving average of the time per byte of each way, taken from its own
// sends (from taking the lane to the send's end: what the application
// waits).  A way is taken for a run of sends of at least 2 MiB (and two
// sends), and only the second half of a run is measured: a ring send
// returns once its frames are in the ring, and the ring holds 512 KiB, so
// the first sends after a run of single copies, which left it empty, look
// faster than the ring's pace.  The first runs of a class alternate until
// each way has a few samples; then the faster way is taken, and one run
// in TW_SHM_PICK_PROBE the other, so that a change (another load on the
// machine) is followed.
// Pure: no clock, no I/O; the caller holds whatever lock guards it.

#ifndef TW_TRANSPORT_SHM_PICK_H
#define TW_TRANSPORT_SHM_PICK_H

#include <stddef.h>
#include <stdint.h>

// Messages from TW_SHM_PICK_MIN up to (not including) TW_SHM_PICK_MAX are
// chosen for; classes are the powers of two between.
#define TW_SHM_PICK_MIN (64 * 1024)
#define TW_SHM_PICK_MAX (4 * 1024 * 1024)
#define TW_SHM_PICK_CLASSES 6
// Samples of each way a class takes before it chooses.
#define TW_SHM_PICK_WARM 4
// A class that has chosen runs the other way once every this many runs.
#define TW_SHM_PICK_PROBE 64
// The least bytes of a run.
#define TW_SHM_PICK_RUN_BYTES (2 * 1024 * 1024)

enum { TW_SHM_PICK_RING = 0, TW_SHM_PICK_SINGLE = 1 };

typedef struct tw__shm_pick {
	// Per way and class: picoseconds per byte (moving average, weight
	// 1/4 for each new sample) and how many samples it has.
	uint64_t ps_per_byte[2][TW_SHM_PICK_CLASSES];
	uint32_t samples[2][TW_SHM_PICK_CLASSES];
	// Per class: runs begun, and the run under way: its way, its
	// length and the sends left of it.
	uint32_t runs[TW_SHM_PICK_CLASSES];
	uint32_t way[TW_SHM_PICK_CLASSES];
	uint32_t run_len[TW_SHM_PICK_CLASSES];
	uint32_t left[TW_SHM_PICK_CLASSES];
} tw__shm_pick;

// The size class of a message of `len` bytes, or -1 outside the range.
int tw__shm_pick_class(size_t len);

// The way to send a message of `len` bytes: TW_SHM_PICK_RING or
// TW_SHM_PICK_SINGLE (below the range the ring, above it the single copy).
// Counts the send in its class's run.
int tw__shm_pick_way(tw__shm_pick *p, size_t len);

// Records that the message of `len` bytes that tw__shm_pick_way was last
// asked about took `ns` nanoseconds `way`: a sample when it was in the
// second half of its run.  Lengths outside the range, a way other than
// the run's and negative times are ignored.
void tw__shm_pick_note(tw__shm_pick *p, size_t len, int way, int64_t ns);

#endif // TW_TRANSPORT_SHM_PICK_H
