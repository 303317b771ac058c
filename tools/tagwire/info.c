// tagwire info: what this build of tagwire carries.  Everything printed is
// read from the library itself (version, transport registry, option table,
// name limits) or from how this tool was compiled, so the output can be
// pasted into a bug report as it is.

#include <stdio.h>
#include <string.h>

#include <tagwire/tagwire.h>

#include "cli.h"
#include "core/names.h"
#include "core/opts.h"
#include "transport/transport.h"

#define TW_CLI_STR_(x) #x
#define TW_CLI_STR(x) TW_CLI_STR_(x)

#ifndef TW_CLI_SANITIZE
#define TW_CLI_SANITIZE ""
#endif
#ifndef TW_CLI_BUILD_TYPE
#define TW_CLI_BUILD_TYPE ""
#endif

// Every scheme tagwire defines (the README lists them, ucx:// planned);
// the ones missing from the registry are listed as not built in.
static const char *const all_schemes[] = { "mem", "shm", "tcp", "ucx" };

static int built_in(const char *scheme)
{
	for (const char *const *n = tw__transport_names(); *n != NULL; n++)
		if (strcmp(*n, scheme) == 0)
			return 1;
	return 0;
}

static const char *level_name(int level)
{
	static const char *const names[]
	    = { "none", "error", "warn", "info", "debug", "trace" };
	if (level < 0 || level > TW_LOG_TRACE)
		return "?";
	return names[level];
}

// Appends "<sep>NAME://" to line[cap]; stops quietly when it is full,
// which only clips the listing.
static void add_scheme(char *line, size_t cap, size_t *used, const char *n)
{
	if (*used >= cap)
		return;
	int k = snprintf(
	    line + *used, cap - *used, "%s%s://", *used ? " " : "", n);
	*used = k < 0 ? cap : *used + (size_t)k;
}

static void row(const char *key, const char *value)
{
	printf("  %-13s %s\n", key, value);
}

int cli_info(int argc, char **argv)
{
	if (argc > 1)
		return cli_usage_error(
		    "info", "unexpected argument '%.64s'", argv[1]);
	char line[256];
	size_t used = 0;

	printf("tagwire %s\n", tw_version());

	line[0] = '\0';
	for (const char *const *n = tw__transport_names(); *n != NULL; n++)
		add_scheme(line, sizeof(line), &used, *n);
	row("transports:", line);

	used = 0;
	line[0] = '\0';
	for (size_t i = 0; i < sizeof(all_schemes) / sizeof(all_schemes[0]);
	     i++)
		if (!built_in(all_schemes[i]))
			add_scheme(line, sizeof(line), &used, all_schemes[i]);
	row("not built in:", used ? line : "(none)");

	row("collectives:", "barrier broadcast gather allgather scatter");
	row("child links:", "spawn (same parties), sub (a subset of ranks)");
	row("engine:",
	    "tagged send/recv, WRITE, READ, notifications over mem tcp; "
	    "host memory (no GPU)");

	snprintf(line, sizeof(line),
	    "error warn info debug trace (TAGWIRE_LOG; now %s)",
	    level_name(tw_log_level()));
	row("log levels:", line);

	snprintf(line, sizeof(line), "%d link options (tagwire --help-config)",
	    TW_OPT_COUNT);
	row("options:", line);

	snprintf(line, sizeof(line),
	    "tags <= %d bytes, link ids <= %d, party ids <= %d", TW_TAG_MAX,
	    TW_LINK_ID_MAX, TW_PARTY_ID_MAX);
	row("limits:", line);

	snprintf(line, sizeof(line), "C%ld, %s%s%s",
	    (__STDC_VERSION__ / 100) % 100,
#if defined(__clang__)
	    // __clang_version__ may carry a vendor suffix and a blank.
	    "clang " TW_CLI_STR(__clang_major__) "." TW_CLI_STR(
	        __clang_minor__) "." TW_CLI_STR(__clang_patchlevel__),
#elif defined(__GNUC__)
	    "gcc " __VERSION__,
#else
	    "unknown compiler",
#endif
	    TW_CLI_BUILD_TYPE[0] ? ", " : "", TW_CLI_BUILD_TYPE);
	row("build:", line);
	row("sanitizers:", TW_CLI_SANITIZE[0] ? TW_CLI_SANITIZE : "none");
	return CLI_OK;
}
