// The transfer engine's blobs and frame headers (wire.h).

#include <string.h>

#include <tagwire/engine.h>

#include "engine/wire.h"

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint16_t get16(const unsigned char *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t get32(const unsigned char *p)
{
	uint32_t v = 0;
	for (int i = 3; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static bool name_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
	    || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

static bool name_ok(const char *s, size_t n)
{
	if (n < 1 || n > TW_ENG_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char((unsigned char)s[i]))
			return false;
	return true;
}

bool tw__eng_name_ok(const char *name)
{
	return name != NULL
	    && name_ok(name, strnlen(name, TW_ENG_NAME_MAX + 1));
}

static bool addr_ok(const char *s, size_t n)
{
	if (n <= 6 || n > TW_ENG_ADDR_MAX
	    || (memcmp(s, "tcp://", 6) != 0 && memcmp(s, "mem://", 6) != 0))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
			return false;
	return true;
}

size_t tw__eng_info_size(const tw__eng_info *in)
{
	size_t nl = strnlen(in->name, TW_ENG_NAME_MAX + 1);
	size_t al = strnlen(in->addr, TW_ENG_ADDR_MAX + 1);
	if (!name_ok(in->name, nl) || !addr_ok(in->addr, al))
		return 0;
	return TW_ENG_INFO_FIXED + nl + al;
}

void tw__eng_info_encode(const tw__eng_info *in, unsigned char *out)
{
	size_t nl = strlen(in->name), al = strlen(in->addr);
	memcpy(out, TW_ENG_INFO_MAGIC, 4);
	put16(out + 4, TW_ENG_INFO_VERSION);
	put16(out + 6, 0);
	put64(out + 8, in->instance);
	put16(out + 16, (uint16_t)nl);
	put16(out + 18, (uint16_t)al);
	memcpy(out + TW_ENG_INFO_FIXED, in->name, nl);
	memcpy(out + TW_ENG_INFO_FIXED + nl, in->addr, al);
}

int tw__eng_info_decode(const void *buf, size_t len, tw__eng_info *out)
{
	const unsigned char *p = buf;
	if (p == NULL || len < TW_ENG_INFO_FIXED
	    || memcmp(p, TW_ENG_INFO_MAGIC, 4) != 0
	    || get16(p + 4) != TW_ENG_INFO_VERSION || get16(p + 6) != 0)
		return TW_EINVAL;
	uint64_t instance = get64(p + 8);
	size_t nl = get16(p + 16), al = get16(p + 18);
	// Lengths are at most 2^16 each: the sum cannot wrap.
	if (instance == 0 || TW_ENG_INFO_FIXED + nl + al != len)
		return TW_EINVAL;
	const char *name = (const char *)p + TW_ENG_INFO_FIXED;
	const char *addr = name + nl;
	if (!name_ok(name, nl) || !addr_ok(addr, al))
		return TW_EINVAL;
	out->instance = instance;
	memcpy(out->name, name, nl);
	out->name[nl] = '\0';
	memcpy(out->addr, addr, al);
	out->addr[al] = '\0';
	return TW_OK;
}

void tw__eng_desc_encode(const tw__eng_desc *in, unsigned char *out)
{
	memcpy(out, TW_ENG_DESC_MAGIC, 4);
	put16(out + 4, TW_ENG_DESC_VERSION);
	put16(out + 6, in->kind);
	put64(out + 8, in->instance);
	put64(out + 16, in->id);
	put64(out + 24, in->key);
	put64(out + 32, in->len);
	put32(out + 40, in->access);
	put32(out + 44, 0);
}

int tw__eng_desc_decode(const void *buf, size_t len, tw__eng_desc *out)
{
	const unsigned char *p = buf;
	if (p == NULL || len != TW_ENG_DESC_SIZE
	    || memcmp(p, TW_ENG_DESC_MAGIC, 4) != 0
	    || get16(p + 4) != TW_ENG_DESC_VERSION)
		return TW_EINVAL;
	tw__eng_desc d = { .kind = get16(p + 6),
		.instance = get64(p + 8),
		.id = get64(p + 16),
		.key = get64(p + 24),
		.len = get64(p + 32),
		.access = get32(p + 40) };
	if (d.kind != TW_MEM_HOST || d.instance == 0 || d.id == 0 || d.len == 0
	    || (d.access & ~(unsigned)(TW_ACCESS_READ | TW_ACCESS_WRITE)) != 0
	    || get32(p + 44) != 0)
		return TW_EINVAL;
	*out = d;
	return TW_OK;
}

void tw__eng_hdr_encode(
    const tw__eng_hdr *h, unsigned char out[TW_ENG_HDR_SIZE])
{
	out[0] = h->type;
	out[1] = h->flags;
	put16(out + 2, (uint16_t)h->status);
	put32(out + 4, h->len);
	put64(out + 8, h->a);
	put64(out + 16, h->b);
	put64(out + 24, h->c);
	put64(out + 32, h->d);
}

bool tw__eng_hdr_has_data(const tw__eng_hdr *h)
{
	switch (h->type) {
	case TW_ENG_WRITE:
	case TW_ENG_SDATA:
	case TW_ENG_NOTIFY:
		return true;
	case TW_ENG_RDATA:
		return h->status == TW_OK;
	default:
		return false;
	}
}

int tw__eng_hdr_decode(const void *buf, size_t len, tw__eng_hdr *out)
{
	const unsigned char *p = buf;
	if (p == NULL || len != TW_ENG_HDR_SIZE || p[0] < TW_ENG_HELLO
	    || p[0] > TW_ENG_TYPE_MAX || (p[1] & ~TW_ENG_F_INLINE) != 0)
		return TW_EPROTO;
	tw__eng_hdr h = { .type = p[0],
		.flags = p[1],
		.status = (int16_t)get16(p + 2),
		.len = get32(p + 4),
		.a = get64(p + 8),
		.b = get64(p + 16),
		.c = get64(p + 24),
		.d = get64(p + 32) };
	if (h.status > 0 || h.status < TW_ENOTSUP)
		return TW_EPROTO;
	bool sized = tw__eng_hdr_has_data(&h) || h.type == TW_ENG_READ
	    || h.type == TW_ENG_WACK || h.type == TW_ENG_SACK
	    || h.type == TW_ENG_RDATA;
	if (!sized && h.len != 0)
		return TW_EPROTO;
	if ((h.flags & TW_ENG_F_INLINE) && !tw__eng_hdr_has_data(&h))
		return TW_EPROTO;
	*out = h;
	return TW_OK;
}

int tw__eng_pack_next(const unsigned char *b, size_t n, size_t *at,
    tw__eng_hdr *h, const unsigned char **inl)
{
	*inl = NULL;
	if (*at >= n)
		return TW_EAGAIN;
	size_t left = n - *at;
	if (left < TW_ENG_HDR_SIZE
	    || tw__eng_hdr_decode(b + *at, TW_ENG_HDR_SIZE, h) != TW_OK)
		return TW_EPROTO;
	left -= TW_ENG_HDR_SIZE;
	if (h->flags & TW_ENG_F_INLINE) {
		if (h->len > left)
			return TW_EPROTO;
		*inl = b + *at + TW_ENG_HDR_SIZE;
		*at += TW_ENG_HDR_SIZE + h->len;
		return TW_OK;
	}
	if (tw__eng_hdr_has_data(h) && left != 0)
		return TW_EPROTO; // bulk data follows only the last frame
	*at += TW_ENG_HDR_SIZE;
	return TW_OK;
}
