// tagwire: the transfer engine -- registered memory, tagged and one-sided
// bulk transfers between processes that find each other at run time.
//
// An engine has a name and, once it listens, an address ("tcp://HOST:PORT",
// shared with the links and engines of this process on that address, or
// "mem://NAME" for engines of one process).  tw_engine_info describes it;
// the application carries that blob to the peer (a file, its control
// plane, a link's tw_allgather), which passes it to tw_engine_connect.
// Both sides then hold a tw_peer for each other.  Memory is registered once
// (tw_mem_register) and named by an id; tw_mem_pack describes it for a peer,
// which turns the blob into a remote id with tw_mem_unpack.  A transfer
// (tw_xfer) is a list of posts to one peer -- tagged sends and receives,
// one-sided WRITEs and READs -- cut into chunks of TW_OPT_CHUNK_SIZE that go
// round robin over TW_OPT_STRIPES connections, at most TW_OPT_WINDOW chunks
// (of CHUNK_SIZE bytes; smaller ones count for their bytes) per connection
// waiting for their reply.
//
// Guarantees: a WRITE completes only once the target applied it; a READ
// once the bytes are in place; a notification reaches the peer only after
// its transfer's data; a transfer past its deadline fails with TW_ETIMEDOUT
// and one whose peer died with TW_EPEER -- none stays in progress forever.
// The target checks every one-sided request against the registration
// (range, access, still registered) and never touches memory outside it.
//
// Thread-safety: every function may be called from any thread, also
// concurrently on one engine or one transfer, except that tw_engine_free
// must be the last call on its engine and tw_xfer_free the last on its
// transfer.  Nothing exits or aborts the process.

#ifndef TAGWIRE_ENGINE_H
#define TAGWIRE_ENGINE_H

#include <tagwire/link.h>
#include <tagwire/status.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tw_engine tw_engine;

// A connected peer engine, as numbered by this engine (never 0).
typedef uint32_t tw_peer;

// Makes an engine named `name` (1..64 bytes of [A-Za-z0-9._-]; peers find
// it by that name with tw_engine_accept, and with TLS its certificate must
// name it).  It starts no thread until it listens or connects.  *out is
// the caller's; free it with tw_engine_free.  Returns TW_OK, TW_EINVAL
// (NULL or invalid name), TW_ENOMEM.
TW_API int tw_engine_new(const char *name, tw_engine **out);

// Sets option `opt` before tw_engine_listen and tw_engine_connect:
//   TW_OPT_STRIPES          connections per peer (default 1, 1..64)
//   TW_OPT_CHUNK_SIZE       bytes per chunk (default 1 MiB, 4 KiB..64 MiB)
//   TW_OPT_WINDOW           chunks waiting for their reply, per connection
//                           (default 16, 1..1024); counted in bytes:
//                           STRIPES x WINDOW x CHUNK_SIZE unanswered per
//                           peer, so small chunks take less of it
//   TW_OPT_CONNECT_TIMEOUT_MS  how long connect waits (default 30000)
//   TW_OPT_HEARTBEAT_MS     liveness checks (default 1000; 0 = off): a
//                           peer silent for three is gone
//   TW_OPT_MAX_MSG_SIZE     largest notification accepted (default 1 MiB,
//                           0..1 GiB)
//   TW_OPT_SHM_LOCAL        accepted (0 or 1); same-host peers use tcp://
// Returns TW_OK, or TW_EINVAL for another option, a value out of range, or
// an engine that already listens or connected.
TW_API int tw_engine_set(tw_engine *e, int opt, int64_t value);

// The secret (1..1024 bytes, copied) that connecting engines must both
// hold; tcp:// proves it with an HMAC-SHA256 challenge and response.  Len 0
// removes it.  Before listen/connect.  TW_OK, TW_EINVAL, TW_ENOMEM.
TW_API int tw_engine_set_secret(tw_engine *e, const void *key, size_t len);

// TLS 1.3 on every tcp:// connection of the engine, with certificates on
// both sides: this engine's certificate and key (PEM) and the CA file that
// peers' certificates must chain to; a peer's certificate must name its
// engine name (subjectAltName DNS, else CN).  Paths are copied; files are
// read at listen/connect (TW_EINVAL there when unusable, logged).  Before
// listen/connect.  TW_OK, TW_EINVAL (NULL path, too late), TW_ENOMEM.
TW_API int tw_engine_set_tls(tw_engine *e, const char *cert_file,
    const char *key_file, const char *ca_file);

