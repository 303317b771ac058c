# plot.gp: the picture of a comparison run of bench/run.sh (docs/perf.svg).
#
#   gnuplot -c bench/plot.gp DATA OUT.svg TITLE [SUBTITLE [PANELS [PINNINGS]]]
#
# DATA is the output of `awk -v mode=plot -f bench/summarize.awk`: three
# blocks (latency, bandwidth, rate), each with a header line and one line
# per section and contender: the label, each workload's median, then each
# workload's ratio to its baseline.  Three panels of grouped bars, one group
# per contender and one bar per message size, on log scales because the
# contenders lie orders of magnitude apart; the number over a bar is its
# ratio to the baseline of the same run, the figure that carries over to
# other machines.
#
# PANELS 4 (default 3) adds a fourth panel from DATA's fourth block: the
# transfer engine's bandwidth (sections eng-tcp and eng-mem), one group per
# contender, bars for 1 MiB, 16 MiB and the batch of 1024 WRITEs of 4 KiB.
#
# PINNINGS, e.g. "pinned unpinned", names the pinnings of DATA in the order
# of its blocks (summarize.awk's pinnings): a column of panels each, side
# by side, so that a row compares one metric pinned and unpinned.  Without
# it DATA has one block per panel and the picture one column.

if (ARGC < 3) {
	print "usage: gnuplot -c bench/plot.gp DATA OUT.svg TITLE [SUBTITLE [PANELS [PINNINGS]]]"
	exit status 2
}
data = ARG1
title = (ARGC >= 4 && ARG4 ne "") ? ARG3 . "\n" . ARG4 : ARG3
panels = (ARGC >= 5 && ARG5 eq "4") ? 4 : 3
pins = (ARGC >= 6) ? ARG6 : ""
ncol = (words(pins) > 0) ? words(pins) : 1

# noenhanced: CPU models hold characters (@, _) that enhanced text would
# take for markup.
set terminal svg size 1100 * ncol,(panels == 4 ? 1800 : 1350) dynamic noenhanced \
	font "sans,12" background "white"
set output ARG2
set encoding utf8
set datafile separator "\t"
set datafile missing "NaN"
# The labels' plots must skip the header line as the bars' plots do.
set datafile columnheaders

set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set key outside right top vertical
set grid ytics mytics lc "grey80"
set xtics rotate by 30 right nomirror
set ytics nomirror
set tmargin 3
set bmargin 6
# The same margins in every panel of a column, whatever the width of its
# key.
col_margins(q) = sprintf("set lmargin at screen %g; set rmargin at screen %g", \
	(q - 1 + 0.08) / ncol, (q - 1 + 0.82) / ncol)
# The title of a panel of column q: the pinning first, when there are any.
pin_title(q, t) = (words(pins) > 0) ? word(pins, q) . ": " . t : t
# Room for the ratios above the highest bar.
set autoscale yfixmax
set offsets 0, 0, graph 0.35, 0

# The centre of bar j (1..n) of group i (0-based) in a clustered histogram
# of n bars per group and gap 1.
bar_x(i, j, n) = i + (j - (n + 1) / 2.0) / (n + 1)
ratio_text(r) = (r >= 100) ? sprintf("%.0fx", r) \
	: (r >= 10) ? sprintf("%.1fx", r) : sprintf("%.2fx", r)
# A label sits just above its bar; a missing ratio (NaN) has none.
lab_y(v, r) = (r == r && v == v && v > 0) ? v * 1.12 : NaN
lab_t(r) = (r == r) ? ratio_text(r) : ""

colors = "#4e79a7 #f28e2b #59a14f"

# For the panel of block b: the groups fill the width; a dashed line
# parts the groups of shm from those of tcp, under the sections' names.
sections(b) = sprintf("stats data index %d using (strcol(1)[1:4] eq 'shm ' ? 1 : 0) nooutput; \
	nshm = STATS_sum; set xrange [-0.6 : STATS_records - 0.4]; \
	unset arrow; unset label; \
	set arrow from nshm - 0.5, graph 0 to nshm - 0.5, graph 1 nohead dt 2 lc 'grey40'; \
	set label 'shared memory' at -0.5, graph 0.94 left font ',11'; \
	set label 'TCP on loopback' at nshm - 0.4, graph 0.94 left font ',11'", b)

# The same for the engine panel: eng-tcp's groups, then eng-mem's.
eng_sections(b) = sprintf("stats data index %d using (strcol(1)[1:8] eq 'eng-tcp ' ? 1 : 0) nooutput; \
	ntcp = STATS_sum; set xrange [-0.6 : STATS_records - 0.4]; \
	unset arrow; unset label; \
	set arrow from ntcp - 0.5, graph 0 to ntcp - 0.5, graph 1 nohead dt 2 lc 'grey40'; \
	set label 'engine over tcp://127.0.0.1 (UCX over tcp)' at -0.5, graph 0.94 left font ',11'; \
	set label 'engine over mem:// (UCX over sm)' at ntcp - 0.4, graph 0.94 left font ',11'", b)

# A block without figures (summarize.awk leaves it without lines, e.g. a
# pinning whose programs all failed) leaves its place in the picture
# empty: stats then leaves STATS_records undefined.
probe(b) = sprintf("set autoscale y; set autoscale yfixmax; undefine STATS_*; \
	stats data index %d using (1) nooutput", b)

