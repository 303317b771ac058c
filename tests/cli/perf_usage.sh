# tagwire perf: bad command lines are usage errors (exit 2, nothing on
# stdout, the reason and the usage line on stderr), and nothing runs.
. "$(dirname "$0")/common.sh"

# expect_perf_usage PATTERN ARGS...: a usage error whose reason matches.
expect_perf_usage() {
	_why=$1
	shift
	expect_usage_error perf "$@"
	expect_err "$_why"
	expect_err '^usage: tagwire perf '
}

expect_perf_usage "--test wants lat, bw, rate, coll or all, not 'foo'" \
	--test foo
expect_perf_usage "--test wants .* not 'lat2'" --test lat,lat2
expect_perf_usage '--test: an empty item' --test lat,,bw
expect_perf_usage "--transport wants mem, shm, tcp or ring, not 'udp'" \
	--transport udp
expect_perf_usage "--transport wants .* not 'SHM'" --transport mem,SHM

for s in abc -1 2G 1025M 1.5K 4X '' 8,,16 8, ,8 18446744073709551615K; do
	expect_perf_usage '--sizes' --sizes "$s"
done
expect_perf_usage "--sizes wants .* not 'abc'" --sizes 8,abc

for n in 0 -1 abc 1e3 ' 5' 100000001; do
	expect_perf_usage '--iters wants a number from 1 to 100000000' \
		--iters "$n"
	expect_perf_usage '--iters wants' "--iters=$n"
done
for d in 0 0.0001 1.2345 x 3601 -1 .5 1.; do
	expect_perf_usage '--duration wants seconds' --duration "$d"
done
expect_perf_usage '--iters and --duration exclude each other' \
	--iters 5 --duration 1

for v in x -1 1000001; do
	expect_perf_usage '--window wants' --window "$v"
done
for v in 0 65 x; do
	expect_perf_usage '--stripes wants a number from 1 to 64' \
		--stripes "$v"
done
for v in 1 65 0..4 5..3 2...4 x; do
	expect_perf_usage '--parties wants party counts from 2 to 64' \
		--parties "$v"
done
for v in 0 86401 x; do
	expect_perf_usage '--timeout wants seconds' --timeout "$v"
done

# Modes.
expect_perf_usage 'exclude each other' --server --client 127.0.0.1
expect_perf_usage 'exclude each other' --local --server
expect_perf_usage 'exclude each other' --local --client 127.0.0.1
expect_perf_usage '--client needs a value' --client
expect_perf_usage '--client wants HOST or HOST:PORT' --client ''
expect_perf_usage '--client wants HOST or HOST:PORT' --client a:b:c
expect_perf_usage '--client wants HOST or HOST:PORT' --client host:0
expect_perf_usage '--client wants HOST or HOST:PORT' --client host:65536
expect_perf_usage '--client wants HOST or HOST:PORT' --client 'h st:1'
expect_perf_usage '--client runs over tcp only, not shm' \
	--client 127.0.0.1 --transport shm
expect_perf_usage '--client runs two parties' \
	--client 127.0.0.1 --parties 4
expect_perf_usage '--bind goes with --server' --bind tcp://127.0.0.1:0
expect_perf_usage '--bind wants tcp://HOST:PORT' --server --bind 'tcp://a b'
expect_perf_usage '--server runs what its client asks for: give --test' \
	--server --test lat
expect_perf_usage '--server runs .* give --validate' --server --validate
expect_perf_usage '--server runs over tcp only' --server --transport ring
expect_perf_usage '--csv and --json exclude each other' --csv --json

# Runs that cannot work.
expect_perf_usage 'ring has no collectives' --test coll --transport ring
expect_perf_usage 'lower --parties or --sizes' \
	--test coll --parties 64 --sizes 1G

expect_perf_usage "unknown option '--bogus'" --bogus
expect_perf_usage "unexpected argument 'lat'" lat
expect_perf_usage '--sizes needs a value' --sizes

# Help is not an error.
run perf --help
expect_rc 0
expect_err_empty
expect_out '^usage: tagwire perf '

finish
