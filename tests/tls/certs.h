// Certificates for the TLS tests, made at run time by tests/tls/mkcerts.sh
// (the openssl command) in a fresh temporary folder: nothing of them is
// committed.  A test program without the openssl command skips (exit 77)
// with the reason printed.

#ifndef TW_TESTS_TLS_CERTS_H
#define TW_TESTS_TLS_CERTS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef TW_MKCERTS
#error "TW_MKCERTS: the path of tests/tls/mkcerts.sh, set by CMake"
#endif

static char tw_certs_dir[256];

// Removes the folder made by tw_certs_make (registered with atexit by it,
// in the process that made it only).
static pid_t tw_certs_owner;
static void tw_certs_remove(void)
{
	if (tw_certs_dir[0] == '\0' || getpid() != tw_certs_owner)
		return;
	char cmd[300];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tw_certs_dir);
	(void)system(cmd);
}

// Makes the certificates once and returns their folder; exits 77 when the
// openssl command is missing, 1 when the script fails.
static inline const char *tw_certs_make(void)
{
	if (tw_certs_dir[0] != '\0')
		return tw_certs_dir;
	const char *tmp = getenv("TMPDIR");
	snprintf(tw_certs_dir, sizeof(tw_certs_dir), "%s/tw-certs.XXXXXX",
	    tmp != NULL && *tmp != '\0' ? tmp : "/tmp");
	if (mkdtemp(tw_certs_dir) == NULL) {
		perror("mkdtemp");
		exit(1);
	}
	tw_certs_owner = getpid();
	atexit(tw_certs_remove);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "sh '%s' '%s'", TW_MKCERTS, tw_certs_dir);
	int rc = system(cmd);
	if (rc != -1 && WIFEXITED(rc) && WEXITSTATUS(rc) == 77) {
		fprintf(stderr,
		    "skipped: the openssl command is not "
		    "installed (it makes the test certificates)\n");
		exit(77);
	}
	if (rc == -1 || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
		fprintf(stderr, "mkcerts.sh failed\n");
		exit(1);
	}
	return tw_certs_dir;
}

// dir/name, in buf.
static inline const char *tw_cert_path(
    char *buf, size_t cap, const char *dir, const char *name)
{
	snprintf(buf, cap, "%s/%s", dir, name);
	return buf;
}

#endif // TW_TESTS_TLS_CERTS_H
