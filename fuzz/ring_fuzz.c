// Fuzz target: the input is the shared memory of a ring, as a hostile peer
// could have left it.  It is copied into a 64-byte aligned buffer of exactly
// its size (so that AddressSanitizer sees any access past the segment),
// attached, and then drained and refilled through every entry point.
// Nothing may crash, and every result must be a status or data that fits.
//
// Every call uses a zero timeout: the target has no peer to wait for.

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <tagwire/ring.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

// Lanes beyond this are not visited; a segment of fuzzer size rarely has
// more, and the lanes are all handled by the same code.
#define FUZZ_LANES 16

static int known(int s)
{
	return s == TW_OK || s == TW_ETIMEDOUT || s == TW_EPROTO
	    || s == TW_ETRUNC || s == TW_EPEER || s == TW_ECLOSED
	    || s == TW_ETOOBIG || s == TW_EINVAL;
}

// Receives into a heap buffer of exactly `cap` bytes; lane UINT32_MAX
// means tw_ring_recv_any.  Returns the status.
static int fuzz_recv(tw_ring *r, uint32_t lane, size_t cap)
{
	unsigned char *buf = cap > 0 ? malloc(cap) : NULL;
	if (cap > 0 && buf == NULL)
		return TW_ENOMEM;
	size_t n = SIZE_MAX;
	uint32_t got = UINT32_MAX, route;
	uint64_t corr;
	int s = lane == UINT32_MAX
	    ? tw_ring_recv_any(r, &got, buf, cap, &n, &route, &corr, 0)
	    : tw_ring_recv(r, lane, buf, cap, &n, &route, &corr, 0);
	if (!known(s) || (s == TW_OK && n > cap)
	    || (s == TW_ETRUNC && n <= cap)
	    || (lane == UINT32_MAX && (s == TW_OK || s == TW_ETRUNC)
	        && got == UINT32_MAX))
		abort();
	free(buf);
	return s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	tw_log_set_level(TW_LOG_NONE);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	void *mem = NULL;
	if (size == 0 || posix_memalign(&mem, 64, size) != 0)
		return 0;
	memcpy(mem, data, size);
	tw_ring *r = NULL;
	int s = tw_ring_attach(mem, size, &r);
	if (s != TW_OK) {
		if (s != TW_EPROTO || r != NULL)
			abort();
		free(mem);
		return 0;
	}
	static const size_t caps[] = { 0, 1, 8, 64, 1000, 70000 };
	// Drain every lane through recv_any with buffers of varied sizes.
	for (int i = 0; i < 256; i++) {
		s = fuzz_recv(r, UINT32_MAX, caps[i % 6]);
		if (s != TW_OK && s != TW_ETRUNC)
			break;
	}
	unsigned char msg[300];
	memset(msg, 0x42, sizeof(msg));
	for (uint32_t lane = 0; lane < FUZZ_LANES; lane++) {
		if (fuzz_recv(r, lane, 64) == TW_EINVAL)
			break; // past the last lane
		for (int i = 0; i < 8; i++) {
			size_t n = (size_t)(i * 37) % sizeof(msg);
			s = tw_ring_send(
			    r, lane, lane, msg, n, (uint64_t)i, 0);
			if (!known(s))
				abort();
			if (s != TW_OK && s != TW_ETOOBIG)
				break;
		}
		for (int i = 0; i < 8; i++) {
			s = fuzz_recv(r, lane, caps[i % 6]);
			if (s != TW_OK && s != TW_ETRUNC)
				break;
		}
	}
	tw_ring_abort(r, 0);
	(void)fuzz_recv(r, UINT32_MAX, 64);
	tw_ring_detach(r);
	free(mem);
	return 0;
}
