// Segments of the shm:// transport: creating, finding, checking and
// joining the segment a pair of parties shares, and leaving it.
//
// A segment's name exists only until both parties have mapped it: the
// higher rank removes it right after joining (or the creator, if its peer
// never came, when its channel is destroyed), so that nothing stays in
// /dev/shm whatever happens to either process afterwards.  A creator that
// finds the name taken looks at the pid in its header: a dead process left
// it behind (it is removed and created again), a live one holds the
// address.  Polling for a segment looks at the name with shm_open and
// pread rather than tw_shm_open, which logs every absent name as an error.
//
// A creator killed after it made the name and before it wrote its pid
// leaves a header of zeros, which says nothing about who made it, and a
// creator that is merely slow shows the same zeros for a while.  What
// tells them apart is the creation lock (platform/posix/shm.h): a creator
// holds it until its pid is in the header and the kernel drops it when the
// creator dies, so a segment without a pid whose lock can be taken was
// left by a dead process (or by one that has yet to take the lock: it then
// finds its name gone and starts again).  Every removal of a stale segment happens under
// that lock, after checking that the name still denotes the locked
// segment, so two parties that find the same stale segment never remove a
// fresh one in its place.

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
// The liveness test of the ring layer, which treats zombies as dead.
#include "platform/posix/futex.h"
#include "platform/posix/shm.h"
#include "ring/ring_int.h"
#include "transport/shm/shm.h"

// The longest pause between two looks for a peer's segment.
#define SHM_POLL_MAX_NS 5000000
// How often a creator looks at a name that is taken before it calls the
// address in use, and how long it waits between two looks while another
// process holds the name's lock (creating or removing the segment: a few
// system calls).
#define SHM_CREATE_ATTEMPTS 8
#define SHM_CREATE_NAP_NS 1000000

