# merge.awk: turns the TSV of ring_bench, tcp_bench or bench/peers/run.sh
# into the rows of bench/run.sh's comparison, whose columns are those of
# ring_bench:
#
#   section  workload  contender  metric  unit  round  value
#
#   awk -v round=R [-v pinning=P [-v probe=NS]] -f bench/merge.awk FILE...
#
# section is the transport: shm or tcp.  workload is named as in
# ring_bench ("lat 8 B", "bw 64 KiB", "rate 8 B stream"), metric is
# "one-way median", "one-way p99", "bandwidth", "rate" or "preemptions",
# and units are us, GB/s, M/s or count.  Every row gets round R, the
# round of the comparison, since each program ran one round of its own.
# With pinning P (pinned or unpinned: how the program placed its two
# parties), every row gets an eighth column, P; without it, the seven
# columns of the runs before pinning was a choice.  With probe NS as well
# (bench/probe's figure just before the program ran: where the host had
# its two CPUs, in ns, or n/a), a ninth column, NS.
# Rows a program computed (its medians and ratios), what it did not
# measure (nan) and its sanity checks are left out: bench/summarize.awk
# computes the medians and ratios of the whole run.
#
# engine_bench's TSV (and ucx_rma_peer's) has the rows of the comparison
# under the header "esection workload contender metric unit round value";
# they keep their section (eng-tcp, eng-mem) and get round R.
#
# Each file is recognised by its header line, so the files may come in any
# order.  Plain POSIX awk.

BEGIN {
	FS = OFS = "\t"
	if (round == "")
		round = 1
	# The columns that follow value, when there are any.
	tail = pinning == "" ? "" : OFS pinning
	if (pinning != "" && probe != "")
		tail = tail OFS probe
}

FNR == 1 { shape = "" }

/^#/ { next }

# ring_bench: section workload contender metric unit round value.
$1 == "section" && $2 == "workload" { shape = "ring"; next }
# tcp_bench and the peers: contender transport test size round value unit.
$1 == "contender" && $2 == "transport" { shape = "peer"; next }
# engine_bench and peers/ucx_rma_peer: the rows of the comparison already,
# under the header "esection ..." (sections eng-tcp and eng-mem).
$1 == "esection" && $2 == "workload" { shape = "engine"; next }

shape == "engine" && NF == 7 {
	if ($6 !~ /^[0-9]+$/ || !numeric($7))
		next
	print $1, $2, $3, $4, $5, round, $7 tail
	next
}

shape == "ring" && NF == 7 {
	if ($6 !~ /^[0-9]+$/ || !numeric($7) || $2 ~ /^sanity/)
		next
	print "shm", $2, $3, $4, $5, round, $7 tail
	next
}

shape == "peer" && NF == 7 {
	if ($5 !~ /^[0-9]+$/ || !numeric($6))
		next
	t = $3
	if (t == "lat" || t == "lat-median") {
		kind = "lat"; metric = "one-way median"; unit = "us"
	} else if (t == "lat_p99" || t == "lat-p99") {
		kind = "lat"; metric = "one-way p99"; unit = "us"
	} else if (t == "bw") {
		kind = "bw"; metric = "bandwidth"; unit = "GB/s"
	} else if (t == "rate") {
		kind = "rate"; metric = "rate"; unit = "M/s"
	} else {
		next
	}
	w = kind " " size_name($4)
	if (kind == "rate")
		w = w " stream"
	print $2, w, $1, metric, unit, round, $6 tail
	next
}

function numeric(v) {
	return v ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/
}

# 8 -> "8 B", 4096 -> "4 KiB", 1048576 -> "1 MiB", as ring_bench names them.
function size_name(n) {
	n += 0
	if (n >= 1048576 && n % 1048576 == 0)
		return (n / 1048576) " MiB"
	if (n >= 1024 && n % 1024 == 0)
		return (n / 1024) " KiB"
	return n " B"
}
