// Authentication of tcp:// connections with OpenSSL's libcrypto.  See
// tcp_auth.h for the scheme and docs/PROTOCOL.md for the bytes.

#include <limits.h>
#include <pthread.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <tagwire/status.h>

#include "core/log.h"
#include "core/names.h"
#include "transport/tcp/tcp_auth.h"

// Domain separation: a proof made for this protocol can never be taken for
// an HMAC the application computes with the same secret for its own ends.
static const char auth_label[] = "tagwire-tcp-auth-v1";

static pthread_once_t crypto_once = PTHREAD_ONCE_INIT;

// libcrypto is initialised without its exit handler: OPENSSL_cleanup at
// exit would free what a thread of ours may be using at that moment (the
// I/O thread answering a stranger's handshake while the process returns
// from main), and a process may exit at any moment.  The memory it keeps
// is the process's until it ends anyway.
static void crypto_init(void)
{
	(void)OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
}

void tw__tcp_crypto_init(void)
{
	pthread_once(&crypto_once, crypto_init);
}

// The first libcrypto error of this thread, as text, for a log line.
static const char *ssl_error(char *buf, size_t cap)
{
	unsigned long e = ERR_get_error();
	if (e == 0)
		return "unknown error";
	ERR_error_string_n(e, buf, cap);
	ERR_clear_error();
	return buf;
}

int tw__tcp_random(void *buf, size_t n)
{
	if (n > INT_MAX)
		return TW_EINVAL;
	tw__tcp_crypto_init();
	if (RAND_bytes(buf, (int)n) != 1) {
		char err[256];
		TW_ERROR("tcp", "cannot draw random bytes: %s",
		    ssl_error(err, sizeof(err)));
		return TW_ESYS;
	}
	return TW_OK;
}

static void put_be(unsigned char *p, uint64_t v, int bytes)
{
	for (int i = bytes - 1; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

int tw__tcp_auth_proof(const void *secret, size_t secret_len,
    const unsigned char verifier_nonce[TW_TCP_NONCE_LEN],
    const unsigned char prover_nonce[TW_TCP_NONCE_LEN], uint64_t instance,
    uint32_t rank, const char *link_id, size_t link_id_len,
    unsigned char mac[TW_TCP_MAC_LEN])
{
	unsigned char msg[sizeof(auth_label) - 1 + 2 * TW_TCP_NONCE_LEN + 8 + 4
	    + TW_LINK_ID_MAX];
	if (secret == NULL || secret_len == 0 || secret_len > INT_MAX
	    || link_id_len > TW_LINK_ID_MAX)
		return TW_EINVAL;
	tw__tcp_crypto_init();
	size_t n = 0;
	memcpy(msg, auth_label, sizeof(auth_label) - 1);
	n += sizeof(auth_label) - 1;
	memcpy(msg + n, verifier_nonce, TW_TCP_NONCE_LEN);
	n += TW_TCP_NONCE_LEN;
	memcpy(msg + n, prover_nonce, TW_TCP_NONCE_LEN);
	n += TW_TCP_NONCE_LEN;
	put_be(msg + n, instance, 8);
	n += 8;
	put_be(msg + n, rank, 4);
	n += 4;
	memcpy(msg + n, link_id, link_id_len);
	n += link_id_len;
	unsigned int mac_len = 0;
	if (HMAC(EVP_sha256(), secret, (int)secret_len, msg, n, mac, &mac_len)
	        == NULL
	    || mac_len != TW_TCP_MAC_LEN) {
		char err[256];
		TW_ERROR("tcp", "cannot compute an HMAC-SHA256: %s",
		    ssl_error(err, sizeof(err)));
		return TW_ESYS;
	}
	return TW_OK;
}

int tw__tcp_auth_check(const void *secret, size_t secret_len,
    const unsigned char my_nonce[TW_TCP_NONCE_LEN],
    const unsigned char peer_nonce[TW_TCP_NONCE_LEN], uint64_t peer_instance,
    uint32_t peer_rank, const char *link_id, size_t link_id_len,
    const unsigned char mac[TW_TCP_MAC_LEN])
{
	unsigned char want[TW_TCP_MAC_LEN];
	// Equal nonces would let a peer answer our challenge with our own
	// proof; fresh random nonces are never equal otherwise.
	if (CRYPTO_memcmp(my_nonce, peer_nonce, TW_TCP_NONCE_LEN) == 0)
		return TW_EAUTH;
	int status = tw__tcp_auth_proof(secret, secret_len, my_nonce,
	    peer_nonce, peer_instance, peer_rank, link_id, link_id_len, want);
	if (status != TW_OK)
		return status;
	status
	    = CRYPTO_memcmp(want, mac, TW_TCP_MAC_LEN) == 0 ? TW_OK : TW_EAUTH;
	OPENSSL_cleanse(want, sizeof(want));
	return status;
}
