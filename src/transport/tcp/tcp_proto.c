// The wire format of the tcp:// transport: encoders, decoders and the
// per-connection order checks.  See tcp_proto.h and docs/PROTOCOL.md.

#include <string.h>

#include <tagwire/status.h>

#include "core/names.h"
#include "transport/tcp/tcp_proto.h"

static uint16_t get_u16(const unsigned char *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16
	    | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_u64(const unsigned char *p)
{
	return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

static void put_u16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void put_u64(unsigned char *p, uint64_t v)
{
	put_u32(p, (uint32_t)(v >> 32));
	put_u32(p + 4, (uint32_t)v);
}

static int bad(const char **why, const char *reason)
{
	*why = reason;
	return TW_EPROTO;
}

// Does buf[0..n) start like the 4-byte `magic`?  Checking a prefix lets a
// receiver refuse garbage from its first byte.
static bool magic_prefix_ok(const unsigned char *p, size_t n, uint32_t magic)
{
	unsigned char m[4];
	put_u32(m, magic);
	return memcmp(p, m, n < 4 ? n : 4) == 0;
}

// A link id as tw__valid_link_id accepts it, checked in place.
static bool link_id_ok(const char *s, size_t len)
{
	char tmp[TW_LINK_ID_MAX + 1];
	if (len == 0 || len > TW_LINK_ID_MAX)
		return false;
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	return strlen(tmp) == len && tw__valid_link_id(tmp);
}

// A listening address: printable ASCII, no spaces.
static bool addr_ok(const char *s, size_t len)
{
	if (len == 0 || len > TW_TCP_ADDR_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return false;
	return true;
}

// A key or namespace: 1..max bytes without NUL, usable as a C string once
// copied out with a terminator.
static bool name_ok(const char *s, size_t len, size_t max)
{
	return len > 0 && len <= max && memchr(s, '\0', len) == NULL;
}

int tw__tcp_hello_decode(
    const void *buf, size_t n, tw__tcp_hello *h, const char **why)
{
	const unsigned char *p = buf;
	if (n > 0 && buf == NULL)
		return bad(why, "no buffer");
	if (!magic_prefix_ok(p, n, TW_TCP_HELLO_MAGIC))
		return bad(why, "not a tagwire handshake");
	// The version is checked as soon as it has arrived, before any
	// length is trusted: a later version may lay the rest out otherwise.
	if (n >= 6 && get_u16(p + 4) != TW_TCP_PROTO_VERSION)
		return bad(why, "unsupported protocol version");
	if (n < TW_TCP_HELLO_FIXED)
		return TW_EAGAIN;
	size_t id_len = p[14];
	size_t addr_len = p[15];
	if (id_len == 0 || id_len > TW_LINK_ID_MAX)
		return bad(why, "link id length out of range");
	if (addr_len == 0)
		return bad(why, "empty address");
	size_t total = TW_TCP_HELLO_FIXED + id_len + addr_len;
	if (n < total)
		return TW_EAGAIN;
	const char *id = (const char *)p + TW_TCP_HELLO_FIXED;
	const char *addr = id + id_len;
	if (!link_id_ok(id, id_len))
		return bad(why, "invalid link id");
	if (!addr_ok(addr, addr_len))
		return bad(why, "invalid address");
	uint64_t instance = get_u64(p + 16);
	if (instance == 0)
		return bad(why, "zero instance");
	uint64_t session = get_u64(p + 56);
	if (session == 0)
		return bad(why, "zero session");
	memset(h, 0, sizeof(*h));
	h->version = get_u16(p + 4);
	h->flags = get_u16(p + 6);
	h->rank = get_u32(p + 8);
	h->stripe = get_u16(p + 12);
	h->instance = instance;
	memcpy(h->nonce, p + 24, TW_TCP_NONCE_LEN);
	h->session = session;
	h->received = get_u64(p + 64);
	h->link_id = id;
	h->link_id_len = id_len;
	h->addr = addr;
	h->addr_len = addr_len;
	return (int)total;
}

size_t tw__tcp_hello_encode(void *dst, size_t cap, const tw__tcp_hello *h)
{
	unsigned char *p = dst;
	if (!link_id_ok(h->link_id, h->link_id_len)
	    || !addr_ok(h->addr, h->addr_len) || h->instance == 0
	    || h->session == 0)
		return 0;
	size_t total = TW_TCP_HELLO_FIXED + h->link_id_len + h->addr_len;
	if (cap < total)
		return 0;
	put_u32(p, TW_TCP_HELLO_MAGIC);
	put_u16(p + 4, TW_TCP_PROTO_VERSION);
	put_u16(p + 6, h->flags);
	put_u32(p + 8, h->rank);
	put_u16(p + 12, h->stripe);
	p[14] = (unsigned char)h->link_id_len;
	p[15] = (unsigned char)h->addr_len;
	put_u64(p + 16, h->instance);
	memcpy(p + 24, h->nonce, TW_TCP_NONCE_LEN);
	put_u64(p + 56, h->session);
	put_u64(p + 64, h->received);
	memcpy(p + TW_TCP_HELLO_FIXED, h->link_id, h->link_id_len);
	memcpy(p + TW_TCP_HELLO_FIXED + h->link_id_len, h->addr, h->addr_len);
	return total;
}

int tw__tcp_auth_decode(const void *buf, size_t n,
    unsigned char mac[TW_TCP_MAC_LEN], const char **why)
{
	const unsigned char *p = buf;
	if (n > 0 && buf == NULL)
		return bad(why, "no buffer");
	if (!magic_prefix_ok(p, n, TW_TCP_AUTH_MAGIC))
		return bad(why, "not an authentication record");
	if (n < TW_TCP_AUTH_LEN)
		return TW_EAGAIN;
	memcpy(mac, p + 4, TW_TCP_MAC_LEN);
	return TW_TCP_AUTH_LEN;
}

size_t tw__tcp_auth_encode(
    void *dst, size_t cap, const unsigned char mac[TW_TCP_MAC_LEN])
{
	unsigned char *p = dst;
	if (cap < TW_TCP_AUTH_LEN)
		return 0;
	put_u32(p, TW_TCP_AUTH_MAGIC);
	memcpy(p + 4, mac, TW_TCP_MAC_LEN);
	return TW_TCP_AUTH_LEN;
}

// What each frame type may carry: a key of at most key_max bytes (0: none)
// and a payload whose length is fixed (fixed_len >= 0) or bounded by the
// link's largest message (fixed_len < 0).
static bool frame_shape(
    unsigned type, size_t *key_min, size_t *key_max, long *fixed_len)
{
	switch (type) {
	case TW_TCP_F_STRIPED:
		*key_min = 1;
		*key_max = TW_KEY_MAX - 1;
		*fixed_len = TW_TCP_STRIPED_LEN;
		return true;
	case TW_TCP_F_CHUNK:
		*key_min = 0;
		*key_max = 0;
		*fixed_len = -1;
		return true;
	case TW_TCP_F_OPEN:
		*key_min = 1;
		*key_max = TW_LINK_ID_MAX;
		*fixed_len = TW_TCP_OPEN_LEN;
		return true;
	case TW_TCP_F_DATA:
		*key_min = 1;
		*key_max = TW_KEY_MAX - 1;
		*fixed_len = -1;
		return true;
	case TW_TCP_F_CLOSE_NS:
	case TW_TCP_F_ABORT_NS:
		*key_min = 1;
		*key_max = TW_LINK_ID_MAX;
		*fixed_len = 0;
		return true;
	case TW_TCP_F_CREDIT:
		*key_min = 0;
		*key_max = 0;
		*fixed_len = TW_TCP_CREDIT_LEN;
		return true;
	case TW_TCP_F_CANCEL:
		*key_min = 0;
		*key_max = 0;
		*fixed_len = TW_TCP_CANCEL_LEN;
		return true;
	case TW_TCP_F_ACK:
	case TW_TCP_F_PING:
	case TW_TCP_F_PONG:
	case TW_TCP_F_BYE:
	case TW_TCP_F_UNBIND:
	case TW_TCP_F_CREDIT_REQ:
		*key_min = 0;
		*key_max = 0;
		*fixed_len = 0;
		return true;
	default:
		return false;
	}
}

int tw__tcp_hdr_decode(const void *buf, size_t n, uint64_t max_payload,
    tw__tcp_hdr *h, const char **why)
{
	const unsigned char *p = buf;
	size_t key_min, key_max;
	long fixed_len;
	if (n > 0 && buf == NULL)
		return bad(why, "no buffer");
	if (n >= 1 && !frame_shape(p[0], &key_min, &key_max, &fixed_len))
		return bad(why, "unknown frame type");
	if (n >= 2 && p[1] != 0)
		return bad(why, "unknown frame flags");
	if (n < 4)
		return TW_EAGAIN;
	size_t klen = get_u16(p + 2);
	if (klen < key_min || klen > key_max)
		return bad(why, "key length out of range");
	if (n < TW_TCP_HDR_LEN)
		return TW_EAGAIN;
	uint64_t len = get_u64(p + 8);
	if (p[0] == TW_TCP_F_CHUNK) {
		if (len <= TW_TCP_CHUNK_PREFIX)
			return bad(why, "chunk without bytes");
		if (len - TW_TCP_CHUNK_PREFIX > max_payload)
			return bad(why, "payload length out of range");
	} else if (fixed_len >= 0 ? len != (uint64_t)fixed_len
	                          : len > max_payload) {
		return bad(why, "payload length out of range");
	}
	uint64_t seq = get_u64(p + 16);
	if (seq == 0)
		return bad(why, "zero sequence number");
	if (n < TW_TCP_HDR_LEN + klen)
		return TW_EAGAIN;
	const char *key = (const char *)p + TW_TCP_HDR_LEN;
	if (klen > 0) {
		bool ok = p[0] == TW_TCP_F_OPEN ? link_id_ok(key, klen)
		                                : name_ok(key, klen, key_max);
		if (!ok)
			return bad(why, "invalid key");
	}
	memset(h, 0, sizeof(*h));
	h->type = p[0];
	h->slot = get_u32(p + 4);
	h->len = len;
	h->seq = seq;
	h->ack = get_u64(p + 24);
	h->rcvd = get_u64(p + 32);
	if (h->ack > h->rcvd)
		return bad(why, "acknowledgement of frames not received");
	h->key = klen > 0 ? key : NULL;
	h->key_len = klen;
	return (int)(TW_TCP_HDR_LEN + klen);
}

size_t tw__tcp_hdr_encode(void *dst, size_t cap, const tw__tcp_hdr *h)
{
	unsigned char *p = dst;
	if (h->key_len > TW_KEY_MAX - 1 || cap < TW_TCP_HDR_LEN
	    || h->key_len > cap - TW_TCP_HDR_LEN)
		return 0;
	p[0] = h->type;
	p[1] = 0;
	put_u16(p + 2, (uint16_t)h->key_len);
	put_u32(p + 4, h->slot);
	put_u64(p + 8, h->len);
	put_u64(p + 16, h->seq);
	put_u64(p + 24, h->ack);
	put_u64(p + 32, h->rcvd);
	tw__tcp_copy_short(p + TW_TCP_HDR_LEN, h->key, h->key_len);
	return TW_TCP_HDR_LEN + h->key_len;
}

int tw__tcp_open_decode(const void *buf, size_t n, tw__tcp_open *o)
{
	const unsigned char *p = buf;
	if (n != TW_TCP_OPEN_LEN || buf == NULL)
		return TW_EPROTO;
	uint32_t r = get_u32(p);
	uint32_t s = get_u32(p + 4);
	uint64_t w = get_u64(p + 8);
	// A rank names a party of a link of `s` parties, at least two.
	if (s < 2 || r >= s || w == 0)
		return TW_EPROTO;
	o->rank = r;
	o->size = s;
	o->window = w;
	o->max_msg = get_u64(p + 16);
	memcpy(o->proof, p + 24, TW_TCP_MAC_LEN);
	return TW_OK;
}

void tw__tcp_open_encode(
    unsigned char dst[TW_TCP_OPEN_LEN], const tw__tcp_open *o)
{
	put_u32(dst, o->rank);
	put_u32(dst + 4, o->size);
	put_u64(dst + 8, o->window);
	put_u64(dst + 16, o->max_msg);
	memcpy(dst + 24, o->proof, TW_TCP_MAC_LEN);
}

int tw__tcp_cancel_decode(const void *buf, size_t n, uint64_t *id)
{
	if (n != TW_TCP_CANCEL_LEN || buf == NULL)
		return TW_EPROTO;
	*id = get_u64(buf);
	return TW_OK;
}

void tw__tcp_cancel_encode(unsigned char dst[TW_TCP_CANCEL_LEN], uint64_t id)
{
	put_u64(dst, id);
}

int tw__tcp_credit_decode(const void *buf, size_t n, uint64_t *taken)
{
	if (n != TW_TCP_CREDIT_LEN || buf == NULL)
		return TW_EPROTO;
	*taken = get_u64(buf);
	return TW_OK;
}

void tw__tcp_credit_encode(unsigned char dst[TW_TCP_CREDIT_LEN], uint64_t v)
{
	put_u64(dst, v);
}

int tw__tcp_striped_decode(const void *buf, size_t n, tw__tcp_chunk *c)
{
	if (n != TW_TCP_STRIPED_LEN || buf == NULL)
		return TW_EPROTO;
	c->id = get_u64((const unsigned char *)buf);
	c->total = get_u64((const unsigned char *)buf + 8);
	c->offset = 0;
	return c->total > 0 ? TW_OK : TW_EPROTO;
}

void tw__tcp_striped_encode(
    unsigned char dst[TW_TCP_STRIPED_LEN], const tw__tcp_chunk *c)
{
	put_u64(dst, c->id);
	put_u64(dst + 8, c->total);
}

int tw__tcp_chunk_decode(const void *buf, size_t n, tw__tcp_chunk *c)
{
	if (n != TW_TCP_CHUNK_PREFIX || buf == NULL)
		return TW_EPROTO;
	const unsigned char *p = buf;
	c->id = get_u64(p);
	c->total = get_u64(p + 8);
	c->offset = get_u64(p + 16);
	return c->total > 0 && c->offset < c->total ? TW_OK : TW_EPROTO;
}

void tw__tcp_chunk_encode(
    unsigned char dst[TW_TCP_CHUNK_PREFIX], const tw__tcp_chunk *c)
{
	put_u64(dst, c->id);
	put_u64(dst + 8, c->total);
	put_u64(dst + 16, c->offset);
}

void tw__tcp_rx_init(tw__tcp_rx *st)
{
	st->next_seq = 1;
	st->peer_ack = 0;
	st->peer_rcvd = 0;
}

void tw__tcp_rx_resume(tw__tcp_rx *st, uint64_t done)
{
	st->next_seq = done + 1;
}

int tw__tcp_rx_step(
    tw__tcp_rx *st, const tw__tcp_hdr *h, uint64_t sent, const char **why)
{
	if (h->seq != st->next_seq)
		return bad(why, "sequence number out of order");
	if (h->ack < st->peer_ack)
		return bad(why, "acknowledgement went backwards");
	if (h->ack > sent)
		return bad(why, "acknowledgement of frames never sent");
	if (h->rcvd < st->peer_rcvd)
		return bad(why, "reception went backwards");
	if (h->rcvd > sent)
		return bad(why, "reception of frames never sent");
	st->next_seq++;
	st->peer_ack = h->ack;
	st->peer_rcvd = h->rcvd;
	return TW_OK;
}

int tw__tcp_addr_parse(
    const char *addr, char *host, size_t host_cap, uint16_t *port)
{
	static const char scheme[] = "tcp://";
	if (addr == NULL || strncmp(addr, scheme, sizeof(scheme) - 1) != 0)
		return TW_EINVAL;
	const char *s = addr + sizeof(scheme) - 1;
	const char *h = s, *h_end, *colon;
	if (*s == '[') {
		h = s + 1;
		h_end = strchr(h, ']');
		if (h_end == NULL || h_end[1] != ':')
			return TW_EINVAL;
		colon = h_end + 1;
		// An IPv6 literal: hex digits, colons, dots (mapped IPv4).
		for (const char *c = h; c < h_end; c++)
			if (!(*c == ':' || *c == '.'
			        || (*c >= '0' && *c <= '9')
			        || (*c >= 'a' && *c <= 'f')
			        || (*c >= 'A' && *c <= 'F')))
				return TW_EINVAL;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL)
			return TW_EINVAL;
		h_end = colon;
		for (const char *c = h; c < h_end; c++)
			if (!(*c == '-' || *c == '.'
			        || (*c >= '0' && *c <= '9')
			        || (*c >= 'a' && *c <= 'z')
			        || (*c >= 'A' && *c <= 'Z')))
				return TW_EINVAL;
	}
	size_t hlen = (size_t)(h_end - h);
	if (hlen == 0 || hlen > TW_TCP_ADDR_MAX || hlen >= host_cap)
		return TW_EINVAL;
	const char *ps = colon + 1;
	size_t plen = strlen(ps);
	if (plen == 0 || plen > 5)
		return TW_EINVAL;
	unsigned long v = 0;
	for (size_t i = 0; i < plen; i++) {
		if (ps[i] < '0' || ps[i] > '9')
			return TW_EINVAL;
		v = v * 10 + (unsigned long)(ps[i] - '0');
	}
	if (v > 65535)
		return TW_EINVAL;
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	*port = (uint16_t)v;
	return TW_OK;
}
