// Frames of the shm:// transport: encoders, the decoder and the per-lane
// sequence checks.  See shm_frame.h for the format.

#include <stdio.h>
#include <string.h>

#include <tagwire/status.h>

#include "core/names.h"
#include "transport/shm/shm_frame.h"

static uint16_t get_u16(const unsigned char *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static uint32_t get_u32(const unsigned char *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static uint64_t get_u64(const unsigned char *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return v;
}

static int bad(const char **why, const char *reason)
{
	*why = reason;
	return TW_EPROTO;
}

// A key or namespace: 1..max bytes without NUL, so that it can be used as a
// C string once copied out with a terminator.
static bool name_ok(const char *s, size_t len, size_t max)
{
	return len > 0 && len <= max && memchr(s, '\0', len) == NULL;
}

int tw__shm_frame_decode(uint32_t route, uint64_t corr, const void *buf,
    size_t n, tw__shm_frame *f, const char **why)
{
	const unsigned char *p = buf;
	memset(f, 0, sizeof(*f));
	f->type = route;
	f->seq = corr;
	if (n > 0 && buf == NULL)
		return bad(why, "no buffer");
	switch (route) {
	case TW_SHM_F_DATA: {
		if (n < TW_SHM_DATA_HDR)
			return bad(why, "short data frame");
		size_t klen = get_u16(p);
		if (klen > n - TW_SHM_DATA_HDR)
			return bad(why, "key runs past the frame");
		if (!name_ok((const char *)p + TW_SHM_DATA_HDR, klen,
		        TW_KEY_MAX - 1))
			return bad(why, "invalid key");
		f->total = get_u64(p + 2);
		f->key = (const char *)p + TW_SHM_DATA_HDR;
		f->key_len = klen;
		f->data = p + TW_SHM_DATA_HDR + klen;
		f->data_len = n - TW_SHM_DATA_HDR - klen;
		if (f->data_len > f->total)
			return bad(why, "more payload than the message holds");
		return TW_OK;
	}
	case TW_SHM_F_CONT:
		if (n == 0)
			return bad(why, "empty continuation");
		f->data = p;
		f->data_len = n;
		return TW_OK;
	case TW_SHM_F_LARGE: {
		if (n < TW_SHM_LARGE_HDR)
			return bad(why, "short large-message frame");
		size_t klen = get_u16(p);
		if (klen != n - TW_SHM_LARGE_HDR)
			return bad(why, "key length does not match the frame");
		if (!name_ok((const char *)p + TW_SHM_LARGE_HDR, klen,
		        TW_KEY_MAX - 1))
			return bad(why, "invalid key");
		f->total = get_u64(p + 2);
		f->addr = get_u64(p + 10);
		f->key = (const char *)p + TW_SHM_LARGE_HDR;
		f->key_len = klen;
		if (f->total == 0)
			return bad(why, "empty large message");
		return TW_OK;
	}
	case TW_SHM_F_CLOSE_NS:
	case TW_SHM_F_ABORT_NS:
		if (!name_ok(buf, n, TW_LINK_ID_MAX))
			return bad(why, "invalid namespace");
		f->key = buf;
		f->key_len = n;
		return TW_OK;
	case TW_SHM_F_HELLO:
		if (n != TW_SHM_HELLO_LEN)
			return bad(why, "hello of the wrong size");
		f->version = get_u32(p);
		f->pid = get_u32(p + 4);
		f->addr = get_u64(p + 8);
		f->value = get_u64(p + 16);
		if (f->version != TW_SHM_PROTO_VERSION)
			return bad(why, "unknown protocol version");
		if (f->pid == 0 || f->pid > INT32_MAX)
			return bad(why, "invalid process id");
		return TW_OK;
	case TW_SHM_F_CANCEL:
		if (n != 0)
			return bad(why, "cancel with a payload");
		return TW_OK;
	default:
		return bad(why, "unknown frame type");
	}
}

int tw__shm_frame_decode_split(uint64_t corr, const void *head, size_t head_n,
    const void *data, size_t data_n, tw__shm_frame *f, const char **why)
{
	int status
	    = tw__shm_frame_decode(TW_SHM_F_DATA, corr, head, head_n, f, why);
	if (status != TW_OK)
		return status;
	if (f->data_len != 0)
		return bad(why, "payload on both sides of a split frame");
	if (data_n > 0 && data == NULL)
		return bad(why, "no buffer");
	f->data = data;
	f->data_len = data_n;
	if (f->data_len > f->total)
		return bad(why, "more payload than the message holds");
	return TW_OK;
}

void tw__shm_rx_init(tw__shm_rx *st, uint64_t max_total)
{
	memset(st, 0, sizeof(*st));
	st->max_total = max_total;
	st->next_seq = 1;
}

int tw__shm_rx_step(tw__shm_rx *st, const tw__shm_frame *f, const char **why)
{
	if (f->type == TW_SHM_F_CONT || f->type == TW_SHM_F_CANCEL) {
		if (!st->in_msg || f->seq != st->cur_seq)
			return bad(why, "continuation of no message");
		if (f->type == TW_SHM_F_CANCEL) {
			st->in_msg = false;
			return TW_SHM_RX_CANCEL;
		}
		if (f->data_len > st->total - st->got)
			return bad(why, "more payload than the message holds");
		st->got += f->data_len;
		st->in_msg = st->got < st->total;
		return TW_SHM_RX_CONT;
	}
	if (st->in_msg)
		return bad(why, "new message before the last one ended");
	if (f->seq != st->next_seq)
		return bad(why, "sequence number out of order");
	switch (f->type) {
	case TW_SHM_F_DATA:
		if (f->total > st->max_total)
			return bad(why, "message larger than the limit");
		st->cur_seq = f->seq;
		st->total = f->total;
		st->got = f->data_len;
		st->in_msg = st->got < st->total;
		st->next_seq++;
		return TW_SHM_RX_FIRST;
	case TW_SHM_F_LARGE:
		if (f->total > st->max_total)
			return bad(why, "message larger than the limit");
		st->next_seq++;
		return TW_SHM_RX_LARGE;
	case TW_SHM_F_CLOSE_NS:
		st->next_seq++;
		return TW_SHM_RX_CLOSE_NS;
	case TW_SHM_F_ABORT_NS:
		st->next_seq++;
		return TW_SHM_RX_ABORT_NS;
	case TW_SHM_F_HELLO:
		st->next_seq++;
		return TW_SHM_RX_HELLO;
	default:
		return bad(why, "unknown frame type");
	}
}

static void put_u16(unsigned char *p, uint16_t v)
{
	memcpy(p, &v, sizeof(v));
}

static void put_u32(unsigned char *p, uint32_t v)
{
	memcpy(p, &v, sizeof(v));
}

static void put_u64(unsigned char *p, uint64_t v)
{
	memcpy(p, &v, sizeof(v));
}

size_t tw__shm_put_data(void *dst, size_t cap, const char *key, size_t klen,
    uint64_t total, const void *data, size_t n)
{
	unsigned char *p = dst;
	if (klen == 0 || klen > UINT16_MAX || cap < TW_SHM_DATA_HDR
	    || klen > cap - TW_SHM_DATA_HDR
	    || n > cap - TW_SHM_DATA_HDR - klen)
		return 0;
	put_u16(p, (uint16_t)klen);
	put_u64(p + 2, total);
	memcpy(p + TW_SHM_DATA_HDR, key, klen);
	if (n > 0)
		memcpy(p + TW_SHM_DATA_HDR + klen, data, n);
	return TW_SHM_DATA_HDR + klen + n;
}

size_t tw__shm_put_large(void *dst, size_t cap, const char *key, size_t klen,
    uint64_t total, uint64_t addr)
{
	unsigned char *p = dst;
	if (klen == 0 || klen > UINT16_MAX || cap < TW_SHM_LARGE_HDR
	    || klen > cap - TW_SHM_LARGE_HDR)
		return 0;
	put_u16(p, (uint16_t)klen);
	put_u64(p + 2, total);
	put_u64(p + 10, addr);
	memcpy(p + TW_SHM_LARGE_HDR, key, klen);
	return TW_SHM_LARGE_HDR + klen;
}

size_t tw__shm_put_hello(void *dst, size_t cap, uint32_t version, uint32_t pid,
    uint64_t addr, uint64_t value)
{
	unsigned char *p = dst;
	if (cap < TW_SHM_HELLO_LEN)
		return 0;
	put_u32(p, version);
	put_u32(p + 4, pid);
	put_u64(p + 8, addr);
	put_u64(p + 16, value);
	return TW_SHM_HELLO_LEN;
}

static uint64_t fnv1a(uint64_t h, const char *s)
{
	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

void tw__shm_seg_name(
    char *out, const char *link_id, const char *addr_lo, const char *addr_hi)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	h = fnv1a(h, link_id);
	h = fnv1a(h, "|");
	h = fnv1a(h, addr_lo);
	h = fnv1a(h, "|");
	h = fnv1a(h, addr_hi);
	snprintf(
	    out, TW_SHM_SEG_NAME_LEN, "/tw-%016llx", (unsigned long long)h);
}
