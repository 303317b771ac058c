# tagwire run: the environment each process gets (ranks, parties, size,
# secret, link id), the "[RANK] " prefix on stdout and stderr, a real link
# between the processes (Python, over tcp and shm), the exit status of the
# first process to fail and the end of the others, signals forwarded, and
# bad command lines.
#
# Usage: sh run.sh path/to/tagwire [path/to/build/python]
# Processes that must wait for one another meet at a FIFO, never after a
# fixed time.
. "$(dirname "$0")/common.sh"

PYDIR=${2:-}
LAUNCHER=

cleanup() {
	[ -n "$LAUNCHER" ] && kill "$LAUNCHER" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

# expect_line FILE LINE: FILE has LINE, exactly (no pattern).
expect_line() {
	grep -F -x -q -e "$2" "$TMP/$1" || fail "no line of std$1 is '$2'"
}

# count FILE ERE: how many lines of FILE match.
count() {
	grep -E -c -e "$2" "$TMP/$1"
}

# expect_gone PID...: no process has these pids any more.
expect_gone() {
	for p in "$@"; do
		kill -0 "$p" 2>/dev/null && fail "process $p is still running"
	done
	return 0
}

# --- the environment and the prefixes -------------------------------------

run run -n 3 -- sh -c 'echo "rank=$TAGWIRE_RANK size=$TAGWIRE_SIZE parties=$TAGWIRE_PARTIES"; echo "err=$TAGWIRE_RANK" >&2'
expect_rc 0
for r in 0 1 2; do
	expect_out "^\[$r\] rank=$r size=3 parties=tcp://127\.0\.0\.1:[0-9]+,tcp://127\.0\.0\.1:[0-9]+,tcp://127\.0\.0\.1:[0-9]+$"
	expect_line err "[$r] err=$r"
done
[ "$(count out .)" -eq 3 ] || fail "stdout does not have 3 lines"
[ "$(count err .)" -eq 3 ] || fail "stderr does not have 3 lines"
expect_no_out 'err='
grep -q 'rank=' "$TMP/err" && fail "a stdout line went to stderr"
# One list for all, of three different ports.
[ "$(sed 's/.*parties=//' "$TMP/out" | sort -u | wc -l)" -eq 1 ] ||
	fail "the processes were given different parties"
[ "$(sed -n '1s/.*parties=//p' "$TMP/out" | tr , '\n' | sort -u | wc -l)" -eq 3 ] ||
	fail "the parties' addresses are not distinct"

# A last line without a newline is printed with one; an empty line keeps
# its prefix; a line over 64 KiB is split.
run run -n 1 -- sh -c 'printf "a\n\nno newline"; printf "x\ny" >&2'
expect_rc 0
expect_line out "[0] a"
expect_line out "[0] "
expect_line out "[0] no newline"
expect_line err "[0] x"
expect_line err "[0] y"
[ "$(count out .)" -eq 3 ] || fail "stdout does not have 3 lines"
run run -n 1 -- sh -c 'head -c 100000 /dev/zero | tr "\000" a; echo'
expect_rc 0
[ "$(awk '{ print length($0) }' "$TMP/out" | tr '\n' ' ')" = "65540 34468 " ] ||
	fail "a line of 100000 bytes was not printed as 65536 and 34464"

# shm:// addresses, one per rank, named after the launcher.
run run -n 2 --transport shm -- sh -c 'echo "$TAGWIRE_PARTIES"'
expect_rc 0
expect_out '^\[0\] shm://run[0-9]+\.p0,shm://run[0-9]+\.p1$'
expect_out '^\[1\] shm://run[0-9]+\.p0,shm://run[0-9]+\.p1$'

# --rendezvous: rank 0's address in TAGWIRE_ROOT, the same for all, and no
# address list (even one in the launcher's own environment).
run_env TAGWIRE_PARTIES=tcp://127.0.0.1:1 run -n 3 --rendezvous -- sh -c 'echo "root=$TAGWIRE_ROOT parties=${TAGWIRE_PARTIES-unset} size=$TAGWIRE_SIZE"'
expect_rc 0
expect_out '^\[0\] root=tcp://127\.0\.0\.1:[0-9]+ parties=unset size=3$'
[ "$(sed 's/^\[[012]\] //' "$TMP/out" | sort -u | wc -l)" -eq 1 ] ||
	fail "the ranks were given different roots"

# The link id: root unless --link-id says otherwise.
run run -n 1 -- sh -c 'echo "id=$TAGWIRE_LINK_ID"'
expect_line out "[0] id=root"
run run -n 2 --link-id jobs/a-1.x -- sh -c 'echo "id=$TAGWIRE_LINK_ID"'
expect_rc 0
expect_line out "[0] id=jobs/a-1.x"
expect_line out "[1] id=jobs/a-1.x"

# The secret: by default 32 random bytes in hex, one for all, new each run.
run run -n 2 -- sh -c 'echo "secret=$TAGWIRE_SECRET"'
expect_rc 0
expect_out '^\[0\] secret=[0-9a-f]{64}$'
[ "$(sed 's/^\[[01]\] //' "$TMP/out" | sort -u | wc -l)" -eq 1 ] ||
	fail "the ranks were given different secrets"
s1=$(sed -n 1p "$TMP/out" | sed 's/^\[[01]\] //')
run run -n 1 -- sh -c 'echo "secret=$TAGWIRE_SECRET"'
[ "[0] $s1" != "$(cat "$TMP/out")" ] || fail "two runs had the same secret"

# --secret-file: the file's bytes, as they are, but for one newline.
printf 'top s3cret, with spaces\n' >"$TMP/secret"
run run -n 2 --secret-file "$TMP/secret" -- sh -c 'printf "[%s]\n" "$TAGWIRE_SECRET"'
expect_rc 0
expect_line out "[0] [top s3cret, with spaces]"
expect_line out "[1] [top s3cret, with spaces]"
printf 'crlf\r\n' >"$TMP/secret"
run run -n 1 --secret-file="$TMP/secret" -- sh -c 'printf "[%s]\n" "$TAGWIRE_SECRET"'
expect_line out "[0] [crlf]"
printf 'no-newline' >"$TMP/secret"
run run -n 1 --secret-file "$TMP/secret" -- sh -c 'printf "[%s]\n" "$TAGWIRE_SECRET"'
expect_line out "[0] [no-newline]"
head -c 1024 /dev/zero | tr '\000' k >"$TMP/secret"
echo >>"$TMP/secret"
run run -n 1 --secret-file "$TMP/secret" -- sh -c 'printf "%s" "$TAGWIRE_SECRET" | wc -c'
expect_rc 0
expect_out '^\[0\] *1024$'

# --- a real link ------------------------------------------------------------

PY=/usr/bin/python3
if [ -z "$PYDIR" ] || ! ls "$PYDIR"/tagwire/_tagwire*.so >/dev/null 2>&1; then
	echo "skip: the Python module is not built (no $PYDIR/tagwire/_tagwire*.so): no link test"
elif [ ! -x "$PY" ]; then
	echo "skip: no $PY: no link test"
else
	for t in tcp shm; do
		run_env PYTHONPATH="$PYDIR" run -n 3 --transport $t -- "$PY" -c 'import tagwire; d,r=tagwire.Desc.from_env(); l=tagwire.create(d,r); print(l.all_gather(bytes([r]))); l.close()'
		expect_rc 0
		for r in 0 1 2; do
			expect_line out "[$r] [b'\\x00', b'\\x01', b'\\x02']"
		done
	done
	# No address list: the parties meet through rank 0.
	run_env PYTHONPATH="$PYDIR" run -n 4 --rendezvous -- "$PY" -c 'import tagwire; d,r=tagwire.Desc.from_env(); l=tagwire.create(d,r); print(l.world_size, l.all_gather(bytes([r]))); l.close()'
	expect_rc 0
	for r in 0 1 2 3; do
		expect_line out "[$r] 4 [b'\\x00', b'\\x01', b'\\x02', b'\\x03']"
	done
fi

# --- failures -----------------------------------------------------------------

mkfifo "$TMP/fifo" || fail "mkfifo"

# The first process to fail ends the run with its status, at once: rank 1
# exits 3 once rank 0 is asleep, and ranks 0 and 2 are stopped.
t0=$(date +%s)
run_env RUN_FIFO="$TMP/fifo" run -n 3 -- sh -c '
	case $TAGWIRE_RANK in
	0) echo "pid=$$"; echo go >"$RUN_FIFO"; exec sleep 1000 ;;
	1) read x <"$RUN_FIFO"; exit 3 ;;
	*) echo "pid=$$"; exec sleep 1000 ;;
	esac'
