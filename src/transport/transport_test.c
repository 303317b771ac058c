// The registry's check of transport tables: the built-in transports pass,
// and a table with any entry missing, or of the wrong size, is refused
// with an error line that names what is wrong.  And the receive box's
// receive without waiting (rxbox.h), which tcp:// tries before it reads.

#include <stdbool.h>
#include <string.h>

#include "core/mailbox.h"
#include "testutil.h"
#include "transport/rxbox.h"
#include "transport/transport.h"

extern const tw__transport tw__mem_transport;
extern const tw__transport tw__shm_transport;
extern const tw__transport tw__tcp_transport;

// The last error line logged (one thread logs here).
static char last_line[512];

static void capture(const tw_log_record *rec, void *arg)
{
	(void)arg;
	if (rec->level == TW_LOG_ERROR)
		snprintf(last_line, sizeof(last_line), "%s", rec->msg);
}

static int setup(void **state)
{
	(void)state;
	return tw_log_set_handler(capture, NULL);
}

static int teardown(void **state)
{
	(void)state;
	return tw_log_set_handler(NULL, NULL);
}

// Checks `t` as scheme "mem" and expects a refusal whose line holds `what`.
static void refused(const tw__transport *t, const char *what)
{
	last_line[0] = '\0';
	TW_FAIL(tw__transport_check(t, "mem"), TW_EINVAL);
	if (strstr(last_line, what) == NULL)
		fail_msg("want a line naming '%s', got '%s'", what, last_line);
}

static void t_builtins_pass(void **state)
{
	(void)state;
	last_line[0] = '\0';
	TW_PASS(tw__transport_check(&tw__mem_transport, "mem"));
	TW_PASS(tw__transport_check(&tw__shm_transport, "shm"));
	TW_PASS(tw__transport_check(&tw__tcp_transport, "tcp"));
	assert_string_equal(last_line, "");
	// And the registry, which checked them once, carries all three.
	bool known;
	assert_ptr_equal(
	    tw__transport_find("mem://a", &known), &tw__mem_transport);
	assert_ptr_equal(
	    tw__transport_find("shm://a", &known), &tw__shm_transport);
	assert_ptr_equal(
	    tw__transport_find("tcp://h:1", &known), &tw__tcp_transport);
	const char *const *names = tw__transport_names();
	assert_string_equal(names[0], "mem");
	assert_string_equal(names[1], "shm");
	assert_string_equal(names[2], "tcp");
	assert_null(names[3]);
	// A scheme tagwire defines but does not carry is known, not found.
	assert_null(tw__transport_find("ucx://a", &known));
	assert_true(known);
	assert_null(tw__transport_find("nope://a", &known));
	assert_false(known);
}

// Each xops entry missing in turn.
static void t_xops_entry_missing(void **state)
{
	(void)state;
	static const char *const names[] = { "xops.send", "xops.recv",
		"xops.recv_into", "xops.probe", "xops.abort_ns",
		"xops.close_ns", "xops.open_ns", "xops.unreceived_peak",
		"xops.wait_pending", "xops.ns_entries", "xops.trim" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		tw__chan_xops x = *tw__mem_transport.xops;
		switch (i) {
		case 0:
			x.send = NULL;
			break;
		case 1:
			x.recv = NULL;
			break;
		case 2:
			x.recv_into = NULL;
			break;
		case 3:
			x.probe = NULL;
			break;
		case 4:
			x.abort_ns = NULL;
			break;
		case 5:
			x.close_ns = NULL;
			break;
		case 6:
			x.open_ns = NULL;
			break;
		case 7:
			x.unreceived_peak = NULL;
			break;
		case 8:
			x.wait_pending = NULL;
			break;
		case 9:
			x.ns_entries = NULL;
			break;
		default:
			x.trim = NULL;
			break;
		}
		tw__transport t = tw__mem_transport;
		t.xops = &x;
		refused(&t, names[i]);
	}
}

