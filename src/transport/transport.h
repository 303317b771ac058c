// Transports as const op tables.
//
// A transport turns a link description into one tw_channel per peer.  The
// channels implement the public tw_channel vtable (so that a link treats
// them exactly like a user's channels) plus tw__chan_xops, a richer table
// that only built-in transports provide: deadlines instead of relative
// timeouts, receives into caller memory, probes, and per-namespace close
// and abort, which let the links of a family share one connection and
// still fail independently.  What the built-in transports' channels do
// alike (the receiving half, the hello, namespace reopening, the status of
// a failed send, the open loop) is written once, in chanbase.h.
//
// Transports are registered explicitly, one line each in transport.c
// (TW__BUILTIN_TRANSPORTS); nothing registers itself from a constructor,
// which static linking could silently drop.  Adding a transport touches
// its own folder (src/transport/NAME/, with a CMakeLists.txt that adds its
// sources; src/transport/CMakeLists.txt picks up every such folder) and
// that one line; to run the conformance suite over it, add its name to
// tests/conformance as well.
//
// The registry checks each built-in transport once, before its first use
// (tw__transport_check): a table that lacks an entry fails with a log
// line naming it, and links over its scheme are refused (TW_ENOTSUP),
// rather than crash on the missing op later.  So every entry of the tables
// below is required; an op that a transport does not need is filled with
// one of the tw__no_* stubs (in the manner of libfabric's fi_no_*
// functions), never left NULL, and the link calls every entry without
// looking.

#ifndef TW_TRANSPORT_TRANSPORT_H
#define TW_TRANSPORT_TRANSPORT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tagwire/channel.h>

#include "core/opts.h"

typedef struct tw__party {
	const char *id;
	const char *addr;
} tw__party;

// What a transport needs to open a link; valid during open only.
typedef struct tw__link_cfg {
	const char *link_id;
	size_t size;
	size_t self;
	const tw__party *parties;
	const int64_t *opts; // TW_OPT_COUNT values
	const void *secret;
	size_t secret_len;
	// TLS files {certificate, key, CA} (tw_desc_set_tls), or NULL.
	// Transports other than tcp:// ignore them.
	const char *const *tls;
	// The rank that connects to the other (links of two parties), or -1:
	// the transport decides (tcp://: the address that sorts first).
	int dial_rank;
} tw__link_cfg;

enum { TW__SEND_ASYNC = 1 };

