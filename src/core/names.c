#include <stdio.h>
#include <string.h>

#include "core/names.h"

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
	    || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

static bool valid_word(const char *s, size_t max, bool slashes)
{
	if (s == NULL)
		return false;
	size_t n = strnlen(s, max + 1);
	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (name_char(s[i]))
			continue;
		// A '/' separates non-empty parts: never first, last or doubled.
		if (slashes && s[i] == '/' && i > 0 && i + 1 < n
		    && s[i + 1] != '/')
			continue;
		return false;
	}
	return true;
}

bool tw__valid_link_id(const char *id)
{
	return valid_word(id, TW_LINK_ID_MAX, true);
}

bool tw__valid_suffix(const char *s)
{
	return valid_word(s, TW_LINK_ID_MAX, false);
}

bool tw__valid_party_id(const char *id)
{
	return valid_word(id, TW_PARTY_ID_MAX, false);
}

size_t tw__tag_len(const char *tag)
{
	return tag == NULL ? TW_TAG_MAX + 1 : strnlen(tag, TW_TAG_MAX + 1);
}

bool tw__valid_tag(const char *tag)
{
	return tw__tag_len(tag) <= TW_TAG_MAX;
}

bool tw__key_in_ns(const char *key, const char *ns)
{
	size_t n = strlen(ns);
	if (strncmp(key, ns, n) != 0)
		return false;
	char c = key[n];
	return c == ':' || c == '@' || c == '!' || c == '/';
}

// What each byte means to tw__key_is_ctl: 0 a byte of the namespace, else
// the end of the key or the separator that tells the kind.  A table, not
// three comparisons per byte nor strpbrk (whose set-up costs more than
// a short key's scan): every small message asks two or three times.
enum { KEY_END = 1, KEY_DATA, KEY_CTL };
static const unsigned char key_class[256] = {
	['\0'] = KEY_END,
	[':'] = KEY_DATA,
	['@'] = KEY_DATA,
	['!'] = KEY_CTL,
};

bool tw__key_is_ctl(const char *key)
{
	const unsigned char *p = (const unsigned char *)key;
	while (key_class[*p] == 0)
		p++;
	return key_class[*p] == KEY_CTL;
}

// "<a><sep><b>" from their lengths, which fit in key[TW_KEY_MAX]: every
// message builds one, and snprintf's format parsing cost more than the
// rest of a small receive.
static void join_n(
    char *key, const char *a, size_t na, char sep, const char *b, size_t nb)
{
	memcpy(key, a, na);
	key[na] = sep;
	memcpy(key + na + 1, b, nb);
	key[na + 1 + nb] = '\0';
}

void tw__key_msg_n(
    char *key, const char *ns, size_t ns_len, const char *tag, size_t tag_len)
{
	join_n(key, ns, ns_len, ':', tag, tag_len);
}

// join_n of strings, truncated when they do not fit.
static void key_join(char *key, const char *a, char sep, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);
	if (na + 1 + nb >= TW_KEY_MAX) {
		snprintf(key, TW_KEY_MAX, "%s%c%s", a, sep, b); // truncated
		return;
	}
	join_n(key, a, na, sep, b, nb);
}

void tw__key_msg(char *key, const char *ns, const char *tag)
{
	key_join(key, ns, ':', tag);
}

void tw__key_coll(char *key, const char *ns, const char *coll, unsigned round,
    const char *tag)
{
	snprintf(key, TW_KEY_MAX, "%s@%s.%u:%s", ns, coll, round, tag);
}

void tw__key_ctl(char *key, const char *ns, const char *ctl)
{
	key_join(key, ns, '!', ctl);
}
