// Collectives, built on the link's point-to-point messages under reserved
// keys ("<ns>@<coll>.<round>:<tag>"), so they never meet application
// messages of the same tag and repeated calls with one tag stay ordered by
// the per-key FIFO.
//
// Algorithms, chosen for how their time grows with n parties and m bytes:
//  - barrier: dissemination, ceil(log2 n) rounds of one empty message;
//  - broadcast: a binomial tree, ceil(log2 n) rounds, below BC_LARGE bytes
//    or for n <= 2; from BC_LARGE on, van de Geijn's scatter + ring
//    allgather: the data cut into n segments, scattered down the same
//    tree, then passed round a ring.  The tree's root sends all m bytes
//    to each of its log2 n children one after the other; here no party
//    sends or receives much more than 2 m, and every link carries its
//    share at the same time;
//  - gather and scatter: direct to or from the root, whose own link is the
//    bottleneck any algorithm must cross with (n-1)·m bytes;
//  - allgather: Bruck's algorithm, ceil(log2 n) rounds and (n-1) blocks
//    sent per party in total, optimal in latency and volume for any n;
//    blocks of AG_LARGE bytes or more then travel a ring instead (n-1
//    steps of one block to the left neighbour, cut into RING_CHUNK pieces
//    that alternate with the pieces coming from the right), since Bruck's
//    rounds hand up to n/2 blocks at once to one peer and only then wait
//    for the other, so nothing overlaps.
//
// Only the owner of a block knows its size, and every party must take the
// same path, so the choice travels with the data: Bruck's rounds always
// run, and carry a large block as its length with a DEFERRED flag and no
// bytes; after them every party knows every length and which blocks the
// ring brings.  Small blocks cost nothing more, large ones ceil(log2 n)
// rounds of headers.  A broadcast's root chooses, and every tree message
// starts with a header that names the mode and the length.
//
// Message size.  Every message a collective sends fits the link's
// TW_OPT_MAX_MSG_SIZE, since a receiver refuses a larger one (tcp:// and
// shm:// even drop the peer, and with it every link they share).  Gather
// and scatter send each contribution as one message, so a contribution
// within the limit fits; allgather's rounds carry several blocks at once,
// so a round's blocks travel as a stream cut into pieces of at most the
// limit (see send_blocks), and the rings and the broadcast tree cut their
// data the same way.  A contribution over the limit is TW_ETOOBIG before
// anything is sent, as tw_send's is.
//
// TAGWIRE_COLL_FORCE (coll.h) takes either path at every size, so tests
// cover both with small data and measurements compare them.

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "link/coll.h"
#include "link/link_int.h"

// Thresholds and pieces: see coll.h.
#define AG_LARGE TW__COLL_AG_LARGE
#define BC_LARGE TW__COLL_BC_LARGE
#define RING_CHUNK TW__COLL_RING_CHUNK
#define BC_INLINE TW__COLL_BC_INLINE

#define DEFERRED ((uint64_t)1 << 63)
#define SCATTER ((uint64_t)1 << 63)

int tw__coll_force(void)
{
	const char *s = getenv("TAGWIRE_COLL_FORCE");
	if (s != NULL && strcmp(s, "small") == 0)
		return TW__COLL_SMALL;
	if (s != NULL && strcmp(s, "large") == 0)
		return TW__COLL_LARGE;
	return TW__COLL_AUTO;
}

// Whether a block of len bytes goes round the ring.  Empty blocks never
// do: Bruck's header carries them whole.
static bool ag_ring(uint64_t len, int force)
{
	if (len == 0 || force == TW__COLL_SMALL)
		return false;
	return force == TW__COLL_LARGE || len >= AG_LARGE;
}

static bool bc_scatter(size_t n, uint64_t len, int force)
{
	if (n < 2 || force == TW__COLL_SMALL)
		return false;
	return force == TW__COLL_LARGE || (n > 2 && len >= BC_LARGE);
}

const char *tw__coll_algo(int coll, size_t n, uint64_t len)
{
	int force = tw__coll_force();
	switch (coll) {
	case TW__COLL_BARRIER:
		return "dissemination";
	case TW__COLL_BCAST:
		return bc_scatter(n, len, force) ? "scatter-ring" : "binomial";
	case TW__COLL_ALLGATHER:
		return n > 1 && ag_ring(len, force) ? "ring" : "bruck";
	default:
		return "direct";
	}
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (int j = 0; j < 8; j++)
		p[j] = (unsigned char)(v >> (8 * j));
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int j = 0; j < 8; j++)
		v |= (uint64_t)p[j] << (8 * j);
	return v;
}

