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

#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "link/link_int.h"

static int check(tw_link *l, const char *tag)
{
	if (l == NULL || !tw__valid_tag(tag))
		return TW_EINVAL;
	if (__atomic_load_n(&l->aborted, __ATOMIC_ACQUIRE))
		return TW_ECLOSED;
	return TW_OK;
}

static int dup_buf(const void *buf, size_t len, tw_buf *out)
{
	out->data = NULL;
	out->len = len;
	if (len == 0)
		return TW_OK;
	if ((out->data = malloc(len)) == NULL)
		return TW_ENOMEM;
	memcpy(out->data, buf, len);
	return TW_OK;
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
	for (size_t i = 0; i < n && status == TW_OK; i++)
		if (i != root)
			status = coll_send(
			    l, i, "scatter", 0, tag, in[i].data, in[i].len);
	if (status == TW_OK)
		status = dup_buf(in[root].data, in[root].len, out);
	return status;
}

// Packs blocks[first .. first+count) as (8-byte little-endian length,
// bytes) pairs.
static int pack_blocks(const tw_buf *blocks, size_t count, tw_buf *out)
{
	size_t total = 0;
	for (size_t i = 0; i < count; i++) {
		if (blocks[i].len > SIZE_MAX - total - 8)
			return TW_ETOOBIG;
		total += 8 + blocks[i].len;
	}
	unsigned char *p = malloc(total ? total : 1);
	if (p == NULL)
		return TW_ENOMEM;
	size_t off = 0;
	for (size_t i = 0; i < count; i++) {
		uint64_t len = blocks[i].len;
		for (int k = 0; k < 8; k++)
			p[off + k] = (unsigned char)(len >> (8 * k));
		off += 8;
		if (len > 0)
			memcpy(p + off, blocks[i].data, len);
		off += len;
	}
	out->data = p;
	out->len = total;
	return TW_OK;
}

// Unpacks exactly `count` blocks from a peer's message into blocks[];
// anything that does not add up is TW_EPROTO.
static int unpack_blocks(const tw_buf *msg, tw_buf *blocks, size_t count)
{
	const unsigned char *p = msg->data;
	size_t off = 0, i = 0;
	int status = TW_OK;
	for (; i < count; i++) {
		if (msg->len - off < 8) {
			status = TW_EPROTO;
			break;
		}
		uint64_t len = 0;
		for (int k = 0; k < 8; k++)
			len |= (uint64_t)p[off + k] << (8 * k);
		off += 8;
		if (len > msg->len - off) {
			status = TW_EPROTO;
			break;
		}
		if ((status = dup_buf(p + off, len, &blocks[i])) != TW_OK)
			break;
		off += len;
	}
	if (status == TW_OK && off != msg->len)
		status = TW_EPROTO;
	if (status != TW_OK)
		free_bufs(blocks, i);
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
		tw_buf msg = { 0 };
		status = pack_blocks(tmp, count, &msg);
		if (status == TW_OK)
			status = coll_send(
			    l, to, "allgather", round, tag, msg.data, msg.len);
		tw_buf_free(&msg);
		if (status == TW_OK)
			status = coll_recv(
			    l, from, "allgather", round, tag, &msg);
		if (status == TW_OK)
			status = unpack_blocks(&msg, tmp + have, count);
		tw_buf_free(&msg);
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
