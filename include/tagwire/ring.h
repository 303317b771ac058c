// tagwire: shared-memory message rings, signals and segments.
//
// A ring lives in memory the caller provides (a POSIX shared-memory segment
// shared by two processes, or memory mapped by a device) and holds `lanes`
// single-producer/single-consumer lanes of `slots` fixed-size slots, each
// carrying a route id, a 64-bit correlation id and up to `max_msg` inline
// bytes.  One producer per lane, one consumer per ring.
//
// Shared memory is not trusted: attach copies the geometry into the private
// handle, and every index, length and route read from the segment is read
// once and checked; a corrupt header or slot gives TW_EPROTO, never an
// access outside the segment.
//
// Timeouts are in microseconds: 0 = try once, negative = wait forever.
// Waiting spins briefly, then sleeps on a shared futex.
//
// Liveness.  The header holds, for each side (the consumer, and the
// producers together), an abort flag and the pid of a process.
// tw_ring_abort sets this side's flag; tw_ring_set_role publishes the
// calling process's pid as this side's.  While a call waits (and only then:
// messages already queued are still delivered), it ends with TW_EPEER once
// the other side's flag is set or, checked about every 20 ms of sleep, once
// the process whose pid the other side published has exited (a zombie
// counts as exited); with TW_ECLOSED once this side's own flag is set.  A
// pid of 0 (never published) is never checked.  Pids are only meaningful
// between processes of one pid namespace.

#ifndef TAGWIRE_RING_H
#define TAGWIRE_RING_H

#include <tagwire/status.h>