t1=$(date +%s)
expect_rc 3
expect_err '^tagwire run: rank 1 \(pid [0-9]+\) exited with status 3; stopping the others$'
grep -q SIGKILL "$TMP/err" && fail "the sleepers needed SIGKILL"
[ $((t1 - t0)) -lt 3 ] || fail "the run took $((t1 - t0)) s to end"
expect_out '^\[0\] pid=[0-9]+$'
expect_gone $(sed -n 's/^\[[02]\] pid=//p' "$TMP/out")

# A process killed by a signal: 128 + the signal.
run run -n 2 -- sh -c '[ "$TAGWIRE_RANK" = 1 ] && kill -9 $$; exec sleep 1000'
expect_rc 137
expect_err '^tagwire run: rank 1 \(pid [0-9]+\) was killed by signal 9 \(SIGKILL\)'

# A process that ignores SIGTERM gets SIGKILL after the grace period.
run_env RUN_FIFO="$TMP/fifo" run -n 2 -- sh -c '
	if [ "$TAGWIRE_RANK" = 0 ]; then
		trap "" TERM; echo "pid=$$"; echo go >"$RUN_FIFO"; exec sleep 1000
	fi
	read x <"$RUN_FIFO"; exit 1'
expect_rc 1
expect_err '^tagwire run: rank 1 .* exited with status 1'
expect_err '^tagwire run: 1 process\(es\) still running 3 s after SIGTERM: sending SIGKILL$'
expect_gone $(sed -n 's/^\[0\] pid=//p' "$TMP/out")

