// The rendezvous messages: how a party tells rank 0 its address and rank 0
// answers with everyone's.  They travel as transfer-engine notifications
// between the parties' engines (rdv.c); the layout is in PROTOCOL.md,
// "Rendezvous".  The decoders take untrusted bytes: they check every
// length against the buffer and the limits below, and are fuzzed.

#ifndef TW_LINK_RDV_WIRE_H
#define TW_LINK_RDV_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include <tagwire/status.h>

#include "core/names.h"

// The most parties a rendezvous gathers, and the longest address.
#define TW_RDV_PARTIES_MAX 65536
#define TW_RDV_ADDR_MAX 255

// A party's request: who it is and where it listens.
typedef struct tw__rdv_hello {
	uint32_t size; // the parties this party was told to expect
	uint32_t rank;
	char link_id[TW_LINK_ID_MAX + 1];
	char addr[TW_RDV_ADDR_MAX + 1];
} tw__rdv_hello;

// Rank 0's answer: every address (roster), or a refusal with a status and
// a reason for the party to log.
typedef struct tw__rdv_reply {
	int status; // TW_OK: a roster
	uint32_t size;
	char **addrs; // size strings (TW_OK); free with tw__rdv_reply_free
	char why[256];
} tw__rdv_reply;

// Encoders: out->data is the caller's.  TW_OK, TW_EINVAL (a field over its
// limit), TW_ENOMEM.
int tw__rdv_hello_encode(const tw__rdv_hello *h, tw_buf *out);
int tw__rdv_roster_encode(char *const *addrs, uint32_t n, tw_buf *out);
int tw__rdv_refuse_encode(int status, const char *why, tw_buf *out);

// Decoders: TW_OK, or TW_EPROTO for anything malformed (bad magic or
// version, a length past the end or over a limit, bytes left over, an
// empty or non-printable string, a refusal carrying TW_OK), TW_ENOMEM.
int tw__rdv_hello_decode(const void *buf, size_t len, tw__rdv_hello *h);
int tw__rdv_reply_decode(const void *buf, size_t len, tw__rdv_reply *r);
void tw__rdv_reply_free(tw__rdv_reply *r);

#endif // TW_LINK_RDV_WIRE_H