// Removes the segment's name, once per segment whoever gets there first.
void tw__shm_seg_unlink_once(shm_chan *mc)
{
	uint32_t zero = 0;
	if (__atomic_compare_exchange_n(&mc->hdr->unlinked, &zero, 1, false,
	        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
		tw_shm_unlink(mc->seg_name);
}

// Marks this side gone in the segment (keeping the first reason) and ends
// the other side's waits on both rings.
void tw__shm_seg_leave(shm_chan *mc, uint32_t why)
{
	uint32_t zero = 0;
	__atomic_compare_exchange_n(&mc->hdr->gone[mc->side], &zero, why,
	    false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
	tw_ring_abort(mc->out, 0);
	tw_ring_abort(mc->in, 1);
}

// Looks at a segment without mapping it: whether it exists and, if it is
// large enough, a copy of its header.  Polling goes through here rather
// than tw_shm_open, which logs every absent name as an error.  Returns
// TW_OK, TW_EAGAIN (no such segment) or TW_ESYS.
static int seg_peek(shm_chan *mc, struct tw_shm_seg_hdr *h, size_t *size)
{
	memset(h, 0, sizeof(*h));
	int fd = shm_open(mc->seg_name, O_RDONLY | O_CLOEXEC, 0);
	if (fd < 0) {
		if (errno == ENOENT)
			return TW_EAGAIN;
		LOGC(mc, TW_LOG_ERROR, "cannot open shared memory %s: %m",
		    mc->seg_name);
		return TW_ESYS;
	}
	struct stat st;
	int status = TW_OK;
	if (fstat(fd, &st) != 0) {
		LOGC(mc, TW_LOG_ERROR, "cannot stat shared memory %s: %m",
		    mc->seg_name);
		status = TW_ESYS;
	} else {
		*size = (size_t)st.st_size;
		if ((size_t)st.st_size >= sizeof(*h)
		    && pread(fd, h, sizeof(*h), 0) != (ssize_t)sizeof(*h))
			memset(h, 0, sizeof(*h));
	}
	close(fd);
	return status;
}

static int seg_attach_rings(shm_chan *mc)
{
	uint32_t sl = mc->ep->slots, msg = mc->ep->slot_msg;
	size_t ring = tw__shm_ring_size(sl, msg);
	unsigned char *base = mc->mem;
	int status = tw_ring_attach(
	    base + tw__shm_ring_off(mc->side, sl, msg), ring, &mc->out);
	if (status == TW_OK)
		status = tw_ring_attach(
		    base + tw__shm_ring_off(!mc->side, sl, msg), ring,
		    &mc->in);
	// The sizes were checked (seg_check), but the same bytes could hold
	// more, smaller slots: then a frame built for a slot of ours would
	// run past the one we claimed.
	for (int i = 0; i < 2 && status == TW_OK; i++) {
		uint32_t lanes, slots, max_msg;
		tw__ring_geometry(
		    i ? mc->in : mc->out, &lanes, &slots, &max_msg);
		if (lanes != TW_SHM_LANES || slots != sl || max_msg != msg) {
			LOGC(mc, TW_LOG_ERROR,
			    "shared memory %s towards %s: unexpected layout "
			    "(%u lanes of %u slots of %u bytes) (%s)",
			    mc->seg_name, mc->peer_addr, lanes, slots, max_msg,
			    tw_err_name(TW_EPROTO));
			status = TW_EPROTO;
		}
	}
	if (status == TW_OK) {
		tw_ring_set_role(mc->out, 0);
		tw_ring_set_role(mc->in, 1);
		tw__ring_set_release(mc->in, SHM_RELEASE_EVERY);
	}
	return status;
}

void tw__shm_seg_unmap(shm_chan *mc)
{
	tw_ring_detach(mc->out);
	tw_ring_detach(mc->in);
	mc->out = mc->in = NULL;
	if (mc->mem != NULL)
		tw_shm_close(mc->mem, mc->mem_size);
	mc->mem = NULL;
	mc->hdr = NULL;
}

// Removes the segment under our name if it is stale: its creator died,
// before or after it wrote its pid (see the top of this file).  Blocks for
// a few system calls.  Returns TW_OK when the name may be free now
// (removed here or elsewhere), TW_EAGAIN when a live process holds it (it
// is being created or removed, or its creator lives) and *pid the pid
// found (0: none), TW_ESYS (logged).
static int seg_reclaim(shm_chan *mc, uint32_t *pid)
{
	*pid = 0;
	int fd;
	int status = tw__shm_trylock(mc->seg_name, &fd);
	if (status != TW_OK || fd < 0)
		return status;
	// Under the lock a creator's pid is final: it writes it before it
	// lets go.
	struct tw_shm_seg_hdr h;
	memset(&h, 0, sizeof(h));
	struct stat st;
	if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(h)
	    && pread(fd, &h, sizeof(h), 0) != (ssize_t)sizeof(h))
		memset(&h, 0, sizeof(h));
	*pid = h.creator_pid;
	if (*pid != 0 && tw__proc_alive(*pid)) {
		tw__shm_unlock(fd);
		return TW_EAGAIN;
	}
	status = tw__shm_unlink_locked(mc->seg_name, fd);
	tw__shm_unlock(fd);
	if (status == TW_EAGAIN)
		return TW_OK; // someone else removed it first
	if (status != TW_OK)
		return status;
	if (*pid != 0)
		LOGC(mc, TW_LOG_INFO,
		    "removed shared memory %s left by process %u",
		    mc->seg_name, *pid);
	else
		LOGC(mc, TW_LOG_INFO,
		    "removed shared memory %s left by a process that died "
		    "while creating it",
		    mc->seg_name);
	return TW_OK;
}

static int seg_in_use(shm_chan *mc, uint32_t pid)
{
	if (pid != 0)
		LOGC(mc, TW_LOG_ERROR,
		    "cannot bind %s towards %s: address in use (shared "
		    "memory %s belongs to process %u)",
		    mc->ep->link_id, mc->peer_addr, mc->seg_name, pid);
	else
		LOGC(mc, TW_LOG_ERROR,
		    "cannot bind %s towards %s: address in use (another "
		    "process is creating shared memory %s)",
		    mc->ep->link_id, mc->peer_addr, mc->seg_name);
	return TW_ESYS;
}

// The lower rank creates the segment: removes one that a dead process left
// behind, refuses one that a live process holds.
int tw__shm_seg_create(shm_chan *mc)
{
	uint32_t sl = mc->ep->slots, msg = mc->ep->slot_msg;
	size_t size = tw__shm_seg_size(sl, msg);
	int lock_fd = -1;
	uint32_t pid = 0;
	for (int attempt = 0;; attempt++) {
		if (attempt == SHM_CREATE_ATTEMPTS)
			return seg_in_use(mc, pid);
		struct tw_shm_seg_hdr h;
		size_t have = 0;
		int status = seg_peek(mc, &h, &have);
		if (status == TW_EAGAIN) {
			// No such name: make it.  TW_EAGAIN again: another
			// creator was faster, or a party took our fresh name
			// for a dead creator's and removed it.
			status = tw__shm_create_locked(
			    mc->seg_name, size, &mc->mem, &lock_fd);
			if (status == TW_OK)
				break;
			if (status != TW_EAGAIN)
				return status;
			continue;
		}
		if (status != TW_OK)
			return status;
		pid = h.creator_pid;
		if (pid != 0 && tw__proc_alive(pid))
			return seg_in_use(mc, pid);
		status = seg_reclaim(mc, &pid);
		if (status == TW_EAGAIN)
			tw__shm_nap(SHM_CREATE_NAP_NS);
		else if (status != TW_OK)
			return status;
	}
	mc->mem_size = size;
	struct tw_shm_seg_hdr *h = mc->hdr = mc->mem;
	__atomic_store_n(
	    &h->creator_pid, (uint32_t)getpid(), __ATOMIC_SEQ_CST);
	// The pid tells from now on whether the segment is stale.
	tw__shm_unlock(lock_fd);
	h->version = TW_SHM_SEG_VERSION;
	h->seg_size = size;
	h->ring_off[0] = tw__shm_ring_off(0, sl, msg);
	h->ring_off[1] = tw__shm_ring_off(1, sl, msg);
	h->ring_size = tw__shm_ring_size(sl, msg);
	unsigned char *base = mc->mem;
	for (int s = 0; s < 2; s++)
		tw_ring_init(base + tw__shm_ring_off(s, sl, msg),
		    tw__shm_ring_size(sl, msg), TW_SHM_LANES, sl, msg);
	int status = seg_attach_rings(mc);
	if (status != TW_OK) {
		tw__shm_seg_unlink_once(mc);
		tw__shm_seg_unmap(mc);
		return status;
	}
	__atomic_store_n(&h->pid[0], (uint32_t)getpid(), __ATOMIC_SEQ_CST);
	__atomic_store_n(&h->magic, TW_SHM_SEG_MAGIC, __ATOMIC_SEQ_CST);
	__atomic_store_n(&h->state, TW_SHM_STATE_READY, __ATOMIC_RELEASE);
	return TW_OK;
}

// Checks the header of a segment another process made.
static int seg_check(shm_chan *mc)
{
	struct tw_shm_seg_hdr *h = mc->hdr;
	uint32_t sl = mc->ep->slots, msg = mc->ep->slot_msg;
	size_t size = tw__shm_seg_size(sl, msg);
	const char *why = NULL;
	if (mc->mem_size != size)
		why = "unexpected size";
	else if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE)
	        != TW_SHM_SEG_MAGIC
	    || __atomic_load_n(&h->version, __ATOMIC_RELAXED)
	        != TW_SHM_SEG_VERSION)
		why = "not a tagwire segment of this version";
	else if (__atomic_load_n(&h->seg_size, __ATOMIC_RELAXED) != size
	    || __atomic_load_n(&h->ring_off[0], __ATOMIC_RELAXED)
	        != tw__shm_ring_off(0, sl, msg)
	    || __atomic_load_n(&h->ring_off[1], __ATOMIC_RELAXED)
	        != tw__shm_ring_off(1, sl, msg)
	    || __atomic_load_n(&h->ring_size, __ATOMIC_RELAXED)
	        != tw__shm_ring_size(sl, msg))
		why = "unexpected layout";
	if (why == NULL)
		return TW_OK;
	LOGC(mc, TW_LOG_ERROR, "shared memory %s towards %s: %s (%s)",
	    mc->seg_name, mc->peer_addr, why, tw_err_name(TW_EPROTO));
	return TW_EPROTO;
}

