// Fuzz target: the frames a hostile peer could put into a shm:// ring, fed
// through the transport's decoder and per-lane sequence checks exactly as
// its receiver does.
//
// The input is a sequence of records:
//
//   u8   lane (low bit) and how to pick the sequence number (bits 1-2:
//        0 = the lane's next, 1 = its message in progress, 2 = the next
//        byte, 3 = the next eight bytes)
//   u8   route (the frame type; any value)
//   u16  payload length (little endian, clipped to what is left)
//   ...  payload
//
// Each payload is copied into a heap buffer of exactly its size, so that
// AddressSanitizer catches any read past the frame.  Nothing may crash, and
// the state must stay consistent: never more bytes than the message holds,
// never a message over the limit, continuations only inside a message.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tagwire/status.h>

#include "transport/shm/shm_frame.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// Small, so that inputs can reach "message larger than the limit".
#define FUZZ_MAX_TOTAL 100000

static void check_frame(const tw__shm_rx *st, const tw__shm_frame *f, int act,
    const unsigned char *buf, size_t n)
{
	// A frame without payload has no buffer: nothing may point into it.
	const unsigned char *end = n > 0 ? buf + n : buf;
	require(st->got <= st->total || !st->in_msg);
	require(st->total <= FUZZ_MAX_TOTAL || act != TW_SHM_RX_FIRST);
	if (f->key != NULL)
		require((const unsigned char *)f->key >= buf
		    && (const unsigned char *)f->key + f->key_len <= end
		    && memchr(f->key, '\0', f->key_len) == NULL);
	if (f->data != NULL && f->data_len > 0)
		require(f->data >= buf && f->data + f->data_len <= end);
	switch (act) {
	case TW_SHM_RX_FIRST:
		require(f->data_len <= st->total && st->got == f->data_len);
		require(st->in_msg == (st->got < st->total));
		break;
	case TW_SHM_RX_CONT:
		require(st->got <= st->total && f->data_len <= st->got);
		break;
	case TW_SHM_RX_LARGE:
		require(f->total > 0 && f->total <= FUZZ_MAX_TOTAL);
		break;
	default:
		break;
	}
}

// The receiver's split decoding of a DATA frame (header and key in its
// own memory, payload placed apart), at the split the frame's key length
// claims: it must agree with the whole frame's decoding, field for field,
// and fail where that fails; a split that leaves payload in the head must
// fail.
static void check_split(uint32_t route, uint64_t seq, const unsigned char *buf,
    size_t n, const tw__shm_frame *whole)
{
	if (route != TW_SHM_F_DATA || n < TW_SHM_DATA_HDR)
		return;
	uint16_t klen;
	memcpy(&klen, buf, sizeof(klen));
	size_t head = TW_SHM_DATA_HDR + (size_t)klen;
	if (head > n)
		head = n;
	tw__shm_frame f;
	const char *why = NULL;
	int st = tw__shm_frame_decode_split(
	    seq, buf, head, buf + head, n - head, &f, &why);
	bool data = whole != NULL;
	if (st != TW_OK) {
		require(st == TW_EPROTO && why != NULL && !data);
	} else {
		require(data && f.total == whole->total && f.key == whole->key
		    && f.key_len == whole->key_len && f.data == whole->data
		    && f.data_len == whole->data_len);
	}
	if (head < n && st == TW_OK) {
		st = tw__shm_frame_decode_split(seq, buf, head + 1,
		    buf + head + 1, n - head - 1, &f, &why);
		require(st == TW_EPROTO && why != NULL);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	tw__shm_rx st[2];
	tw__shm_rx_init(&st[0], FUZZ_MAX_TOTAL);
	tw__shm_rx_init(&st[1], FUZZ_MAX_TOTAL);
	bool broken[2] = { false, false };
	size_t pos = 0;
	while (pos + 4 <= size) {
		uint8_t ctl = data[pos];
		uint32_t route = data[pos + 1];
		size_t n = (size_t)data[pos + 2] | (size_t)data[pos + 3] << 8;
		pos += 4;
		int lane = ctl & 1;
		uint64_t seq = 0;
		switch ((ctl >> 1) & 3) {
		case 0:
			seq = st[lane].next_seq;
			break;
		case 1:
			seq = st[lane].cur_seq;
			break;
		case 2:
			if (pos < size)
				seq = data[pos++];
			break;
		default:
			if (pos + 8 <= size) {
				memcpy(&seq, data + pos, 8);
				pos += 8;
			}
			break;
		}
		if (n > size - pos)
			n = size - pos;
		unsigned char *buf = n > 0 ? malloc(n) : NULL;
		if (n > 0 && buf == NULL)
			return 0;
		if (n > 0)
			memcpy(buf, data + pos, n);
		pos += n;
		tw__shm_frame f;
		const char *why = NULL;
		int act = tw__shm_frame_decode(route, seq, buf, n, &f, &why);
		check_split(route, seq, buf, n, act == TW_OK ? &f : NULL);
		if (act == TW_OK && !broken[lane]) {
			act = tw__shm_rx_step(&st[lane], &f, &why);
			if (act >= 0)
				check_frame(&st[lane], &f, act, buf, n);
		}
		if (act < 0) {
			require(act == TW_EPROTO && why != NULL);
			// The receiver drops a peer at its first error; keep
			// decoding to exercise the decoder, but the lane's
			// state is no longer meaningful.
			broken[lane] = true;
		}
		free(buf);
	}
	return 0;
}
