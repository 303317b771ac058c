// tagwire: link descriptions, links, tagged messages and collectives.
//
// Thread-safety: a tw_desc is not thread-safe while it is being modified; a
// finished description may be read by several threads at once (several
// threads may call tw_link_create with the same desc).  Every function that
// takes a tw_link is thread-safe, except tw_link_close, which must be the
// last call on that link.

#ifndef TAGWIRE_LINK_H
#define TAGWIRE_LINK_H

#include <tagwire/status.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---------------------------------------------------------------------------
// Describing a link
// ---------------------------------------------------------------------------

typedef struct tw_desc tw_desc;

// Options.  Every option has a default (see tw_desc_set and the README);
// later options are appended, values never change meaning.
enum {
	TW_OPT_RECV_TIMEOUT_MS, // default 60000; -1 = forever, 0 = poll
	TW_OPT_CONNECT_TIMEOUT_MS, // default 30000, 1..2^31
	TW_OPT_THROTTLE_WINDOW, // default 0 (no limit), 0..2^31
	TW_OPT_CHUNK_SIZE, // default 1 MiB, 4 KiB..1 GiB
	TW_OPT_STRIPES, // default 1, 1..64
	TW_OPT_MAX_MSG_SIZE, // default 1 GiB, 0..2^40
	TW_OPT_RECV_BUFFER, // default 64 MiB, 4 KiB..2^40; a message counts
	// its length + 64 bytes, at least 4 KiB (so 16 384 small ones by default)
	TW_OPT_HEARTBEAT_MS, // default 1000; 0 = off, else 10..3600000;
	// a tcp:// peer silent for 3 of them is gone
	TW_OPT_SHM_LOCAL, // default 0; 0 or 1: a tcp:// link carries its
	// messages to peers on this host over shared memory (tw_link_create);
	// every party sets the same value
	TW_OPT_WINDOW // engine only (tagwire/engine.h): chunks in flight per
	// connection, default 16, 1..1024; links accept and ignore it
};

// Allocates an empty description of the link named `link_id`.  The id names
// the link on the wire: 1..200 bytes of [A-Za-z0-9._-], and '/' between
// non-empty parts (child links are "parent/suffix").  Returns NULL when the
// id is NULL or invalid (logged) or memory runs out.  The caller owns the
// result and frees it with tw_desc_free; links do not keep a reference.
TW_API tw_desc *tw_desc_new(const char *link_id);

// Frees a description.  NULL-safe.
TW_API void tw_desc_free(tw_desc *d);

// Appends a party; its rank is the number of parties added before it.
// `party_id` is 1..64 bytes of [A-Za-z0-9._-] and unique in the link;
// `addr` is "mem://NAME", "shm://NAME" or "tcp://HOST:PORT" (see the
// README).  The strings are copied.  Returns TW_OK, or TW_EINVAL for a NULL,
// malformed or duplicate id, a malformed address or an unknown scheme,
// TW_ENOTSUP for a scheme that is known but not built in, TW_ENOMEM.
TW_API int tw_desc_add_party(
    tw_desc *d, const char *party_id, const char *addr);

// Sets option `opt` to `value`.  Returns TW_OK, or TW_EINVAL for an unknown
// option or a value outside the option's documented range.
TW_API int tw_desc_set(tw_desc *d, int opt, int64_t value);

// Reads option `opt` (its default when never set) into *value.
// Returns TW_OK or TW_EINVAL (unknown option, NULL argument).
TW_API int tw_desc_get(const tw_desc *d, int opt, int64_t *value);

// Sets the link secret (1..1024 bytes, copied) that every party must hold;
// transports that cross process boundaries prove it with a challenge and
// response.  `len` 0 removes it.  Returns TW_OK, TW_EINVAL, TW_ENOMEM.
TW_API int tw_desc_set_secret(tw_desc *d, const void *key, size_t len);

// Makes every tcp:// connection of links created from `d` TLS 1.3, with
// certificates on both sides (other transports ignore it).  `cert_file`
// and `key_file` are this party's certificate (PEM, its chain may follow)
// and private key; `ca_file` holds the CA certificates that peers'
// certificates must chain to.  A peer's certificate must also name the
// party id that tw_desc_add_party gave its rank, exactly, in a
// subjectAltName DNS entry or, only when it has none, in its common name.
// The paths are copied; the files are read by tw_link_create, which
// returns TW_EINVAL (with a log line naming the file and the reason) when
// one cannot be read, is not PEM, or the key does not match the
// certificate, and TW_EAUTH when a peer's certificate is refused or the
// peer does not speak TLS.  Links of one process that share a listening
// address must name the same three files.  Combines with a secret (the
// secret's handshake runs inside TLS).  Calling it again replaces the
// files.  Returns TW_OK, TW_EINVAL (NULL description, a NULL or empty
// path), TW_ENOMEM.  Not thread-safe on one description.
TW_API int tw_desc_set_tls(tw_desc *d, const char *cert_file,
    const char *key_file, const char *ca_file);