# One y range for the panels of row p, whose blocks hold figures in
# columns 2 to nw + 1, so that pinned and unpinned read against one scale:
# from the decade below the row's smallest figure to above its largest,
# with the room for the ratios that the offsets give a panel of its own.
# A row without figures keeps the autoscale.  stats leaves out values
# outside a fixed range, so every stats runs autoscaled, and a panel gets
# the row's range (set_range) just before it plots.
row_range(p, nw) = sprintf("set autoscale y; set autoscale yfixmax; \
	ylo = NaN; yhi = NaN; yr_lo = NaN; \
	do for [qq = 1:ncol] { do for [k = 2:%d] { \
		undefine STATS_*; \
		stats data index %d * ncol + qq - 1 using k nooutput; \
		if (exists('STATS_min')) { \
			ylo = (ylo == ylo && ylo < STATS_min) ? ylo : STATS_min; \
			yhi = (yhi == yhi && yhi > STATS_max) ? yhi : STATS_max } } }; \
	if (ylo == ylo && ylo > 0) { \
		yr_lo = 10 ** floor(log10(ylo)); \
		span = log10(yhi) - log10(yr_lo); span = (span < 1) ? 1 : span; \
		yr_hi = 10 ** (log10(yhi) + 0.35 * span) }", nw + 1, p)
set_range = "if (yr_lo == yr_lo) { set yrange [yr_lo : yr_hi] }"

set logscale y
set multiplot layout panels,ncol title title font "sans,15"

# Block b of DATA: panel p (0-based), column q (1-based).
eval row_range(0, 2)
do for [q = 1:ncol] {
	b = 0 * ncol + q - 1
	eval probe(b)
	if (!exists("STATS_records")) {
		set multiplot next
	} else {
		eval col_margins(q)
		eval sections(b)
		eval set_range
		set title pin_title(q, "One-way latency, median (lower is better); over the bars: ratio to bare ring (shm) or raw-busy-poll (tcp)")
		set ylabel "µs"
		plot data index b using 2:xtic(1) title columnheader(2) lc rgb word(colors, 1), \
			'' index b using 3 title columnheader(3) lc rgb word(colors, 2), \
			'' index b using (bar_x($0, 1, 2)):(lab_y($2, $4)):(lab_t($4)) \
				with labels rotate by 90 left font ",9" notitle, \
			'' index b using (bar_x($0, 2, 2)):(lab_y($3, $5)):(lab_t($5)) \
				with labels rotate by 90 left font ",9" notitle
	}
}

eval row_range(1, 3)
do for [q = 1:ncol] {
	b = 1 * ncol + q - 1
	eval probe(b)
	if (!exists("STATS_records")) {
		set multiplot next
	} else {
		eval col_margins(q)
		eval sections(b)
		eval set_range
		set title pin_title(q, "Bandwidth (higher is better); over the bars: ratio to memcpy (shm) or raw-blocking (tcp)")
		set ylabel "GB/s (1e9 B/s)"
		plot data index b using 2:xtic(1) title columnheader(2) lc rgb word(colors, 1), \
			'' index b using 3 title columnheader(3) lc rgb word(colors, 2), \
			'' index b using 4 title columnheader(4) lc rgb word(colors, 3), \
			'' index b using (bar_x($0, 1, 3)):(lab_y($2, $5)):(lab_t($5)) \
				with labels rotate by 90 left font ",9" notitle, \
			'' index b using (bar_x($0, 2, 3)):(lab_y($3, $6)):(lab_t($6)) \
				with labels rotate by 90 left font ",9" notitle, \
			'' index b using (bar_x($0, 3, 3)):(lab_y($4, $7)):(lab_t($7)) \
				with labels rotate by 90 left font ",9" notitle
	}
}

eval row_range(2, 1)
do for [q = 1:ncol] {
	b = 2 * ncol + q - 1
	eval probe(b)
	if (!exists("STATS_records")) {
		set multiplot next
	} else {
		eval col_margins(q)
		eval sections(b)
		eval set_range
		set title pin_title(q, "Message rate, 8 B messages (higher is better); over the bars: ratio to bare ring (shm) or raw-blocking (tcp)")
		set ylabel "million messages/s"
		plot data index b using 2:xtic(1) title columnheader(2) lc rgb word(colors, 1), \
			'' index b using (bar_x($0, 1, 1)):(lab_y($2, $3)):(lab_t($3)) \
				with labels rotate by 90 left font ",9" notitle
	}
}

if (panels == 4) {
	eval row_range(3, 3)
	do for [q = 1:ncol] {
		b = 3 * ncol + q - 1
		eval probe(b)
		if (!exists("STATS_records")) {
			set multiplot next
		} else {
			eval col_margins(q)
			eval eng_sections(b)
			eval set_range
			set title pin_title(q, "Transfer engine, bandwidth, one transfer in flight (higher is better); over the bars: ratio to raw-ack or memcpy")
			set ylabel "GB/s (1e9 B/s)"
			plot data index b using 2:xtic(1) title columnheader(2) lc rgb word(colors, 1), \
				'' index b using 3 title columnheader(3) lc rgb word(colors, 2), \
				'' index b using 4 title columnheader(4) lc rgb word(colors, 3), \
				'' index b using (bar_x($0, 1, 3)):(lab_y($2, $5)):(lab_t($5)) \
					with labels rotate by 90 left font ",9" notitle, \
				'' index b using (bar_x($0, 2, 3)):(lab_y($3, $6)):(lab_t($6)) \
					with labels rotate by 90 left font ",9" notitle, \
				'' index b using (bar_x($0, 3, 3)):(lab_y($4, $7)):(lab_t($7)) \
					with labels rotate by 90 left font ",9" notitle
		}
	}
}

unset multiplot
