// A channel written only against the public API (tw_channel_ops and
// tw_mailbox), the way a runtime would carry a link over a connection of
// its own.  Running the conformance suite over it proves that the link
// needs nothing from a channel beyond the public vtable.

#ifndef TW_TESTCHAN_H
#define TW_TESTCHAN_H

#include <stdbool.h>

#include <tagwire/tagwire.h>

typedef struct testchan_net testchan_net;

// A "network" of n parties: one inbox per party, and an outbox per pair
// where asynchronous sends wait until they are delivered (testchan.c).
// With `lazy_wait` the channels' wait_pending returns without delivering
// anything: a broken channel that the suite must catch.
testchan_net *testchan_net_new(size_t n, bool lazy_wait);
void testchan_net_free(testchan_net *net);

// Fills chans[0..n) with party `self`'s channels (chans[self] = NULL).
// Ownership of each channel passes to the link on successful creation.
int testchan_make(testchan_net *net, size_t self, tw_channel **chans);

#endif