static size_t min_sz(uint64_t a, uint64_t b)
{
	return (size_t)(a < b ? a : b);
}

// p + off, where p may be NULL for empty data (no offset to a null
// pointer).
static unsigned char *at(void *p, uint64_t off)
{
	return p != NULL ? (unsigned char *)p + off : NULL;
}

static int check(tw_link *l, const char *tag)
{
	if (l == NULL || !tw__valid_tag(tag))
		return TW_EINVAL;
	if (atomic_load_explicit(&l->aborted, memory_order_acquire))
		return TW_ECLOSED;
	return TW_OK;
}

static uint64_t max_msg(const tw_link *l)
{
	return (uint64_t)l->opts[TW_OPT_MAX_MSG_SIZE];
}

static bool too_big(const tw_link *l, size_t len)
{
	return (uint64_t)len > max_msg(l);
}

// A buffer of len bytes in *out (NULL data when empty).
static int alloc_buf(size_t len, tw_buf *out)
{
	out->data = NULL;
	out->len = len;
	if (len > 0 && (out->data = malloc(len)) == NULL)
		return TW_ENOMEM;
	return TW_OK;
}

static int dup_buf(const void *buf, size_t len, tw_buf *out)
{
	int status = alloc_buf(len, out);
	if (status == TW_OK && len > 0)
		memcpy(out->data, buf, len);
	return status;
}

static void free_bufs(tw_buf *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		tw_buf_free(&b[i]);
}

static int coll_send(tw_link *l, size_t dst, const char *coll, unsigned round,
    const char *tag, const void *buf, size_t len)
{
	char key[TW_KEY_MAX];
	tw__key_coll(key, l->id, coll, round, tag);
	return tw__link_send_key(l, dst, key, buf, len, true);
}

static int coll_recv(tw_link *l, size_t src, const char *coll, unsigned round,
    const char *tag, tw_buf *out)
{
	char key[TW_KEY_MAX];
	tw__key_coll(key, l->id, coll, round, tag);
	return tw__link_recv_key(l, src, key, tw__link_recv_deadline(l), out);
}

// Receives a piece of exactly len bytes into buf; any other length breaks
// the stream (TW_EPROTO).
static int coll_recv_exact(tw_link *l, size_t src, const char *coll,
    const char *tag, void *buf, size_t len)
{
	char key[TW_KEY_MAX];
	size_t got = 0;
	tw__key_coll(key, l->id, coll, 0, tag);
	int status = tw__chan_recv_into(
	    l, l->map[src], key, tw__link_recv_deadline(l), buf, len, &got);
	if (status == TW_ETRUNC || (status == TW_OK && got != len))
		status = TW_EPROTO;
	return status;
}

int tw_barrier(tw_link *l, const char *tag)
{
	int status = check(l, tag);
	size_t n = l != NULL ? l->size : 0;
	unsigned round = 0;
	for (size_t dist = 1; status == TW_OK && dist < n;
	     dist *= 2, round++) {
		size_t to = (l->rank + dist) % n;
		size_t from = (l->rank + n - dist % n) % n;
		status = coll_send(l, to, "barrier", round, tag, NULL, 0);
		tw_buf b = { 0 };
		if (status == TW_OK)
			status = coll_recv(l, from, "barrier", round, tag, &b);
		tw_buf_free(&b);
	}
	return status;
}

// Sends out[0..olen) to `to` while receiving in[0..ilen) from `from`, both
// cut into pieces of `chunk` bytes (every piece full but the last; both
// ends know both lengths).  A piece out, then a piece in: the transport
// moves the one while this thread waits for the other.
static int ring_xchg(tw_link *l, const char *coll, const char *tag, size_t to,
    const unsigned char *out, size_t olen, size_t from, unsigned char *in,
    size_t ilen, uint64_t chunk)
{
	size_t so = 0, ro = 0;
	int status = TW_OK;
	while (status == TW_OK && (so < olen || ro < ilen)) {
		if (so < olen) {
			size_t k = min_sz(chunk, olen - so);
			status = coll_send(l, to, coll, 0, tag, out + so, k);
			so += k;
		}
		if (status == TW_OK && ro < ilen) {
			size_t k = min_sz(chunk, ilen - ro);
			status
			    = coll_recv_exact(l, from, coll, tag, in + ro, k);
			ro += k;
		}
	}
	return status;
}