// Builds a description from the environment, the way a launcher hands a
// party its place:
//  - the rank: TAGWIRE_RANK, or else a launcher's (OMPI_COMM_WORLD_RANK
//    (mpirun), PMI_RANK, SLURM_PROCID (srun), RANK (torchrun)), the first
//    one set; the size that goes with that source (TAGWIRE_SIZE,
//    OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_NTASKS, WORLD_SIZE), and
//    TAGWIRE_SIZE, must agree with the parties when set;
//  - the parties, either listed in TAGWIRE_PARTIES (comma separated "ADDR"
//    or "ID=ADDR"; ids default to p0, p1, ...), or learnt from rank 0 at
//    TAGWIRE_ROOT=tcp://HOST:PORT (or, with neither set, MASTER_ADDR and
//    MASTER_PORT, as torchrun sets them): tw_desc_set_root, with the size
//    from the rank's source (required then) and the bind address from
//    TAGWIRE_BIND (optional);
//  - TAGWIRE_SECRET (optional), TAGWIRE_LINK_ID (optional, default
//    "root"), TAGWIRE_TLS_CERT, TAGWIRE_TLS_KEY and TAGWIRE_TLS_CA
//    (optional, all three or none: tw_desc_set_tls).
// On success *out is a new description the caller frees and *self_rank the
// rank.  Anything missing, malformed or conflicting (TAGWIRE_ROOT beside
// TAGWIRE_PARTIES, MASTER_ADDR without MASTER_PORT, a rank past the size)
// is TW_EINVAL with a log line naming the variable and the reason;
// TW_ENOMEM.  Outputs are set only on success.  Reads the environment
// only: the rendezvous happens in tw_link_create.
TW_API int tw_desc_from_env(tw_desc **out, size_t *self_rank);

// Instead of naming the parties: they are learnt from rank 0 while the link
// is created.  `root_addr` ("tcp://HOST:PORT", a fixed port) is where rank
// 0 listens and serves the rendezvous, on its one shared port; the link
// has `size` parties (1..65536).  Every other party listens at
// `bind_addr` ("tcp://HOST:PORT", port 0 for any; it must be an address
// the others reach, not a wildcard), or when NULL at the local address
// whose route reaches the root, on a free port.  tw_link_create then
// blocks until every party has told rank 0 where it listens and received
// everyone's address; each party's transfer engine (named "p<rank>")
// carries that exchange with the description's secret and TLS, so with
// TLS each party's certificate must name "p<rank>", and the parties' ids
// are p0, p1, ...  The whole exchange is bounded by
// TW_OPT_CONNECT_TIMEOUT_MS, and then the link's own handshake by the
// same again.  Strings are copied; calling it again replaces them.
// Returns TW_OK, TW_EINVAL (NULL description, a description that already
// names parties, size out of range, a root that is not tcp:// with a
// port, a malformed bind address), TW_ENOMEM.  Not thread-safe on one
// description.  tw_desc_add_party on such a description is TW_EINVAL, as
// is tw_link_create_with_channels.
TW_API int tw_desc_set_root(
    tw_desc *d, const char *root_addr, size_t size, const char *bind_addr);

// The number of parties: those added so far, or with a root the size given
// to tw_desc_set_root.
TW_API size_t tw_desc_size(const tw_desc *d);

// ---------------------------------------------------------------------------
// Links and messages
// ---------------------------------------------------------------------------

typedef struct tw_link tw_link;
struct tw_channel;

