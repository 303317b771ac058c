// Shared-memory segments that record who made them: creation under a lock,
// so that a segment whose creator died before it wrote anything into it
// can be told from one whose creator is still at work.
//
// The lock is flock(2) on the segment, held by the creator from the moment
// the name exists until it has written its mark (its pid, say) into the
// segment.  The kernel drops it when its holder dies, so a segment found
// unmarked and unlocked has a dead creator, with one exception: a creator
// between making the name and taking the lock.  Whoever removes a segment
// does so holding its lock, after checking that the name still denotes the
// segment it locked, and a creator that gets its lock checks the same
// thing: one whose fresh name was removed meanwhile learns it and creates
// again, rather than initialise a segment nobody can find.
//
// The segments of tw_shm_create (ring.h) know nothing of this lock.

#ifndef TW_PLATFORM_POSIX_SHM_H
#define TW_PLATFORM_POSIX_SHM_H

#include <stddef.h>

// Creates segment `name` like tw_shm_create and returns with its lock held
// in *lock_fd (release it with tw__shm_unlock once the segment is marked).
// Blocks only while another process removes the name (a few system calls).
// Returns TW_OK, TW_EAGAIN when the name exists or was removed before this
// call got its lock (look again), TW_EINVAL, TW_ESYS (logged).
int tw__shm_create_locked(
    const char *name, size_t size, void **mem, int *lock_fd);

// Opens segment `name` read-only and takes its lock without waiting.
// Returns TW_OK with *fd the locked descriptor (release it with
// tw__shm_unlock), or with *fd = -1 when there is no such segment;
// TW_EAGAIN when another process holds the lock, or when the system cannot
// lock segments (then nobody can prove a creator dead); TW_EINVAL; TW_ESYS
// (logged).
int tw__shm_trylock(const char *name, int *fd);

// Removes `name` if it still denotes the segment locked at `fd` (from
// tw__shm_trylock): TW_OK once removed, TW_EAGAIN when it denotes another
// segment or none now, TW_EINVAL, TW_ESYS (logged).
int tw__shm_unlink_locked(const char *name, int fd);

// Releases a lock of tw__shm_create_locked or tw__shm_trylock and closes
// its descriptor.  Negative fd: nothing.
void tw__shm_unlock(int fd);

#endif // TW_PLATFORM_POSIX_SHM_H