static uint64_t ring_chunk(const tw_link *l)
{
	return max_msg(l) < RING_CHUNK ? max_msg(l) : RING_CHUNK;
}

// Broadcast.  Each tree message is a header (8 bytes little-endian: the
// length, SCATTER set in scatter + ring mode) then the body: all the data
// in binomial mode, the segments of the child's subtree in scatter mode.
// Up to BC_INLINE bytes that fit one message with the header travel in
// it; otherwise the header goes alone (cut in pieces under a limit below
// 8) and the body follows in pieces of the limit.  A limit of 0 admits
// only empty data: one empty message.

// Where segment j (of n) of len bytes starts; segment j is
// [seg_at(j), seg_at(j + 1)).
static uint64_t seg_at(uint64_t len, size_t n, size_t j)
{
	uint64_t at = (len + n - 1) / n * j;
	return at < len ? at : len;
}

// The body for relative rank vr, whose subtree ends before relative rank
// `end`: [*a, *b) of the data.
static void bc_range(
    uint64_t hdr, size_t n, size_t vr, size_t end, uint64_t *a, uint64_t *b)
{
	uint64_t len = hdr & ~SCATTER;
	*a = 0;
	*b = len;
	if (hdr & SCATTER) {
		*a = seg_at(len, n, vr);
		*b = seg_at(len, n, end);
	}
}

static bool bc_inline(uint64_t piece, uint64_t blen)
{
	return blen <= BC_INLINE && 8 + blen <= piece;
}

static int bc_send(tw_link *l, size_t dst, const char *tag, uint64_t hdr,
    const unsigned char *body, uint64_t blen)
{
	uint64_t piece = max_msg(l);
	if (piece == 0)
		return coll_send(l, dst, "bcast", 0, tag, NULL, 0);
	unsigned char h[8];
	put_le64(h, hdr);
	if (bc_inline(piece, blen)) {
		unsigned char *m = malloc(8 + blen);
		if (m == NULL)
			return TW_ENOMEM;
		memcpy(m, h, 8);
		if (blen > 0)
			memcpy(m + 8, body, blen);
		int status
		    = coll_send(l, dst, "bcast", 0, tag, m, 8 + (size_t)blen);
		free(m);
		return status;
	}
	int status = TW_OK;
	for (size_t off = 0; off < 8 && status == TW_OK;) {
		size_t k = min_sz(piece, 8 - off);
		status = coll_send(l, dst, "bcast", 0, tag, h + off, k);
		off += k;
	}
	for (uint64_t off = 0; off < blen && status == TW_OK;) {
		size_t k = min_sz(piece, blen - off);
		status = coll_send(l, dst, "bcast", 0, tag, body + off, k);
		off += k;
	}
	return status;
}

// Receives a tree message from `src` for relative rank vr (subtree ending
// before `end`): *hdr, and in *data a buffer of the whole length with the
// body in place.  Anything that does not add up is TW_EPROTO.
static int bc_recv(tw_link *l, size_t src, const char *tag, size_t n,
    size_t vr, size_t end, uint64_t *hdr, tw_buf *data)
{
	uint64_t piece = max_msg(l);
	tw_buf m = { 0 };
	*hdr = 0;
	*data = (tw_buf) { NULL, 0 };
	int status = coll_recv(l, src, "bcast", 0, tag, &m);
	if (piece == 0) {
		if (status == TW_OK && m.len != 0)
			status = TW_EPROTO;
		tw_buf_free(&m);
		return status;
	}
	unsigned char h[8];
	size_t got = 0, want = 0;
	while (status == TW_OK) {
		want = min_sz(piece, 8 - got);
		if (m.len < want) {
			status = TW_EPROTO;
			break;
		}
		memcpy(h + got, m.data, want);
		got += want;
		if (got == 8)
			break;
		if (m.len != want)
			status = TW_EPROTO;
		tw_buf_free(&m);
		if (status == TW_OK)
			status = coll_recv(l, src, "bcast", 0, tag, &m);
	}
	uint64_t len = 0, a = 0, b = 0;
	if (status == TW_OK) {
		*hdr = get_le64(h);
		len = *hdr & ~SCATTER;
		if (len > piece || len > SIZE_MAX)
			status = TW_EPROTO;
	}
	if (status == TW_OK) {
		bc_range(*hdr, n, vr, end, &a, &b);
		bool in = bc_inline(piece, b - a);
		if (m.len != want + (in ? b - a : 0))
			status = TW_EPROTO;
		else
			status = alloc_buf((size_t)len, data);
		if (status == TW_OK && in && b > a)
			memcpy(at(data->data, a),
			    (const unsigned char *)m.data + want,
			    (size_t)(b - a));
		if (in)
			a = b;
	}
	tw_buf_free(&m);
	while (status == TW_OK && a < b) {
		size_t k = min_sz(piece, b - a);
		status = coll_recv_exact(
		    l, src, "bcast", tag, at(data->data, a), k);
		a += k;
	}
	if (status != TW_OK)
		tw_buf_free(data);
	return status;
}

