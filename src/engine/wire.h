// The transfer engine's bytes: the info blob, the memory descriptor and
// the frames that engines exchange (docs/PROTOCOL.md, "Transfer engine").
// Every decoder is a pure function over untrusted bytes: it checks every
// length and field and copies what it returns, so that a fuzzer can drive
// it alone.  Everything is little-endian.

#ifndef TW_ENGINE_WIRE_H
#define TW_ENGINE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TW_ENG_NAME_MAX 64
#define TW_ENG_ADDR_MAX 512

// --- the info blob: what a peer needs to connect ----------------------------
//
//   0  "TWEI"         4  u16 version (1)   6  u16 0
//   8  u64 instance  16  u16 name_len      18 u16 addr_len
//  20  name bytes, then addr bytes; nothing after them
#define TW_ENG_INFO_MAGIC "TWEI"
#define TW_ENG_INFO_VERSION 1
#define TW_ENG_INFO_FIXED 20

typedef struct tw__eng_info {
	uint64_t instance;
	char name[TW_ENG_NAME_MAX + 1];
	char addr[TW_ENG_ADDR_MAX + 1];
} tw__eng_info;

// Bytes that tw__eng_info_encode writes (0: a field is out of range).
size_t tw__eng_info_size(const tw__eng_info *in);
// Writes the blob into out[0..tw__eng_info_size(in)).
void tw__eng_info_encode(const tw__eng_info *in, unsigned char *out);
// TW_OK, or TW_EINVAL for anything but a whole, valid version-1 blob: a
// valid engine name, an address of "tcp://" or "mem://" followed by
// printable bytes, a non-zero instance.
int tw__eng_info_decode(const void *buf, size_t len, tw__eng_info *out);

// --- the memory descriptor -----------------------------------------------------
//
//   0  "TWMD"   4  u16 version (1)   6  u16 kind (0: host)
//   8  u64 engine instance   16 u64 mem id   24 u64 key
//  32  u64 length            40 u32 access   44 u32 0     (48 bytes)
#define TW_ENG_DESC_MAGIC "TWMD"
#define TW_ENG_DESC_VERSION 1
#define TW_ENG_DESC_SIZE 48

typedef struct tw__eng_desc {
	uint16_t kind;
	uint64_t instance, id, key, len;
	uint32_t access;
} tw__eng_desc;

void tw__eng_desc_encode(const tw__eng_desc *in, unsigned char *out);
// TW_OK, or TW_EINVAL unless exactly 48 bytes of version 1 with a known
// kind, non-zero instance, id and length, and access bits within
// TW_ACCESS_READ | TW_ACCESS_WRITE.
int tw__eng_desc_decode(const void *buf, size_t len, tw__eng_desc *out);

// --- frames ----------------------------------------------------------------------
//
// Engines talk over a link of two parties in messages of tag "e".  A
// message is a pack of frames, each a 40-byte header and, when its flags
// say INLINE, its `len` bytes of data right after it.  A frame that
// carries data without INLINE must be the pack's last: its data is the
// next message, of exactly `len` bytes (bulk data is never copied into a
// pack).  The header:
//
//   0 u8 type   1 u8 flags   2 i16 status   4 u32 len
//   8 u64 a    16 u64 b   24 u64 c     32 u64 d
enum {
	TW_ENG_HELLO = 1, // a: instance, b: largest notification accepted
	TW_ENG_WRITE, // a: op, b: mem id, c: key, d: offset; data
	TW_ENG_WACK, // a: op; status (len: bytes applied)
	TW_ENG_READ, // a: op, b: mem id, c: key, d: offset; len wanted
	TW_ENG_RDATA, // a: op, b: offset in the op; status; data if OK
	TW_ENG_RTS, // a: send op, b: tag, c: total length
	TW_ENG_CTS, // a: send op, b: receive op, c: match; status
	// (TW_ETRUNC: the receive's length differs; the sender decides)
	TW_ENG_SDATA, // a: receive op, b: match, c: offset, d: send op; data
	TW_ENG_SACK, // a: send op, b: match; status (len: bytes taken)
	TW_ENG_SCANCEL, // a: send op: the sender gave it up (status
	// TW_ETRUNC: the lengths differ, the matched receive fails too)
	TW_ENG_RCANCEL, // a: send op, b: match: the receiver gave it up
	TW_ENG_NOTIFY, // data: the notification
	TW_ENG_TYPE_MAX = TW_ENG_NOTIFY
};
#define TW_ENG_HDR_SIZE 40
// Header flags.
#define TW_ENG_F_INLINE 1 // the data follows the header in the same pack

typedef struct tw__eng_hdr {
	uint8_t type;
	uint8_t flags; // TW_ENG_F_*
	int16_t status;
	uint32_t len;
	uint64_t a, b, c, d;
} tw__eng_hdr;

void tw__eng_hdr_encode(
    const tw__eng_hdr *h, unsigned char out[TW_ENG_HDR_SIZE]);
// TW_OK, or TW_EPROTO unless exactly 40 bytes with a known type, flags
// that are 0 or INLINE (only on a frame that carries data), a status that is 0 or a tagwire status code, and len 0 for a
// frame that carries no data and no length.
int tw__eng_hdr_decode(const void *buf, size_t len, tw__eng_hdr *out);
// Whether a frame of this header is followed by a data message.
bool tw__eng_hdr_has_data(const tw__eng_hdr *h);

// The next frame of a pack b[0..n) at *at: its header, and *inl its
// inline data (NULL when it has none there).  TW_OK (and *at moves past
// it), TW_EAGAIN at the end of the pack, TW_EPROTO for a short header, a
// header that does not decode, inline data past the end, or bulk data
// announced by a frame that is not the last.
int tw__eng_pack_next(const unsigned char *b, size_t n, size_t *at,
    tw__eng_hdr *h, const unsigned char **inl);

// Engine names: 1..64 bytes of [A-Za-z0-9._-].
bool tw__eng_name_ok(const char *name);

#endif // TW_ENGINE_WIRE_H
