# tagwire perf --server / --client over 127.0.0.1: the client's plan runs
# on both ends and the client prints the rows; a wrong byte fails both
# ends; a missing peer is a failed run (exit 1) with the library's status
# name.  The server binds port 0 (a free port, which it prints) and every
# wait is bounded, by --timeout and by the loop below.
. "$(dirname "$0")/common.sh"

SERVER=

# start_server: a server in the background on a free port; PORT is its
# port once it says it is waiting (which it does before it listens: the
# client retries its connection until then).
start_server() {
	: >"$TMP/serr"
	"$TAGWIRE" perf --server --bind tcp://127.0.0.1:0 --timeout 15 \
		>"$TMP/sout" 2>"$TMP/serr" &
	SERVER=$!
	PORT=
	i=0
	while [ -z "$PORT" ] && [ $i -lt 100 ]; do
		PORT=$(sed -n 's/^tagwire perf: waiting for a client on tcp:\/\/127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p' "$TMP/serr")
		[ -n "$PORT" ] || sleep 0.1
		i=$((i + 1))
	done
	[ -n "$PORT" ] || fail "the server never said where it waits"
}

# wait_server STATUS: the server ends with STATUS.
wait_server() {
	wait "$SERVER"
	src=$?
	SERVER=
	[ "$src" -eq "$1" ] || {
		echo "--- server stderr:"
		cat "$TMP/serr"
		fail "the server exited with $src, expected $1"
	}
}

cleanup() {
	[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

NUM='[0-9]+(\.[0-9]+)?'

start_server
run perf --client "127.0.0.1:$PORT" --test all --sizes 8,200K --iters 5 \
	--validate --stripes 2 --timeout 15
expect_rc 0
expect_err_empty
for t in lat bw rate; do
	expect_out "^tcp +$t +8 B +5 +2 "
	expect_out "^tcp +$t +200 KiB +5 +2 "
done
expect_out "^tcp +lat +8 B +5 +2 +$NUM +$NUM +$NUM "
expect_out "^tcp +barrier +0 B +5 +2 .* +$NUM +dissemination\$"
expect_out "^tcp +allgather +8 B +5 +2 .* +$NUM +bruck\$"
expect_out "^tcp +allgather +200 KiB +5 +2 .* +$NUM +bruck\$"
expect_out "^tcp +broadcast +200 KiB +5 +2 .* +$NUM +binomial\$"
wait_server 0
grep -q '^tagwire perf: a client connected; running 11 measurements$' \
	"$TMP/serr" || fail "the server did not say what it runs"
[ ! -s "$TMP/sout" ] || fail "the server wrote on stdout"

# A byte flipped by the client is found by the server, which fails, and
# the client says what the server found.
start_server
run_env TAGWIRE_PERF_CORRUPT=1 perf --client "127.0.0.1:$PORT" --test bw \
	--sizes 1K --iters 4 --validate --json --timeout 15
expect_rc 1
expect_out '^\]$'
expect_err '^tagwire perf: the other end failed: tcp bw 1 KiB: validation failed: message 0, byte 512 of 1024 is 0x[0-9a-f]{2}, expected 0x[0-9a-f]{2}$'
wait_server 1
grep -q 'tcp bw 1 KiB: validation failed: message 0, byte 512 ' \
	"$TMP/serr" || fail "the server did not report the wrong byte"

# Nobody there: the client gives up after its timeout; so does a server
# that no client reaches.
PORT=$(sed -n 's/.*127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/serr" | head -n 1)
run perf --client "127.0.0.1:$PORT" --timeout 1 --test lat --iters 1
expect_rc 1
expect_err "^tagwire perf: cannot reach the server at tcp://127.0.0.1:$PORT: tw_link_create: TW_ETIMEDOUT "
run perf --server --bind 127.0.0.1:0 --timeout 1
expect_rc 1
expect_err '^tagwire perf: waiting for a client on tcp://127\.0\.0\.1:[0-9]+$'
expect_err '^tagwire perf: no client: tw_link_create: TW_ETIMEDOUT '

finish