int tw_broadcast(tw_link *l, size_t root, const char *tag, tw_buf *inout)
{
	int status = check(l, tag);
	if (status != TW_OK)
		return status;
	size_t n = l->size;
	if (root >= n || inout == NULL
	    || (l->rank == root && inout->data == NULL && inout->len > 0))
		return TW_EINVAL;
	if (l->rank == root && too_big(l, inout->len))
		return TW_ETOOBIG;
	size_t vr = (l->rank + n - root) % n;
	tw_buf data = { 0 };
	unsigned char *src = inout->data;
	uint64_t hdr = inout->len;
	if (vr == 0 && bc_scatter(n, inout->len, tw__coll_force()))
		hdr |= SCATTER;
	// The parent differs in the lowest set bit of the relative rank; the
	// children take the lower bits in turn.
	size_t mask = 1;
	while (mask < n && !(vr & mask))
		mask <<= 1;
	if (vr != 0) {
		size_t end = vr + mask < n ? vr + mask : n;
		status = bc_recv(
		    l, (vr - mask + root) % n, tag, n, vr, end, &hdr, &data);
		if (status != TW_OK)
			return status;
		src = data.data;
	}
	for (mask >>= 1; mask > 0 && status == TW_OK; mask >>= 1) {
		size_t c = vr + mask;
		if (c >= n)
			continue;
		uint64_t a, b;
		bc_range(hdr, n, c, c + mask < n ? c + mask : n, &a, &b);
		status
		    = bc_send(l, (c + root) % n, tag, hdr, at(src, a), b - a);
	}
	// Scatter + ring: each step passes on the segment received in the
	// one before (its own first) to the right.  The root has every
	// segment already, so the last party sends it nothing.
	uint64_t len = hdr & ~SCATTER, chunk = ring_chunk(l);
	for (size_t s = 0; (hdr & SCATTER) && s + 1 < n && status == TW_OK;
	     s++) {
		size_t o = (vr + n - s) % n, i = (vr + 2 * n - s - 1) % n;
		uint64_t oa = seg_at(len, n, o), ia = seg_at(len, n, i);
		size_t olen = vr == n - 1 ? 0 : seg_at(len, n, o + 1) - oa;
		size_t ilen = vr == 0 ? 0 : seg_at(len, n, i + 1) - ia;
		status = ring_xchg(l, "bcring", tag, (vr + 1 + root) % n,
		    at(src, oa), olen, (vr + n - 1 + root) % n,
		    at(data.data, ia), ilen, chunk);
	}
	if (status != TW_OK) {
		tw_buf_free(&data);
		return status;
	}
	if (vr != 0)
		*inout = data;
	return TW_OK;
}

int tw_gather(tw_link *l, size_t root, const char *tag, const void *buf,
    size_t len, tw_buf *out)
{
	int status = check(l, tag);
	if (status != TW_OK)
		return status;
	size_t n = l->size;
	if (root >= n || (buf == NULL && len > 0)
	    || (l->rank == root && out == NULL))
		return TW_EINVAL;
	if (too_big(l, len))
		return TW_ETOOBIG;
	if (l->rank != root)
		return coll_send(l, root, "gather", 0, tag, buf, len);
	for (size_t i = 0; i < n; i++)
		out[i] = (tw_buf) { NULL, 0 };
	status = dup_buf(buf, len, &out[root]);
	for (size_t i = 0; i < n && status == TW_OK; i++)
		if (i != root)
			status = coll_recv(l, i, "gather", 0, tag, &out[i]);
	if (status != TW_OK)
		free_bufs(out, n);
	return status;
}