// Listens at `addr`: "tcp://HOST:PORT" (port 0: any free port; the port is
// shared with the links and engines of this process on that address) or
// "mem://NAME" (engines of this process).  Once.  Returns TW_OK, TW_EINVAL
// (malformed address, listening already, or a mem:// name taken), TW_ESYS
// (cannot bind; logged), TW_ENOMEM.
TW_API int tw_engine_listen(tw_engine *e, const char *addr);

// What a peer needs to connect: a versioned little-endian blob with this
// engine's name, instance and address.  info->data is the caller's
// (tw_buf_free).  TW_OK, TW_EINVAL (not listening), TW_ENOMEM.
TW_API int tw_engine_info(tw_engine *e, tw_buf *info);

// Connects to the engine that `info` describes, authenticates (secret,
// TLS) and returns its peer number.  Blocks up to TW_OPT_CONNECT_TIMEOUT_MS.
// Connecting again to a connected engine returns the same peer.  Returns
// TW_OK, TW_EINVAL (malformed or truncated blob, unknown transport, the
// peer has this engine's name), TW_ETIMEDOUT, TW_EAUTH, TW_EPEER, TW_ESYS,
// TW_ENOMEM.
TW_API int tw_engine_connect(
    tw_engine *e, const void *info, size_t len, tw_peer *peer);

// Connects knowing only the peer's address and engine name (no info
// blob): as tw_engine_connect, trusting whichever engine of that name
// answers at `addr` (its secret or certificate still must match).  For
// tools and fixed deployments.  Returns the codes of tw_engine_connect.
TW_API int tw_engine_connect_to(
    tw_engine *e, const char *addr, const char *peer_name, tw_peer *peer);

// The peer that connected as engine `peer_name`, waiting up to timeout_ms
// (0: look once, negative: forever).  A lookup: the same name gives the
// same peer.  TW_OK, TW_ETIMEDOUT, TW_EINVAL (not listening, bad name).
TW_API int tw_engine_accept(
    tw_engine *e, const char *peer_name, int64_t timeout_ms, tw_peer *peer);

// The peer's engine name; NULL for an unknown peer.  Valid until the
// engine is freed.
TW_API const char *tw_engine_peer_name(tw_engine *e, tw_peer peer);

// Closes the connection to `peer`: its transfers fail (TW_ECLOSED here,
// TW_EPEER there) and the number becomes unknown.  Blocks until the
// connection's threads end (bounded).  TW_OK, TW_EINVAL.
TW_API int tw_engine_disconnect(tw_engine *e, tw_peer peer);

// Fails the transfers still in flight, closes every connection, stops the
// engine's threads and frees it; transfer handles die with it.  NULL-safe.
TW_API void tw_engine_free(tw_engine *e);

// Memory kinds and the one-sided access that peers get.
enum { TW_MEM_HOST = 0, TW_MEM_CUDA = 1 };
enum { TW_ACCESS_READ = 1, TW_ACCESS_WRITE = 2 };

// Registers [addr, addr+len) (len >= 1) for transfers; `access` (a mix of
// TW_ACCESS_*, 0 = local use only) is what peers may do to it one-sidedly.
// The memory stays the caller's and must stay valid until deregistered.
// TW_OK, TW_EINVAL (NULL, 0 bytes, wrapping range, unknown bits),
// TW_ENOTSUP (TW_MEM_CUDA in a build without CUDA), TW_ENOMEM.
TW_API int tw_mem_register(tw_engine *e, void *addr, size_t len, int kind,
    unsigned access, uint64_t *mem_id);

// Forgets a registration: after TW_OK no peer request touches it (one that
// is being applied finishes first).  TW_EAGAIN while a transfer of this
// engine that is not finished uses it; TW_EINVAL for an unknown id.
TW_API int tw_mem_deregister(tw_engine *e, uint64_t mem_id);

// Describes a registration for peers (a versioned blob with this engine's
// instance, the id, the length, the access and an unguessable key that
// requests must show).  desc->data is the caller's.  TW_OK, TW_EINVAL,
// TW_ENOMEM.
TW_API int tw_mem_pack(tw_engine *e, uint64_t mem_id, tw_buf *desc);

// Turns a blob packed by `peer`'s engine into a remote id for one-sided
// posts to that peer.  TW_OK, TW_EINVAL (unknown peer; a malformed,
// truncated or foreign blob), TW_ENOMEM.
TW_API int tw_mem_unpack(tw_engine *e, tw_peer peer, const void *desc,
    size_t len, uint64_t *rmem_id);

typedef struct tw_xfer tw_xfer;

// A transfer to `peer` that fails with TW_ETIMEDOUT once timeout_ms passed
// (from now or from tw_xfer_repost; negative: no deadline).  The caller
// owns *out (tw_xfer_free).  TW_OK, TW_EINVAL (unknown peer), TW_ENOMEM.
TW_API int tw_xfer_create(
    tw_engine *e, tw_peer peer, int64_t timeout_ms, tw_xfer **out);

