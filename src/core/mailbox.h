// Internal mailbox operations beyond the public ones: ownership-taking and
// flow-controlled pushes, pops into caller memory, and per-namespace close
// and abort, which the built-in transports use to give each link of a
// family its own failure domain over one shared mailbox.

#ifndef TW_CORE_MAILBOX_H
#define TW_CORE_MAILBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <tagwire/channel.h>

#include "core/names.h"

// What a data message held for a receiver costs, in the unit of flow
// control: its length plus TW_MSG_OVERHEAD for holding it at all, and at
// least TW_MSG_MIN_COST.  Bytes alone let empty messages through for free:
// a million of them, sent to a receiver that did not receive, took about
// 100 MB.  The overhead stands for what the mailbox spends per message
// besides the payload: a node of 96 bytes that holds a message of up to 64
// bytes itself, or a node and the allocator's header of the payload's own
// memory: a queued message takes about its cost plus 64 bytes at most
// (allocator headers included).  The floor bounds how many small messages
// a window holds (16 384 in the default 64 MiB): a receiver that fell
// behind a stream of 8-byte messages otherwise held up to 930 000 of them,
// each one's node cold by the time it was taken, and a `tcp://` stream of
// them ran at 7 M/s where a window of 16 384 messages ran at 10.
// The mailbox's limit, peak and taken counts below are in this unit, and so
// is any credit built on the taken count: a sender that counts what it may
// send counts tw__msg_cost(len) per message, so that both sides agree (see
// tw__mailbox_count_by_cost; `tcp://` peers agree through the protocol
// version).
#define TW_MSG_OVERHEAD 64
#define TW_MSG_MIN_COST 4096
static inline uint64_t tw__msg_cost(size_t len)
{
	uint64_t n = (uint64_t)len;
	if (n > UINT64_MAX - TW_MSG_OVERHEAD)
		return UINT64_MAX;
	return n + TW_MSG_OVERHEAD < TW_MSG_MIN_COST ? TW_MSG_MIN_COST
	                                             : n + TW_MSG_OVERHEAD;
}

// Appends `data` (malloc'd, ownership passes on TW_OK only) under
// (from, key); a control key's message (names.h) replaces the one already
// queued under (from, key), if any, so that a key holds at most one.  A
// data message waits while `from` already has data queued and this one
// would take the sum of their tw__msg_cost past `limit` (one message is
// always admitted into an empty box, so that none is too big to send),
// until `deadline` (tw__now_ns scale); a control message never waits.  A
// non-NULL `cancel` is polled while waiting: when it becomes
// non-zero the push returns TW_ECLOSED; tw__mailbox_kick wakes waiting
// pushers so that they look.  Returns TW_OK, TW_ECLOSED (mailbox aborted,
// the key's namespace aborted here or closed here towards `from`: the
// message is refused and its data counted as taken; or cancelled),
// TW_EPEER (from closed), TW_ETIMEDOUT, TW_ENOMEM.
int tw__mailbox_push_owned(tw_mailbox *m, uint32_t from, const char *key,
    void *data, size_t len, uint64_t limit, int64_t deadline,
    const _Atomic int *cancel);

// tw__mailbox_push_owned of a copy of src[0..len), which this makes: a
// message of a few bytes needs no allocation (its node is reused and holds
// them), so a transport that has the bytes in a buffer of its own passes
// them here rather than allocating a copy itself.  The same returns; the
// copy is gone unless TW_OK.
int tw__mailbox_push_copy(tw_mailbox *m, uint32_t from, const char *key,
    const void *src, size_t len, uint64_t limit, int64_t deadline,
    const _Atomic int *cancel);

// A run: small data messages of one sender under one key, staged by the one
// thread that reads them off a transport and queued together under one
// lock.  A tcp:// read of 64 KiB brings about 1,500 messages of 8 bytes,
// and a lock per message, which the receiving application's pops take
// too, was a fifth of the receiving side's time.  Staged messages are
// invisible to pops and probes until the run is flushed, and they are
// queued in order; the owner flushes before anything that must come after
// them (another frame's handling, a posted receive filled directly, the
// end of its read) and whenever it lets go of the reading role.  Single
// threaded: one run per reader, used only by whoever reads.
#define TW_MB_RUN_MAX 128
#define TW_MB_RUN_BYTES 64 // the most a staged message holds
typedef struct tw__mailbox_run {
	tw_mailbox *m; // of the staged messages
	uint32_t from;
	uint64_t limit;
	unsigned n; // staged, in bytes[0..n) oldest first
	unsigned char len[TW_MB_RUN_MAX];
	unsigned char bytes[TW_MB_RUN_MAX][TW_MB_RUN_BYTES];
	char key[TW_KEY_MAX];
} tw__mailbox_run;

