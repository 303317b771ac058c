// Validation of the names that travel on the wire (link ids, suffixes,
// party ids, tags) and construction of the keys a link sends under.
//
// Keys: "<ns>:<tag>" for messages, "<ns>@<coll>.<round>:<tag>" for
// collectives, "<ns>!<ctl>" for control.  Link ids draw from
// [A-Za-z0-9._-] and '/', so the first of ':', '@', '!' after the namespace
// always tells the kind of key and keys of different links never meet.

#ifndef TW_CORE_NAMES_H
#define TW_CORE_NAMES_H

#include <stdbool.h>
#include <stddef.h>

#define TW_LINK_ID_MAX 200
#define TW_PARTY_ID_MAX 64
#define TW_TAG_MAX 255
// The longest key a link builds: namespace, kind, collective, round, tag.
#define TW_KEY_MAX (TW_LINK_ID_MAX + 32 + TW_TAG_MAX + 1)

bool tw__valid_link_id(const char *id);
bool tw__valid_suffix(const char *s);
bool tw__valid_party_id(const char *id);
bool tw__valid_tag(const char *tag);
// A tag's length, or TW_TAG_MAX + 1 when it is not valid (NULL, or too
// long): tw__valid_tag for a caller that goes on to use the length.
size_t tw__tag_len(const char *tag);

// Does `key` belong to namespace `ns` or one of its children?
bool tw__key_in_ns(const char *key, const char *ns);

// Is `key` a control key ("<ns>!...")?
bool tw__key_is_ctl(const char *key);

// Writes "<ns>:<tag>" into key[TW_KEY_MAX].  Inputs must be valid.
void tw__key_msg(char *key, const char *ns, const char *tag);
// The same from lengths the caller knows (ns_len <= TW_LINK_ID_MAX,
// tag_len <= TW_TAG_MAX): no scan of either.
void tw__key_msg_n(
    char *key, const char *ns, size_t ns_len, const char *tag, size_t tag_len);
// Writes "<ns>@<coll>.<round>:<tag>".
void tw__key_coll(char *key, const char *ns, const char *coll, unsigned round,
    const char *tag);
// Writes "<ns>!<ctl>".
void tw__key_ctl(char *key, const char *ns, const char *ctl);

#endif // TW_CORE_NAMES_H
