// Choosing, per size of message, between the shm:// ring's two copies and
// the single copy of process_vm_readv, from what each took on this link.
//
// Which is faster depends on the machine and on its load: the ring's
// copies run at once on two CPUs, each within cache, while the single copy
// runs on one CPU after pinning the sender's pages; on one Intel Xeon guest
// the single copy moved 1.3 times the bytes at 64 KiB to 256 KiB, on an
// AMD EPYC guest the ring 2 to 3 times, and 2 times at 16 MiB.  So the
// sender measures: each size class (a power of two from 64 KiB, the last
// one, from TW_SHM_PICK_TOP, open-ended) keeps a moving average of the
// time per byte of each way.  A way is taken for a run of sends of at
// least 2 MiB (and two sends), and each run makes one sample: the time of
// its second half (from taking the lane to each send's end: what the
// application waits) over its bytes.  Only the second half, because a ring
// send returns once its frames are in the ring, and a lane holds up to 1
// MiB, so the first sends after a run of single copies, which left it
// empty, look faster than the ring's pace; one sample per run rather than
// per send, so that one send that found its CPU taken weighs as little as
// a run lets it.  A class starts on the ring: the single copy's first use
// on a buffer can cost ten times its later ones (the kernel's first write
// to each page of the receiver's buffer: 25 ms against 2 ms for 16 MiB on
// one AMD EPYC guest, where the ring took 1 ms), so trying it at once cost
// a short stream more than it could ever win, and the ring needs no such
// warm-up.  From its TW_SHM_PICK_PROBE-th run on, a class alternates until
// each way has a few samples; then the faster way is taken, and one run in
// TW_SHM_PICK_PROBE the other, so that a change (another load on the
// machine) is followed.  A sample counts as at most twice its way's
// average: on a busy host a run whose sends lost their CPU is common, and
// one alone must not make the faster way look the slower.
// Pure: no clock, no I/O; the caller holds whatever lock guards it.

#ifndef TW_TRANSPORT_SHM_PICK_H
#define TW_TRANSPORT_SHM_PICK_H

#include <stddef.h>
#include <stdint.h>

// Messages from TW_SHM_PICK_MIN on are chosen for; classes are the powers
// of two from there up to TW_SHM_PICK_TOP, which starts the last.
#define TW_SHM_PICK_MIN (64 * 1024)
#define TW_SHM_PICK_TOP (32 * 1024 * 1024)
#define TW_SHM_PICK_CLASSES 10
// Samples (runs) of each way a class takes before it chooses.
#define TW_SHM_PICK_WARM 2
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
	// length, the sends left of it, and the nanoseconds and bytes of its
	// measured sends.
	uint32_t runs[TW_SHM_PICK_CLASSES];
	uint32_t way[TW_SHM_PICK_CLASSES];
	uint32_t run_len[TW_SHM_PICK_CLASSES];
	uint32_t left[TW_SHM_PICK_CLASSES];
	uint64_t run_ns[TW_SHM_PICK_CLASSES];
	uint64_t run_bytes[TW_SHM_PICK_CLASSES];
} tw__shm_pick;

// The size class of a message of `len` bytes, or -1 below the range.
int tw__shm_pick_class(size_t len);

// The way to send a message of `len` bytes: TW_SHM_PICK_RING or
// TW_SHM_PICK_SINGLE (below the range the ring).  Counts the send in its
// class's run.
int tw__shm_pick_way(tw__shm_pick *p, size_t len);

// Records that the message of `len` bytes that tw__shm_pick_way was last
// asked about took `ns` nanoseconds `way`: part of its run's sample when
// it was in the second half of the run, which the run's last send
// completes.  Lengths below the range, a way other than the run's and
// negative times are ignored; a send that failed is simply not recorded
// (its run then ends without a sample when its last send is not either).
void tw__shm_pick_note(tw__shm_pick *p, size_t len, int way, int64_t ns);

#endif // TW_TRANSPORT_SHM_PICK_H