// Maps a segment that looked ready and joins it.  TW_EAGAIN: it went away
// or turned out stale; look again.
static int seg_join(shm_chan *mc)
{
	size_t size = 0;
	if (tw_shm_open(mc->seg_name, &size, &mc->mem) != TW_OK)
		return TW_EAGAIN;
	mc->mem_size = size;
	mc->hdr = mc->mem;
	int status = seg_check(mc);
	if (status != TW_OK) {
		tw__shm_seg_unmap(mc);
		return status;
	}
	struct tw_shm_seg_hdr *h = mc->hdr;
	uint32_t me = (uint32_t)getpid(), other = 0;
	if (!__atomic_compare_exchange_n(&h->pid[1], &other, me, false,
	        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
		tw__shm_seg_unmap(mc);
		if (!tw__proc_alive(other))
			return TW_EAGAIN; // its creator will notice
		LOGC(mc, TW_LOG_ERROR,
		    "cannot bind %s towards %s: address in use (process %u "
		    "holds shared memory %s)",
		    mc->ep->link_id, mc->peer_addr, other, mc->seg_name);
		return TW_ESYS;
	}
	if ((status = seg_attach_rings(mc)) != TW_OK) {
		tw__shm_seg_unmap(mc);
		return status;
	}
	tw__shm_seg_unlink_once(mc);
	return TW_OK;
}

// The higher rank waits for the segment to be ready, until `deadline`.
int tw__shm_seg_open(shm_chan *mc, int64_t deadline)
{
	uint32_t sl = mc->ep->slots, msg = mc->ep->slot_msg;
	size_t want = tw__shm_seg_size(sl, msg);
	int64_t nap = 50000;
	for (;;) {
		if (tw__chanbase_aborted(&mc->base))
			return TW_ECLOSED;
		struct tw_shm_seg_hdr h;
		size_t have = 0;
		int status = seg_peek(mc, &h, &have);
		if (status == TW_OK
		    && (h.creator_pid == 0
		        || !tw__proc_alive(h.creator_pid))) {
			// Its creator died (or is still creating it: then
			// this finds it locked): remove it, a new one may
			// come.
			uint32_t pid;
			status = seg_reclaim(mc, &pid);
			if (status != TW_OK && status != TW_EAGAIN)
				return status;
		} else if (status == TW_OK && have == want
		    && h.state == TW_SHM_STATE_READY && h.gone[0] == 0) {
			status = seg_join(mc);
			if (status != TW_EAGAIN)
				return status;
		} else if (status != TW_OK && status != TW_EAGAIN) {
			return status;
		}
		int64_t now = tw__now_ns();
		if (deadline != TW_FOREVER && now >= deadline)
			return TW_ETIMEDOUT;
		int64_t d = nap;
		if (deadline != TW_FOREVER && deadline - now < d)
			d = deadline - now;
		tw__shm_nap(d);
		if (nap < SHM_POLL_MAX_NS)
			nap *= 2;
	}
}
