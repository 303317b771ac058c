// The receiving half that every built-in transport shares: whatever moves
// the bytes, a channel's messages wait in its party's mailbox under the
// peer's rank, so receiving, probing and the flow-control peak are the same
// everywhere.  A channel whose impl struct starts with a tw__rxbox uses
// these functions directly as its ops.

#ifndef TW_TRANSPORT_RXBOX_H
#define TW_TRANSPORT_RXBOX_H

#include <stdbool.h>
#include <stdint.h>

#include <tagwire/channel.h>

typedef struct tw__rxbox {
	tw_mailbox *mb; // this party's mailbox (outlives the channel)
	uint32_t from; // the peer's rank
} tw__rxbox;

// tw_channel_ops.recv
int tw__rxbox_recv(
    tw_channel *c, const char *key, int64_t timeout_ms, tw_buf *out);

// tw__chan_xops.recv, .recv_into, .probe and .unreceived_peak
int tw__rxbox_recv_until(
    tw_channel *c, const char *key, int64_t deadline, tw_buf *out);
int tw__rxbox_recv_into(tw_channel *c, const char *key, int64_t deadline,
    void *buf, size_t cap, size_t *len);
int tw__rxbox_probe(tw_channel *c, const char *key, size_t *len);
uint64_t tw__rxbox_peak(tw_channel *c);
// tw__chan_xops.ns_entries: the mailbox's namespace entries.
size_t tw__rxbox_ns_entries(tw_channel *c);

// Whether a receive of `key` would return at once: a message is there, or
// the reason none will come (the peer closed, the namespace aborted).  For
// transports whose receives read the wire themselves until then.
bool tw__rxbox_ready(const tw__rxbox *rx, const char *key);
// The same for a caller that knows whether `key` is a control key
// (tw__key_is_ctl): one scan of the key per receive instead of one per look.
bool tw__rxbox_ready_kind(const tw__rxbox *rx, const char *key, bool ctl);

// tw__rxbox_recv_into without waiting, for transports whose receives read
// the wire themselves: what a receive would return at once (a message, or
// why none will come), else TW_EAGAIN.  One look at the mailbox where
// tw__rxbox_ready and the receive after it took two.
int tw__rxbox_try_into(
    const tw__rxbox *rx, const char *key, void *buf, size_t cap, size_t *len);

#endif // TW_TRANSPORT_RXBOX_H
