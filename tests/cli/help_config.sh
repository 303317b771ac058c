# tagwire --help-config lists every option of the library's table with its
# default, range and help.  The option names come from the table's source
# (the second argument), so an option added there is checked here at once.
. "$(dirname "$0")/common.sh"
OPTS_C=${2:?usage: sh help_config.sh tagwire src/core/opts.c}

# The table's designators, "[TW_OPT_NAME]", wherever the formatting puts
# them; "[TW_OPT_COUNT]" is the array's size, not an option.
names=$(grep -o '\[TW_OPT_[A-Z0-9_]*\]' "$OPTS_C" |
	sed 's/^\[TW_OPT_\(.*\)\]$/\1/' | grep -v '^COUNT$' | sort -u)
count=$(printf '%s\n' "$names" | grep -c .)

run --help-config
expect_rc 0
expect_err_empty
if [ "$count" -lt 9 ]; then
	fail "found only $count options in $OPTS_C"
fi
expect_out "^tagwire link options \\($count\\)"
for n in $names; do
	expect_out "^TW_OPT_$n\$"
	# The line after the name gives the default and the range, and the
	# one after that starts the help text.
	awk -v name="TW_OPT_$n" '
		$0 == name { at = NR }
		at && NR == at + 1 && /^    default -?[0-9]+.*, range -?[0-9]+.* \.\. [0-9]+/ { ok1 = 1 }
		at && NR == at + 2 && /^    [a-z0-9]/ { ok2 = 1 }
		END { exit !(ok1 && ok2) }' "$TMP/out" ||
		fail "TW_OPT_$n lacks its default, range or help line"
done
listed=$(grep -c '^TW_OPT_' "$TMP/out")
[ "$listed" -eq "$count" ] || fail "$listed options listed, $count in the table"

# Spot-check values against the documented defaults.
expect_out '^    default 60000, range -1 \.\. '
expect_out '^    default 1048576 \(1 MiB\), range 4096 \(4 KiB\) \.\. '

finish
