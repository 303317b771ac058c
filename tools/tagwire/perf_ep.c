// tagwire perf: the two ends of a two-party test move messages over a
// link (mem://, shm://, tcp://) or over a pair of raw tw_rings.
//
// Failure reports travel in band, so that the end that keeps the time can
// say why its peer stopped, across hosts too.  On a link they go under
// their own tag, which the blocked receive of data never takes: the
// failing end sends its report and closes, the other end's receive ends
// with TW_EPEER, and only then does it look for a report.  On a ring they
// are a message of their own route in the same lane, read in order like
// data, and the failing end then aborts both rings so that a peer blocked
// on a full lane wakes too.

#include <stdlib.h>
#include <string.h>

#include "perf.h"

#define TAG_DATA "d"

enum { ROUTE_DATA = 1, ROUTE_FAIL = 2 };

// How long a failing end tries to put its report into a ring whose lane
// may be full: the peer is usually still reading.
#define REPORT_WAIT_US 200000

static void set_remote(perf_ep *e, const void *msg, size_t len)
{
	if (len >= sizeof(e->remote))
		len = sizeof(e->remote) - 1;
	memcpy(e->remote, msg, len);
	e->remote[len] = '\0';
}

// ---------------------------------------------------------------------------
// Links
// ---------------------------------------------------------------------------

// After a failed call: PERF_EREMOTE when the peer left a report, `status`
// otherwise.
static int link_remote(perf_ep *e, int status)
{
	size_t len;
	if (tw_probe(e->link, e->peer, PERF_TAG_FAIL, &len) != TW_OK)
		return status;
	tw_buf b = { 0 };
	if (tw_recv(e->link, e->peer, PERF_TAG_FAIL, &b) != TW_OK)
		return status;
	set_remote(e, b.data != NULL ? b.data : "", b.len);
	tw_buf_free(&b);
	return PERF_EREMOTE;
}

static int link_send(perf_ep *e, const void *buf, size_t n, bool stream)
{
	int st = stream ? tw_send_async(e->link, e->peer, TAG_DATA, buf, n)
	                : tw_send(e->link, e->peer, TAG_DATA, buf, n);
	return st == TW_OK ? TW_OK : link_remote(e, st);
}

static int link_recv(perf_ep *e, void *buf, size_t cap, size_t *n)
{
	int st = tw_recv_into(e->link, e->peer, TAG_DATA, buf, cap, n);
	return st == TW_OK ? TW_OK : link_remote(e, st);
}

static void link_report(perf_ep *e, const char *msg)
{
	// The caller closes the link next, which delivers this first.
	(void)tw_send(e->link, e->peer, PERF_TAG_FAIL, msg, strlen(msg));
}

static const perf_ep_ops link_ops = { link_send, link_recv, link_report };

void perf_ep_link(perf_ep *e, tw_link *l, size_t peer)
{
	memset(e, 0, sizeof(*e));
	e->ops = &link_ops;
	e->link = l;
	e->peer = peer;
}

// ---------------------------------------------------------------------------
// Rings
// ---------------------------------------------------------------------------

// After a failed call: reads what the peer left in this end's ring, up to
// its report if there is one.
static int ring_remote(perf_ep *e, int status)
{
	if (status != TW_EPEER)
		return status;
	unsigned char *scratch = malloc(e->chunk);
	if (scratch == NULL)
		return status;
	size_t got;
	uint32_t route;
	while (tw_ring_recv(e->rx, 0, scratch, e->chunk, &got, &route, NULL, 0)
	    == TW_OK) {
		if (route == ROUTE_FAIL) {
			set_remote(e, scratch, got);
			status = PERF_EREMOTE;
			break;
		}
	}
	free(scratch);
	return status;
}

// A message is one or more chunks, each carrying the message's length in
// its correlation id, so that the receiver knows when it has all of it.
static int ring_send(perf_ep *e, const void *buf, size_t n, bool stream)
{
	(void)stream; // a ring send always copies
	const unsigned char *p = buf;
	size_t off = 0;
	do {
		size_t c = n - off < e->chunk ? n - off : e->chunk;
		int st = tw_ring_send(e->tx, 0, ROUTE_DATA, p + off, c,
		    (uint64_t)n, e->timeout_us);
		if (st != TW_OK)
			return ring_remote(e, st);
		off += c;
	} while (off < n);
	return TW_OK;
}

static int ring_recv(perf_ep *e, void *buf, size_t cap, size_t *n)
{
	unsigned char *p = buf;
	size_t got = 0;
	uint32_t route = 0;
	uint64_t total = 0;
	int st = tw_ring_recv(
	    e->rx, 0, p, cap, &got, &route, &total, e->timeout_us);
	if (st == TW_ETRUNC) {
		// Longer than expected: a report (which is small) or a
		// message the plan did not announce.
		char tmp[PERF_MSG_MAX];
		st = tw_ring_recv(
		    e->rx, 0, tmp, sizeof(tmp), &got, &route, &total, 0);
		if (st == TW_OK && route == ROUTE_FAIL) {
			set_remote(e, tmp, got);
			return PERF_EREMOTE;
		}
		return st == TW_OK ? TW_ETRUNC : st;
	}
	if (st != TW_OK)
		return ring_remote(e, st);
	if (route == ROUTE_FAIL) {
		set_remote(e, p, got);
		return PERF_EREMOTE;
	}
	if (route != ROUTE_DATA || total > cap || got > total
	    || (got < e->chunk && got < total))
		return TW_EPROTO;
	for (size_t off = got; off < total; off += got) {
		uint64_t t2 = 0;
		st = tw_ring_recv(e->rx, 0, p + off, total - off, &got, &route,
		    &t2, e->timeout_us);
		if (st != TW_OK)
			return ring_remote(e, st);
		if (route != ROUTE_DATA || t2 != total || got == 0)
			return TW_EPROTO;
	}
	*n = (size_t)total;
	return TW_OK;
}

static void ring_report(perf_ep *e, const char *msg)
{
	size_t len = strlen(msg);
	if (len > e->chunk)
		len = e->chunk;
	(void)tw_ring_send(e->tx, 0, ROUTE_FAIL, msg, len, 0, REPORT_WAIT_US);
	tw_ring_abort(e->tx, 0);
	tw_ring_abort(e->rx, 1);
}

static const perf_ep_ops ring_ops = { ring_send, ring_recv, ring_report };

void perf_ep_ring(
    perf_ep *e, tw_ring *tx, tw_ring *rx, size_t chunk, int64_t timeout_us)
{
	memset(e, 0, sizeof(*e));
	e->ops = &ring_ops;
	e->tx = tx;
	e->rx = rx;
	e->chunk = chunk;
	e->timeout_us = timeout_us;
}
