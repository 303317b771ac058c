// Allocation failure injection for out-of-memory tests.  A test binary
// linked with tw_failalloc() (cmake/TwHelpers.cmake) has malloc, calloc and
// realloc wrapped at link time; failalloc_after(n) lets n more allocations
// succeed and fails every one after that, failalloc_never() stops failing.

#ifndef TW_FAILALLOC_H
#define TW_FAILALLOC_H

void failalloc_after(int n);
void failalloc_never(void);

#endif
