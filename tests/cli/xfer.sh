# tagwire xfer: a server on 127.0.0.1 (port 0: a free one, which it
# prints) and clients for every op, with --validate and several sizes and
# batches; both ends must exit 0 and say "data validation passed".  Then a
# bad command line (exit 2) and a client that nobody answers (exit 1,
# within its timeout).  The tests wait for the server's "listening on"
# line, never for a fixed time.
. "$(dirname "$0")/common.sh"

SERVER=

# start_server [ARGS]: a server in the background; ADDR is its address
# once it printed "listening on".
start_server() {
	: >"$TMP/sout"
	"$TAGWIRE" xfer --server --bind tcp://127.0.0.1:0 --timeout-ms 20000 \
		"$@" >"$TMP/sout" 2>"$TMP/serr" &
	SERVER=$!
	ADDR=
	i=0
	while [ -z "$ADDR" ] && [ $i -lt 200 ]; do
		ADDR=$(sed -n 's/^server: listening on tcp:\/\/\(127\.0\.0\.1:[0-9][0-9]*\) .*$/\1/p' "$TMP/sout")
		if [ -z "$ADDR" ]; then
			kill -0 "$SERVER" 2>/dev/null || break
			# Polls the server's output: it has not said it yet.
			sleep 0.05
		fi
		i=$((i + 1))
	done
	[ -n "$ADDR" ] || fail "the server never said where it listens"
}

# wait_server STATUS: the server ends with STATUS.
wait_server() {
	wait "$SERVER"
	src=$?
	SERVER=
	if [ "$src" -ne "$1" ]; then
		echo "--- server stdout:"
		cat "$TMP/sout"
		echo "--- server stderr:"
		cat "$TMP/serr"
		fail "the server exited with $src, expected $1"
	fi
}

cleanup() {
	[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT

# one OP SIZE BATCH ITERS [ARGS]: a server and a validating client.
one() {
	op=$1 size=$2 batch=$3 iters=$4
	shift 4
	start_server "$@"
	[ -n "$ADDR" ] || return
	run xfer --client "$ADDR" --op "$op" --size "$size" --batch "$batch" \
		--iters "$iters" --validate --timeout-ms 20000 "$@"
	expect_rc 0
	expect_err_empty
	expect_out '^client: connected to xfer-server '
	expect_out '^client: memory descriptor received '
	expect_out "^client: $op(s|/recv)?s?: [0-9]+ posted, [0-9]+ completed"
	expect_out '^client: bytes moved: .* GB/s'
	expect_out '^client: data validation passed'
	wait_server 0
	grep -q '^server: connection accepted from xfer-client-' "$TMP/sout" ||
		fail "$op: the server did not say it accepted the client"
	grep -q '^server: buffer registered: ptr=0x[0-9a-f]* bytes=' \
		"$TMP/sout" || fail "$op: the server did not register"
	if [ "$op" != read ]; then
		grep -q '^server: data validation passed' "$TMP/sout" ||
			fail "$op $size x$batch: the server did not validate"
	fi
}

for op in write read send; do
	one $op 1 1 1
	one $op 4K 1 3
	one $op 1000 7 2
	one $op 1M 4 2
	one $op 3M 2 1 --chunk 64K --window 8
done
one write 256K 8 2 --stripes 2
one send 100K 3 2 --stripes 4

# TAGWIRE_DEBUG=1: the descriptor and a probe of the first bytes.
start_server
if [ -n "$ADDR" ]; then
	run_env TAGWIRE_DEBUG=1 xfer --client "$ADDR" --op read --size 64K \
		--validate --timeout-ms 20000
	expect_rc 0
	expect_out '^client: memory descriptor \(48 bytes\):'
	expect_out '^client: probe, the first bytes received \(16 bytes\):'
	wait_server 0
fi

# Bad usage: exit 2, nothing on stdout, a usage line on stderr.
expect_usage_error xfer
expect_usage_error xfer --server --client 127.0.0.1:1
expect_usage_error xfer --client 127.0.0.1:1 --op fly
expect_usage_error xfer --client 127.0.0.1:1 --size 0
expect_usage_error xfer --client 127.0.0.1:1 --batch x
expect_usage_error xfer --client nohostport
expect_usage_error xfer --server --size 1M
expect_usage_error xfer --client 127.0.0.1:1 --bind tcp://127.0.0.1:0
expect_usage_error xfer --bogus

# Nobody listens: the client fails (exit 1) with the library's status,
# within its connect timeout.  A free port: one the kernel just gave a
# server that then exited.
start_server
run xfer --client "$ADDR" --op write --size 1K --timeout-ms 20000
wait_server 0
t0=$(date +%s)
run xfer --client "$ADDR" --timeout-ms 2000
t1=$(date +%s)
expect_rc 1
expect_err '^tagwire xfer: client: cannot connect to tcp://127\.0\.0\.1:[0-9]+: TW_'
[ $((t1 - t0)) -le 10 ] || fail "the client took $((t1 - t0)) s to give up"

finish
