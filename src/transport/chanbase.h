// What every built-in transport's channel does the same way, written once.
//
// A transport's channel struct starts with a tw__chanbase (as libuv's
// handles start with UV_HANDLE_FIELDS), and its endpoint's mailbox, where
// the channel's messages wait, is made by tw__chanbase_mailbox_new.  The
// base holds what the link's handshake, the namespace ops and the mapping
// of send failures need: the receiving half (tw__rxbox, first, so that the
// rxbox ops and these find it at the channel's impl), the public channel,
// the root link's id, the connect deadline and the abort flag.  What moves
// the bytes stays the transport's own.
//
// The handshake: test_send ends with this side's hello, an empty control
// message "<link id>!hello" (tw__chanbase_send_hello, or, for a transport
// whose hello is a frame of its own, tw__chanbase_hello_arrived on the
// receiving side); test_recv waits for the peer's in the mailbox until the
// connect deadline (tw__chanbase_test_recv).

#ifndef TW_TRANSPORT_CHANBASE_H
#define TW_TRANSPORT_CHANBASE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <tagwire/channel.h>

#include "transport/rxbox.h"
#include "transport/transport.h"

typedef struct tw__chanbase {
	tw__rxbox rx; // first: rx.mb is the endpoint's mailbox, rx.from the
	    // peer's rank
	tw_channel ch; // ch.impl is the channel, which starts with this
	const char *link_id; // the root link's; the endpoint's, outlives us
	int64_t connect_deadline; // link creation waits for the peer until
	_Atomic int aborted; // this side aborted the channel (ops.abort)
} tw__chanbase;

// Fills the base of the channel to rank `peer` of `cfg`, whose messages
// wait in `mb` (the endpoint's, which outlives the channel, as `link_id`
// does), with public ops `ops`.  The base must be the first member of the
// channel struct: ch.impl points at it.
void tw__chanbase_init(tw__chanbase *b, const tw_channel_ops *ops,
    tw_mailbox *mb, const char *link_id, const tw__link_cfg *cfg, size_t peer);

// A mailbox for an endpoint, as transport.h's namespace contract and flow
// control want it: peers' closes kept (tw__mailbox_keep_peer_closes) and
// messages counted by tw__msg_cost.  NULL when memory runs out.
tw_mailbox *tw__chanbase_mailbox_new(void);

// Whether this side aborted the channel (acquire).
static inline bool tw__chanbase_aborted(const tw__chanbase *b)
{
	return atomic_load_explicit(&b->aborted, memory_order_acquire) != 0;
}

// Marks the channel aborted; the transport then wakes what waits.
static inline void tw__chanbase_set_aborted(tw__chanbase *b)
{
	atomic_store(&b->aborted, 1);
}

// Whether a send's cancel flag (may be NULL) is set (acquire).
static inline bool tw__chanbase_cancelled(const _Atomic int *cancel)
{
	return cancel != NULL
	    && atomic_load_explicit(cancel, memory_order_acquire) != 0;
}

// What a failed send reports: a failure that says the message could not go
// (TW_EPEER, TW_ECLOSED) is TW_ECLOSED when this side aborted the channel
// or the caller's cancel flag is set, since this side's own abort is the
// reason, and TW_EPEER otherwise (the peer aborted, closed or left); any
// other status is returned as it is.
int tw__chanbase_send_status(
    const tw__chanbase *b, int status, const _Atomic int *cancel);

// The transport's tw__chan_xops.send.
typedef int (*tw__xsend_fn)(tw_channel *c, const char *key, const void *buf,
    size_t len, int flags, int64_t deadline, const _Atomic int *cancel);

// Sends this side's hello with `send` (the transport's xops.send), waiting
// for flow control until `deadline` (a hello is a control message, which
// never waits there).  Returns what `send` returns.
int tw__chanbase_send_hello(
    tw_channel *c, tw__xsend_fn send, int64_t deadline);

// The peer's hello arrived by other means than a message (a frame of the
// transport's own): it goes into the mailbox as if sent, for test_recv.
// Never blocks.  TW_OK, TW_ECLOSED (this side aborted, or *cancel),
// TW_ENOMEM.
int tw__chanbase_hello_arrived(tw__chanbase *b, const _Atomic int *cancel);

// tw_channel_ops.test_recv: waits for the peer's hello until the connect
// deadline.  TW_OK, TW_ETIMEDOUT, TW_EPEER (the peer left first),
// TW_ECLOSED (aborted).
int tw__chanbase_test_recv(tw_channel *c);

// tw__chan_xops.open_ns: forgets this side's closes and aborts of `ns` and
// its children, keeping the peer's (transport.h).
void tw__chanbase_open_ns(tw_channel *c, const char *ns);

// Makes a transport's channel to rank `peer` for endpoint `ep`: NULL when
// memory runs out.  Frees one that never ran.
typedef tw__chanbase *(*tw__chan_new_fn)(
    const tw__link_cfg *cfg, void *ep, size_t peer);
typedef void (*tw__chan_free_fn)(tw__chanbase *b);

// The per-peer part of a transport's open: chans[i] = make(cfg, ep, i) for
// every peer i (chans[self] stays NULL).  On TW_ENOMEM the channels made
// so far are freed with `drop` and chans is all NULL; the endpoint is the
// caller's either way.
int tw__chanbase_open_all(const tw__link_cfg *cfg, void *ep,
    tw__chan_new_fn make, tw__chan_free_fn drop, tw_channel **chans);

// The same for the peers i with want[i] only (every peer when want is
// NULL); chans[i] stays NULL for the others.
int tw__chanbase_open_some(const tw__link_cfg *cfg, const bool *want, void *ep,
    tw__chan_new_fn make, tw__chan_free_fn drop, tw_channel **chans);

// Frees with `drop` every channel in chans[0..cfg->size) (made by
// tw__chanbase_open_all, never run) and sets them NULL.
void tw__chanbase_free_all(
    const tw__link_cfg *cfg, tw__chan_free_fn drop, tw_channel **chans);

#endif // TW_TRANSPORT_CHANBASE_H
