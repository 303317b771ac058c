# tagwire perf: every output format parses, with the same rows.  A small
# run over mem:// (threads, the quickest to start); figures are never
# checked against any value, only for their shape.
. "$(dirname "$0")/common.sh"

ARGS="--transport mem --test all --sizes 8,1K --iters 20 --parties 2,3"
# 3 two-party tests x 2 sizes, and for each of 2 party counts a barrier,
# and an allgather and a broadcast per size.
ROWS=16
NUM='[0-9]+\.[0-9]+' # CSV and JSON: always with decimals
TNUM='[0-9]+(\.[0-9]+)?' # the table drops them from 10000 up

# The table: a header, then aligned rows; "-" where a figure does not
# apply.  stderr is not a terminal here: no progress line.
run perf $ARGS
expect_rc 0
expect_err_empty
expect_out '^transport +test +size +iters +parties +median µs +p99 µs +max µs +GB/s +M msg/s +op µs +algorithm$'
expect_out "^mem +lat +8 B +20 +2 +$TNUM +$TNUM +$TNUM +- +- +-\$"
expect_out "^mem +lat +1 KiB +20 +2 +$TNUM +$TNUM +$TNUM +- +- +-\$"
expect_out "^mem +bw +1 KiB +20 +2 +- +- +- +$TNUM +- +-\$"
expect_out "^mem +rate +8 B +20 +2 +- +- +- +- +$TNUM +-\$"
expect_out "^mem +barrier +0 B +20 +3 +- +- +- +- +- +$TNUM +dissemination\$"
expect_out "^mem +allgather +1 KiB +20 +2 +- +- +- +- +- +$TNUM +bruck\$"
expect_out "^mem +broadcast +8 B +20 +3 +- +- +- +- +- +$TNUM +binomial\$"
n=$(grep -c '^mem ' "$TMP/out")
[ "$n" -eq "$ROWS" ] || fail "$n rows, expected $ROWS"
# Fixed widths: the rows without an algorithm are all as long as the
# header without its last column (whose four "µ" are two bytes each).
h=$(($(head -n 1 "$TMP/out" | wc -c) - 4 - 10))
grep -E '^mem +(lat|bw|rate) ' "$TMP/out" >"$TMP/rows"
while IFS= read -r line; do
	[ "$(printf '%s\n' "$line" | wc -c)" -eq "$h" ] \
		|| fail "a row is not aligned with the header: $line"
done <"$TMP/rows"

# CSV: a header line, then one line per row with as many fields; empty
# fields where a figure does not apply.
run perf $ARGS --csv
expect_rc 0
expect_err_empty
expect_out '^transport,test,size,iters,parties,median_us,p99_us,max_us,gbps,mmsgs,op_us,algorithm$'
expect_out "^mem,lat,8,20,2,$NUM,$NUM,$NUM,,,,\$"
expect_out "^mem,bw,1024,20,2,,,,$NUM,,,\$"
expect_out "^mem,rate,8,20,2,,,,,$NUM,,\$"
expect_out "^mem,barrier,0,20,2,,,,,,$NUM,dissemination\$"
expect_out "^mem,allgather,1024,20,3,,,,,,$NUM,bruck\$"
expect_out "^mem,broadcast,1024,20,2,,,,,,$NUM,binomial\$"
n=$(awk -F, 'NF != 12 { bad++ } END { print bad + 0 }' "$TMP/out")
[ "$n" -eq 0 ] || fail "$n CSV lines without 12 fields"
n=$(($(wc -l <"$TMP/out") - 1))
[ "$n" -eq "$ROWS" ] || fail "$n CSV rows, expected $ROWS"

# JSON: an array of objects with the same keys in every row.
run perf $ARGS --json
expect_rc 0
expect_err_empty
if command -v python3 >/dev/null 2>&1; then
	python3 -m json.tool "$TMP/out" >/dev/null 2>"$TMP/json.err" \
		|| fail "not valid JSON: $(cat "$TMP/json.err")"
	python3 - "$TMP/out" "$ROWS" <<'PY' || fail "the JSON rows are wrong"
import json, sys
rows = json.load(open(sys.argv[1]))
assert isinstance(rows, list) and len(rows) == int(sys.argv[2]), rows
keys = {"transport", "test", "size", "iters", "parties", "median_us",
        "p99_us", "max_us", "gbps", "mmsgs", "op_us", "algorithm"}
for r in rows:
    assert set(r) == keys, r
    assert r["transport"] == "mem" and r["iters"] == 20, r
    fig = {"lat": "median_us", "bw": "gbps", "rate": "mmsgs",
           "barrier": "op_us", "allgather": "op_us",
           "broadcast": "op_us"}[r["test"]]
    assert isinstance(r[fig], float) and r[fig] >= 0, r
    assert (r["algorithm"] is None) == (fig != "op_us"), r
PY
else
	expect_out '^\[$'
	expect_out '^\]$'
	n=$(grep -c '^  {"transport": "mem", "test": "[a-z]*", "size": [0-9]*, ' "$TMP/out")
	[ "$n" -eq "$ROWS" ] || fail "$n JSON rows, expected $ROWS"
fi

# A failed run still closes its array: the rows measured still parse.
run_env TAGWIRE_PERF_CORRUPT=1 perf $ARGS --json --validate
expect_rc 1
expect_out '^\]$'

finish
