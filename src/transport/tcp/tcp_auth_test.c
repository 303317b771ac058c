// Tests of tcp:// authentication: a proof made with the secret verifies,
// and any change — another secret, nonce, instance, rank or link id, a
// reflected proof, equal nonces, one flipped bit — is TW_EAUTH.

#include <string.h>

#include "testutil.h"
#include "transport/tcp/tcp_auth.h"

static const char secret[] = "correct horse battery staple";

typedef struct side {
	unsigned char nonce[TW_TCP_NONCE_LEN];
	uint64_t instance;
	uint32_t rank;
} side;

static void make_sides(side *a, side *b)
{
	TW_PASS(tw__tcp_random(a->nonce, sizeof(a->nonce)));
	TW_PASS(tw__tcp_random(b->nonce, sizeof(b->nonce)));
	a->instance = 11;
	a->rank = 0;
	b->instance = 22;
	b->rank = 1;
}

// b's proof to a.
static void prove(const void *key, size_t key_len, const side *a,
    const side *b, const char *link, unsigned char mac[TW_TCP_MAC_LEN])
{
	TW_PASS(tw__tcp_auth_proof(key, key_len, a->nonce, b->nonce,
	    b->instance, b->rank, link, strlen(link), mac));
}

static int check(const side *a, const side *b, const char *link,
    const unsigned char mac[TW_TCP_MAC_LEN])
{
	return tw__tcp_auth_check(secret, sizeof(secret) - 1, a->nonce,
	    b->nonce, b->instance, b->rank, link, strlen(link), mac);
}

static void test_auth_ok(void **state)
{
	side a, b;
	unsigned char mac[TW_TCP_MAC_LEN];
	make_sides(&a, &b);
	prove(secret, sizeof(secret) - 1, &a, &b, "root", mac);
	TW_PASS(check(&a, &b, "root", mac));
	prove(secret, sizeof(secret) - 1, &b, &a, "root", mac);
	TW_PASS(check(&b, &a, "root", mac));
}

static void test_auth_refused(void **state)
{
	side a, b, c;
	unsigned char mac[TW_TCP_MAC_LEN], bad[TW_TCP_MAC_LEN];
	make_sides(&a, &b);
	prove(secret, sizeof(secret) - 1, &a, &b, "root", mac);

	// Another secret.
	prove("wrong", 5, &a, &b, "root", bad);
	TW_FAIL(check(&a, &b, "root", bad), TW_EAUTH);
	// One flipped bit.
	for (int i = 0; i < TW_TCP_MAC_LEN * 8; i += 37) {
		memcpy(bad, mac, sizeof(bad));
		bad[i / 8] ^= (unsigned char)(1u << (i % 8));
		TW_FAIL(check(&a, &b, "root", bad), TW_EAUTH);
	}
	// The same proof on another link, rank, instance or connection.
	TW_FAIL(check(&a, &b, "root2", mac), TW_EAUTH);
	c = b;
	c.rank = 2;
	TW_FAIL(check(&a, &c, "root", mac), TW_EAUTH);
	c = b;
	c.instance = 23;
	TW_FAIL(check(&a, &c, "root", mac), TW_EAUTH);
	c = a;
	TW_PASS(tw__tcp_random(c.nonce, sizeof(c.nonce)));
	TW_FAIL(check(&c, &b, "root", mac), TW_EAUTH);

	// A's own proof reflected back to it by a stranger that copied B's
	// handshake fields does not verify.
	prove(secret, sizeof(secret) - 1, &b, &a, "root", bad);
	c = a;
	c.instance = b.instance;
	c.rank = b.rank;
	TW_FAIL(check(&a, &c, "root", bad), TW_EAUTH);
	// Nor does anything when the peer echoes our nonce.
	memcpy(c.nonce, a.nonce, sizeof(c.nonce));
	prove(secret, sizeof(secret) - 1, &a, &c, "root", bad);
	TW_FAIL(check(&a, &c, "root", bad), TW_EAUTH);
}

static void test_auth_invalid(void **state)
{
	side a, b;
	unsigned char mac[TW_TCP_MAC_LEN];
	make_sides(&a, &b);
	TW_FAIL(tw__tcp_auth_proof(
	            NULL, 0, a.nonce, b.nonce, 1, 0, "root", 4, mac),
	    TW_EINVAL);
	char long_id[300];
	memset(long_id, 'a', sizeof(long_id));
	TW_FAIL(tw__tcp_auth_proof(secret, 3, a.nonce, b.nonce, 1, 0, long_id,
	            sizeof(long_id), mac),
	    TW_EINVAL);
	// Two draws of nonces differ.
	unsigned char n1[TW_TCP_NONCE_LEN], n2[TW_TCP_NONCE_LEN];
	TW_PASS(tw__tcp_random(n1, sizeof(n1)));
	TW_PASS(tw__tcp_random(n2, sizeof(n2)));
	assert_memory_not_equal(n1, n2, sizeof(n1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auth_ok),
		cmocka_unit_test(test_auth_refused),
		cmocka_unit_test(test_auth_invalid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
