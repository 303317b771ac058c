// Fuzz target: the rendezvous messages from a stranger -- a party's request
// as rank 0 decodes it, and rank 0's answer (a roster or a refusal) as a
// party decodes it.
//
// The input goes whole to both decoders, each time as a heap copy of
// exactly its bytes, so that AddressSanitizer catches any read past them.
// Nothing may crash or leak; a decoder returns TW_OK or TW_EPROTO (or
// TW_ENOMEM); what decodes must be within the limits and must encode back
// to exactly the bytes it came from.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "link/rdv_wire.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void same(const tw_buf *b, const unsigned char *buf, size_t size)
{
	require(b->len == size && memcmp(b->data, buf, size) == 0);
}

static void hello(const uint8_t *data, size_t size)
{
	unsigned char *buf = copy_of(data, size);
	if (buf == NULL)
		return;
	tw__rdv_hello h;
	int rv = tw__rdv_hello_decode(buf, size, &h);
	require(rv == TW_OK || rv == TW_EPROTO);
	if (rv == TW_OK) {
		require(h.size >= 1 && h.size <= TW_RDV_PARTIES_MAX);
		require(h.rank < h.size);
		tw_buf b;
		if (tw__rdv_hello_encode(&h, &b) == TW_OK) {
			same(&b, buf, size);
			tw_buf_free(&b);
		}
	}
	free(buf);
}

static void reply(const uint8_t *data, size_t size)
{
	unsigned char *buf = copy_of(data, size);
	if (buf == NULL)
		return;
	tw__rdv_reply r;
	int rv = tw__rdv_reply_decode(buf, size, &r);
	require(rv == TW_OK || rv == TW_EPROTO || rv == TW_ENOMEM);
	if (rv == TW_OK) {
		tw_buf b;
		int st;
		if (r.status == TW_OK) {
			require(r.size >= 1 && r.size <= TW_RDV_PARTIES_MAX);
			st = tw__rdv_roster_encode(r.addrs, r.size, &b);
		} else {
			require(r.status < 0 && r.addrs == NULL);
			st = tw__rdv_refuse_encode(r.status, r.why, &b);
		}
		require(st == TW_OK || st == TW_ENOMEM);
		if (st == TW_OK) {
			same(&b, buf, size);
			tw_buf_free(&b);
		}
		tw__rdv_reply_free(&r);
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	hello(data, size);
	reply(data, size);
	return 0;
}
