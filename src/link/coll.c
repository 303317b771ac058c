// Collectives, built on the link's point-to-point messages under reserved
// keys ("<ns>@<coll>.<round>:<tag>"), so they never meet application
// messages of the same tag and repeated calls with one tag stay ordered by
// the per-key FIFO.
//
// Algorithms, chosen for how their time grows with n parties and m bytes:
//  - barrier: dissemination, ceil(log2 n) rounds of one empty message;
//  - broadcast: binomial tree, ceil(log2 n) rounds;
//  - gather and scatter: direct to or from the root, whose own link is the
//    bottleneck any algorithm must cross with (n-1)·m bytes;
//  - allgather: Bruck's algorithm, ceil(log2 n) rounds and (n-1) blocks
//    sent per party in total, so it is optimal in both latency and volume
//    for any n, not only powers of two.
//
// Message size.  Every message a collective sends fits the link's
// TW_OPT_MAX_MSG_SIZE, since a receiver refuses a larger one (tcp:// and
// shm:// even drop the peer, and with it every link they share).  Barrier,
// broadcast, gather and scatter send each contribution as one message, so
// a contribution within the limit fits; allgather's rounds carry several
// blocks at once, so a round's blocks travel as a stream cut into pieces
// of at most the limit (see send_blocks).  A contribution over the limit
// is TW_ETOOBIG before anything is sent, as tw_send's is.

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "link/link_int.h"

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
	const tw_buf *src = inout;
	size_t mask = 1;
	// Receive from the parent: the rank that differs in the lowest set
	// bit of the relative rank.
	while (mask < n) {
		if (vr & mask) {
			size_t parent = (vr - mask + root) % n;
			status = coll_recv(l, parent, "bcast", 0, tag, &data);
			if (status != TW_OK)
				return status;
			src = &data;
			break;
		}
		mask <<= 1;
	}
	for (mask >>= 1; mask > 0; mask >>= 1) {
		if (vr + mask < n) {
			size_t child = (vr + mask + root) % n;
			status = coll_send(
			    l, child, "bcast", 0, tag, src->data, src->len);
			if (status != TW_OK) {
				tw_buf_free(&data);
				return status;
			}
		}
	}
	if (l->rank != root)
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
// little-endian length, bytes) pairs, cut into pieces of `piece` bytes
// (the link's largest message), every piece full but the last.  The
// receiver knows how many blocks come, so the lengths alone tell it where
// the stream ends: no piece is sent that carries nothing.  A limit of 0
// admits only empty messages: every block is then empty (larger ones are
// TW_ETOOBIG before the first round), and the round is one empty message.

// Where a stream stands: block `i`, byte `off` of its (length, bytes) pair.
typedef struct stream_pos {
	size_t i;
	uint64_t off;
} stream_pos;

// Copies the next n bytes of the stream of blocks[0..count) to dst.
static void stream_read(
    const tw_buf *blocks, stream_pos *pos, unsigned char *dst, size_t n)
{
	while (n > 0) {
		const tw_buf *b = &blocks[pos->i];
		size_t k;
		if (pos->off < 8) {
			unsigned char hdr[8];
			for (int j = 0; j < 8; j++)
				hdr[j] = (unsigned char)((uint64_t)b->len
				    >> (8 * j));
			k = (size_t)(8 - pos->off) < n ? (size_t)(8 - pos->off)
			                               : n;
			memcpy(dst, hdr + pos->off, k);
		} else {
			uint64_t left = b->len - (pos->off - 8);
			k = left < n ? (size_t)left : n;
			memcpy(dst,
			    (const unsigned char *)b->data + (pos->off - 8),
			    k);
		}
		dst += k;
		n -= k;
		pos->off += k;
		if (pos->off == 8 + (uint64_t)b->len) {
			pos->i++;
			pos->off = 0;
		}
	}
}

static int send_blocks(tw_link *l, size_t dst, unsigned round, const char *tag,
    const tw_buf *blocks, size_t count)
{
	uint64_t piece = max_msg(l);
	if (piece == 0)
		return coll_send(l, dst, "allgather", round, tag, NULL, 0);
	uint64_t total = 0;
	for (size_t i = 0; i < count; i++)
		total += 8 + (uint64_t)blocks[i].len; // each <= piece <= 2^40
	size_t cap = (size_t)(total < piece ? total : piece);
	unsigned char *buf = malloc(cap);
	if (buf == NULL)
		return TW_ENOMEM;
	stream_pos pos = { 0, 0 };
	int status = TW_OK;
	for (uint64_t sent = 0; sent < total && status == TW_OK;) {
		size_t n = (size_t)(total - sent < cap ? total - sent : cap);
		stream_read(blocks, &pos, buf, n);
		status = coll_send(l, dst, "allgather", round, tag, buf, n);
		sent += n;
	}
	free(buf);
	return status;
}

// Fills blocks[0..count) from the stream of a peer's round; anything that
// does not add up (a block over the limit, a piece short of full before
// the end, bytes after it) is TW_EPROTO.  On error nothing is left
// allocated.
static int recv_blocks(tw_link *l, size_t src, unsigned round, const char *tag,
    tw_buf *blocks, size_t count)
{
	uint64_t piece = max_msg(l);
	for (size_t i = 0; i < count; i++)
		blocks[i] = (tw_buf) { NULL, 0 };
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
	size_t hdr_got = 0; // bytes of its length read so far
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
				k = 8 - hdr_got < left ? 8 - hdr_got : left;
				memcpy(hdr + hdr_got, p, k);
				hdr_got += k;
				if (hdr_got == 8) {
					uint64_t len = 0;
					for (int j = 0; j < 8; j++)
						len |= (uint64_t)hdr[j]
						    << (8 * j);
					if (len > piece || len > SIZE_MAX)
						status = TW_EPROTO;
					else
						status = alloc_buf(
						    (size_t)len, &blocks[i]);
					have_len = true;
					got = 0;
				}
			} else {
				k = blocks[i].len - got < left
				    ? blocks[i].len - got
				    : left;
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
	// tmp[j] holds the block of rank (r + j) % n once j < have.
	tw_buf *tmp = calloc(n, sizeof(*tmp));
	if (tmp == NULL)
		return TW_ENOMEM;
	status = dup_buf(buf, len, &tmp[0]);
	size_t have = 1;
	unsigned round = 0;
	for (size_t dist = 1; status == TW_OK && dist < n;
	     dist *= 2, round++) {
		size_t count = dist < n - have ? dist : n - have;
		size_t to = (r + n - dist) % n;
		size_t from = (r + dist) % n;
		status = send_blocks(l, to, round, tag, tmp, count);
		if (status == TW_OK)
			status = recv_blocks(
			    l, from, round, tag, tmp + have, count);
		if (status == TW_OK)
			have += count;
	}
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
