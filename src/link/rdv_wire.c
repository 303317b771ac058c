// Encoding and decoding of the rendezvous messages (rdv_wire.h).
//
// Every message starts with "TWRV", a version byte, a type byte and two
// zero bytes; integers are little-endian; strings are a 16-bit length and
// that many printable ASCII bytes, without a terminator.

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "link/rdv_wire.h"

#define RDV_VERSION 1
#define RDV_HDR 8
enum { RDV_HELLO = 1, RDV_ROSTER = 2, RDV_REFUSE = 3 };

typedef struct wbuf {
	unsigned char *p;
	size_t len, cap;
} wbuf;

static void put(wbuf *w, const void *src, size_t n)
{
	memcpy(w->p + w->len, src, n);
	w->len += n;
}

static void put_u16(wbuf *w, uint16_t v)
{
	unsigned char b[2] = { (unsigned char)v, (unsigned char)(v >> 8) };
	put(w, b, 2);
}

static void put_u32(wbuf *w, uint32_t v)
{
	unsigned char b[4] = { (unsigned char)v, (unsigned char)(v >> 8),
		(unsigned char)(v >> 16), (unsigned char)(v >> 24) };
	put(w, b, 4);
}

static void put_str(wbuf *w, const char *s, size_t n)
{
	put_u16(w, (uint16_t)n);
	put(w, s, n);
}

static int start(wbuf *w, size_t cap, int type, tw_buf *out)
{
	out->data = NULL;
	out->len = 0;
	if ((w->p = malloc(cap)) == NULL)
		return TW_ENOMEM;
	w->len = 0;
	w->cap = cap;
	put(w, "TWRV", 4);
	unsigned char b[4] = { RDV_VERSION, (unsigned char)type, 0, 0 };
	put(w, b, 4);
	return TW_OK;
}

static void finish(wbuf *w, tw_buf *out)
{
	out->data = w->p;
	out->len = w->len;
}

int tw__rdv_hello_encode(const tw__rdv_hello *h, tw_buf *out)
{
	size_t il = strnlen(h->link_id, sizeof(h->link_id));
	size_t al = strnlen(h->addr, sizeof(h->addr));
	if (il == 0 || il > TW_LINK_ID_MAX || al == 0 || al > TW_RDV_ADDR_MAX)
		return TW_EINVAL;
	wbuf w;
	int status = start(&w, RDV_HDR + 8 + 2 + il + 2 + al, RDV_HELLO, out);
	if (status != TW_OK)
		return status;
	put_u32(&w, h->size);
	put_u32(&w, h->rank);
	put_str(&w, h->link_id, il);
	put_str(&w, h->addr, al);
	finish(&w, out);
	return TW_OK;
}

int tw__rdv_roster_encode(char *const *addrs, uint32_t n, tw_buf *out)
{
	if (n == 0 || n > TW_RDV_PARTIES_MAX)
		return TW_EINVAL;
	size_t cap = RDV_HDR + 4;
	for (uint32_t i = 0; i < n; i++) {
		size_t al = strlen(addrs[i]);
		if (al == 0 || al > TW_RDV_ADDR_MAX)
			return TW_EINVAL;
		cap += 2 + al;
	}
	wbuf w;
	int status = start(&w, cap, RDV_ROSTER, out);
	if (status != TW_OK)
		return status;
	put_u32(&w, n);
	for (uint32_t i = 0; i < n; i++)
		put_str(&w, addrs[i], strlen(addrs[i]));
	finish(&w, out);
	return TW_OK;
}

int tw__rdv_refuse_encode(int status, const char *why, tw_buf *out)
{
	size_t wl = strnlen(why, 255);
	if (status >= 0 || wl == 0)
		return TW_EINVAL;
	wbuf w;
	int st = start(&w, RDV_HDR + 4 + 2 + wl, RDV_REFUSE, out);
	if (st != TW_OK)
		return st;
	put_u32(&w, (uint32_t)status);
	put_str(&w, why, wl);
	finish(&w, out);
	return TW_OK;
}

// --- decoding ----------------------------------------------------------

typedef struct rbuf {
	const unsigned char *p;
	size_t len, off;
} rbuf;