// Posts, which start at once.  `mem_id` is a registration of this engine
// and [off, off+len) must lie in it; `rmem_id` comes from tw_mem_unpack for
// the transfer's peer.  A tagged send matches the peer's receive with the
// same tag, first posted first matched; different lengths fail both with
// TW_ETRUNC.  A WRITE is done once applied there, a READ once the bytes
// are here.  Each returns TW_OK, TW_EINVAL (unknown id, range outside the
// registration, the transfer is finished or has its notification), or
// TW_ENOMEM.  The range of a remote id is checked by the target: outside
// it, or without the access, the transfer fails with TW_EINVAL.
TW_API int tw_xfer_post_send(
    tw_xfer *x, uint64_t mem_id, size_t off, size_t len, uint64_t tag);
TW_API int tw_xfer_post_recv(
    tw_xfer *x, uint64_t mem_id, size_t off, size_t len, uint64_t tag);
TW_API int tw_xfer_post_write(tw_xfer *x, uint64_t mem_id, size_t off,
    uint64_t rmem_id, size_t roff, size_t len);
TW_API int tw_xfer_post_read(tw_xfer *x, uint64_t mem_id, size_t off,
    uint64_t rmem_id, size_t roff, size_t len);

// A notification (copied; up to the peer's TW_OPT_MAX_MSG_SIZE) that the
// peer's tw_notify_recv gets once every post of the transfer is done; no
// post may follow it.  TW_OK, TW_EINVAL (one already, or finished),
// TW_ETOOBIG, TW_ENOMEM.
TW_API int tw_xfer_notify(tw_xfer *x, const void *msg, size_t len);

// 1 done, 0 in progress, or the transfer's error.  Never blocks.  Once it
// (or tw_xfer_wait, or tw_engine_reap) reported the transfer finished, the
// transfer takes no more posts (TW_EINVAL) until tw_xfer_repost; before
// that, a post to a finished transfer runs it again.  A transfer with no
// posts is done at once, and tw_engine_reap never hands it out.
TW_API int tw_xfer_test(tw_xfer *x);

// Waits up to timeout_ms (negative: forever) for the transfer: TW_OK when
// done, its error when it failed, TW_EAGAIN when still going.
TW_API int tw_xfer_wait(tw_xfer *x, int64_t timeout_ms);

// Runs the same posts (and notification) again, with a fresh deadline,
// without allocating.  TW_OK, TW_EAGAIN (still in progress), TW_EINVAL
// (a registration it used is gone, or the peer).
TW_API int tw_xfer_repost(tw_xfer *x);

// Frees the transfer without waiting for the peer: what is in flight is
// cancelled, and once it returns the engine never touches the transfer's
// memory again.  NULL-safe.
TW_API void tw_xfer_free(tw_xfer *x);

// A descriptor that poll/epoll report readable while tw_engine_reap has
// finished transfers to hand out or a notification is queued.  Owned by
// the engine.  -1 when the system refused one (logged).
TW_API int tw_engine_fd(tw_engine *e);

// Hands out up to `cap` finished transfers (done or failed), each once,
// oldest first.  Never blocks.  TW_OK (and *n, maybe 0), TW_EINVAL.
TW_API int tw_engine_reap(tw_engine *e, tw_xfer **done, size_t cap, size_t *n);

// Sends a notification alone; those of one sender arrive in order.
// TW_OK, TW_EINVAL (unknown peer), TW_ETOOBIG (over the peer's
// TW_OPT_MAX_MSG_SIZE), TW_EPEER, TW_ENOMEM.
TW_API int tw_engine_notify(
    tw_engine *e, tw_peer peer, const void *msg, size_t len);

// The oldest notification, waiting up to timeout_ms (0: look once,
// negative: forever).  msg->data is the caller's.  TW_OK, TW_ETIMEDOUT,
// TW_EINVAL.
TW_API int tw_notify_recv(
    tw_engine *e, tw_peer *peer, tw_buf *msg, int64_t timeout_ms);

typedef struct tw_xfer_stats {
	uint64_t xfers_done, xfers_failed, bytes_sent, bytes_recv;
} tw_xfer_stats;

// Counts for `peer`: transfers finished here, and payload bytes of
// finished work on each side (WRITE: sent by the initiator, received by the
// target; READ the other way; tagged: as sent and received).  TW_OK,
// TW_EINVAL.
TW_API int tw_engine_stats(tw_engine *e, tw_peer peer, tw_xfer_stats *out);

#ifdef __cplusplus
}
#endif

#endif // TAGWIRE_ENGINE_H