// Creates this party's end of the link described by `d` and runs the
// connection handshake with every other party (the mesh).  All parties call
// it concurrently, in any order; it retries until TW_OPT_CONNECT_TIMEOUT_MS.
// Blocks.  Returns TW_OK and *out, or: TW_EINVAL (NULL argument, fewer than
// one party, rank out of range, parties of different transports);
// TW_ENOTSUP (transport not built in); TW_ETIMEDOUT (peers missing; the log
// names them); TW_ESYS (an address in use or that does not resolve; the log
// names the address and the system error); TW_EAUTH (a peer could not prove
// the link's secret; over tcp:// the accepting side reports it at its
// connect timeout, since a stranger may have claimed the rank); TW_EPEER
// (a peer that had answered failed or closed its connection before the
// link was up); TW_EPROTO; TW_ENOMEM.  With a root (tw_desc_set_root),
// also: TW_EINVAL when the parties disagree on the size or two claim one
// rank (rank 0 tells everyone who reached it why, and every party logs
// it), TW_ETIMEDOUT when a party did not reach rank 0 in time.
//
// TW_OPT_SHM_LOCAL on a tcp:// link: once the mesh is up, each pair of
// parties finds out over the link (so authenticated as the link is)
// whether they share a host and its shared memory -- the same kernel boot
// and pid namespace, or TAGWIRE_HOST_ID, and a segment that one creates
// and the other reads -- and if so moves all its messages to a shm://
// channel, both sides deciding alike; any pair where that fails stays on
// tcp://.  Data between such parties is not encrypted by TLS (it never
// leaves the host; segments are mode 0600).  It needs
// TW_OPT_MAX_MSG_SIZE >= 64 (else the link stays on tcp://, logged) and
// adds: TW_ETIMEDOUT when a peer does not take part within the connect
// timeout (it lacks the option; the log says so), TW_EPROTO for a
// malformed answer.
TW_API int tw_link_create(const tw_desc *d, size_t self_rank, tw_link **out);

// Like tw_link_create, but the link runs over caller-supplied channels, one
// per party, with channels[self_rank] == NULL.  The link does not use the
// addresses in `d`, but they must still be valid ones ("mem://ID" will do).  On success the link owns the channels and
// destroys them when the root link is closed; on failure the caller keeps
// them.  Returns the codes of tw_link_create, and TW_EINVAL when a channel
// other than self is NULL or lacks a required op (send, recv, destroy).
TW_API int tw_link_create_with_channels(const tw_desc *d, size_t self_rank,
    struct tw_channel *const *channels, tw_link **out);

TW_API size_t tw_link_rank(const tw_link *l);
TW_API size_t tw_link_size(const tw_link *l);
// The link id ("root", "root/child"); valid until the link is closed.
TW_API const char *tw_link_id(const tw_link *l);

// Creates a child link with the same parties, a separate tag namespace
// "parent_id/suffix" and the parent's connections; every party calls it
// (no communication happens, so there is no order to respect).  The child
// must be closed before its parent.  Parties close it independently: once
// a party closed it, what arrives there for it is dropped, and the others'
// sends on it return TW_EPEER as soon as they learn of the close (their
// receives, once they received what was delivered).  A suffix may be used
// again once every party closed the child of that name.  Returns TW_OK, TW_EINVAL (bad suffix,
// NULL argument), TW_ECLOSED (parent aborted), TW_ENOMEM.
TW_API int tw_link_spawn(tw_link *parent, const char *suffix, tw_link **child);

// Creates a child over a subset of the parent's ranks: child rank i is parent
// rank ranks[i].  Every named party calls it with the same list; a party not
// in the list gets TW_EINVAL.  ranks must be distinct and in range, n >= 1.
// Returns the codes of tw_link_spawn.
TW_API int tw_link_sub(tw_link *parent, const char *suffix,
    const size_t *ranks, size_t n, tw_link **child);

// Sends `len` bytes to rank `dst` under `tag` (a string of at most 255
// bytes; "" is legal).  Returns when `buf` may be reused: the bytes are in
// the peer's mailbox or in a buffer of the transport (over tcp://, a
// message longer than 256 KiB is written from `buf` itself, and the call
// waits up to 200 us for the peer to confirm it, then copies the rest into
// the connection's buffer).  May block on flow
// control (TW_OPT_RECV_BUFFER) up to the receive timeout.  Returns TW_OK,
// or TW_EINVAL (dst == self or out of range, NULL or over-long tag, NULL
// buf with len > 0), TW_ETOOBIG (len > TW_OPT_MAX_MSG_SIZE), TW_EPEER (the
// peer failed or closed), TW_ECLOSED (this link aborted), TW_ETIMEDOUT.
TW_API int tw_send(
    tw_link *l, size_t dst, const char *tag, const void *buf, size_t len);

// Like tw_send, but copies `buf` and returns without waiting for the
// message to be delivered, let alone received: an error in its delivery
// shows in a later call or in tw_link_wait_pending.  It still waits while
// the peer's receive buffer is full (TW_OPT_RECV_BUFFER: flow control keeps
// what both sides hold bounded), up to the receive timeout: TW_ETIMEDOUT,
// and the message is not sent.  So asynchronous sends to a peer that does
// not receive return at once while they fit in its receive buffer (and in
// the transport's own, such as a shared-memory ring), then block.  Returns
// the codes of tw_send.
TW_API int tw_send_async(
    tw_link *l, size_t dst, const char *tag, const void *buf, size_t len);

