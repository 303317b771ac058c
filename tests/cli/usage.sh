# Bad command lines: exit 2, nothing on stdout, the reason and a usage line
# on stderr.  The command line is untrusted input: numbers with signs,
# blanks, trailing bytes, overflow or out of range are all refused.
. "$(dirname "$0")/common.sh"

expect_usage_error bogus
expect_err "unknown command 'bogus'"
expect_usage_error --bogus

for n in 0 65 99999 abc -1 +4 ' 4' '4 ' 4x 0x4 1e2 '' \
	18446744073709551616 99999999999999999999999; do
	expect_usage_error demo --parties "$n"
	expect_err '--parties wants a number from 1 to 64'
	expect_usage_error demo "--parties=$n"
done
expect_usage_error demo --parties
expect_err '--parties needs a value'

for s in abc -1 1.5M 2G 1025M 4X 4MB4 '' 18446744073709551615K; do
	expect_usage_error demo --size "$s"
	expect_err '--size wants bytes'
done
expect_usage_error demo --size

expect_usage_error demo --bogus
expect_err "unknown option '--bogus'"
expect_usage_error demo -x
expect_usage_error demo extra
expect_err "unexpected argument 'extra'"
expect_usage_error demo --transport foo
expect_err '--transport wants mem, shm or tcp'
expect_usage_error demo --corrupt nothing
expect_usage_error demo --parties 64 --size 1G
expect_err 'lower --parties or --size'
expect_usage_error demo --shm-local
expect_err '--shm-local is for --transport tcp'
expect_usage_error demo --transport shm --shm-local

# Transports the library does not carry yet are refused clearly.
expect_usage_error demo --transport udp

expect_usage_error info extra
expect_usage_error --help-config extra
expect_usage_error --version extra
expect_usage_error --help bogus

# perf's own command line is checked in perf_usage.sh.
expect_usage_error perf --bogus
expect_err '^usage: tagwire perf '

finish
