// Codec of the shared-memory discovery messages (shml_wire.h).

#include <string.h>

#include "link/shml_wire.h"

void tw__shml_hello_encode(const tw__shml_hello *h, uint8_t *out)
{
	out[0] = TW_SHML_VERSION;
	memcpy(out + 1, h->host, TW_SHML_HOST_LEN);
	for (int i = 0; i < 8; i++)
		out[1 + TW_SHML_HOST_LEN + i] = (uint8_t)(h->nonce >> (8 * i));
	memcpy(out + 1 + TW_SHML_HOST_LEN + 8, h->token, TW_SHML_TOKEN_LEN);
}

int tw__shml_hello_decode(const void *buf, size_t len, tw__shml_hello *h)
{
	const uint8_t *p = buf;
	if (buf == NULL || len < TW_SHML_HELLO_LEN || p[0] != TW_SHML_VERSION)
		return TW_EPROTO;
	memcpy(h->host, p + 1, TW_SHML_HOST_LEN);
	h->nonce = 0;
	for (int i = 0; i < 8; i++)
		h->nonce |= (uint64_t)p[1 + TW_SHML_HOST_LEN + i] << (8 * i);
	memcpy(h->token, p + 1 + TW_SHML_HOST_LEN + 8, TW_SHML_TOKEN_LEN);
	return TW_OK;
}

int tw__shml_verdict_decode(const void *buf, size_t len, int *yes)
{
	const uint8_t *p = buf;
	if (buf == NULL || len != 1 || p[0] > 1)
		return TW_EPROTO;
	*yes = p[0];
	return TW_OK;
}
