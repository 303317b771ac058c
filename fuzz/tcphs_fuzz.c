// Fuzz target: the first bytes of a tcp:// connection from a stranger: a
// handshake and then an authentication record, decoded as the receiver
// decodes them, from every prefix the chosen read size produces.
//
// The first input byte picks the read size (its value + 1).  Each buffer
// handed to a decoder is a heap copy of exactly the bytes that have
// "arrived", so that AddressSanitizer catches any read past them.  Nothing
// may crash; decoded fields must point into the buffer and respect their
// limits; the version must be the one this build speaks.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tagwire/status.h>

#include "core/names.h"
#include "transport/tcp/tcp_proto.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// Decodes one record of kind `auth` (0: handshake, 1: authentication) at
// data[0..size); returns the bytes it took, or 0 when the connection would
// be dropped or the stream ended first.
static size_t one_record(
    const uint8_t *data, size_t size, size_t step, int auth)
{
	size_t avail = 0;
	while (avail < size) {
		avail += step;
		if (avail > size)
			avail = size;
		unsigned char *buf = malloc(avail);
		if (buf == NULL)
			return 0;
		memcpy(buf, data, avail);
		const char *why = NULL;
		int rv;
		if (auth) {
			unsigned char mac[TW_TCP_MAC_LEN];
			rv = tw__tcp_auth_decode(buf, avail, mac, &why);
			if (rv > 0)
				require(rv == TW_TCP_AUTH_LEN
				    && memcmp(mac, buf + 4, TW_TCP_MAC_LEN)
				        == 0);
		} else {
			tw__tcp_hello h;
			rv = tw__tcp_hello_decode(buf, avail, &h, &why);
			if (rv > 0) {
				const unsigned char *end = buf + rv;
				require((size_t)rv <= avail
				    && (size_t)rv <= TW_TCP_HELLO_MAX);
				require(h.version == TW_TCP_PROTO_VERSION);
				require(h.instance != 0);
				require(h.link_id_len >= 1
				    && h.link_id_len <= TW_LINK_ID_MAX);
				require(h.addr_len >= 1
				    && h.addr_len <= TW_TCP_ADDR_MAX);
				require((const unsigned char *)h.link_id >= buf
				    && (const unsigned char *)h.addr
				            + h.addr_len
				        <= end);
				// What decodes must encode to the same bytes.
				unsigned char again[TW_TCP_HELLO_MAX];
				require(tw__tcp_hello_encode(
				            again, sizeof(again), &h)
				    == (size_t)rv);
				require(memcmp(again, buf, (size_t)rv) == 0);
			}
		}
		free(buf);
		if (rv == TW_EAGAIN)
			continue;
		if (rv < 0) {
			require(rv == TW_EPROTO && why != NULL);
			return 0;
		}
		return (size_t)rv;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t step = (size_t)data[0] + 1;
	data++;
	size--;
	size_t used = one_record(data, size, step, 0);
	if (used > 0)
		one_record(data + used, size - used, step, 1);
	return 0;
}
