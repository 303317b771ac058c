// Reuse of large message buffers.
//
// A large message that arrives over tcp:// lands in memory that the
// receiving thread allocates, and whoever consumes it frees it: the
// application (tw_buf_free) or the library once it has copied the message
// into the application's buffer.  glibc hands memory of that size back to
// the kernel on free (munmap, or madvise on a thread's arena), so every
// next message of that size faults in fresh zeroed pages, which costs about
// as much as copying the message.  The pool keeps a few freed buffers
// (at most TW_POOL_SLOTS of them, TW_POOL_BYTES in all) and hands them out
// again.  Smaller buffers go straight to malloc and free.

#ifndef TW_CORE_BUFPOOL_H
#define TW_CORE_BUFPOOL_H

#include <stddef.h>

#define TW_POOL_MIN ((size_t)32 << 10)
#define TW_POOL_SLOTS 8
#define TW_POOL_BYTES ((size_t)64 << 20)

// Like malloc(n): a buffer from the pool when one of at least n bytes (and
// not more than twice that) is there.  Thread-safe.
void *tw__pool_alloc(size_t n);

// Like free(p), for any memory from malloc or tw__pool_alloc: kept for
// reuse when it is large and the pool has room.  Thread-safe.
void tw__pool_free(void *p);

// Frees every buffer the pool holds (at exit, and for tests).
void tw__pool_drain(void);

// The buffers and bytes the pool holds now (for tests).
void tw__pool_held(size_t *buffers, size_t *bytes);

#endif // TW_CORE_BUFPOOL_H