void tw__mailbox_run_init(tw__mailbox_run *r);

// tw__mailbox_push_copy with no wait (deadline 0, no cancel) through run
// r: a data message of at most 64 bytes is staged, after a flush of what
// r holds for another mailbox, sender, key or limit, or when r is full;
// any other message is pushed at once, after a flush.  TW_OK (staged or
// queued), what a push returns for a message pushed at once, or the
// failure of a flush it made first (TW_ETIMEDOUT, TW_ENOMEM: then this
// message is neither staged nor pushed).  Never blocks.
int tw__mailbox_run_push(tw__mailbox_run *r, tw_mailbox *m, uint32_t from,
    const char *key, const void *src, size_t len, uint64_t limit);

// Queues what r staged, in order, as pushes with no wait would have at
// this moment: refused ones (a namespace aborted or closed here) are
// dropped and counted as taken, as a push counts them.  A sender closed
// since (tw_mailbox_close_from) does not refuse them: they were read
// before its close was known, and pops drain them before TW_EPEER.  TW_OK, or
// TW_ETIMEDOUT (a message would take the sender past the run's limit:
// it and those after it are dropped) or TW_ENOMEM (none queued).  r is
// empty afterwards.  Never blocks; takes the mailbox's lock once, and not
// at all when r is empty.
int tw__mailbox_run_flush(tw__mailbox_run *r);

// Whether r holds staged messages.
static inline bool tw__mailbox_run_staged(const tw__mailbox_run *r)
{
	return r->n > 0;
}

// Drops what r staged (flush first).
void tw__mailbox_run_fini(tw__mailbox_run *r);

// tw_mailbox_pop with an absolute deadline, or a lazy one (core/clock.h)
// that counts from the moment the pop must wait.
int tw__mailbox_pop_until(tw_mailbox *m, uint32_t from, const char *key,
    int64_t deadline, tw_buf *out);

// Pops into buf[0..cap).  TW_ETRUNC with *len the needed size leaves the
// message queued.
int tw__mailbox_pop_into(tw_mailbox *m, uint32_t from, const char *key,
    int64_t deadline, void *buf, size_t cap, size_t *len);

// Namespaces.  A link namespace `ns` holds its keys and those of its child
// links (names.h).  Both sides close and abort namespaces, and the mailbox
// remembers each only while it matters, so that what it keeps is bounded
// by the namespaces closed or aborted on one side so far, not by every
// child link ever made (a runtime may make millions):
//  - this side aborted ns (tw__mailbox_abort_ns): pops, probes and pushes
//    there return TW_ECLOSED, and what was queued there is dropped; until
//    this side closes ns (every abort of a child link is followed by its
//    close) or reopens it;
//  - this side closed ns towards sender `from` (tw__mailbox_drop_ns): what
//    `from` queued there is dropped and what it pushes there later is
//    refused with TW_ECLOSED, both counted as taken, so that a sender's
//    credit comes back; until `from`'s own close of ns arrives
//    (tw__mailbox_close_ns), after which it sends nothing there, or ns is
//    reopened;
//  - `from` aborted or closed ns (tw__mailbox_peer_abort_ns,
//    tw__mailbox_close_ns): its queued messages there can still be popped,
//    then pops return TW_EPEER, and tw__mailbox_peer_left tells sends to
//    it there to fail; a close ends this once this side closed ns too.
// A data message that `from` pushes under a namespace it left comes from a
// new child link of the same name: it reopens that namespace for `from`.
// None of the functions below blocks; those that return an int return
// TW_OK, TW_EINVAL (NULL argument) or TW_ENOMEM.

// Sender `from` closed namespace `ns`: its last word there.  When this side
// closed ns already (tw__mailbox_drop_ns), the mailbox forgets ns for
// `from`; otherwise pops there drain, then return TW_EPEER.
int tw__mailbox_close_ns(tw_mailbox *m, uint32_t from, const char *ns);

// Sender `from` aborted namespace `ns`: pops there drain, then return
// TW_EPEER, and sends there fail; its close of ns follows.
int tw__mailbox_peer_abort_ns(tw_mailbox *m, uint32_t from, const char *ns);

