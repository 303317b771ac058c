// Fuzz target: the transfer engine's bytes from a stranger -- an info blob
// (tw_engine_connect), a memory descriptor (tw_mem_unpack), a frame header
// and a pack of frames (every message a peer sends), decoded as the engine
// decodes them.
//
// The whole input goes to each of the three decoders, and its first 40 and
// 48 bytes also to the header and descriptor decoders, so that mutations
// of a longer input still reach their field checks.  Each buffer handed to
// a decoder is a heap copy of exactly its bytes, so that AddressSanitizer
// catches any read past them.  Nothing may crash; a decoder returns TW_OK
// or its one error; what decodes must be valid and must encode back to
// exactly the bytes it came from.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tagwire/engine.h>

#include "engine/wire.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void info(const uint8_t *data, size_t size)
{
	unsigned char *buf = copy_of(data, size);
	if (buf == NULL)
		return;
	tw__eng_info in;
	int rv = tw__eng_info_decode(buf, size, &in);
	require(rv == TW_OK || rv == TW_EINVAL);
	if (rv == TW_OK) {
		require(in.instance != 0);
		require(tw__eng_name_ok(in.name));
		require(strncmp(in.addr, "tcp://", 6) == 0
		    || strncmp(in.addr, "mem://", 6) == 0);
		require(tw__eng_info_size(&in) == size);
		unsigned char *again = malloc(size);
		if (again != NULL) {
			tw__eng_info_encode(&in, again);
			require(memcmp(again, buf, size) == 0);
			free(again);
		}
	}
	free(buf);
}

static void desc(const uint8_t *data, size_t size)
{
	unsigned char *buf = copy_of(data, size);
	if (buf == NULL)
		return;
	tw__eng_desc d;
	int rv = tw__eng_desc_decode(buf, size, &d);
	require(rv == TW_OK || rv == TW_EINVAL);
	if (rv == TW_OK) {
		require(size == TW_ENG_DESC_SIZE);
		require(d.kind == TW_MEM_HOST);
		require(d.instance != 0 && d.id != 0 && d.len != 0);
		require(
		    (d.access & ~(uint32_t)(TW_ACCESS_READ | TW_ACCESS_WRITE))
		    == 0);
		unsigned char again[TW_ENG_DESC_SIZE];
		tw__eng_desc_encode(&d, again);
		require(memcmp(again, buf, size) == 0);
	}
	free(buf);
}

static void hdr(const uint8_t *data, size_t size)
{
	unsigned char *buf = copy_of(data, size);
	if (buf == NULL)
		return;
	tw__eng_hdr h;
	int rv = tw__eng_hdr_decode(buf, size, &h);
	require(rv == TW_OK || rv == TW_EPROTO);
	if (rv == TW_OK) {
		require(size == TW_ENG_HDR_SIZE);
		require(h.type >= TW_ENG_HELLO && h.type <= TW_ENG_TYPE_MAX);
		require(h.status <= 0 && h.status >= TW_ENOTSUP);
		// Only frames with data or a byte count have a length.
		bool sized = tw__eng_hdr_has_data(&h) || h.type == TW_ENG_READ
		    || h.type == TW_ENG_WACK || h.type == TW_ENG_SACK
		    || h.type == TW_ENG_RDATA;
		require(sized || h.len == 0);
		unsigned char again[TW_ENG_HDR_SIZE];
		tw__eng_hdr_encode(&h, again);
		require(memcmp(again, buf, size) == 0);
	}
	free(buf);
}

// The input as a pack of frames: every frame found lies inside it, each
// step moves forward, and the walk ends.
static void pack(const uint8_t *data, size_t size)
{
	unsigned char *buf = copy_of(data, size);
	if (buf == NULL)
		return;
	size_t at = 0;
	for (;;) {
		size_t before = at;
		tw__eng_hdr h;
		const unsigned char *inl;
		int rv = tw__eng_pack_next(buf, size, &at, &h, &inl);
		require(rv == TW_OK || rv == TW_EAGAIN || rv == TW_EPROTO);
		if (rv != TW_OK) {
			require(at == before);
			break;
		}
		require(at > before && at <= size);
		if (inl != NULL)
			require(inl >= buf && inl + h.len <= buf + size);
		else if (tw__eng_hdr_has_data(&h))
			require(at == size);
	}
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	pack(data, size);
	info(data, size);
	desc(data, size);
	hdr(data, size);
	if (size > TW_ENG_HDR_SIZE)
		hdr(data, TW_ENG_HDR_SIZE);
	if (size > TW_ENG_DESC_SIZE)
		desc(data, TW_ENG_DESC_SIZE);
	return 0;
}
