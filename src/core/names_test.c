// Unit tests of the names that travel on the wire (names.c): link ids,
// suffixes, party ids, tags, and the keys a link sends under.
//
// The key scheme is what keeps the links and collectives that share one
// connection apart, so the tests below check the separation properties
// (a namespace never matches a longer sibling, a tag may contain any
// separator) and not only the happy path.

#include <limits.h>
#include <string.h>

#include "core/names.h"
#include "testutil.h"

// A string of `n` copies of `c` in a static buffer (n < 1024).
static const char *rep(char c, size_t n)
{
	static char buf[4][1024];
	static int slot;
	char *b = buf[slot++ % 4];
	assert_true(n < sizeof(buf[0]));
	memset(b, c, n);
	b[n] = '\0';
	return b;
}

static void test_link_ids(void **state)
{
	(void)state;
	static const char *const good[] = { "root", "a", "A9", "a.b-c_d",
		"a/b", "root/child/grandchild", "0", "-", "..", "_/_" };
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		if (!tw__valid_link_id(good[i]))
			fail_msg("'%s' rejected", good[i]);
	assert_true(tw__valid_link_id(rep('x', TW_LINK_ID_MAX)));

	// ':', '@' and '!' must never appear in a link id: they end the
	// namespace part of a key.
	static const char *const bad[] = { "", "a//b", "/a", "a/", "/", "//",
		"a:b", "a@b", "a!b", "a b", "a\tb", "a\n", "a,b", "a=b",
		"a\\b", "\xc3\xa4", "a*", "a?b" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (tw__valid_link_id(bad[i]))
			fail_msg("'%s' accepted", bad[i]);
	assert_false(tw__valid_link_id(NULL));
	assert_false(tw__valid_link_id(rep('x', TW_LINK_ID_MAX + 1)));
	assert_int_equal(TW_LINK_ID_MAX, 200);

	// 200 bytes with slashes inside is still fine; a slash that makes
	// it 201 is not.
	char id[TW_LINK_ID_MAX + 2];
	memset(id, 'a', sizeof(id));
	id[100] = '/';
	id[TW_LINK_ID_MAX] = '\0';
	assert_true(tw__valid_link_id(id));
	id[TW_LINK_ID_MAX] = 'a';
	id[TW_LINK_ID_MAX + 1] = '\0';
	assert_false(tw__valid_link_id(id));
}

static void test_suffixes(void **state)
{
	(void)state;
	assert_true(tw__valid_suffix("child"));
	assert_true(tw__valid_suffix("c.1-x_y"));
	assert_true(tw__valid_suffix(rep('s', TW_LINK_ID_MAX)));
	// A suffix is one part: the '/' is added by the library.
	assert_false(tw__valid_suffix("a/b"));
	assert_false(tw__valid_suffix("/a"));
	assert_false(tw__valid_suffix(""));
	assert_false(tw__valid_suffix(NULL));
	assert_false(tw__valid_suffix("a:b"));
	assert_false(tw__valid_suffix("a@b"));
	assert_false(tw__valid_suffix("a!b"));
	assert_false(tw__valid_suffix(rep('s', TW_LINK_ID_MAX + 1)));
}

static void test_party_ids(void **state)
{
	(void)state;
	assert_true(tw__valid_party_id("p0"));
	assert_true(tw__valid_party_id("alice.host-1_b"));
	assert_true(tw__valid_party_id(rep('p', TW_PARTY_ID_MAX)));
	assert_int_equal(TW_PARTY_ID_MAX, 64);
	assert_false(tw__valid_party_id(rep('p', TW_PARTY_ID_MAX + 1)));
	assert_false(tw__valid_party_id(""));
	assert_false(tw__valid_party_id(NULL));
	assert_false(tw__valid_party_id("a/b"));
	assert_false(tw__valid_party_id("a b"));
	assert_false(tw__valid_party_id("a=b"));
	assert_false(tw__valid_party_id("a,b"));
	assert_false(tw__valid_party_id("a:b"));
}

static void test_tags(void **state)
{
	(void)state;
	// The empty tag is legal.
	assert_true(tw__valid_tag(""));
	assert_true(tw__valid_tag("t"));
	assert_true(tw__valid_tag(rep('t', 255)));
	assert_int_equal(TW_TAG_MAX, 255);
	assert_false(tw__valid_tag(rep('t', 256)));
	assert_false(tw__valid_tag(rep('t', 1000)));
	assert_false(tw__valid_tag(NULL));
	// The length behind the check: past the limit for what is refused.
	assert_int_equal(tw__tag_len(NULL), TW_TAG_MAX + 1);
	assert_int_equal(tw__tag_len(""), 0);
	assert_int_equal(tw__tag_len(rep('t', TW_TAG_MAX)), TW_TAG_MAX);
	assert_int_equal(
	    tw__tag_len(rep('t', TW_TAG_MAX + 7)), TW_TAG_MAX + 1);
	// Tags are opaque bytes: separators and spaces are fine, because the
	// kind of a key is decided before the tag starts.
	assert_true(tw__valid_tag("a:b@c!d/e f"));
	assert_true(tw__valid_tag("\xff\x01"));
}

static void test_key_build(void **state)
{
	(void)state;
	char key[TW_KEY_MAX];
	tw__key_msg(key, "root", "t");
	assert_string_equal(key, "root:t");
	tw__key_msg(key, "root/c", "");
	assert_string_equal(key, "root/c:");
	tw__key_coll(key, "root", "bcast", 3, "t");
	assert_string_equal(key, "root@bcast.3:t");
	tw__key_ctl(key, "root", "ack");
	assert_string_equal(key, "root!ack");

	// The longest names and the longest collective key fit whole: a
	// truncated key could collide with another link's.
	char ns[TW_LINK_ID_MAX + 1], tag[TW_TAG_MAX + 1], want[1024];
	snprintf(ns, sizeof(ns), "%s", rep('n', TW_LINK_ID_MAX));
	snprintf(tag, sizeof(tag), "%s", rep('t', TW_TAG_MAX));
	tw__key_msg(key, ns, tag);
	snprintf(want, sizeof(want), "%s:%s", ns, tag);
	assert_string_equal(key, want);
	// From lengths: the same key, ended, whatever the buffer held.
	memset(key, 'x', sizeof(key));
	tw__key_msg_n(key, ns, strlen(ns), tag, strlen(tag));
	assert_string_equal(key, want);
	memset(key, 'x', sizeof(key));
	tw__key_msg_n(key, "root/c", 6, "", 0);
	assert_string_equal(key, "root/c:");
	tw__key_coll(key, ns, "allgather", UINT_MAX, tag);
	snprintf(want, sizeof(want), "%s@allgather.%u:%s", ns, UINT_MAX, tag);
	assert_string_equal(key, want);
	tw__key_ctl(key, ns, "hello");
	snprintf(want, sizeof(want), "%s!hello", ns);
	assert_string_equal(key, want);
}

static void test_key_kinds(void **state)
{
	(void)state;
	char key[TW_KEY_MAX];
	tw__key_ctl(key, "root/c", "ack");
	assert_true(tw__key_is_ctl(key));
	tw__key_msg(key, "root", "x");
	assert_false(tw__key_is_ctl(key));
	tw__key_coll(key, "root", "barrier", 0, "x");
	assert_false(tw__key_is_ctl(key));
	// A '!' inside a tag does not make a message a control message.
	tw__key_msg(key, "root", "a!b");
	assert_false(tw__key_is_ctl(key));
	tw__key_coll(key, "root", "gather", 1, "!");
	assert_false(tw__key_is_ctl(key));
	assert_false(tw__key_is_ctl(""));
	assert_false(tw__key_is_ctl("root"));
	// Bytes above 127 are neither separators nor the end (the scan
	// indexes a table by the byte: a signed char must not go negative).
	assert_false(tw__key_is_ctl("\xff\x80:!"));
	assert_true(tw__key_is_ctl("\xff\x80!:"));
	assert_false(tw__key_is_ctl("\xa1\xc0\xbf"));
}

static void test_key_in_ns(void **state)
{
	(void)state;
	// A namespace covers its own keys of every kind and its children.
	static const char *const in_a[] = { "a:x", "a:", "a@c.0:x", "a!ack",
		"a/b:x", "a/b/c@g.1:", "a/b!ack" };
	for (size_t i = 0; i < sizeof(in_a) / sizeof(in_a[0]); i++)
		if (!tw__key_in_ns(in_a[i], "a"))
			fail_msg("'%s' not in 'a'", in_a[i]);
	// ...and nothing else, least of all a sibling that starts with the
	// same letters.
	static const char *const out_a[]
	    = { "ab:x", "ab/c:x", "b:a", "", "a", "A:x", "ba:x", "xa:x" };
	for (size_t i = 0; i < sizeof(out_a) / sizeof(out_a[0]); i++)
		if (tw__key_in_ns(out_a[i], "a"))
			fail_msg("'%s' in 'a'", out_a[i]);
	// A child namespace does not cover its parent or its siblings.
	assert_true(tw__key_in_ns("a/b:x", "a/b"));
	assert_true(tw__key_in_ns("a/b/c:x", "a/b"));
	assert_false(tw__key_in_ns("a:x", "a/b"));
	assert_false(tw__key_in_ns("a/c:x", "a/b"));
	assert_false(tw__key_in_ns("a/bc:x", "a/b"));
	// The namespace ends at the first separator, so a tag that looks
	// like a namespace cannot pull a key into another link.
	assert_false(tw__key_in_ns("z:a:x", "a"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_link_ids),
		cmocka_unit_test(test_suffixes),
		cmocka_unit_test(test_party_ids),
		cmocka_unit_test(test_tags),
		cmocka_unit_test(test_key_build),
		cmocka_unit_test(test_key_kinds),
		cmocka_unit_test(test_key_in_ns),
	};
	return cmocka_run_group_tests_name("names", tests, NULL, NULL);
}
