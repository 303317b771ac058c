# coll_plot.gp: the picture of a run of bench/coll_sweep.sh (docs/coll.svg).
#
#   gnuplot -c bench/coll_plot.gp DATA OUT.svg TITLE [SUBTITLE [SIZES]]
#
# DATA is the TSV of bench/coll_sweep.sh (transport parties test size
# algorithm op_us bw_gbps bound_us ratio).  For each transport in it (tcp,
# then shm), a row of two panels, allgather and broadcast: the time per
# call (op_us) against the message size, one line per party count; then,
# for each transport, a row of the same time against the party count, one
# line per size of SIZES (bytes, default "8 32768 524288 8388608", those
# the data holds).  Both axes are logarithmic, since the figures span
# orders of magnitude.  A dashed line of the same colour is the bandwidth
# bound (bound_us) of each line: the bytes each party must receive over the
# one-pair bandwidth of the same run; where the solid line meets it, the
# algorithm moves data as fast as one pair of parties can.

if (ARGC < 3) {
	print "usage: gnuplot -c bench/coll_plot.gp DATA OUT.svg TITLE [SUBTITLE [SIZES]]"
	exit status 2
}
data = ARG1
title = (ARGC >= 4 && ARG4 ne "") ? ARG3 . "\n" . ARG4 : ARG3
want_sizes = (ARGC >= 5 && ARG5 ne "") ? ARG5 : "8 32768 524288 8388608"

set datafile separator "\t"
set datafile columnheaders

# What the data holds: the transports, party counts and sizes, each in
# increasing order, so that a party count or a size keeps its colour from
# panel to panel.
count(cond) = sprintf("stats data using (%s ? 1 : 0) nooutput", cond)
transports = ""
do for [t in "tcp shm"] {
	eval count(sprintf("strcol(1) eq '%s'", t))
	if (STATS_sum > 0) { transports = transports . " " . t }
}
all_parties = ""
do for [k = 1:10] {
	eval count(sprintf("$2 == %d", 2 ** k))
	if (STATS_sum > 0) { all_parties = all_parties . " " . (2 ** k) }
}
all_sizes = ""
do for [k = 0:34] {
	eval count(sprintf("$4 == %.0f", 2.0 ** k))
	if (STATS_sum > 0) { all_sizes = all_sizes . " " . sprintf("%.0f", 2.0 ** k) }
}
sizes = ""
do for [s in want_sizes] {
	eval count(sprintf("$4 == %s", s))
	if (STATS_sum > 0) { sizes = sizes . " " . s }
}
ntr = words(transports)
if (ntr == 0) {
	print "coll_plot.gp: no tcp or shm rows in " . data
	exit status 1
}

# noenhanced: CPU models hold characters (@, _) that enhanced text would
# take for markup.
set terminal svg size 1400,(ntr * 2 * 560 + 120) dynamic noenhanced \
	font "sans,12" background "white"
set output ARG2
set encoding utf8
set datafile missing "NaN"

size_text(b) = (b >= 1048576) ? sprintf("%g MiB", b / 1048576.0) \
	: (b >= 1024) ? sprintf("%g KiB", b / 1024.0) : sprintf("%g B", b)
long_name(t) = (t eq "tcp") ? "tcp:// (loopback)" : (t eq "shm") ? "shm://" : t

colors = "#4e79a7 #f28e2b #e15759 #76b7b2 #59a14f #edc948 #b07aa1 #ff9da7 #9c755f #bab0ac"
# The colour of the i-th word of the list l in the list all.
color_of(w, all) = word(colors, (sum [i = 1:words(all)] (word(all, i) eq w ? i : 0)))

# The rows of transport t and test c, column k where the row is of party
# count n (or size m), NaN elsewhere.
at_n(t, c, n, k) = (strcol(1) eq t && strcol(3) eq c && $2 == n) ? column(k) : NaN
at_m(t, c, m, k) = (strcol(1) eq t && strcol(3) eq c && $4 == m) ? column(k) : NaN

