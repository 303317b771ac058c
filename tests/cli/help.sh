# tagwire --help, -h, --version, and a call without a command.
. "$(dirname "$0")/common.sh"

for h in --help -h help; do
	run $h
	expect_rc 0
	expect_err_empty
	expect_out '^usage: tagwire <command>'
	for cmd in info demo perf xfer run --help-config --version; do
		expect_out "^  $cmd "
	done
	expect_out '--parties N'
	expect_out '^usage: tagwire perf '
	expect_out 'TAGWIRE_LOG'
done

run --help demo
expect_rc 0
expect_out '^usage: tagwire demo '
expect_out '--size BYTES'

run demo --help
expect_rc 0
expect_out '^usage: tagwire demo '

for args in '--help perf' 'perf --help' 'perf -h'; do
	run $args
	expect_rc 0
	expect_err_empty
	expect_out '^usage: tagwire perf '
	for opt in --test --transport --sizes --iters --duration --stripes \
		--window --validate --parties --timeout --local --server \
		--bind --client --csv; do
		expect_out "^ +$opt[ ,]"
	done
	expect_out 'dissemination'
	expect_out 'Bruck'
	expect_out 'scatter \+ ring'
done

for args in '--help xfer' 'xfer --help'; do
	run $args
	expect_rc 0
	expect_err_empty
	expect_out '^usage: tagwire xfer '
	for opt in --server --bind --client --op --size --batch --iters \
		--validate --stripes --timeout-ms --forever; do
		expect_out "^ +$opt[ ,]"
	done
done
for args in '--help run' 'run --help' 'run -h'; do
	run $args
	expect_rc 0
	expect_err_empty
	expect_out '^usage: tagwire run '
	for opt in -n --transport --secret-file --link-id; do
		expect_out "^ +$opt "
	done
done
run perf --help
expect_out '^ +--test xfer '

run --version
expect_rc 0
expect_err_empty
expect_out '^tagwire [0-9]+\.[0-9]+\.[0-9]+$'

# No command at all is a usage error, not a silent success.
run
expect_rc 2
expect_out_empty
expect_err '^usage: tagwire'

finish
