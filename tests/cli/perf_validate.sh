# tagwire perf --validate finds a wrong byte: with the hidden test hook
# TAGWIRE_PERF_CORRUPT=1 the sending side flips one byte of its first
# message, and the run fails with exit status 1, names the test and the
# first wrong byte, and stops.  Without the hook the same runs pass.
. "$(dirname "$0")/common.sh"

HEX='0x[0-9a-f]{2}'
for t in mem shm tcp ring; do
	for test in lat bw rate; do
		run perf --transport $t --test $test --sizes 1K --iters 4 \
			--validate
		expect_rc 0
		expect_out "^$t +$test +1 KiB +4 +2 "

		run_env TAGWIRE_PERF_CORRUPT=1 perf --transport $t \
			--test $test --sizes 1K --iters 4 --validate
		expect_rc 1
		expect_err "^tagwire perf: $t $test 1 KiB: validation failed: message 0, byte 512 of 1024 is $HEX, expected $HEX\$"
		expect_no_out "^$t "
	done
done

for t in mem shm tcp; do
	run_env TAGWIRE_PERF_CORRUPT=1 perf --transport $t --test coll \
		--sizes 100 --iters 3 --parties 3 --validate
	expect_rc 1
	expect_err "^tagwire perf: $t allgather 100 B, 3 parties: validation failed: allgather 0, the block of rank 0, byte 50 of 100 is $HEX, expected $HEX\$"
	# The barrier, which carries no data, ran before.
	expect_out "^$t +barrier +0 B +3 +3 "
	expect_no_out "^$t +allgather "
done

# The run stops at the first failure: later transports do not start.
run_env TAGWIRE_PERF_CORRUPT=1 perf --transport ring,mem --test bw \
	--sizes 8 --iters 2 --validate --csv
expect_rc 1
expect_err '^tagwire perf: ring bw 8 B: validation failed: '
expect_no_out '^mem,'

# Without --validate nothing checks the bytes: the hook proves that the
# check is what fails the run.
run_env TAGWIRE_PERF_CORRUPT=1 perf --transport shm --test bw --sizes 1K \
	--iters 4
expect_rc 0

finish
