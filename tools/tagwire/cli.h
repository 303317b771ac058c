// The tagwire command-line tool: what its commands share.
//
// Exit codes follow the usual convention of command-line tools, so that
// scripts can tell a broken run from a mistyped command line:
//   0  success;
//   1  the command ran and something failed (a demo check, a write error);
//   2  the command line is wrong, or asks for something not built in.
//
// The command line is untrusted input: every number goes through
// cli_parse_u64, which rejects signs, blanks, trailing bytes, overflow and
// values out of range, and every error names the argument, prints a usage
// line on stderr and exits 2.

#ifndef TW_TOOLS_CLI_H
#define TW_TOOLS_CLI_H

#include <stdint.h>
#include <stdio.h>

enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

// Prints the tool's full help (commands, demo and perf options,
// environment).
void cli_help(FILE *f);

// Prints "tagwire: <cmd>: <message>" and the usage line of `cmd` (NULL for
// the tool itself) on stderr, and returns CLI_USAGE.
int cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// Parses a decimal number in [min, max].  With `units` non-zero, a suffix
// K, M or G (optionally followed by "iB" or "B") multiplies by 1024,
// 1024^2 or 1024^3.  Returns 0 and sets *out, or -1 for anything else
// (*out is then untouched).
int cli_parse_u64(
    const char *s, uint64_t min, uint64_t max, int units, uint64_t *out);

// Finds n distinct ports of `host` that are free now, drawn from below the
// kernel's ephemeral range so that no outgoing connection takes one before
// a party binds it.  Returns 0, or -1 with a message on stderr.
int cli_free_ports(const char *host, unsigned *ports, size_t n);

// Writes `n` bytes as "512 B", "4 MiB" or "3.5 MiB" into buf[cap].
void cli_fmt_bytes(char *buf, size_t cap, uint64_t n);

// The commands; argv[0] is the command name, as for main().
int cli_info(int argc, char **argv);
int cli_help_config(int argc, char **argv);
int cli_demo(int argc, char **argv);
int cli_perf(int argc, char **argv);
int cli_xfer(int argc, char **argv);
int cli_run(int argc, char **argv);

// The demo's usage (options and the transports it can run).
void cli_demo_help(FILE *f);

// The usage line of perf, and its full help (options, modes).
#define CLI_PERF_USAGE                                                        \
	"usage: tagwire perf [--test LIST] [--transport LIST] [--sizes "      \
	"LIST]\n"                                                             \
	"                    [--iters N | --duration S] [--validate] "        \
	"[--csv | --json]\n"                                                  \
	"                    [--local | --server [--bind ADDR] | --client "   \
	"HOST[:PORT]]"
void cli_perf_help(FILE *f);

// The usage line of xfer, and its full help (xfer.c).
#define CLI_XFER_USAGE                                                        \
	"usage: tagwire xfer --server [--bind ADDR] [--forever] | --client "  \
	"HOST:PORT\n"                                                         \
	"                    [--op write|read|send] [--size BYTES] [--batch " \
	"N]\n"                                                                \
	"                    [--iters N] [--validate] [--stripes N] "         \
	"[--window N]\n"                                                      \
	"                    [--chunk BYTES] [--timeout-ms MS]"
void cli_xfer_help(FILE *f);

// The usage line of run, and its full help (run.c).
#define CLI_RUN_USAGE                                                         \
	"usage: tagwire run -n N [--transport tcp|shm] [--secret-file "       \
	"FILE]\n"                                                             \
	"                   [--link-id ID] [--rendezvous] -- PROG [ARGS...]"
void cli_run_help(FILE *f);

// The pattern of the transfer tests: fills buf[off, off+len) with the
// bytes of iteration `iter` at those offsets; check finds the first byte
// that differs (-1, with its offset, the byte expected and the one found)
// or returns 0.
void cli_xfer_fill(void *buf, size_t off, size_t len, uint64_t iter);
int cli_xfer_check(const void *buf, size_t off, size_t len, uint64_t iter,
    size_t *bad, unsigned *want, unsigned *got);

// Little-endian 64-bit words, for the small records commands exchange.
static inline void cli_put64(unsigned char *p, uint64_t v)
{
	for (int k = 0; k < 8; k++)
		p[k] = (unsigned char)(v >> (8 * k));
}

static inline uint64_t cli_get64(const unsigned char *p)
{
	uint64_t v = 0;
	for (int k = 0; k < 8; k++)
		v |= (uint64_t)p[k] << (8 * k);
	return v;
}

// The splitmix64 finaliser, for byte patterns that tell messages apart:
// every input bit changes half the output bits.
#define CLI_GOLDEN 0x9e3779b97f4a7c15ull
static inline uint64_t cli_mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

#endif // TW_TOOLS_CLI_H