static void t_transport_entry_missing(void **state)
{
	(void)state;
	tw__transport t = tw__mem_transport;
	t.addr_check = NULL;
	refused(&t, "addr_check");
	t = tw__mem_transport;
	t.open = NULL;
	refused(&t, "open");
	t = tw__mem_transport;
	t.ops = NULL;
	refused(&t, "lacks ops");
	t = tw__mem_transport;
	t.xops = NULL;
	refused(&t, "lacks xops");
	t = tw__mem_transport;
	t.scheme = "shm";
	refused(&t, "scheme is shm");
	t.scheme = NULL;
	refused(&t, "scheme is NULL");
}

// A table built with another tw__chan_xops than this library's.
static void t_xops_size(void **state)
{
	(void)state;
	tw__chan_xops x = *tw__mem_transport.xops;
	tw__transport t = tw__mem_transport;
	t.xops = &x;
	x.size = sizeof(tw__chan_xops) - sizeof(void *);
	refused(&t, "xops table has size");
	x.size = 0;
	refused(&t, "xops table has size");
}

// The public table of the transport's channels: required ops and size.
static void t_channel_ops(void **state)
{
	(void)state;
	tw__transport t = tw__mem_transport;
	tw_channel_ops o = *tw__mem_transport.ops;
	t.ops = &o;
	o.recv = NULL;
	refused(&t, "lacks the required op recv");
	o = *tw__mem_transport.ops;
	o.destroy = NULL;
	refused(&t, "lacks the required op destroy");
	// A built-in table states its size, unlike an old user table.
	o = *tw__mem_transport.ops;
	o.size = 0;
	refused(&t, "ops table has size 0");
	o.size = 3;
	refused(&t, "size 3");
}

// What a receive would return at once, or TW_EAGAIN: never waits.
static void t_rxbox_try_into(void **state)
{
	(void)state;
	tw_mailbox *mb = tw_mailbox_new();
	assert_non_null(mb);
	tw__rxbox rx = { mb, 1 };
	char buf[8];
	size_t len = 0;
	TW_FAIL(
	    tw__rxbox_try_into(&rx, "k", buf, sizeof(buf), &len), TW_EAGAIN);
	TW_PASS(tw_mailbox_push(mb, 2, "k", "other", 5)); // another sender's
	TW_FAIL(
	    tw__rxbox_try_into(&rx, "k", buf, sizeof(buf), &len), TW_EAGAIN);
	TW_PASS(tw_mailbox_push(mb, 1, "k", "hello", 5));
	TW_PASS(tw_mailbox_push(mb, 1, "k", "longer than 8", 13));
	TW_PASS(tw__rxbox_try_into(&rx, "k", buf, sizeof(buf), &len));
	assert_int_equal(len, 5);
	assert_memory_equal(buf, "hello", 5);
	// Too long for the buffer: the size, and the message stays.
	TW_FAIL(
	    tw__rxbox_try_into(&rx, "k", buf, sizeof(buf), &len), TW_ETRUNC);
	assert_int_equal(len, 13);
	TW_PASS(tw_mailbox_probe(mb, 1, "k", &len));
	// Why none will come is news at once too.
	TW_PASS(tw_mailbox_close_from(mb, 1));
	char big[16];
	TW_PASS(tw__rxbox_try_into(&rx, "k", big, sizeof(big), &len));
	assert_int_equal(len, 13);
	TW_FAIL(
	    tw__rxbox_try_into(&rx, "k", big, sizeof(big), &len), TW_EPEER);
	tw_mailbox_free(mb);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_builtins_pass),
		cmocka_unit_test(t_xops_entry_missing),
		cmocka_unit_test(t_transport_entry_missing),
		cmocka_unit_test(t_xops_size),
		cmocka_unit_test(t_channel_ops),
		cmocka_unit_test(t_rxbox_try_into),
	};
	return cmocka_run_group_tests_name(
	    "transport", tests, setup, teardown);
}
