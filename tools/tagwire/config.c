// tagwire --help-config: prints the library's one table of link options
// (src/core/opts.c) with name, default, range and help.  The tool reads the
// table itself rather than a copy, so the listing can never drift from what
// tw_desc_set accepts.

#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "core/opts.h"

#define WRAP_COL 79
#define HELP_INDENT 4

// Options whose values are bytes get binary units; the others (times,
// counts) get powers of two, which is how their limits are written.
static int is_bytes(const char *name)
{
	return strstr(name, "SIZE") != NULL || strstr(name, "BUFFER") != NULL;
}

static void fmt_value(char *buf, size_t cap, const char *name, int64_t v)
{
	int n = snprintf(buf, cap, "%lld", (long long)v);
	if (n < 0 || (size_t)n >= cap || v < 1024)
		return;
	char extra[32] = "";
	uint64_t u = (uint64_t)v;
	if (is_bytes(name) && u % 1024 == 0) {
		cli_fmt_bytes(extra, sizeof(extra), u);
	} else if ((u & (u - 1)) == 0) {
		int k = 0;
		while ((u >> k) != 1)
			k++;
		snprintf(extra, sizeof(extra), "2^%d", k);
	}
	if (extra[0] != '\0')
		snprintf(buf + n, cap - (size_t)n, " (%s)", extra);
}

// Prints `text` word-wrapped to WRAP_COL, each line indented.
static void print_wrapped(const char *text)
{
	const char *p = text;
	while (*p != '\0') {
		size_t room = WRAP_COL - HELP_INDENT;
		size_t len = strlen(p);
		size_t take = len;
		if (len > room) {
			take = room;
			while (take > 0 && p[take] != ' ')
				take--;
			if (take == 0) // one word longer than a line
				take = room;
		}
		printf("%*s%.*s\n", HELP_INDENT, "", (int)take, p);
		p += take;
		while (*p == ' ')
			p++;
	}
}

int cli_help_config(int argc, char **argv)
{
	if (argc > 1)
		return cli_usage_error(
		    "--help-config", "unexpected argument '%.64s'", argv[1]);
	printf("tagwire link options (%d): set one with "
	       "tw_desc_set(d, TW_OPT_<NAME>, value);\n"
	       "a value outside the range is TW_EINVAL.\n",
	    TW_OPT_COUNT);
	for (int i = 0; i < TW_OPT_COUNT; i++) {
		const tw__opt_info *o = &tw__opts[i];
		char def[64], min[64], max[64];
		fmt_value(def, sizeof(def), o->name, o->def);
		fmt_value(min, sizeof(min), o->name, o->min);
		fmt_value(max, sizeof(max), o->name, o->max);
		printf("\nTW_OPT_%s\n", o->name);
		printf("%*sdefault %s, range %s .. %s\n", HELP_INDENT, "", def,
		    min, max);
		print_wrapped(o->help);
	}
	return CLI_OK;
}