static bool get(rbuf *r, void *dst, size_t n)
{
	if (r->len - r->off < n)
		return false;
	memcpy(dst, r->p + r->off, n);
	r->off += n;
	return true;
}

static bool get_u16(rbuf *r, uint16_t *v)
{
	unsigned char b[2];
	if (!get(r, b, 2))
		return false;
	*v = (uint16_t)(b[0] | b[1] << 8);
	return true;
}

static bool get_u32(rbuf *r, uint32_t *v)
{
	unsigned char b[4];
	if (!get(r, b, 4))
		return false;
	*v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16
	    | (uint32_t)b[3] << 24;
	return true;
}

// A string of 1..max bytes from lo..0x7e into dst (max + 1 bytes).
static bool get_str(rbuf *r, char *dst, size_t max, unsigned char lo)
{
	uint16_t n;
	if (!get_u16(r, &n) || n == 0 || n > max || !get(r, dst, n))
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)dst[i] < lo || (unsigned char)dst[i] > 0x7e)
			return false;
	dst[n] = '\0';
	return true;
}

static int header(rbuf *r, const void *buf, size_t len)
{
	r->p = buf;
	r->len = buf != NULL ? len : 0;
	r->off = 0;
	unsigned char h[RDV_HDR];
	if (!get(r, h, sizeof(h)) || memcmp(h, "TWRV", 4) != 0
	    || h[4] != RDV_VERSION || h[6] != 0 || h[7] != 0)
		return -1;
	return h[5];
}

int tw__rdv_hello_decode(const void *buf, size_t len, tw__rdv_hello *h)
{
	rbuf r;
	if (header(&r, buf, len) != RDV_HELLO || !get_u32(&r, &h->size)
	    || !get_u32(&r, &h->rank)
	    || !get_str(&r, h->link_id, TW_LINK_ID_MAX, 0x21)
	    || !get_str(&r, h->addr, TW_RDV_ADDR_MAX, 0x21) || r.off != r.len
	    || h->size == 0 || h->size > TW_RDV_PARTIES_MAX
	    || h->rank >= h->size)
		return TW_EPROTO;
	return TW_OK;
}

void tw__rdv_reply_free(tw__rdv_reply *r)
{
	if (r->addrs != NULL)
		for (uint32_t i = 0; i < r->size; i++)
			free(r->addrs[i]);
	free(r->addrs);
	r->addrs = NULL;
	r->size = 0;
}

static int roster_decode(rbuf *r, tw__rdv_reply *out)
{
	uint32_t n;
	// Each address takes at least 3 bytes: a count past that is a lie.
	if (!get_u32(r, &n) || n == 0 || n > TW_RDV_PARTIES_MAX
	    || (size_t)n > (r->len - r->off) / 3)
		return TW_EPROTO;
	if ((out->addrs = calloc(n, sizeof(*out->addrs))) == NULL)
		return TW_ENOMEM;
	out->size = n;
	char a[TW_RDV_ADDR_MAX + 1];
	for (uint32_t i = 0; i < n; i++) {
		if (!get_str(r, a, TW_RDV_ADDR_MAX, 0x21))
			return TW_EPROTO;
		if ((out->addrs[i] = strdup(a)) == NULL)
			return TW_ENOMEM;
	}
	return r->off == r->len ? TW_OK : TW_EPROTO;
}

int tw__rdv_reply_decode(const void *buf, size_t len, tw__rdv_reply *out)
{
	memset(out, 0, sizeof(*out));
	rbuf r;
	int type = header(&r, buf, len);
	if (type == RDV_ROSTER) {
		int status = roster_decode(&r, out);
		if (status != TW_OK)
			tw__rdv_reply_free(out);
		return status;
	}
	uint32_t st;
	if (type != RDV_REFUSE || !get_u32(&r, &st)
	    || !get_str(&r, out->why, sizeof(out->why) - 1, 0x20)
	    || r.off != r.len)
		return TW_EPROTO;
	out->status = (int)(int32_t)st;
	// A refusal names a failure that tagwire knows.
	if (out->status >= 0 || out->status < -100)
		return TW_EPROTO;
	return TW_OK;
}
