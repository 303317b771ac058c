// Fuzz target: the shared-memory discovery messages of TW_OPT_SHM_LOCAL
// from a peer -- a hello and a verdict as a party decodes them.
//
// The input goes whole to both decoders as a heap copy of exactly its
// bytes, so that AddressSanitizer catches any read past them.  A decoder
// returns TW_OK or TW_EPROTO; a hello that decodes encodes back to the
// input's first TW_SHML_HELLO_LEN bytes (later ones are a later version's),
// and a verdict that decodes is 0 or 1 and came from one such byte.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "link/shml_wire.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *buf = copy_of(data, size);
	if (buf == NULL)
		return 0;
	tw__shml_hello h;
	int rv = tw__shml_hello_decode(buf, size, &h);
	require(rv == TW_OK || rv == TW_EPROTO);
	if (rv == TW_OK) {
		require(size >= TW_SHML_HELLO_LEN);
		uint8_t again[TW_SHML_HELLO_LEN];
		tw__shml_hello_encode(&h, again);
		require(memcmp(again, buf, sizeof(again)) == 0);
	}
	int yes = -1;
	rv = tw__shml_verdict_decode(buf, size, &yes);
	require(rv == TW_OK || rv == TW_EPROTO);
	if (rv == TW_OK)
		require(size == 1 && (yes == 0 || yes == 1) && yes == buf[0]);
	free(buf);
	return 0;
}
