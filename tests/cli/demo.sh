# tagwire demo [ARGS...]: exits 0, every phase of the report is ok, and the
# report ends with "all checks passed".
. "$(dirname "$0")/common.sh"
shift

run demo "$@"
expect_rc 0
expect_out '^tagwire demo: [0-9]+ part(y|ies) over (mem|shm|tcp):// ?(\(shm-local\))?, link "demo"$'
for phase in 'mesh formed' 'point-to-point' 'barrier' \
	'broadcast \(every root\)' 'gather \(every root\)' 'allgather' \
	'scatter \(every root\)' 'bulk exchange' 'child links' 'close'; do
	expect_out "^  $phase .* ok +[0-9]+\\.[0-9] ms"
done
expect_no_out 'FAILED'
expect_out '^all checks passed \([1-9][0-9]* checks\)$'
# Every party took part in forming the mesh and in closing it.
n=$(sed -n 's/^tagwire demo: \([0-9]*\) part.*/\1/p' "$TMP/out")
expect_out "^  mesh formed +$n/$n parties "
expect_out "^  close +$n/$n parties "

finish