# PROG that cannot be run: 127, and a message that names it.
run run -n 2 -- "$TMP/no such program" arg
expect_rc 127
expect_err "^\[[01]\] tagwire run: cannot run '$TMP/no such program': "
expect_err '^tagwire run: rank [01] .* exited with status 127'

# Rank 0 reads a piped standard input; the others read /dev/null.
LAST="run -n 2 -- sh -c 'read l; echo got:\$l' (stdin: a pipe)"
echo hello | "$TAGWIRE" run -n 2 -- sh -c 'read l; echo "got:$l"' >"$TMP/out" 2>"$TMP/err"
RC=$?
expect_rc 0
expect_line out "[0] got:hello"
expect_line out "[1] got:"

# --- signals ------------------------------------------------------------------

# SIGINT, SIGTERM and SIGHUP sent to the launcher alone reach every
# process: each traps it, says so and exits 0.
for sig in TERM INT HUP; do
	LAST="run -n 3 (SIG$sig to the launcher)"
	# Emptied here: the shell opens the launcher's files only once it
	# has forked, after the first look at them.
	: >"$TMP/out"
	: >"$TMP/err"
	"$TAGWIRE" run -n 3 -- sh -c '
		trap "echo got $0; kill \$sp; exit 0" '$sig'
		sleep 1000 & sp=$!
		echo ready
		wait' $sig >"$TMP/out" 2>"$TMP/err" &
	LAUNCHER=$!
	i=0
	while [ "$(count out 'ready$')" -lt 3 ] && [ $i -lt 400 ]; do
		kill -0 "$LAUNCHER" 2>/dev/null || break
		# Polls the launcher's output: not every rank is ready yet.
		sleep 0.05
		i=$((i + 1))
	done
	[ "$(count out 'ready$')" -eq 3 ] || fail "the processes never got ready"
	kill -$sig "$LAUNCHER"
	wait "$LAUNCHER"
	RC=$?
	LAUNCHER=
	expect_rc 0
	for r in 0 1 2; do
		expect_line out "[$r] got $sig"
	done
