# tagwire info: version, transports and features.
. "$(dirname "$0")/common.sh"

run --version
version=$(sed -n 's/^tagwire //p' "$TMP/out")

run info
expect_rc 0
expect_err_empty
expect_out "^tagwire $version\$"
expect_out '^  transports: +.*mem://'
expect_out '^  not built in: '
expect_out '^  collectives: +barrier broadcast gather allgather scatter$'
expect_out '^  log levels: +error warn info debug trace'
expect_out '^  options: +[0-9]+ link options'
expect_out '^  sanitizers: '

# The level shown is the one in force.
run_env TAGWIRE_LOG=debug info
expect_rc 0
expect_out '^  log levels: .*now debug'

finish