// Like tw_send_async, but first blocks while TW_OPT_THROTTLE_WINDOW or more
// of this link's messages to `dst` have not yet been consumed by the
// application there (window 0 = no limit), up to the receive timeout:
// TW_ETIMEDOUT.  Flow control bounds what a peer holds; the window
// bounds the messages it has not consumed.
TW_API int tw_send_async_throttled(
    tw_link *l, size_t dst, const char *tag, const void *buf, size_t len);

// tw_send (flags 0), tw_send_async (TW_SEND_ASYNC) or
// tw_send_async_throttled (TW_SEND_ASYNC | TW_SEND_THROTTLED) with a
// timeout of their own instead of the link's for flow control and the
// throttle window (-1 forever, 0 do not wait).  On TW_ETIMEDOUT the
// message was not sent, so a caller may wait in slices (to run signal
// handlers between them, say) and send again; over a channel you supply
// the timeout is the channel's business.  Returns the codes of tw_send;
// TW_EINVAL also for unknown flags, TW_SEND_THROTTLED alone, or a timeout
// below -1.
enum { TW_SEND_ASYNC = 1, TW_SEND_THROTTLED = 2 };
TW_API int tw_send_timed(tw_link *l, size_t dst, const char *tag,
    const void *buf, size_t len, int flags, int64_t timeout_ms);

// Receives the oldest message from `src` under `tag`, blocking up to the
// link's receive timeout.  On TW_OK out->data (allocated by the library,
// NULL for an empty message) belongs to the caller: free it with
// tw_buf_free.  Returns TW_EINVAL, TW_ETIMEDOUT, TW_EPEER (the peer closed
// or failed and every message it delivered has been received), TW_ECLOSED.
TW_API int tw_recv(tw_link *l, size_t src, const char *tag, tw_buf *out);

// Like tw_recv, into the caller's buffer.  When the message is longer than
// `cap` it returns TW_ETRUNC, sets *len to the needed size and leaves the
// message queued.  On TW_OK *len is the message length.  The bytes of buf
// beyond *len, and all of it on any other return, are unspecified: over
// tcp:// a long message may be assembled in buf while the call waits
// (saving a copy), and one that did not complete before the call returned
// arrives later through another receive.
TW_API int tw_recv_into(tw_link *l, size_t src, const char *tag, void *buf,
    size_t cap, size_t *len);

// tw_recv and tw_recv_into with a timeout of their own instead of the
// link's: `timeout_ms` -1 waits forever, 0 only takes a message already
// there.  A call that times out leaves every message queued, so a caller
// may wait in slices (to run signal handlers between them, say) and lose
// nothing.  Return the codes of tw_recv and tw_recv_into; TW_EINVAL also
// for a timeout below -1.  Thread-safe like them.
TW_API int tw_recv_timed(
    tw_link *l, size_t src, const char *tag, int64_t timeout_ms, tw_buf *out);
TW_API int tw_recv_into_timed(tw_link *l, size_t src, const char *tag,
    void *buf, size_t cap, int64_t timeout_ms, size_t *len);

// Never blocks: TW_OK and *len when a message from `src` under `tag` is
// waiting, TW_EAGAIN when none is, TW_EPEER when none is and none can come,
// TW_EINVAL, TW_ECLOSED.
TW_API int tw_probe(tw_link *l, size_t src, const char *tag, size_t *len);

// Changes this link's receive timeout (-1 = forever).  Returns TW_OK or
// TW_EINVAL for values below -1.
TW_API int tw_link_set_recv_timeout(tw_link *l, int64_t ms);

// Blocks until every message sent so far on the link has arrived in its
// receiver's mailbox (not until it was read), up to the link's receive
// timeout: a receiver whose application does not receive may hold back
// what its buffer cannot take (flow control).  Returns TW_OK, TW_EPEER (a
// peer went before every message reached it, or an earlier async send
// failed), TW_ECLOSED, TW_ETIMEDOUT, TW_EINVAL (NULL link).
TW_API int tw_link_wait_pending(tw_link *l);

// tw_link_wait_pending with a timeout of its own (-1 forever, 0 only
// looks: TW_OK when nothing is pending, else TW_ETIMEDOUT).  Returns its
// codes; TW_EINVAL also for a timeout below -1.
TW_API int tw_link_wait_pending_timed(tw_link *l, int64_t timeout_ms);

