// tcp:// fault tests over the public API: parties in processes of their
// own, each test a ctest entry (tcpfault_NAME runs `tcpfault NAME SIZE`).
// The files: exitcreate.c, lifecycle.c, bigmsg.c, stream.c, dial.c,
// reconnect.c; the tests that speak the wire themselves are in wire.c
// (tcpfault_wire).

#include <stdio.h>
#include <string.h>

#include "parts.h"
#include "testutil.h"
#include "tf.h"

const char *tf_size_arg = "0";

static const tf_role roles[] = {
	{ "exit_child", role_exit_child },
	{ "exit_retry_peer", role_exit_retry_peer },
	{ "exit_idle_peer", role_exit_idle_peer },
	{ "exit_stranger", role_exit_stranger },
	{ "closer", role_closer },
	{ "big_send", role_big_send },
	{ "big_recv", role_big_recv },
	{ "abort_send", role_abort_send },
	{ "abort_recv", role_abort_recv },
	{ "abort_recv_into", role_abort_recv_into },
	{ "busy", role_busy },
	{ "acks", role_acks },
	{ "mix", role_mix },
	{ "dial_a", role_dial_a },
	{ "dial_b", role_dial_b },
	{ "rc_stream", role_rc_stream },
	{ "rc_chat", role_rc_chat },
};

int main(int argc, char **argv)
{
	int handled;
	int rc = tf_run_role(
	    argc, argv, roles, sizeof(roles) / sizeof(roles[0]), &handled);
	if (handled)
		return rc;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_exit_after_failed_create_wrong_secret),
		cmocka_unit_test(test_exit_after_failed_create_no_peer),
		cmocka_unit_test(test_exit_after_failed_create_pending_send),
		cmocka_unit_test(test_exit_after_failed_create_stranger),
		cmocka_unit_test(test_last_link_closes_port),
		cmocka_unit_test(test_abort_during_create),
		cmocka_unit_test(test_big_message_heartbeat),
		cmocka_unit_test(test_big_message_abort),
		cmocka_unit_test(test_big_message_abort_into),
		cmocka_unit_test(test_busy_peer_heartbeat),
		cmocka_unit_test(test_striped_acks_no_heartbeat_s3),
		cmocka_unit_test(test_striped_acks_no_heartbeat_s1),
		cmocka_unit_test(test_stripes_mixed_stream),
		cmocka_unit_test(test_dial_independent),
		cmocka_unit_test(test_reconnect_kills_plain),
		cmocka_unit_test(test_reconnect_kills_striped),
		cmocka_unit_test(test_reconnect_kills_tls),
		cmocka_unit_test(test_reconnect_then_sigkill),
	};
	if (argc < 2) {
		fprintf(stderr, "usage: %s TEST [SIZE]\n", argv[0]);
		return 1;
	}
	if (argc > 2)
		tf_size_arg = argv[2];
	if (tw_test_select(
	        tests, sizeof(tests) / sizeof(tests[0]), "test_", argv[1])
	    != 0)
		return 1;
	return cmocka_run_group_tests(tests, NULL, NULL);
}
