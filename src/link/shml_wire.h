// The messages by which the parties of a tcp:// link with TW_OPT_SHM_LOCAL
// find out which peers share their host (shmlocal.c).  They travel over
// the link itself, so they are authenticated as the link is; the layout is
// in PROTOCOL.md, "Shared memory between tcp:// parties".  The decoders
// take untrusted bytes and are fuzzed.

#ifndef TW_LINK_SHML_WIRE_H
#define TW_LINK_SHML_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <tagwire/status.h>

#define TW_SHML_VERSION 1
#define TW_SHML_HOST_LEN 32 // SHA-256 of what names the host
#define TW_SHML_TOKEN_LEN 16
// The hello's size in version 1; a later version may append.
#define TW_SHML_HELLO_LEN (1 + TW_SHML_HOST_LEN + 8 + TW_SHML_TOKEN_LEN)

// A party's hello: its host, and the probe segment that proves a peer
// shares its shared memory ("/tw-h<nonce as 16 hex digits>", holding
// token).  The nonce also names the party's shm:// endpoint for the link.
typedef struct tw__shml_hello {
	uint8_t host[TW_SHML_HOST_LEN];
	uint64_t nonce;
	uint8_t token[TW_SHML_TOKEN_LEN];
} tw__shml_hello;

// Writes the hello into out[TW_SHML_HELLO_LEN].
void tw__shml_hello_encode(const tw__shml_hello *h, uint8_t *out);

// TW_OK, or TW_EPROTO: shorter than TW_SHML_HELLO_LEN or another version.
// Bytes past the version 1 layout are ignored.
int tw__shml_hello_decode(const void *buf, size_t len, tw__shml_hello *h);

// A verdict is one byte, 0 (no) or 1 (yes).  TW_OK and *yes, or
// TW_EPROTO for any other length or value.
int tw__shml_verdict_decode(const void *buf, size_t len, int *yes);

#endif // TW_LINK_SHML_WIRE_H
