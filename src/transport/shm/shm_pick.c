// Choosing between the ring and the single copy; see shm_pick.h.

#include "transport/shm/shm_pick.h"

int tw__shm_pick_class(size_t len)
{
	if (len < TW_SHM_PICK_MIN)
		return -1;
	int c = 0;
	for (size_t s = (size_t)TW_SHM_PICK_MIN * 2;
	     s <= len && c < TW_SHM_PICK_CLASSES - 1; s *= 2)
		c++;
	return c;
}

// The way of a class's next run.
static int next_way(const tw__shm_pick *p, int c)
{
	uint32_t ring = p->samples[TW_SHM_PICK_RING][c];
	uint32_t single = p->samples[TW_SHM_PICK_SINGLE][c];
	// The ring first (shm_pick.h); runs are counted from 1.
	if (p->runs[c] < TW_SHM_PICK_PROBE)
		return TW_SHM_PICK_RING;
	// Warming up: the way with fewer samples (a run whose sends failed
	// left none, so the other is not starved of its turn).
	if (ring < TW_SHM_PICK_WARM || single < TW_SHM_PICK_WARM)
		return single < ring ? TW_SHM_PICK_SINGLE : TW_SHM_PICK_RING;
	int best = p->ps_per_byte[TW_SHM_PICK_SINGLE][c]
	        < p->ps_per_byte[TW_SHM_PICK_RING][c]
	    ? TW_SHM_PICK_SINGLE
	    : TW_SHM_PICK_RING;
	return p->runs[c] % TW_SHM_PICK_PROBE == 0 ? !best : best;
}

int tw__shm_pick_way(tw__shm_pick *p, size_t len)
{
	int c = tw__shm_pick_class(len);
	if (c < 0)
		return TW_SHM_PICK_RING;
	if (p->left[c] == 0) {
		p->runs[c]++;
		p->way[c] = (uint32_t)next_way(p, c);
		size_t n = (TW_SHM_PICK_RUN_BYTES + len - 1) / len;
		p->run_len[c] = n < 2 ? 2 : (uint32_t)n;
		p->left[c] = p->run_len[c];
		p->run_ns[c] = 0;
		p->run_bytes[c] = 0;
	}
	p->left[c]--;
	return (int)p->way[c];
}

void tw__shm_pick_note(tw__shm_pick *p, size_t len, int way, int64_t ns)
{
	int c = tw__shm_pick_class(len);
	if (c < 0 || ns < 0 || way != (int)p->way[c] || p->run_len[c] == 0)
		return;
	// The send's place in its run: the second half is measured.
	uint32_t at = p->run_len[c] - p->left[c] - 1;
	if (at < p->run_len[c] / 2)
		return;
	p->run_ns[c] += (uint64_t)ns;
	p->run_bytes[c] += len;
	if (p->left[c] != 0 || p->run_bytes[c] == 0)
		return;
	// Picoseconds, so that a fast copy of a small class keeps its
	// precision; an hour for a run would still fit.
	uint64_t ps = p->run_ns[c] * 1000 / p->run_bytes[c];
	p->run_bytes[c] = 0;
	uint64_t *avg = &p->ps_per_byte[way][c];
	// A run counts as at most twice the average: one whose sends found
	// their CPU taken, common on a busy host, moves the average by a
	// quarter at most, where it could make the faster way look the
	// slower for TW_SHM_PICK_PROBE runs; a change that lasts is followed
	// in a few runs all the same.
	if (p->samples[way][c] != 0 && ps / 2 > *avg)
		ps = 2 * *avg;
	*avg = p->samples[way][c] == 0 ? ps : *avg - *avg / 4 + ps / 4;
	if (p->samples[way][c] < UINT32_MAX)
		p->samples[way][c]++;
}