done

# --- the command line --------------------------------------------------------

expect_usage_error run
expect_err "missing '--' before PROG"
expect_usage_error run -n 2
expect_err "missing '--' before PROG"
expect_usage_error run -n 2 --
expect_err "missing PROG after '--'"
expect_usage_error run -- sh -c 'echo started'
expect_err 'give -n N'
expect_usage_error run -n 2 --transport shm --rendezvous -- sh -c 'echo started'
expect_err '--rendezvous is for tcp'
for n in 0 1025 99999 abc -1 +4 ' 4' 4x '' 18446744073709551616; do
	expect_usage_error run -n "$n" -- sh -c 'echo started'
	expect_err '-n wants a number from 1 to 1024'
	expect_usage_error run "-n=$n" -- sh -c 'echo started'
done
expect_usage_error run -n
expect_err '-n needs a value'
expect_usage_error run -n -- sh -c 'echo started'
expect_err '-n needs a value'
expect_usage_error run -n 2 --transport mem -- sh -c 'echo started'
expect_err '--transport wants tcp or shm'
expect_usage_error run -n 2 --transport -- sh -c 'echo started'
expect_err '--transport needs a value'
expect_usage_error run -n 2 --bogus -- sh -c 'echo started'
expect_err "unknown option '--bogus'"
expect_usage_error run -n 2 sh -c 'echo started'
expect_err "unexpected argument 'sh'"
for id in '' 'a b' '/a' 'a//b' 'a:b'; do
	expect_usage_error run -n 2 --link-id "$id" -- sh -c 'echo started'
	expect_err '--link-id wants'
done
expect_usage_error run -n 2 --secret-file "$TMP/absent" -- sh -c 'echo started'
expect_err "cannot read the secret file '$TMP/absent': No such file"
expect_usage_error run -n 2 --secret-file "$TMP" -- sh -c 'echo started'
expect_err 'cannot read the secret file'
: >"$TMP/secret"
expect_usage_error run -n 2 --secret-file "$TMP/secret" -- sh -c 'echo started'
expect_err 'holds no bytes'
echo >"$TMP/secret"
expect_usage_error run -n 2 --secret-file "$TMP/secret" -- sh -c 'echo started'
expect_err 'holds no bytes'
head -c 1025 /dev/zero | tr '\000' k >"$TMP/secret"
expect_usage_error run -n 2 --secret-file "$TMP/secret" -- sh -c 'echo started'
expect_err 'more than 1024 bytes'
printf 'a\000b' >"$TMP/secret"
expect_usage_error run -n 2 --secret-file "$TMP/secret" -- sh -c 'echo started'
expect_err 'NUL byte'

# Whatever the command line, a clean exit: never a signal.
long=$(head -c 20000 /dev/zero | tr '\000' x)
for args in '-' '--=' '-n=' '-n=2' '--link-id=' '--secret-file=' "$long" \
	"-n=$long" "--link-id=$long"; do
	run run "$args" -- true
	[ "$RC" -le 2 ] || fail "exit status $RC"
done

run run --help
expect_rc 0
expect_err_empty
expect_out '^usage: tagwire run -n N '
for opt in -n --transport --secret-file --link-id; do
	expect_out "^ +$opt "
done
run --help run
expect_rc 0
expect_out '^usage: tagwire run -n N '

finish
