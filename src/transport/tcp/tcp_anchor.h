// Anchors: a hold on a tcp:// node that is not a link.
//
// A transfer engine listens on a node's address before any of its links
// exists (its links are made one per connecting peer, on demand).  An
// anchor keeps the node -- listener, I/O thread -- alive meanwhile, and
// watches for handshakes and OPENs that name a link that does not exist
// yet under a prefix: the watcher makes that link, which the waiting
// connection then joins (the acceptor waits up to 2 s for a link).
//
// Thread-safety: every function may be called from any thread.

#ifndef TW_TRANSPORT_TCP_TCP_ANCHOR_H
#define TW_TRANSPORT_TCP_TCP_ANCHOR_H

typedef struct tw__tcp_anchor tw__tcp_anchor;

// Called with `link_id` (starting with the anchor's prefix) that a peer
// wants, and that peer's listening address ("tcp://HOST:PORT").  Runs on
// the node's I/O thread with the node's lock held: it must only record the
// wish and return (it may be called again for the same link while the
// connection waits).
typedef void (*tw__tcp_want_fn)(
    void *arg, const char *link_id, const char *peer_addr);

// Anchors the node of `addr` ("tcp://HOST:PORT"; port 0: a new node on a
// free port), making it when there is none.  `tls`: {certificate, key, CA}
// files, or NULL; as tw__tcp_node_join.  `prefix` (may be NULL: no watch)
// and `fn` as above.  TW_OK, TW_ESYS (cannot bind; logged), TW_EINVAL
// (TLS files, logged), TW_ENOMEM.
int tw__tcp_anchor_new(const char *addr, const char *const *tls,
    const char *prefix, tw__tcp_want_fn fn, void *arg, tw__tcp_anchor **out);

// The node's address, "tcp://HOST:PORT" with the port bound.
const char *tw__tcp_anchor_addr(const tw__tcp_anchor *a);

// Stops watching (no call of fn runs once this returns) and drops the hold
// on the node, which stops when nothing else holds it.  NULL-safe.  Not
// from the I/O thread.
void tw__tcp_anchor_free(tw__tcp_anchor *a);

#endif // TW_TRANSPORT_TCP_TCP_ANCHOR_H