typedef struct tw__chan_xops {
	size_t size; // sizeof(tw__chan_xops) the transport was built with

	// Deadlines are on the tw__now_ns scale.  With lazy_deadline set
	// (below), those of send, recv and recv_into may also be lazy ones
	// (tw__deadline_lazy_ms), which the transport fixes before it first
	// waits; without, the link fixes them first.

	// Sends under `key`, waiting for flow control until `deadline` or
	// until *cancel becomes non-zero (TW_ECLOSED).
	// With TW__SEND_ASYNC the transport may return before delivery.
	// Never called with the channel's locks held by the caller.  Returns
	// TW_OK, TW_EPEER, TW_ECLOSED, TW_ETIMEDOUT, TW_ENOMEM, and
	// TW_ETOOBIG where the transport knows the receiver's
	// TW_OPT_MAX_MSG_SIZE and `len` exceeds it (the link never sends such
	// a message; a receiver that gets one may drop the peer).
	int (*send)(tw_channel *c, const char *key, const void *buf,
	    size_t len, int flags, int64_t deadline,
	    const _Atomic int *cancel);

	// Receives the oldest message under `key`, until `deadline`.
	int (*recv)(
	    tw_channel *c, const char *key, int64_t deadline, tw_buf *out);

	// Receives into buf[0..cap); TW_ETRUNC leaves the message queued.
	int (*recv_into)(tw_channel *c, const char *key, int64_t deadline,
	    void *buf, size_t cap, size_t *len);

	// Never blocks: TW_OK and *len, TW_EAGAIN, TW_EPEER, TW_ECLOSED.
	int (*probe)(tw_channel *c, const char *key, size_t *len);

	// Namespaces.  A child link's keys lie in its namespace `ns` (and
	// its own children's, names.h); the links of a family share this
	// channel, and each must close and fail on its own.  The link calls
	// the three ops below once per peer of the child, never concurrently
	// with a send or receive of that child, and each returns without
	// waiting on the peer for more than a bounded time (a stuck peer must
	// not hang a close).  Each side keeps what it learns about ns only
	// while it matters, so that its bookkeeping is bounded by the child
	// links closed or aborted on one side so far, never by every child
	// link ever made: core/mailbox.h does this for a channel whose
	// messages wait in a tw_mailbox, with the calls named below.

	// This side aborted namespace `ns` (the root link's id when the root
	// was aborted; the channel's own abort then follows).  At once: local
	// receives and probes there return TW_ECLOSED, blocked ones included
	// (the link stops sends itself); what the peer delivered there is
	// dropped, and so is what arrives from it there later, both counted
	// as taken (the peer's credit) and as delivered (tw__mailbox_abort_ns).
	// The peer is told, after every message sent before on this channel;
	// once it knows, its sends there return TW_EPEER and its receives
	// there return what was delivered, then TW_EPEER
	// (tw__mailbox_peer_abort_ns on its side).  This lasts until this side
	// closes ns, which the link always does after an abort of a child, or
	// reopens it.
	void (*abort_ns)(tw_channel *c, const char *ns);

	// This side closed child namespace `ns`, after waiting for its
	// pending sends, whether or not it was aborted before.  At once:
	// what the peer delivered there is dropped, and so is what arrives
	// from it there later (sent before it heard of the close), both
	// counted as taken and as delivered, so that no credit or pending
	// count is held by a namespace nobody reads (tw__mailbox_drop_ns);
	// this ends this side's abort of ns.  The peer is told, after every
	// message sent before on this channel; once it knows, its sends there
	// return TW_EPEER and its receives there return what was delivered,
	// then TW_EPEER (tw__mailbox_close_ns on its side), until it closes
	// ns too.  Forgetting: ns is forgotten for this pair on each side as
	// soon as that side has both closed ns and learned of the peer's
	// close (which is the last thing the peer sends there): here when
	// the peer's close came first, else when it arrives; an abort is not
	// a close, since the close that follows it still comes.
	void (*close_ns)(tw_channel *c, const char *ns);

	// A child namespace `ns` is being (re)created on this side: forget
	// this side's closes and aborts of ns and its children, so that the
	// new link starts clean; keep what the peer said about ns
	// (tw__mailbox_reopen_ns, with tw__mailbox_keep_peer_closes), since
	// the peer may create, use and close its side of the child before
	// this side creates it, and every close of an older link of that name
	// was forgotten when both sides had closed it.  The link reuses a
	// name only once every party closed the old link.  A data message
	// (not a control one, which may overtake the close on some
	// transports) that the peer sends under a namespace it closed reopens
	// that namespace for that peer: it comes from a new link of the name.
	void (*open_ns)(tw_channel *c, const char *ns);

	// The most the receiving side of this channel ever held from its
	// peer of messages not yet received, in tw__msg_cost (core/mailbox.h,
	// the unit of flow control); for flow-control tests; 0 if unknown
	// (tw__no_unreceived_peak).
	uint64_t (*unreceived_peak)(tw_channel *c);

	// Waits until every message sent so far has arrived in the peer's
	// mailbox, until `deadline` (TW_ETIMEDOUT) or until *cancel becomes
	// non-zero (TW_ECLOSED).  Returns TW_OK, TW_EPEER (the peer went
	// before it took them), TW_ECLOSED, TW_ETIMEDOUT.  A transport whose
	// sends are delivered by the time they return uses
	// tw__no_wait_pending.
	int (*wait_pending)(
	    tw_channel *c, int64_t deadline, const _Atomic int *cancel);

	// How many namespace entries (closes and aborts, of either side) this
	// side keeps where the channel's messages wait (the endpoint that the
	// party's channels share), for tests of the bound above; SIZE_MAX
	// when the transport cannot tell (tw__no_ns_entries).
	size_t (*ns_entries)(tw_channel *c);

	// Gives back memory kept for reuse beyond what the data held needs,
	// of this channel or of what it shares with others to the same peer
	// (tcp://: the send rings of the peer's connections, grown by a
	// burst); returns the bytes freed.  Never waits on the peer;
	// thread-safe.  tw__no_trim where the transport keeps nothing that
	// grows.
	size_t (*trim)(tw_channel *c);

	// Non-zero: send, recv and recv_into take lazy deadlines (above).
	int lazy_deadline;
} tw__chan_xops;