// This side closed namespace `ns` (a child link) towards sender `from`:
// drops what `from` queued there and refuses what it pushes there later
// (TW_ECLOSED), counting both as taken; ends this side's abort of ns.
// Wakes the pushers that the dropped messages held back.
int tw__mailbox_drop_ns(tw_mailbox *m, uint32_t from, const char *ns);

// This side aborted namespace `ns` (and its children): every pop or push
// there returns TW_ECLOSED from now on, waiters wake at once, and what was
// queued there is dropped and counted as taken.
int tw__mailbox_abort_ns(tw_mailbox *m, const char *ns);

// A child link of namespace `ns` is created (again) on this side: forgets
// this side's closes and aborts of ns and its children.  What senders said
// about ns stays, with tw__mailbox_keep_peer_closes: a peer may create,
// use and close a child link before this side creates it, and the closes
// of any older link of that name were forgotten when both sides had closed
// it.  Without it, senders' closes and aborts of ns are forgotten too.
int tw__mailbox_reopen_ns(tw_mailbox *m, const char *ns);

// Says that the mailbox's owner reports this side's closes of namespaces
// (tw__mailbox_drop_ns), so that both sides' closes of a link always meet
// and a reopen may keep what senders said (tw__mailbox_reopen_ns).  For an
// owner that does not, a sender's close of an older link of a name stays
// until a reopen, which cannot tell it from a close of the new link and
// so forgets both.  Call before the mailbox is shared.
void tw__mailbox_keep_peer_closes(tw_mailbox *m);

// Whether sender `from` closed or aborted the namespace of `key` (as far as
// this mailbox was told): sends to it there should fail with TW_EPEER.
// Never blocks; takes no lock while no sender left any namespace.
bool tw__mailbox_peer_left(tw_mailbox *m, uint32_t from, const char *key);

// Whether a probe or pop of data key `key` would find nothing now and may
// wait: no data message is queued from any sender, nothing is refused
// (abort, closes) and no sender left a namespace.  False for control keys
// and whenever in doubt: then ask tw_mailbox_probe.  Takes no lock (a
// receive checks before it polls its transport, and usually finds the
// mailbox empty); a message pushed at this moment may be missed, as by a
// probe just before it.
bool tw__mailbox_idle(tw_mailbox *m, const char *key);
// The same for a key the caller knows to be a data key.
bool tw__mailbox_idle_data(tw_mailbox *m);

// How many namespace entries the mailbox keeps (for tests of the bound).
size_t tw__mailbox_ns_entries(tw_mailbox *m);

// Wakes pushers waiting for space so that they re-check their cancel flag.
void tw__mailbox_kick(tw_mailbox *m);

// The most `from` ever had queued at once, in tw__msg_cost (for
// flow-control tests).
uint64_t tw__mailbox_peak(tw_mailbox *m, uint32_t from);

// Data messages are those whose key is not a control key (names.h): only
// they count against a push's `limit`, in the peak, and in the taken count
// below, each by its tw__msg_cost.  Control messages are bounded instead by
// keeping one per (sender, key) (see tw__mailbox_push_owned): they never
// wait, since they are what lets data drain (a throttled sender waits for
// acks while its receiver's buffer is full), and counting them against
// the data's room would let acks that nobody takes shut data out.  The
// taken count is what a credit-based sender needs: the tw__msg_cost of
// `from`'s data messages that have left the mailbox so far, taken by a
// pop, dropped because their namespace was aborted or closed here, or
// refused by a push for that reason.  `fn` is called after every change
// of that count, outside the mailbox's lock, from the thread that caused
// it; it must not free the mailbox.  Set it before the mailbox is shared.
typedef void (*tw__mailbox_taken_fn)(void *arg, uint32_t from, uint64_t taken);
void tw__mailbox_on_taken(tw_mailbox *m, tw__mailbox_taken_fn fn, void *arg);

// Says that the mailbox's owner counts flow control by tw__msg_cost, as a
// credit-based sender must count too: the mailbox's limit, peak and taken
// counts are then in that unit.  Until an owner says so they count payload
// bytes alone, which lets empty messages through unbounded but is what a
// credit counted in bytes (tcp:// before it adopts tw__msg_cost) must
// match.  Call before the mailbox is shared.
void tw__mailbox_count_by_cost(tw_mailbox *m);

#endif // TW_CORE_MAILBOX_H
