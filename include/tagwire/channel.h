// tagwire: bring your own channel, and the mailbox to build one with.
//
// A link talks to each peer through one tw_channel.  The built-in transports
// implement this vtable, and so may an application that already has a
// connection to its peers (an HTTP control plane, an RPC stream): hand the
// channels to tw_link_create_with_channels and the link needs no port of
// its own.
//
// Keys.  Every message a link sends carries a key that names the link
// namespace and the tag: "<link_id>:<tag>" for point-to-point messages,
// "<link_id>@<collective>.<round>:<tag>" for collectives and
// "<link_id>!<control>" for the link's own control messages.  Link ids
// never contain ':', '@' or '!', so the keys of different links and
// collectives never collide on a shared connection.  A channel must deliver
// messages of one key in the order they were sent, each exactly once.

#ifndef TAGWIRE_CHANNEL_H
#define TAGWIRE_CHANNEL_H

#include <tagwire/status.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tw_channel tw_channel;

// The channel's operations.  The link may call every op from several
// threads at once, except destroy, which is called once, last.  Keys are
// NUL-terminated strings valid only during the call.
//
// Versions.  The table ends with `size`, after which later versions of
// tagwire append their new ops (all of them optional), so that a table
// compiled against an older header keeps working with a newer library:
// the link reads an op only when `size` covers it, and treats one that it
// does not cover as NULL.  Set `.size = sizeof(tw_channel_ops)`.  A table
// whose size is 0 is the table of the eight ops below, as it was before
// the field existed: a table written then, with designated or positional
// initializers, compiles unchanged and means what it did.
typedef struct tw_channel_ops {
	// Delivers `len` bytes under `key` to the peer; returns when `buf` may
	// be reused.  Returns TW_OK, TW_EPEER (peer gone), TW_ECLOSED (after
	// abort) or another TW_E* code, which the link passes to its caller.
	int (*send)(
	    tw_channel *c, const char *key, const void *buf, size_t len);

	// Like send, but may return before delivery (it copies `buf`).  May be
	// NULL: the link then uses send.
	int (*send_async)(
	    tw_channel *c, const char *key, const void *buf, size_t len);

	// Waits up to `timeout_ms` (-1 = forever, 0 = do not wait) for the
	// oldest message under `key`; on TW_OK *out holds a malloc'd buffer
	// (NULL data for an empty message) that the link frees with free().
	// Returns TW_OK, TW_ETIMEDOUT, TW_EPEER (peer gone and nothing left
	// queued under key), TW_ECLOSED (after abort).
	int (*recv)(
	    tw_channel *c, const char *key, int64_t timeout_ms, tw_buf *out);

	// Link creation, sending side: tells the peer this party is up,
	// retrying until the peer can be reached or `timeout_ms` passes
	// (TW_ETIMEDOUT).
	int (*test_send)(tw_channel *c, int64_t timeout_ms);

	// Link creation, receiving side: waits for the peer's test_send.
	// Called after test_send succeeded on every channel; the link bounds
	// the wait by calling it at most once per channel.  Returns TW_OK,
	// TW_ETIMEDOUT, TW_EPEER.
	int (*test_recv)(tw_channel *c);

	// Waits until every message sent so far has reached the peer.  May be
	// NULL when send completes delivery itself.
	int (*wait_pending)(tw_channel *c);

	// Wakes every call blocked in this channel with TW_ECLOSED and makes
	// later calls fail the same way; the peer should then see TW_EPEER.
	// May be NULL: the link then wakes its own waiters by polling.
	void (*abort)(tw_channel *c);

	// Releases the channel.  Called once, when no other op is running.
	void (*destroy)(tw_channel *c);

	// sizeof(tw_channel_ops) as the application compiled it, or 0 (the
	// eight ops above; see Versions).  tw_link_create_with_channels
	// refuses with TW_EINVAL a table whose size is not 0 and is smaller
	// than a table that ends here, larger than 4096 bytes (no version
	// has that many ops: the field holds garbage), or not a multiple of
	// the table's alignment, as well as a table that lacks a required op;
	// the log says which.  A size larger than this version's table is
	// fine: the ops beyond it are ones this library does not know, and
	// it never reads them.
	size_t size;
} tw_channel_ops;

struct tw_channel {
	const tw_channel_ops *ops;
	void *impl;
};

// ---------------------------------------------------------------------------
// The mailbox: messages keyed by (sender, tag), each key a FIFO, with
// blocking pops.  Every function is thread-safe; several threads may pop the
// same key and each message is popped exactly once.
// ---------------------------------------------------------------------------

typedef struct tw_mailbox tw_mailbox;

// A new empty mailbox, or NULL when memory runs out.
TW_API tw_mailbox *tw_mailbox_new(void);

// Appends a copy of buf[0..len) under (from, tag) and wakes one waiter.
// A control key ("<link_id>!<control>", see Keys above; any tag whose first
// ':', '@' or '!' is a '!') keeps only its newest message: the push replaces
// the one queued under (from, tag), if any, since the link's control
// messages carry state (a cumulative count), not a stream.  Never blocks.  Returns TW_OK, TW_EINVAL (NULL tag, NULL buf with len > 0),
// TW_ECLOSED (aborted), TW_EPEER (`from` was closed with
// tw_mailbox_close_from), TW_ENOMEM.
TW_API int tw_mailbox_push(tw_mailbox *m, uint32_t from, const char *tag,
    const void *buf, size_t len);

// Removes the oldest message under (from, tag), waiting up to `timeout_ms`
// (-1 = forever, 0 = do not wait).  On TW_OK *out owns the payload (NULL
// data for an empty message).  Returns TW_ETIMEDOUT (also for a zero
// timeout with nothing queued), TW_EPEER (`from` closed
// and its messages under tag all popped), TW_ECLOSED (aborted), TW_EINVAL,
// TW_ENOMEM.
TW_API int tw_mailbox_pop(tw_mailbox *m, uint32_t from, const char *tag,
    int64_t timeout_ms, tw_buf *out);

// Never blocks: TW_OK and *len when a message waits under (from, tag),
// TW_EAGAIN when none does, TW_EPEER when none does and `from` is closed,
// TW_ECLOSED, TW_EINVAL.
TW_API int tw_mailbox_probe(
    tw_mailbox *m, uint32_t from, const char *tag, size_t *len);

// Marks sender `from` as gone: its queued messages can still be popped,
// after that pops of its keys return TW_EPEER, and so do pushes from it.
// Wakes waiters on its keys.  Returns TW_OK, TW_EINVAL (NULL mailbox) or
// TW_ENOMEM.
TW_API int tw_mailbox_close_from(tw_mailbox *m, uint32_t from);

// Wakes every waiter with TW_ECLOSED; later pushes and pops fail the same
// way.  Idempotent.
TW_API void tw_mailbox_abort(tw_mailbox *m);

// Frees the mailbox and every queued message.  No call may be running on
// it.  NULL-safe.
TW_API void tw_mailbox_free(tw_mailbox *m);

#ifdef __cplusplus
}
#endif

#endif // TAGWIRE_CHANNEL_H