set logscale xy
set grid xtics ytics mytics lc "grey85"
set key outside right top vertical reverse Left samplen 3 spacing 1.1 font ",11"
set ylabel "µs per call"
set format y "%g"
set tmargin 3
set bmargin 4
# The same margins in every panel of a column, whatever the width of its
# key.
col_margins(q) = sprintf("set lmargin at screen %g; set rmargin at screen %g", \
	(q - 1 + 0.12) / 2.0, (q - 1 + 0.74) / 2.0)

# A tic at each size of the data; a size within 4x of the last labelled
# one (16 MiB after 8 MiB) gets a tic without a label, so that the labels
# do not overlap.
size_tics = "set xtics ("
last = 0
do for [i = 1:words(all_sizes)] {
	b = real(word(all_sizes, i))
	size_tics = size_tics . (i > 1 ? ", " : "") . ((last == 0 || b >= 4 * last) \
		? sprintf("'%s' %s", size_text(b), word(all_sizes, i)) \
		: sprintf("'' %s 1", word(all_sizes, i)))
	last = (last == 0 || b >= 4 * last) ? b : last
}
size_tics = size_tics . ") nomirror rotate by 30 right"
party_tics = "set xtics norotate ("
do for [i = 1:words(all_parties)] {
	party_tics = party_tics . (i > 1 ? ", " : "") . word(all_parties, i)
}
party_tics = party_tics . ") nomirror"
# Some room left and right of the first and last figure.
size_range = sprintf("set xrange [%g : %g]", real(word(all_sizes, 1)) / 1.6, \
	real(word(all_sizes, words(all_sizes))) * 1.6)
party_range = sprintf("set xrange [%g : %g]", real(word(all_parties, 1)) / 1.25, \
	real(word(all_parties, words(all_parties))) * 1.25)

set multiplot layout (ntr * 2),2 title title font "sans,15"

# Against the size: one line per party count.
eval size_tics
eval size_range
set xlabel "message size"
do for [tr in transports] {
	do for [q = 1:2] {
		c = word("allgather broadcast", q)
		eval col_margins(q)
		set title sprintf("%s, %s: time per call against size, per party count", long_name(tr), c)
		plot for [p in all_parties] data \
			using (at_n(tr, c, real(p), 4)):(at_n(tr, c, real(p), 6)) \
			with linespoints lw 2 pt 7 ps 0.6 lc rgb color_of(p, all_parties) \
			title sprintf("%s parties", p), \
		     for [p in all_parties] data \
			using (at_n(tr, c, real(p), 4)):(at_n(tr, c, real(p), 8)) \
			with lines lw 1.2 dt 2 lc rgb color_of(p, all_parties) notitle, \
		     NaN with lines lw 1.2 dt 2 lc "grey30" title "bandwidth bound"
	}
}

# Against the party count: one line per size.  The rows of one size lie
# in the blocks of different party counts, so each line is gathered by
# smooth unique (which also orders it by x).
eval party_tics
eval party_range
set xlabel "parties"
set logscale x 2
do for [tr in transports] {
	do for [q = 1:2] {
		c = word("allgather broadcast", q)
		eval col_margins(q)
		set title sprintf("%s, %s: time per call against parties, per size", long_name(tr), c)
		plot for [m in sizes] data \
			using (at_m(tr, c, real(m), 2)):(at_m(tr, c, real(m), 6)) \
			smooth unique with linespoints lw 2 pt 7 ps 0.6 \
			lc rgb color_of(m, sizes) title size_text(real(m)), \
		     for [m in sizes] data \
			using (at_m(tr, c, real(m), 2)):(at_m(tr, c, real(m), 8)) \
			smooth unique with lines lw 1.2 dt 2 lc rgb color_of(m, sizes) notitle, \
		     NaN with lines lw 1.2 dt 2 lc "grey30" title "bandwidth bound"
	}
}

unset multiplot