int tw_scatter(
    tw_link *l, size_t root, const char *tag, const tw_buf *in, tw_buf *out)
{
	int status = check(l, tag);
	if (status != TW_OK)
		return status;
	size_t n = l->size;
	if (root >= n || out == NULL || (l->rank == root && in == NULL))
		return TW_EINVAL;
	if (l->rank != root)
		return coll_recv(l, root, "scatter", 0, tag, out);
	for (size_t i = 0; i < n; i++)
		if (in[i].data == NULL && in[i].len > 0)
			return TW_EINVAL;
	// Every part is checked before any is sent: a scatter fails whole.
	for (size_t i = 0; i < n; i++)
		if (too_big(l, in[i].len))
			return TW_ETOOBIG;
	for (size_t i = 0; i < n && status == TW_OK; i++)
		if (i != root)
			status = coll_send(
			    l, i, "scatter", 0, tag, in[i].data, in[i].len);
	if (status == TW_OK)
		status = dup_buf(in[root].data, in[root].len, out);
	return status;
}

// An allgather round's blocks travel as one stream of (8-byte
// little-endian header, bytes) pairs, cut into pieces of `piece` bytes
// (the link's largest message), every piece full but the last.  The header
// is the block's length, with DEFERRED set for a block the ring brings
// later, whose bytes are then left out.  The receiver knows how many
// blocks come, so the headers alone tell it where the stream ends: no
// piece is sent that carries nothing.  A limit of 0 admits only empty
// messages: every block is then empty (larger ones are TW_ETOOBIG before
// the first round), and the round is one empty message.

// Where a stream stands: block `i`, byte `off` of its (header, bytes) pair.
typedef struct stream_pos {
	size_t i;
	uint64_t off;
} stream_pos;

// Bytes of block i in the stream after its header.
static uint64_t body_len(const tw_buf *blocks, const bool *def, size_t i)
{
	return def[i] ? 0 : (uint64_t)blocks[i].len;
}

// Copies the next n bytes of the stream of blocks[0..count) to dst.
static void stream_read(const tw_buf *blocks, const bool *def, stream_pos *pos,
    unsigned char *dst, size_t n)
{
	while (n > 0) {
		const tw_buf *b = &blocks[pos->i];
		size_t k;
		if (pos->off < 8) {
			unsigned char hdr[8];
			put_le64(hdr,
			    (uint64_t)b->len | (def[pos->i] ? DEFERRED : 0));
			k = min_sz(8 - pos->off, n);
			memcpy(dst, hdr + pos->off, k);
		} else {
			uint64_t left
			    = body_len(blocks, def, pos->i) - (pos->off - 8);
			k = min_sz(left, n);
			memcpy(dst,
			    (const unsigned char *)b->data + (pos->off - 8),
			    k);
		}
		dst += k;
		n -= k;
		pos->off += k;
		if (pos->off == 8 + body_len(blocks, def, pos->i)) {
			pos->i++;
			pos->off = 0;
		}
	}
}

static int send_blocks(tw_link *l, size_t dst, unsigned round, const char *tag,
    const tw_buf *blocks, const bool *def, size_t count)
{
	uint64_t piece = max_msg(l);
	if (piece == 0)
		return coll_send(l, dst, "allgather", round, tag, NULL, 0);
	uint64_t total = 0;
	for (size_t i = 0; i < count; i++)
		total += 8 + body_len(blocks, def, i); // each <= 2^40
	size_t cap = min_sz(total, piece);
	unsigned char *buf = malloc(cap);
	if (buf == NULL)
		return TW_ENOMEM;
	stream_pos pos = { 0, 0 };
	int status = TW_OK;
	for (uint64_t sent = 0; sent < total && status == TW_OK;) {
		size_t n = min_sz(total - sent, cap);
		stream_read(blocks, def, &pos, buf, n);
		status = coll_send(l, dst, "allgather", round, tag, buf, n);
		sent += n;
	}
	free(buf);
	return status;
}

