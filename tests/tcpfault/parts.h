// The tests and child roles of the tcpfault programs, by file.  A role
// runs in a child process (tf_spawn) and gets the arguments after its name;
// it returns the child's exit status (0: it did what it must).

#ifndef TW_TESTS_TCPFAULT_PARTS_H
#define TW_TESTS_TCPFAULT_PARTS_H

#include <stddef.h>

typedef struct tf_role {
	const char *name;
	int (*fn)(int argc, char **argv);
} tf_role;

// Runs the role argv[2] when argv[1] is TF_CHILD_FLAG: *handled is set
// and the role's status returned.
int tf_run_role(
    int argc, char **argv, const tf_role *roles, size_t n, int *handled);

// exitcreate.c
int role_exit_child(int argc, char **argv);
int role_exit_retry_peer(int argc, char **argv);
int role_exit_idle_peer(int argc, char **argv);
int role_exit_stranger(int argc, char **argv);
void test_exit_after_failed_create_wrong_secret(void **state);
void test_exit_after_failed_create_no_peer(void **state);
void test_exit_after_failed_create_pending_send(void **state);
void test_exit_after_failed_create_stranger(void **state);

// lifecycle.c
int role_closer(int argc, char **argv);
void test_last_link_closes_port(void **state);
void test_abort_during_create(void **state);

// bigmsg.c
int role_big_send(int argc, char **argv);
int role_big_recv(int argc, char **argv);
int role_abort_send(int argc, char **argv);
int role_abort_recv(int argc, char **argv);
int role_abort_recv_into(int argc, char **argv);
int role_busy(int argc, char **argv);
void test_big_message_heartbeat(void **state);
void test_big_message_abort(void **state);
void test_big_message_abort_into(void **state);
void test_busy_peer_heartbeat(void **state);

// stream.c
int role_acks(int argc, char **argv);
int role_mix(int argc, char **argv);
void test_striped_acks_no_heartbeat_s3(void **state);
void test_striped_acks_no_heartbeat_s1(void **state);
void test_stripes_mixed_stream(void **state);

// dial.c
int role_dial_a(int argc, char **argv);
int role_dial_b(int argc, char **argv);
void test_dial_independent(void **state);

// reconnect.c
int role_rc_stream(int argc, char **argv);
int role_rc_chat(int argc, char **argv);
void test_reconnect_kills_plain(void **state);
void test_reconnect_kills_striped(void **state);
void test_reconnect_kills_tls(void **state);
void test_reconnect_then_sigkill(void **state);

// The size arguments of the programs' command lines (argv[2]): the
// default of the test that reads it, from CMake, smaller in sanitizer
// builds.
extern const char *tf_size_arg;

#endif // TW_TESTS_TCPFAULT_PARTS_H
