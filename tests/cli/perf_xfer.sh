# tagwire perf --test xfer: a short run (--quick) in each format has the
# nixlbench-like columns, every op and transport; a bad option exits 2.
# Behaviour only, never figures.
. "$(dirname "$0")/common.sh"

NUM='[0-9]+(\.[0-9]+)?'

run perf --test xfer --quick --transport mem,tcp,shm-local --validate
expect_rc 0
expect_err_empty
expect_out '^transport +op +block size +batch +stripes +iters +GB/s +avg post µs +p99 post µs +avg compl µs +p99 compl µs$'
for t in mem tcp 'shm-local\(tcp\)'; do
	for op in write read send/recv; do
		expect_out "^$t +$op +4 KiB +1 +1 +10 +$NUM +$NUM +$NUM +$NUM +$NUM$"
		expect_out "^$t +$op +64 KiB +4 +1 +10 "
	done
done
expect_out '^shm-local\(tcp\): tcp:// with TW_OPT_SHM_LOCAL=1'

run perf --test xfer --quick --transport tcp --stripes 1,2,4 --op write \
	--sizes 256K --batch 2 --csv
expect_rc 0
expect_out '^transport,op,block_size,batch_size,stripes,iters,gbps,avg_post_us,p99_post_us,avg_completion_us,p99_completion_us$'
for s in 1 2 4; do
	expect_out "^tcp,write,262144,2,$s,10,$NUM,$NUM,$NUM,$NUM,$NUM$"
done

run perf --test=xfer --quick --transport mem --op read --json
expect_rc 0
expect_out '^\[$'
expect_out '^  \{"transport": "mem", "op": "read", "block_size": 4096, "batch_size": 1, '
expect_out '^\]$'

expect_usage_error perf --test xfer --op fly
expect_usage_error perf --test xfer --transport ring
expect_usage_error perf --test xfer,lat
expect_usage_error perf --test xfer --server
expect_usage_error perf --test xfer --sizes 0

finish
