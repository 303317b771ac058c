// Internal mailbox operations beyond the public ones: ownership-taking and
// flow-controlled pushes, pops into caller memory, and per-namespace close
// and abort, which the built-in transports use to give each link of a
// family its own failure domain over one shared mailbox.

#ifndef TW_CORE_MAILBOX_H
#define TW_CORE_MAILBOX_H

#include <stdint.h>

#include <tagwire/channel.h>

// Appends `data` (malloc'd, ownership passes on TW_OK only) under
// (from, key); a control key's message (names.h) replaces the one already
// queued under (from, key), if any, so that a key holds at most one.  While `from` already holds bytes and this message would take
// it past `limit` bytes, waits until `deadline` (tw__now_ns scale).  A
// non-NULL `cancel` is polled (atomically) while waiting: when it becomes
// non-zero the push returns TW_ECLOSED; tw__mailbox_kick wakes waiting
// pushers so that they look.  Returns TW_OK, TW_ECLOSED (mailbox or key
// namespace aborted, or cancelled), TW_EPEER (from closed), TW_ETIMEDOUT,
// TW_ENOMEM.
int tw__mailbox_push_owned(tw_mailbox *m, uint32_t from, const char *key,
    void *data, size_t len, uint64_t limit, int64_t deadline,
    const int *cancel);

// tw_mailbox_pop with an absolute deadline.
int tw__mailbox_pop_until(tw_mailbox *m, uint32_t from, const char *key,
    int64_t deadline, tw_buf *out);

// Pops into buf[0..cap).  TW_ETRUNC with *len the needed size leaves the
// message queued.
int tw__mailbox_pop_into(tw_mailbox *m, uint32_t from, const char *key,
    int64_t deadline, void *buf, size_t cap, size_t *len);

// Peer `from` closed namespace `ns` (and its children): its queued messages
// there can still be popped, then pops return TW_EPEER.  A later push from
// `from` under `ns` reopens it: it can only come from a new child link of
// the same name.
int tw__mailbox_close_ns(tw_mailbox *m, uint32_t from, const char *ns);

// This side aborted namespace `ns` (and its children): every pop or push
// there returns TW_ECLOSED from now on, and waiters wake at once.
int tw__mailbox_abort_ns(tw_mailbox *m, const char *ns);

// Forgets every close and abort of namespace `ns` (and its children), so
// that a child link may be created again under a name used before.
int tw__mailbox_reopen_ns(tw_mailbox *m, const char *ns);

// Wakes pushers waiting for space so that they re-check their cancel flag.
void tw__mailbox_kick(tw_mailbox *m);

// The most bytes `from` ever had queued at once (for flow-control tests).
uint64_t tw__mailbox_peak(tw_mailbox *m, uint32_t from);

// What a message of `len` bytes counts for in flow control: the unit of
// limits, peaks and taken counts below, and of the tcp:// transport's
// credit, which is built on the taken count.
static inline uint64_t tw__msg_cost(size_t len)
{
	return (uint64_t)len;
}

// Data bytes are the payloads of messages whose key is not a control key
// (names.h): only they count against a push's `limit`, in the peak, and in
// the taken count below, which is what a credit-based sender needs: the
// data bytes of `from` that have left the mailbox so far, taken by a pop,
// dropped because their namespace was aborted here, or refused by a push
// for that reason.  `fn` is called after every change of that count,
// outside the mailbox's lock, from the thread that caused it; it must not
// free the mailbox.  Set it before the mailbox is shared.
typedef void (*tw__mailbox_taken_fn)(void *arg, uint32_t from, uint64_t taken);
void tw__mailbox_on_taken(tw_mailbox *m, tw__mailbox_taken_fn fn, void *arg);

#endif // TW_CORE_MAILBOX_H
