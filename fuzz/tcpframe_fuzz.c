// Fuzz target: the byte stream a hostile peer could send on an established
// tcp:// connection, cut into frames exactly as the receiver does: decode a
// header (asking for more bytes while the decoder says TW_EAGAIN), check
// its order against the connection's state, then skip its payload.
//
// The first input byte picks how the stream arrives: its value + 1 is the
// size of each read, so that every record is also decoded from all of its
// prefixes.  Every buffer handed to the decoder is a heap copy of exactly
// the bytes that have "arrived", so that AddressSanitizer catches any read
// past them.  Nothing may crash, consumed lengths must stay inside the
// buffer, keys must point into it, and no payload may exceed the limit.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tagwire/status.h>

#include "transport/tcp/tcp_proto.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// Small, so that inputs can reach "payload length out of range".
#define FUZZ_MAX_PAYLOAD 100000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	size_t step = (size_t)data[0] + 1;
	data++;
	size--;
	tw__tcp_rx st;
	tw__tcp_rx_init(&st);
	size_t pos = 0; // start of the record being decoded
	size_t avail = 0; // bytes of it that have arrived
	while (pos < size) {
		avail += step;
		if (avail > size - pos)
			avail = size - pos;
		unsigned char *buf = malloc(avail);
		if (buf == NULL)
			return 0;
		memcpy(buf, data + pos, avail);
		tw__tcp_hdr h;
		const char *why = NULL;
		int rv = tw__tcp_hdr_decode(
		    buf, avail, FUZZ_MAX_PAYLOAD, &h, &why);
		if (rv == TW_EAGAIN) {
			free(buf);
			if (pos + avail == size)
				return 0; // the stream ended mid-record
			continue;
		}
		if (rv < 0) {
			require(rv == TW_EPROTO && why != NULL);
			free(buf);
			return 0; // the receiver drops the connection
		}
		require((size_t)rv >= TW_TCP_HDR_LEN && (size_t)rv <= avail);
		// A chunk's limit is on its bytes, after its prefix.
		require(h.len <= FUZZ_MAX_PAYLOAD
		        + (h.type == TW_TCP_F_CHUNK ? TW_TCP_CHUNK_PREFIX
		                                    : 0));
		require((size_t)rv == TW_TCP_HDR_LEN + h.key_len);
		if (h.key != NULL)
			require((const unsigned char *)h.key
			        == buf + TW_TCP_HDR_LEN
			    && memchr(h.key, '\0', h.key_len) == NULL);
		// Pretend this side has sent as many frames as the peer has
		// acknowledged plus some, so that the order checks run deep.
		rv = tw__tcp_rx_step(&st, &h, st.peer_ack + 8, &why);
		if (rv != TW_OK) {
			require(rv == TW_EPROTO && why != NULL);
			free(buf);
			return 0;
		}
		if (h.type == TW_TCP_F_OPEN
		    && size - pos - TW_TCP_HDR_LEN - h.key_len
		        >= TW_TCP_OPEN_LEN) {
			tw__tcp_open o;
			const uint8_t *p
			    = data + pos + TW_TCP_HDR_LEN + h.key_len;
			if (tw__tcp_open_decode(p, TW_TCP_OPEN_LEN, &o)
			    == TW_OK)
				require(o.rank < o.size && o.size >= 2
				    && o.window > 0);
		}
		if (h.type == TW_TCP_F_STRIPED
		    && size - pos - TW_TCP_HDR_LEN - h.key_len
		        >= TW_TCP_STRIPED_LEN) {
			tw__tcp_chunk ck;
			if (tw__tcp_striped_decode(
			        data + pos + TW_TCP_HDR_LEN + h.key_len,
			        TW_TCP_STRIPED_LEN, &ck)
			    == TW_OK)
				require(ck.total > 0);
		}
		if (h.type == TW_TCP_F_CHUNK) {
			require(h.len > TW_TCP_CHUNK_PREFIX);
			tw__tcp_chunk ck;
			if (size - pos - TW_TCP_HDR_LEN >= TW_TCP_CHUNK_PREFIX
			    && tw__tcp_chunk_decode(
			           data + pos + TW_TCP_HDR_LEN,
			           TW_TCP_CHUNK_PREFIX, &ck)
			        == TW_OK)
				require(ck.offset < ck.total);
		}
		if (h.type == TW_TCP_F_CANCEL
		    && size - pos - TW_TCP_HDR_LEN >= TW_TCP_CANCEL_LEN) {
			uint64_t id;
			require(
			    tw__tcp_cancel_decode(data + pos + TW_TCP_HDR_LEN,
			        TW_TCP_CANCEL_LEN, &id)
			    == TW_OK);
		}
		if (h.type == TW_TCP_F_CREDIT
		    && size - pos - TW_TCP_HDR_LEN >= TW_TCP_CREDIT_LEN) {
			uint64_t taken;
			require(
			    tw__tcp_credit_decode(data + pos + TW_TCP_HDR_LEN,
			        TW_TCP_CREDIT_LEN, &taken)
			    == TW_OK);
		}
		free(buf);
		size_t used = TW_TCP_HDR_LEN + h.key_len;
		if (h.len > size - pos - used)
			return 0; // the stream ended inside the payload
		pos += used + (size_t)h.len;
		avail = 0;
	}
	return 0;
}
