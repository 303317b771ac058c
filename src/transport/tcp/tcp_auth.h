// Authentication of tcp:// connections: fresh nonces and HMAC-SHA256
// proofs that both ends hold the link's secret, which never travels.
//
// Each end sends a random nonce in its handshake and then proves itself
// with HMAC-SHA256(secret, label || verifier nonce || prover nonce ||
// prover instance || prover rank || link id), where the verifier is the
// other end.  A proof is bound to the other end's fresh nonce, so a
// recorded one is useless on a new connection, and the two nonces appear
// in opposite order in the two directions, so a proof reflected back to
// its sender does not verify either.  docs/PROTOCOL.md has the bytes.
//
// The cryptography comes from OpenSSL's libcrypto; nothing here is
// home-made.  All functions are thread-safe.

#ifndef TW_TRANSPORT_TCP_TCP_AUTH_H
#define TW_TRANSPORT_TCP_TCP_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "transport/tcp/tcp_proto.h"

// Initialises libcrypto once, without its exit-time cleanup (so that no
// thread of ours can meet freed libcrypto state while the process exits).
// Every function below calls it; the transport calls it before it starts
// any thread.  An application that initialises OpenSSL itself first
// should pass OPENSSL_INIT_NO_ATEXIT too.
void tw__tcp_crypto_init(void);

// Fills buf[0..n) with bytes from a cryptographically secure generator.
// TW_OK, or TW_ESYS (with a log line) when the generator fails.
int tw__tcp_random(void *buf, size_t n);

// Computes the proof that the holder of `secret` (the prover: rank
// `rank`, instance `instance`, nonce `prover_nonce`) sends to the end
// whose nonce is `verifier_nonce`.  TW_OK, TW_EINVAL (no secret, or a link
// id longer than a link id may be) or TW_ESYS (libcrypto failed; logged).
int tw__tcp_auth_proof(const void *secret, size_t secret_len,
    const unsigned char verifier_nonce[TW_TCP_NONCE_LEN],
    const unsigned char prover_nonce[TW_TCP_NONCE_LEN], uint64_t instance,
    uint32_t rank, const char *link_id, size_t link_id_len,
    unsigned char mac[TW_TCP_MAC_LEN]);

// Checks the proof `mac` that the peer sent, in constant time.  TW_OK or
// TW_EAUTH, also when the peer's nonce equals ours (a reflection); the
// caller logs the failure, naming the peer.  TW_ESYS if libcrypto failed.
int tw__tcp_auth_check(const void *secret, size_t secret_len,
    const unsigned char my_nonce[TW_TCP_NONCE_LEN],
    const unsigned char peer_nonce[TW_TCP_NONCE_LEN], uint64_t peer_instance,
    uint32_t peer_rank, const char *link_id, size_t link_id_len,
    const unsigned char mac[TW_TCP_MAC_LEN]);

#endif // TW_TRANSPORT_TCP_TCP_AUTH_H
