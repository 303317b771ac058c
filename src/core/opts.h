// The one table of link options: name, default, range and help text.  The
// desc setter validates against it, tagwire --help-config prints it and the
// README documents it, so the three never disagree.

#ifndef TW_CORE_OPTS_H
#define TW_CORE_OPTS_H

#include <stdint.h>

#include <tagwire/link.h>

#define TW_OPT_COUNT (TW_OPT_WINDOW + 1)

typedef struct tw__opt_info {
	const char *name; // as in the enum, without TW_OPT_
	int64_t def;
	int64_t min;
	int64_t max;
	const char *help;
} tw__opt_info;

extern const tw__opt_info tw__opts[TW_OPT_COUNT];

// TW_OK when `value` is legal for `opt`, TW_EINVAL otherwise.
int tw__opt_check(int opt, int64_t value);

#endif // TW_CORE_OPTS_H