// Fills blocks[0..count) and def[0..count) from the stream of a peer's
// round; a deferred block gets its length and no bytes.  Anything that
// does not add up (a block over the limit, a piece short of full before
// the end, bytes after it) is TW_EPROTO.  On error nothing is left
// allocated.
static int recv_blocks(tw_link *l, size_t src, unsigned round, const char *tag,
    tw_buf *blocks, bool *def, size_t count)
{
	uint64_t piece = max_msg(l);
	for (size_t i = 0; i < count; i++) {
		blocks[i] = (tw_buf) { NULL, 0 };
		def[i] = false;
	}
	tw_buf msg = { 0 };
	int status;
	if (piece == 0) {
		status = coll_recv(l, src, "allgather", round, tag, &msg);
		if (status == TW_OK && msg.len != 0)
			status = TW_EPROTO;
		tw_buf_free(&msg);
		return status;
	}
	size_t i = 0; // the block being filled
	unsigned char hdr[8];
	size_t hdr_got = 0; // bytes of its header read so far
	bool have_len = false;
	size_t got = 0; // bytes of its contents read so far
	status = TW_OK;
	while (status == TW_OK && i < count) {
		status = coll_recv(l, src, "allgather", round, tag, &msg);
		if (status != TW_OK)
			break;
		const unsigned char *p = msg.data;
		size_t left = msg.len;
		while (status == TW_OK && left > 0 && i < count) {
			size_t k;
			if (!have_len) {
				k = min_sz(8 - hdr_got, left);
				memcpy(hdr + hdr_got, p, k);
				hdr_got += k;
				if (hdr_got == 8) {
					uint64_t h = get_le64(hdr);
					uint64_t len = h & ~DEFERRED;
					def[i] = (h & DEFERRED) != 0;
					if (len > piece || len > SIZE_MAX)
						status = TW_EPROTO;
					else if (def[i])
						blocks[i].len = (size_t)len;
					else
						status = alloc_buf(
						    (size_t)len, &blocks[i]);
					have_len = true;
					got = def[i] ? blocks[i].len : 0;
				}
			} else {
				k = min_sz(blocks[i].len - got, left);
				memcpy((unsigned char *)blocks[i].data + got,
				    p, k);
				got += k;
			}
			p += k;
			left -= k;
			if (status == TW_OK && have_len
			    && got == blocks[i].len) {
				i++;
				have_len = false;
				hdr_got = 0;
			}
		}
		if (status == TW_OK
		    && (left > 0 || (i < count && msg.len != piece)))
			status = TW_EPROTO;
		tw_buf_free(&msg);
	}
	if (status != TW_OK)
		free_bufs(blocks, count);
	return status;
}

// The ring after Bruck's rounds: tmp[j] is the block of rank (r + j) % n,
// def[j] whether its bytes are still to come.  Step s passes block s (own
// block first) to the left neighbour and takes block s + 1 from the
// right; blocks Bruck brought whole are skipped, as every party knows.
static int allgather_ring(
    tw_link *l, const char *tag, tw_buf *tmp, const bool *def)
{
	size_t n = l->size, r = l->rank;
	uint64_t chunk = ring_chunk(l);
	int status = TW_OK;
	for (size_t s = 0; s + 1 < n && status == TW_OK; s++) {
		size_t olen = def[s] ? tmp[s].len : 0;
		size_t ilen = def[s + 1] ? tmp[s + 1].len : 0;
		if (ilen > 0)
			status = alloc_buf(ilen, &tmp[s + 1]);
		if (status == TW_OK)
			status = ring_xchg(l, "agring", tag, (r + n - 1) % n,
			    tmp[s].data, olen, (r + 1) % n, tmp[s + 1].data,
			    ilen, chunk);
	}
	return status;
}

int tw_allgather(
    tw_link *l, const char *tag, const void *buf, size_t len, tw_buf *out)
{
	int status = check(l, tag);
	if (status != TW_OK)
		return status;
	if (out == NULL || (buf == NULL && len > 0))
		return TW_EINVAL;
	if (too_big(l, len))
		return TW_ETOOBIG;
	size_t n = l->size, r = l->rank;
	// tmp[j] holds the block of rank (r + j) % n once j < have (its
	// length only while def[j]).
	tw_buf *tmp = calloc(n, sizeof(*tmp));
	bool *def = calloc(n, sizeof(*def));
	if (tmp == NULL || def == NULL) {
		free(tmp);
		free(def);
		return TW_ENOMEM;
	}
	status = dup_buf(buf, len, &tmp[0]);
	def[0] = n > 1 && ag_ring(len, tw__coll_force());
	size_t have = 1;
	unsigned round = 0;
	for (size_t dist = 1; status == TW_OK && dist < n;
	     dist *= 2, round++) {
		size_t count = dist < n - have ? dist : n - have;
		size_t to = (r + n - dist) % n;
		size_t from = (r + dist) % n;
		status = send_blocks(l, to, round, tag, tmp, def, count);
		if (status == TW_OK)
			status = recv_blocks(l, from, round, tag, tmp + have,
			    def + have, count);
		if (status == TW_OK)
			have += count;
	}
	if (status == TW_OK)
		status = allgather_ring(l, tag, tmp, def);
	free(def);
	if (status != TW_OK) {
		free_bufs(tmp, n);
		free(tmp);
		return status;
	}
	for (size_t j = 0; j < n; j++)
		out[(r + j) % n] = tmp[j];
	free(tmp);
	return TW_OK;
}
