// tagwire: the command-line tool.  Dispatches to a command, prints help
// and the version, and holds the helpers every command shares (strict
// number parsing, usage errors, byte formatting).

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tagwire/tagwire.h>

#include "cli.h"

#define USAGE_LINE "usage: tagwire <command> [options]   (tagwire --help)"

void cli_help(FILE *f)
{
	fprintf(f,
	    "usage: tagwire <command> [options]\n"
	    "\n"
	    "tagwire moves tagged messages and bulk data between the "
	    "parties of a\n"
	    "distributed computation.  Commands:\n"
	    "\n"
	    "  info             version, transports and features built "
	    "in\n"
	    "  demo [options]   start local parties, form a mesh, "
	    "exchange messages,\n"
	    "                   run every collective and a bulk "
	    "exchange, and\n"
	    "                   validate every byte (exit 1 if a check "
	    "fails)\n"
	    "  perf [options]   latency, bandwidth, message rate and "
	    "collectives per\n"
	    "                   transport and message size, here or "
	    "between two hosts\n"
	    "  xfer [options]   the transfer test: a server engine and a "
	    "client that\n"
	    "                   write, read or send into its registered "
	    "buffer\n"
	    "  run -n N -- PROG [ARGS...]\n"
	    "                   start N local processes of PROG with the "
	    "TAGWIRE_*\n"
	    "                   variables of tw_desc_from_env; print their "
	    "output line\n"
	    "                   by line with a [RANK] prefix\n"
	    "  --help-config    the link options: name, default, range "
	    "and help\n"
	    "  --version        the version\n"
	    "  --help, -h       this help; 'tagwire --help demo', 'perf', "
	    "'xfer' or 'run'\n"
	    "                   for one command alone\n"
	    "\n");
	cli_demo_help(f);
	fprintf(f, "\n");
	cli_perf_help(f);
	fprintf(f, "\n");
	cli_xfer_help(f);
	fprintf(f, "\n");
	cli_run_help(f);
	fprintf(f,
	    "\n"
	    "environment:\n"
	    "  TAGWIRE_LOG=error|warn|info|debug|trace   library log "
	    "level on stderr\n"
	    "                                            (default warn)\n"
	    "  TAGWIRE_DEBUG=1                           the same as "
	    "TAGWIRE_LOG=debug\n"
	    "\n"
	    "exit status: 0 success, 1 a check or an operation failed, "
	    "2 bad usage;\n"
	    "run: that of the first process to fail.\n");
}

static const char *usage_line(const char *cmd)
{
	if (cmd != NULL && strcmp(cmd, "demo") == 0)
		return "usage: tagwire demo [--parties N] [--transport mem] "
		       "[--size BYTES]";
	if (cmd != NULL && strcmp(cmd, "perf") == 0)
		return CLI_PERF_USAGE;
	if (cmd != NULL && strcmp(cmd, "xfer") == 0)
		return CLI_XFER_USAGE;
	if (cmd != NULL && strcmp(cmd, "run") == 0)
		return CLI_RUN_USAGE;
	if (cmd != NULL && strcmp(cmd, "info") == 0)
		return "usage: tagwire info";
	if (cmd != NULL && strcmp(cmd, "--help-config") == 0)
		return "usage: tagwire --help-config";
	return USAGE_LINE;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "tagwire: ");
	if (cmd != NULL)
		fprintf(stderr, "%s: ", cmd);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s\n", usage_line(cmd));
	return CLI_USAGE;
}

int cli_parse_u64(
    const char *s, uint64_t min, uint64_t max, int units, uint64_t *out)
{
	// strtoull alone would accept blanks, a sign (and negate), "0x" is
	// rejected by base 10 but not what follows; insist on a digit first.
	if (s == NULL || *s < '0' || *s > '9')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0)
		return -1;
	uint64_t mult = 1;
	if (units && *end != '\0') {
		switch (*end) {
		case 'k':
		case 'K':
			mult = 1024;
			break;
		case 'm':
		case 'M':
			mult = 1024 * 1024;
			break;
		case 'g':
		case 'G':
			mult = 1024 * 1024 * 1024;
			break;
		default:
			return -1;
		}
		end++;
		if (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0)
			end += strlen(end);
	}
	if (*end != '\0')
		return -1;
	if (v > UINT64_MAX / mult)
		return -1;
	uint64_t r = (uint64_t)v * mult;
	if (r < min || r > max)
		return -1;
	*out = r;
	return 0;
}

void cli_fmt_bytes(char *buf, size_t cap, uint64_t n)
{
	static const char *const units[] = { "KiB", "MiB", "GiB", "TiB" };
	if (n < 1024) {
		snprintf(buf, cap, "%llu B", (unsigned long long)n);
		return;
	}
	double v = (double)n / 1024;
	uint64_t div = 1024;
	size_t u = 0;
	while (v >= 1024 && u + 1 < sizeof(units) / sizeof(units[0])) {
		v /= 1024;
		div *= 1024;
		u++;
	}
	if (n % div == 0)
		snprintf(buf, cap, "%llu %s", (unsigned long long)(n / div),
		    units[u]);
	else
		snprintf(buf, cap, "%.1f %s", v, units[u]);
}

static int is_help(const char *a)
{
	return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0
	    || strcmp(a, "help") == 0;
}

static int cmd_help(int argc, char **argv)
{
	if (argc == 1) {
		cli_help(stdout);
		return CLI_OK;
	}
	if (argc == 2 && strcmp(argv[1], "demo") == 0) {
		cli_demo_help(stdout);
		return CLI_OK;
	}
	if (argc == 2 && strcmp(argv[1], "perf") == 0) {
		cli_perf_help(stdout);
		return CLI_OK;
	}
	if (argc == 2 && strcmp(argv[1], "xfer") == 0) {
		cli_xfer_help(stdout);
		return CLI_OK;
	}
	if (argc == 2 && strcmp(argv[1], "run") == 0) {
		cli_run_help(stdout);
		return CLI_OK;
	}
	return cli_usage_error(NULL,
	    "--help takes no argument but 'demo', 'perf', 'xfer' or 'run'");
}

static int dispatch(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "tagwire: no command given\n%s\n", USAGE_LINE);
		return CLI_USAGE;
	}
	const char *cmd = argv[1];
	if (is_help(cmd))
		return cmd_help(argc - 1, argv + 1);
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
		if (argc > 2)
			return cli_usage_error(
			    NULL, "--version takes no argument");
		printf("tagwire %s\n", tw_version());
		return CLI_OK;
	}
	if (strcmp(cmd, "--help-config") == 0)
		return cli_help_config(argc - 1, argv + 1);
	if (strcmp(cmd, "info") == 0)
		return cli_info(argc - 1, argv + 1);
	if (strcmp(cmd, "demo") == 0)
		return cli_demo(argc - 1, argv + 1);
	if (strcmp(cmd, "perf") == 0)
		return cli_perf(argc - 1, argv + 1);
	if (strcmp(cmd, "xfer") == 0)
		return cli_xfer(argc - 1, argv + 1);
	if (strcmp(cmd, "run") == 0)
		return cli_run(argc - 1, argv + 1);
	return cli_usage_error(NULL, "unknown command '%.64s'", cmd);
}

int main(int argc, char **argv)
{
	int rc = dispatch(argc, argv);
	// A report that could not be written (a full disk, a closed pipe) is
	// a failure the caller must hear about, not a silent success.
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "tagwire: cannot write the output: %s\n",
		    strerror(errno));
		if (rc == CLI_OK)
			rc = CLI_FAILED;
	}
	return rc;
}
