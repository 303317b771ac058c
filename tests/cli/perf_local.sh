# tagwire perf --local over one transport (the script's argument): small
# runs of every test finish, print their rows, validate every byte, and
# leave no process and no shared-memory segment behind.  Figures are never
# compared with anything: only behaviour is tested.
. "$(dirname "$0")/common.sh"
T=${2:?usage: sh perf_local.sh path/to/tagwire mem|shm|tcp|ring}

# run_alone ARGS...: like run, with the tool started by setsid (where it
# exists), so that any process it leaves behind can be found by the id
# that ps calls "sid"; SID is the tool's pid, which is that id and also
# names its ring segments.
run_alone() {
	LAST="$*"
	if command -v setsid >/dev/null 2>&1; then
		setsid "$TAGWIRE" "$@" >"$TMP/out" 2>"$TMP/err" &
	else
		"$TAGWIRE" "$@" >"$TMP/out" 2>"$TMP/err" &
	fi
	SID=$!
	wait "$SID"
	RC=$?
}

expect_nothing_left() {
	if command -v setsid >/dev/null 2>&1 && command -v ps >/dev/null 2>&1
	then
		left=$(ps -e -o sid= -o pid= -o comm= | awk -v s="$SID" '$1 == s')
		[ -z "$left" ] || fail "processes left behind: $left"
	fi
	for f in /dev/shm/twperf-"$SID"-*; do
		[ -e "$f" ] && fail "segment left behind: $f"
	done
}

NUM='[0-9]+(\.[0-9]+)?'
if [ "$T" = ring ]; then
	TESTS=lat,bw,rate
else
	TESTS=all
fi

# Every test, an empty message, a small one and one of several ring slots
# and tcp:// chunks, with every byte checked.
run_alone perf --transport "$T" --test "$TESTS" --sizes 0,8,200K --iters 5 \
	--parties 2,3 --validate
expect_rc 0
expect_err_empty
expect_nothing_left
for t in lat bw rate; do
	for s in '0 B' '8 B' '200 KiB'; do
		expect_out "^$T +$t +$s +5 +2 "
	done
done
expect_out "^$T +lat +8 B +5 +2 +$NUM +$NUM +$NUM "
expect_out "^$T +bw +200 KiB +5 +2 +- +- +- +$NUM "
if [ "$T" != ring ]; then
	for n in 2 3; do
		expect_out "^$T +barrier +0 B +5 +$n .* +$NUM +dissemination\$"
		expect_out "^$T +allgather +8 B +5 +$n .* +$NUM +bruck\$"
		expect_out "^$T +allgather +200 KiB +5 +$n .* +$NUM +bruck\$"
		expect_out "^$T +broadcast +200 KiB +5 +$n .* +$NUM +binomial\$"
	done

	# The large algorithms, forced at small sizes, with every byte
	# checked; the algorithm column follows.
	export TAGWIRE_COLL_FORCE=large
	run_alone perf --transport "$T" --test coll --sizes 0,8,200K --iters 5 \
		--parties 2,3 --validate
	unset TAGWIRE_COLL_FORCE
	expect_rc 0
	expect_err_empty
	expect_nothing_left
	for n in 2 3; do
		expect_out "^$T +allgather +0 B +5 +$n .* +$NUM +bruck\$"
		expect_out "^$T +allgather +200 KiB +5 +$n .* +$NUM +ring\$"
		expect_out "^$T +broadcast +8 B +5 +$n .* +$NUM +scatter-ring\$"
		expect_out "^$T +broadcast +200 KiB +5 +$n .* +$NUM +scatter-ring\$"
	done
fi

# One iteration (no warm-up), a window that does not divide the count,
# one acknowledgement at the end, and a duration instead of a count.
run_alone perf --transport "$T" --test rate --sizes 8 --iters 1 --csv
expect_rc 0
expect_out "^$T,rate,8,1,2,,,,,$NUM,,\$"
run_alone perf --transport "$T" --test rate --sizes 8 --iters 10 \
	--window 3 --validate
expect_rc 0
expect_out "^$T +rate +8 B +10 +2 "
run_alone perf --transport "$T" --test rate,bw --sizes 8 --iters 10 \
	--window 0 --validate
expect_rc 0
expect_out "^$T +rate +8 B +10 +2 "
run_alone perf --transport "$T" --test lat --sizes 8 --duration 0.05 --csv
expect_rc 0
expect_out "^$T,lat,8,[1-9][0-9]*,2,$NUM,$NUM,$NUM,,,,\$"
expect_nothing_left

# Messages cut into stripes over several connections.
if [ "$T" = tcp ]; then
	run_alone perf --transport tcp --test bw,lat --sizes 3M --iters 3 \
		--stripes 3 --validate
	expect_rc 0
	expect_out '^tcp +bw +3 MiB +3 +2 '

	# TW_OPT_SHM_LOCAL: the same tests once the parties have moved to
	# shared memory, every byte checked.
	run_alone perf --transport tcp --shm-local --test all --sizes 0,8,200K \
		--iters 5 --parties 2,3 --validate
	expect_rc 0
	expect_err_empty
	expect_nothing_left
	for t in lat bw rate; do
		expect_out "^tcp +$t +200 KiB +5 +2 "
	done
	expect_out "^tcp +allgather +200 KiB +5 +3 .* +$NUM +bruck\$"
fi

finish