#ifdef __cplusplus
extern "C" {
#endif

// Bytes needed for a ring of this geometry, or 0 when the geometry is
// invalid (a zero argument, `slots` not a power of two) or the size would
// overflow.
TW_API size_t tw_ring_bytes(uint32_t lanes, uint32_t slots, uint32_t max_msg);

// Formats `size` bytes at `mem` (64-byte aligned, at least tw_ring_bytes)
// as an empty ring: the header, the lanes' control lines and each slot's
// fixed part are written, not the payload bytes.  Returns TW_OK or
// TW_EINVAL.  Not thread-safe: nobody may be attached while it runs.
TW_API int tw_ring_init(
    void *mem, size_t size, uint32_t lanes, uint32_t slots, uint32_t max_msg);

typedef struct tw_ring tw_ring;

// Validates the header of the ring at `mem` (magic, version, geometry
// against `size`) and returns a private handle.  Returns TW_OK, TW_EINVAL
// (NULL, misaligned), TW_EPROTO (bad header, or `size` too small for the
// header or for the geometry it states), TW_ENOMEM.  The handle keeps its
// own copy of the geometry; one handle serves one consumer thread and one
// producer thread per lane at a time.  A handle counts on the index it
// stored last: a lane's producer, or the ring's consumer, may move to a new
// handle, and the old one must then not act in that role again.  If it
// does, the call returns TW_EPROTO (a send may by then have written over a
// slot that the new handle had filled), leaves the index as it found it,
// and its next call starts from there.
TW_API int tw_ring_attach(void *mem, size_t size, tw_ring **out);

// Frees the handle; the memory is not touched.  NULL-safe.
TW_API void tw_ring_detach(tw_ring *r);

// Copies data[0..n) into the next slot of `lane` with `route` and `corr`,
// waiting up to `timeout_us` while the lane is full.  Returns TW_OK,
// TW_EINVAL (lane out of range, NULL data with n > 0), TW_ETOOBIG
// (n > max_msg), TW_ETIMEDOUT, TW_EPEER (the consumer aborted or died),
// TW_ECLOSED (this side aborted), TW_EPROTO (the lane's head, or the
// sequence word of the slot to fill, is not what it must be).
// Thread-safe only with one producer per lane.
TW_API int tw_ring_send(tw_ring *r, uint32_t lane, uint32_t route,
    const void *data, size_t n, uint64_t corr, int64_t timeout_us);

// Takes the oldest message of `lane` into dst[0..cap), waiting up to
// `timeout_us` while it is empty.  On TW_OK *n, *route and *corr are set
// (each may be NULL).  Returns TW_ETRUNC with *n the needed size and the
// message left in place when cap is too small, TW_ETIMEDOUT, TW_EPEER,
// TW_ECLOSED (this side aborted), TW_EPROTO (corrupt slot or indices),
// TW_EINVAL (lane out of range, NULL dst with cap > 0).
TW_API int tw_ring_recv(tw_ring *r, uint32_t lane, void *dst, size_t cap,
    size_t *n, uint32_t *route, uint64_t *corr, int64_t timeout_us);

// Like tw_ring_recv from whichever lane has a message, fairly (round robin
// from the lane after the last one served); *lane tells which, on TW_OK and
// on TW_ETRUNC (the same message comes first on the next call).
TW_API int tw_ring_recv_any(tw_ring *r, uint32_t *lane, void *dst, size_t cap,
    size_t *n, uint32_t *route, uint64_t *corr, int64_t timeout_us);

// Marks this side as gone so that the other side's waits end with TW_EPEER
// (and waits of this side with TW_ECLOSED), and wakes every waiter.
// `consumer` selects the consumer's flag (non-zero) or the producers' (0).
// The flag stays set until the ring is initialised again.  NULL-safe.
TW_API void tw_ring_abort(tw_ring *r, int consumer);

// Publishes the calling process's pid in the header as the consumer's
// (`consumer` non-zero) or the producers' (0), so that the other side's
// waits end with TW_EPEER if this process dies without aborting.  Call it
// once after attach in each process; with several producer processes the
// last one to call it is the one watched.  Returns TW_OK or TW_EINVAL.
TW_API int tw_ring_set_role(tw_ring *r, int consumer);

// Stores `value` into *sig (release) and wakes every waiter, in any
// process; each call makes one wake-up system call.  `sig` must be 8-byte
// aligned.  Returns TW_OK or TW_EINVAL.
TW_API int tw_signal_notify(uint64_t *sig, uint64_t value);

// Waits up to `timeout_us` until *sig >= at_least (unsigned compare).
// Returns TW_OK, TW_ETIMEDOUT or TW_EINVAL.  Waiters sleep on the low 32
// bits: a notify that changes only the high half is seen within 20 ms.
TW_API int tw_signal_wait(
    uint64_t *sig, uint64_t at_least, int64_t timeout_us);

// Creates (exclusively, mode 0600) and maps a POSIX shared-memory segment
// of `size` bytes named `name` ("/name" or "name": 1 to 200 characters, no
// other '/').  Returns TW_OK, TW_EINVAL (bad name, size 0, NULL mem),
// TW_ESYS (exists, no permission, no space; logged).  The mapping is page
// aligned, hence fit for tw_ring_init.
//
// A process that shrinks a segment (ftruncate) while others have it mapped
// makes their accesses past the new end raise SIGBUS.  Create and open
// check the size they map against the segment's; nothing in user space can
// guard against a shrink after that, so share segments only with processes
// of the same user that you trust not to do that.
TW_API int tw_shm_create(const char *name, size_t size, void **mem);

// Maps an existing segment, its whole size as it is now; *size receives
// it.  Returns TW_OK, TW_EINVAL, TW_ESYS (absent: logged with the system
// error), TW_EPROTO (smaller than 64 bytes).
TW_API int tw_shm_open(const char *name, size_t *size, void **mem);

// Unmaps a mapping made by tw_shm_create/tw_shm_open.  TW_OK, TW_EINVAL,
// TW_ESYS.
TW_API int tw_shm_close(void *mem, size_t size);

// Removes the name; mappings stay valid.  TW_OK, TW_EINVAL, TW_ESYS.
TW_API int tw_shm_unlink(const char *name);

#ifdef __cplusplus
}
#endif

#endif // TAGWIRE_RING_H