// Stubs for the xops entries that a transport may not need.  Each never
// blocks and is thread-safe.
//
// tw__no_wait_pending: TW_OK at once, for a transport whose sends are
// delivered when they return.
int tw__no_wait_pending(
    tw_channel *c, int64_t deadline, const _Atomic int *cancel);
// tw__no_unreceived_peak: 0 (unknown).
uint64_t tw__no_unreceived_peak(tw_channel *c);
// tw__no_ns_entries: SIZE_MAX (the transport cannot tell).
size_t tw__no_ns_entries(tw_channel *c);
// tw__no_trim: 0 (nothing to give back).
size_t tw__no_trim(tw_channel *c);

typedef struct tw__transport {
	const char *scheme; // "mem", "shm", "tcp"

	// Checks an address of this scheme ("mem://a").  TW_OK or TW_EINVAL.
	int (*addr_check)(const char *addr);

	// Creates this party's endpoint and chans[i] for every peer i
	// (chans[self] stays NULL).  Must not wait for peers: the link runs
	// the handshake through test_send/test_recv.  On failure nothing is
	// left allocated.  Returns TW_OK, TW_ESYS (address in use), TW_ENOMEM.
	int (*open)(const tw__link_cfg *cfg, tw_channel **chans);

	// The public table of every channel that open makes (its size set),
	// and the richer one.
	const tw_channel_ops *ops;
	const tw__chan_xops *xops;
} tw__transport;

// The transport for the scheme of `addr`, or NULL.  *known is set to
// whether the scheme is one tagwire knows (built in or not).  A built-in
// transport that failed its check is not found (and is known).
const tw__transport *tw__transport_find(const char *addr, bool *known);

// The shm:// transport's open for some peers only: a channel to every
// rank i of cfg with want[i] (chans[i] NULL for the others), rings sized
// by cfg->size.  For tcp:// links that carry same-host peers' data over
// shared memory (TW_OPT_SHM_LOCAL).  Returns what open returns.
int tw__shm_open_peers(
    const tw__link_cfg *cfg, const bool *want, tw_channel **chans);
extern const tw__transport tw__shm_transport;

// Scheme names built in (and sound), for `tagwire info`, NULL-terminated.
const char *const *tw__transport_names(void);

// Checks a transport's tables: every entry set (ops: the required ones of
// tw_channel_ops, and a valid size), xops->size == sizeof(tw__chan_xops)
// and the scheme `scheme`.  TW_OK, or TW_EINVAL with an error logged that
// names the transport and what is missing.  The registry runs it once per
// built-in transport; exposed for tests.
int tw__transport_check(const tw__transport *t, const char *scheme);

// --- public channel tables (tw_channel_ops) ------------------------------

// The largest size field that a table may hold (channel.h).
#define TW__CHAN_OPS_SIZE_MAX 4096

// The bytes of *ops that its size field covers: the table of the eight
// ops that came before the field when it is 0.  Only for a table that
// tw__chan_ops_check accepted.
static inline size_t tw__chan_ops_span(const tw_channel_ops *ops)
{
	return ops->size == 0 ? offsetof(tw_channel_ops, size) : ops->size;
}

// An optional op of a public table, or NULL when the table's size does not
// cover it (the application was compiled against a header without it).
#define TW__CHAN_OP(ops, op)                                                  \
	(offsetof(tw_channel_ops, op) + sizeof((ops)->op)                     \
	            <= tw__chan_ops_span(ops)                                 \
	        ? (ops)->op                                                   \
	        : NULL)

// Checks a public table: TW_OK, or TW_EINVAL with what is wrong written to
// why[cap] ("lacks the required op recv", a nonsense size).  Logs nothing.
int tw__chan_ops_check(const tw_channel_ops *ops, char *why, size_t cap);

#endif // TW_TRANSPORT_TRANSPORT_H
