// Frames of the shm:// transport and their decoder.
//
// A frame is one message of a tw_ring slot: the slot's route is the frame
// type and its correlation id the sequence number of the message the frame
// belongs to.  Everything here is a pure function over caller memory, so
// the decoder can be fuzzed: nothing allocates, nothing reads outside the
// buffer it was given, and every length comes from the buffer checked
// against the limits before it is trusted.
//
// Frames (all integers in host byte order: both ends share one machine):
//
//   DATA      u16 key length, u64 total length, key, first payload bytes
//   CONT      more payload bytes of the message in progress (at least one)
//   LARGE     u16 key length, u64 total length, u64 address, key: the
//             payload waits in the sender's memory for process_vm_readv
//   CLOSE_NS  namespace: the sender closed that link namespace
//   ABORT_NS  namespace: the sender aborted that link namespace
//   HELLO     u32 version, u32 pid, u64 probe address, u64 probe value
//   CANCEL    empty: the sender gave up on the message in progress
//
// Sequence numbers.  Each lane numbers its messages 1, 2, 3, ...; every
// frame that starts a message (DATA, LARGE, CLOSE_NS, ABORT_NS, HELLO)
// carries the next number, CONT and CANCEL carry the number of the message
// in progress.  A gap, a repeat, a continuation of nothing or a new message
// while one is in progress is a protocol error.

#ifndef TW_TRANSPORT_SHM_FRAME_H
#define TW_TRANSPORT_SHM_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TW_SHM_PROTO_VERSION 1u

enum {
	TW_SHM_F_DATA = 1,
	TW_SHM_F_CONT = 2,
	TW_SHM_F_LARGE = 3,
	TW_SHM_F_CLOSE_NS = 4,
	TW_SHM_F_ABORT_NS = 5,
	TW_SHM_F_HELLO = 6,
	TW_SHM_F_CANCEL = 7,
};

// Fixed header bytes of the frames that have one.
#define TW_SHM_DATA_HDR 10 // u16 + u64
#define TW_SHM_LARGE_HDR 18 // u16 + u64 + u64
#define TW_SHM_HELLO_LEN 24 // u32 + u32 + u64 + u64

// A decoded frame.  Pointers point into the buffer given to the decoder.
typedef struct tw__shm_frame {
	uint32_t type;
	uint64_t seq;
	const char *key; // DATA, LARGE: the key; *_NS: the namespace
	size_t key_len; // not NUL-terminated
	uint64_t total; // DATA, LARGE: the message's length
	uint64_t addr; // LARGE: where the payload is; HELLO: probe address
	uint64_t value; // HELLO: the probe's contents
	uint32_t pid; // HELLO
	uint32_t version; // HELLO
	const unsigned char *data; // DATA, CONT: payload bytes
	size_t data_len;
} tw__shm_frame;

// Decodes the frame in buf[0..n) that came with `route` and `corr`.
// Checks its structure only (lengths, key characters, known type).
// Returns TW_OK, or TW_EPROTO with *why a constant description.
int tw__shm_frame_decode(uint32_t route, uint64_t corr, const void *buf,
    size_t n, tw__shm_frame *f, const char **why);

// Decodes a DATA frame whose header and key are head[0..head_n) and whose
// payload lies apart, at data[0..data_n): a receiver that placed the
// payload where the message goes read the rest into its own memory.
// Returns as tw__shm_frame_decode; TW_EPROTO also when head holds
// payload bytes too.
int tw__shm_frame_decode_split(uint64_t corr, const void *head, size_t head_n,
    const void *data, size_t data_n, tw__shm_frame *f, const char **why);

// Receive state of one lane: where the sequence numbers stand and how much
// of the message in progress has arrived.
typedef struct tw__shm_rx {
	uint64_t max_total; // the largest message accepted
	uint64_t next_seq; // the number the next message must carry
	bool in_msg; // a DATA message is being assembled
	uint64_t cur_seq; // its number
	uint64_t total; // its length
	uint64_t got; // its bytes arrived so far
} tw__shm_rx;

// Starts a lane's state: messages up to `max_total` bytes, numbered from 1.
void tw__shm_rx_init(tw__shm_rx *st, uint64_t max_total);

// What the caller must do with a frame that tw__shm_rx_step accepted.
enum {
	TW_SHM_RX_FIRST
	= 1, // a message starts: st->total bytes, f->data first
	TW_SHM_RX_CONT, // f->data continues it at offset st->got - f->data_len
	TW_SHM_RX_CANCEL, // drop the message in progress
	TW_SHM_RX_LARGE, // a message of f->total bytes at f->addr
	TW_SHM_RX_CLOSE_NS,
	TW_SHM_RX_ABORT_NS,
	TW_SHM_RX_HELLO,
};

// Checks a decoded frame against the lane's state and advances the state.
// After TW_SHM_RX_FIRST or TW_SHM_RX_CONT the message is complete when
// st->in_msg is false.  Returns one of the actions above, or TW_EPROTO
// with *why a constant description (the state is then unspecified).
int tw__shm_rx_step(tw__shm_rx *st, const tw__shm_frame *f, const char **why);

// Encoders: write a frame's payload into dst[0..cap) and return its length,
// or 0 when it does not fit.  `klen` must be 1..UINT16_MAX.
size_t tw__shm_put_data(void *dst, size_t cap, const char *key, size_t klen,
    uint64_t total, const void *data, size_t n);
size_t tw__shm_put_large(void *dst, size_t cap, const char *key, size_t klen,
    uint64_t total, uint64_t addr);
size_t tw__shm_put_hello(void *dst, size_t cap, uint32_t version, uint32_t pid,
    uint64_t addr, uint64_t value);

// The name of the segment that parties `addr_lo` (the lower rank) and
// `addr_hi` share for link `link_id`: "/tw-" and 16 hex digits of the
// FNV-1a-64 hash of "<link_id>|<addr_lo>|<addr_hi>".  out: 21 bytes.
#define TW_SHM_SEG_NAME_LEN 21
void tw__shm_seg_name(
    char *out, const char *link_id, const char *addr_lo, const char *addr_hi);

#endif // TW_TRANSPORT_SHM_FRAME_H