// Wakes every blocked call on the link and its children with TW_ECLOSED at
// once; later calls also return TW_ECLOSED.  Peers then see TW_EPEER on this
// link.  Idempotent; the link must still be closed to be freed.
TW_API void tw_link_abort(tw_link *l);

// Flushes pending sends (bounded by the receive timeout, or by the connect
// timeout when the receive timeout is 0 or -1), tells the peers, and frees
// the link; NULL-safe.  Closing the last tcp:// link of a process on an
// address also ends its connections, waiting at most a second in all for
// the peers to answer (so that no connection is reset with our last
// frames unread).  Children must be closed first; closing
// a parent with open children returns TW_EINVAL and frees nothing.
// Returns TW_OK, or the first error of the flush (the link is freed anyway).
TW_API int tw_link_close(tw_link *l);

// Counts the messages and payload bytes of this link's point-to-point sends
// and receives; headers, control frames and collectives never count.
typedef struct tw_stats {
	uint64_t msgs_sent, msgs_recv, bytes_sent, bytes_recv;
} tw_stats;
TW_API void tw_link_stats(const tw_link *l, tw_stats *out);

// Gives back memory that the link's transports keep for reuse and that
// holds no data now.  Over tcp:// each connection copies what it sends
// into a send ring and keeps it there until the peer confirms it (a
// broken connection resumes from it); the ring grows with the bytes in
// flight, to 32 MiB at most.  With heartbeats on (TW_OPT_HEARTBEAT_MS,
// H, 1 s by default), a ring that nothing was written to for H/4
// shrinks on its own within H.  This call shrinks every ring of the
// link's peers at once, to what their unconfirmed bytes need (64 KiB at
// least): before measuring memory, or with heartbeats off.  Those
// connections are the node's, shared by every link to the same peer
// process: theirs shrink too.  Other transports keep nothing that grows
// (shm:// rings have a fixed size).  Returns the bytes given back, all
// of them gone from the process by then; 0 for NULL.  Never waits on a
// peer (a ring that a write in progress still reads goes when that
// write returns, and writes never block); thread-safe, also with sends
// and receives on l, but not with tw_link_close(l).  The pool of message
// buffers is tw_buf_pool_drain's.
TW_API size_t tw_link_trim(tw_link *l);

// ---------------------------------------------------------------------------
// Collectives: every party of the link calls them with the same tag.  They
// use a reserved part of the key space, so they never meet point-to-point
// messages of the same tag.  Contributions may differ in size per party.
// Each returns TW_OK or the first error of its messages (TW_EINVAL for a bad
// root or argument, TW_EPEER, TW_ECLOSED, TW_ETIMEDOUT, TW_ENOMEM).  On error
// nothing is left allocated in the outputs.
//
// Every message a collective sends fits TW_OPT_MAX_MSG_SIZE (tw_allgather
// and tw_broadcast cut their messages to it), so each contribution may be
// as large as that limit.  A larger one is TW_ETOOBIG for the party that passes it,
// before it sends anything: for tw_gather and tw_allgather each party's own
// `buf`, for tw_broadcast and tw_scatter the root's data.  The other
// parties then wait for that party as for one that never called, until
// their receive timeout.
// ---------------------------------------------------------------------------

// Returns once every party has entered the barrier (dissemination, log2 n
// rounds).
TW_API int tw_barrier(tw_link *l, const char *tag);

// Root: *inout is the data to send (not modified).  Others: *inout receives
// a new buffer they own (binomial tree, log2 n rounds; from 16 MiB on 3
// parties or more, the data cut into n segments, scattered down the tree
// and passed round a ring, so no party sends the whole data more than
// once).
TW_API int tw_broadcast(
    tw_link *l, size_t root, const char *tag, tw_buf *inout);

// Root: `out` is an array of size() buffers, filled with each party's
// contribution (out[root] a copy of its own).  Others: `out` is unused and
// may be NULL.
TW_API int tw_gather(tw_link *l, size_t root, const char *tag, const void *buf,
    size_t len, tw_buf *out);

// Every party: `out` is an array of size() buffers, filled with each party's
// contribution (Bruck's algorithm, log2 n rounds; contributions of 1 MiB
// or more then go round a ring in n-1 steps, cut into pieces so that each
// step's sending and receiving overlap).
TW_API int tw_allgather(
    tw_link *l, const char *tag, const void *buf, size_t len, tw_buf *out);

// Root: `in` is an array of size() buffers, in[i] going to rank i.  Every
// party, root included: *out receives its part.
TW_API int tw_scatter(
    tw_link *l, size_t root, const char *tag, const tw_buf *in, tw_buf *out);

#ifdef __cplusplus
}
#endif

#endif // TAGWIRE_LINK_H
