# summarize.awk: the medians and ratios of a comparison run of
# bench/run.sh, from its rows (bench/merge.awk):
#
#   section  workload  contender  metric  unit  round  value  [pinning
#   [probe_ns]]
#
#   awk -v mode=rows  -f bench/summarize.awk FILE...   medians and ratios, TSV
#   awk -v mode=table -f bench/summarize.awk FILE...   the table of the report
#   awk -v mode=plot  -f bench/summarize.awk FILE...   the data of bench/plot.gp
#
# Only rows whose round is a number count, so a finished TSV (with its
# header lines, medians and ratios) can be read again.  The median of an
# even number of rounds is the mean of the middle two, as in the programs.
#
# A ratio is the contender's median divided by the median of the baseline
# of the same section, workload and metric, from the same run:
#
#   shm  latency and rate: bare ring      bandwidth: memcpy
#   tcp  latency: raw-busy-poll           bandwidth and rate: raw-blocking
#   eng-tcp  bandwidth: raw-ack (engine_bench's raw TCP stream, one ack
#            per block)
#   eng-mem  bandwidth: memcpy
#
# The engine sections also have the metrics "post time" and "completion"
# (us, no ratio), which get rows of their own in the table.  Their
# workloads "bw 4 KiB" and "bw 1024x4 KiB" (a batch of 1024 WRITEs of
# 4 KiB, which no baseline measures, so it has no ratio) appear in the
# tables of the engine sections only, and the engine sections in the
# picture's fourth block only (see mode=plot).
#
# Latency ratios above 1 and bandwidth or rate ratios below 1 mean slower
# than the baseline.
#
# pinning (pinned, unpinned), the eighth column, says how the program
# placed its two parties.  Each pinning is a run of its own within the
# run: its medians, its ratios to the baseline measured with the same
# pinning, its tables (a section's pinned table, then its unpinned one)
# and its panels of the picture.  Rows of seven columns (the runs before
# pinning was a choice) have none, and come out as they always did.
# pinnings="pinned,unpinned" names those the run meant to measure, in
# their order (default: those of the rows).
#
# probe_ns, the ninth column, is where the host had the two CPUs when the
# program ran (bench/probe: the one-way time of a cache line between
# them, in ns, or n/a).  placement=near counts only the rows of programs
# that ran with the two CPUs near each other (a probe under near_ns,
# default 150: they share a cache), placement=far only the others; rows
# without a probe figure count for neither.  Medians of one placement
# compare figures of like machines, where those of all rounds may mix
# programs that ran minutes apart with the CPUs placed differently.
#
# contenders="shm=a,b;tcp=c,d" names the contenders of each section that
# the run meant to measure (default: the programs' and all peers'); one
# without figures shows as n/a rather than disappearing.
# eng_plot="eng-tcp=a,b;eng-mem=c" picks the engine contenders of the
# picture (mode=plot).  Plain POSIX awk.

BEGIN {
	FS = OFS = "\t"
	if (mode == "")
		mode = "rows"
	if (contenders == "")
		contenders = "shm=memcpy,bare ring,tw_ring,shm link,openmpi,ucx;" \
		    "tcp=raw-blocking,raw-busy-poll,tagwire,zmq,nng,openmpi,ucx"
	rank_list(base_rank, "shm,tcp,eng-tcp,eng-mem")
	rank_list(pin_rank, ",pinned,unpinned")
	npin = 0
	if (pinnings == "")
		pin_given = 0
	else
		pin_given = split(pinnings, pin_list, ",")
	npin = pin_given
	for (i = 1; i <= npin; i++) {
		pin_seen[pin_list[i]] = 1
		rank_extra(pin_rank, pin_list[i])
	}
	# Every known workload gets a row of the table, measured or not.
	nwl = split("lat 8 B,lat 4 KiB,bw 64 KiB,bw 1 MiB,bw 16 MiB," \
	    "rate 8 B stream", wls, ",")
	for (i = 1; i <= nwl; i++) {
		wl_rank[wls[i]] = i
		wl_seen[wls[i]] = 1
		wl_main[wls[i]] = 1 # a workload of shm and tcp
	}
	# engine_bench's workloads: a rank, but no row unless measured.
	wl_rank["bw 4 KiB"] = 2.5
	wl_rank["bw 1024x4 KiB"] = 5.5
	rank_list(met_rank, "one-way median,one-way p99,bandwidth,rate," \
	    "preemptions")
	rank_list(con_rank, "memcpy,bare ring,tw_ring,shm link,raw-blocking," \
	    "raw-busy-poll,tagwire,zmq,nng,openmpi,ucx,raw-ack,raw-stream," \
	    "write s1,read s1,send s1,write s2,read s2,send s2,write s4," \
	    "read s4,send s4,write,read,send,ucx put,ucx get")
	# The picture's engine panel: these contenders of the engine
	# sections, the others are in the TSV and the table only.
	if (eng_plot == "")
		eng_plot = "eng-tcp=write s1,read s1,send s1,write s4,raw-ack," \
		    "raw-stream,ucx put,ucx get;" \
		    "eng-mem=write,read,send,memcpy,ucx put,ucx get"
	ns = split(eng_plot, parts, ";")
	for (i = 1; i <= ns; i++) {
		if (split(parts[i], kv, "=") != 2)
			continue
		nc = split(kv[2], cs, ",")
		for (j = 1; j <= nc; j++)
			in_eng_plot[kv[1], cs[j]] = 1
	}
	ns = split(contenders, parts, ";")
	for (i = 1; i <= ns; i++) {
		if (split(parts[i], kv, "=") != 2)
			continue
		nc = split(kv[2], cs, ",")
		# Every pinning named has these contenders; without a name,
		# the rows' pinnings get them in END.
		for (p = 1; p <= (npin ? npin : 1); p++) {
			s = sec_key(kv[1], npin ? pin_list[p] : "")
			if (!(s in sec_seen))
				add_sec(s)
			for (j = 1; j <= nc; j++)
				add_con(s, cs[j])
		}
		want_sec[++nwant] = kv[1]
		want_cons[nwant] = kv[2]
	}
}

(NF == 7 || NF == 8 || NF == 9) && $6 ~ /^[0-9]+$/ && $7 ~ /^[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/ && placed() {
	pn = NF >= 8 ? $8 : ""
	if (!(pn in pin_seen)) {
		pin_seen[pn] = 1
		pin_list[++npin] = pn
		rank_extra(pin_rank, pn)
	}
	s = sec_key($1, pn); w = $2; c = $3; m = $4
	if (!(s in sec_seen))
		add_sec(s)
	add_con(s, c)
	if (!(w in wl_seen)) {
		wl_seen[w] = 1
		wls[++nwl] = w
		rank_extra(wl_rank, w)
	}
	if (s !~ /^eng-/)
		wl_main[w] = 1
	if (!(m in met_seen)) {
		met_seen[m] = 1
		mets[++nmet] = m
		rank_extra(met_rank, m)
	}
	k = s SUBSEP w SUBSEP c SUBSEP m
	if (!(k in cnt))
		unit[k] = $5
	measured[s, c] = 1
	sec_rows[s] = 1
	val[k, ++cnt[k]] = $7 + 0
	if (!($6 in round_seen)) {
		round_seen[$6] = 1
		nrounds++
	}
	if (!((s, w, m) in unit_of))
		unit_of[s, w, m] = $5
	next
}

END {
	if (!pin_given)
		name_pinnings()
	sort_by_rank(pin_list, npin, pin_rank)
	sort_by_rank(secs, nsec, sec_rank)
	sort_by_rank(wls, nwl, wl_rank)
	sort_by_rank(mets, nmet, met_rank)
	for (i = 1; i <= nsec; i++)
		sort_cons(secs[i])
	if (mode == "rows")
		print_rows()
	else if (mode == "table")
		print_tables()
	else if (mode == "plot")
		print_plot()
	else {
		print "summarize.awk: mode must be rows, table or plot" > "/dev/stderr"
		exit 2
	}
}

# ---------------------------------------------------------------------------
# Names and their order
# ---------------------------------------------------------------------------

function rank_list(r, list,    n, a, i) {
	n = split(list, a, ",")
	for (i = 1; i <= n; i++)
		r[a[i]] = i
}

# Names the programs do not know come after the known ones, in the order
# they first appear.
function rank_extra(r, name) {
	if (!(name in r))
		r[name] = 1000 + ++extra_serial
}

# A section of one pinning: "shm", or "shm|pinned".
function sec_key(b, pn) {
	return pn == "" ? b : b "|" pn
}

function base(s) {
	return index(s, "|") ? substr(s, 1, index(s, "|") - 1) : s
}

function pin_of(s) {
	return index(s, "|") ? substr(s, index(s, "|") + 1) : ""
}

# Sections come in the order of their names, each name's pinnings next to
# each other.
function add_sec(s) {
	sec_seen[s] = 1
	secs[++nsec] = s
	rank_extra(base_rank, base(s))
	rank_extra(pin_rank, pin_of(s))
	sec_rank[s] = base_rank[base(s)] * 1000 + pin_rank[pin_of(s)]
}

# Without pinnings=..., the contenders=... of BEGIN went to sections of no
# pinning: they move to each pinning of the rows, unless rows without one
# are there too.
function name_pinnings(    i, j, p, k, nc, cs, keep) {
	if (npin == 0 || ("" in pin_seen))
		return
	k = 0
	for (i = 1; i <= nsec; i++)
		if (pin_of(secs[i]) != "" || (secs[i] in sec_rows))
			keep[++k] = secs[i]
		else
			delete sec_seen[secs[i]]
	nsec = k
	for (i = 1; i <= k; i++)
		secs[i] = keep[i]
	for (i = 1; i <= nwant; i++) {
		nc = split(want_cons[i], cs, ",")
		for (p = 1; p <= npin; p++) {
			s = sec_key(want_sec[i], pin_list[p])
			if (!(s in sec_seen))
				add_sec(s)
			for (j = 1; j <= nc; j++)
				add_con(s, cs[j])
		}
	}
}

function add_con(s, c) {
	if ((s, c) in con_seen)
		return
	con_seen[s, c] = 1
	rank_extra(con_rank, c)
	ncon[s]++
	con[s, ncon[s]] = c
}

function sort_by_rank(arr, n, r,    i, j, t) {
	for (i = 2; i <= n; i++) {
		t = arr[i]
		for (j = i - 1; j >= 1 && r[arr[j]] > r[t]; j--)
			arr[j + 1] = arr[j]
		arr[j + 1] = t
	}
}

function sort_cons(s,    i, j, t) {
	for (i = 2; i <= ncon[s]; i++) {
		t = con[s, i]
		for (j = i - 1; j >= 1 && con_rank[con[s, j]] > con_rank[t]; j--)
			con[s, j + 1] = con[s, j]
		con[s, j + 1] = t
	}
}

# ---------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------

function kind(w) {
	return substr(w, 1, index(w " ", " ") - 1)
}

function ratio_metric(m) {
	return m == "one-way median" || m == "one-way p99" || m == "bandwidth" \
	    || m == "rate"
}

# The baseline of a figure; "" when it has none.
function baseline(s, w, m,    k) {
	if (!ratio_metric(m))
		return ""
	s = base(s)
	k = kind(w)
	if (s == "shm")
		return k == "bw" ? "memcpy" : "bare ring"
	if (s == "tcp")
		return k == "lat" ? "raw-busy-poll" : "raw-blocking"
	if (m != "bandwidth")
		return ""
	if (s == "eng-tcp")
		return "raw-ack"
	if (s == "eng-mem")
		return "memcpy"
	return ""
}

# The median of the rounds of s, w, c, m; "" when nothing was measured.
function median(s, w, c, m,    k, n, i, j, t, a) {
	k = s SUBSEP w SUBSEP c SUBSEP m
	if (!(k in cnt)) # asking must not add the key to cnt
		return ""
	n = cnt[k]
	for (i = 1; i <= n; i++)
		a[i] = val[k, i]
	for (i = 2; i <= n; i++) {
		t = a[i]
		for (j = i - 1; j >= 1 && a[j] > t; j--)
			a[j + 1] = a[j]
		a[j + 1] = t
	}
	if (n % 2)
		return a[(n + 1) / 2]
	return (a[n / 2] + a[n / 2 + 1]) / 2
}

# The contender's median over the baseline's; "" when either is missing.
function ratio(s, w, c, m,    b, num, den) {
	b = baseline(s, w, m)
	if (b == "")
		return ""
	num = median(s, w, c, m)
	den = median(s, w, b, m)
	if (num == "" || den == "" || den + 0 == 0)
		return ""
	return num / den
}

# ---------------------------------------------------------------------------
# mode=rows
# ---------------------------------------------------------------------------

# The pinning column of a row of section s: none for a section of none.
function pin_col(s) {
	return pin_of(s) == "" ? "" : OFS pin_of(s)
}

function print_rows(    i, j, a, b, c, d, s, w, m, k, v, r) {
	for (i = 1; i <= nsec; i++)
		for (j = 1; j <= nwl; j++)
			for (a = 1; a <= nmet; a++)
				for (b = 1; b <= ncon[secs[i]]; b++) {
					s = secs[i]; w = wls[j]; m = mets[a]
					c = con[s, b]
					k = s SUBSEP w SUBSEP c SUBSEP m
					if (!(k in cnt))
						continue
					v = median(s, w, c, m)
					print base(s), w, c, m, unit[k], "median", \
					    sprintf("%.6g", v) pin_col(s)
				}
	for (i = 1; i <= nsec; i++)
		for (j = 1; j <= nwl; j++)
			for (a = 1; a <= nmet; a++)
				for (b = 1; b <= ncon[secs[i]]; b++) {
					s = secs[i]; w = wls[j]; m = mets[a]
					c = con[s, b]
					r = ratio(s, w, c, m)
					if (r == "")
						continue
					print base(s), w, c, m, "ratio to " \
					    baseline(s, w, m), "ratio", \
					    sprintf("%.4f", r) pin_col(s)
				}
}

# ---------------------------------------------------------------------------
# mode=table
# ---------------------------------------------------------------------------

function fmt(v) {
	if (v == "")
		return "n/a"
	v += 0
	if (v >= 100)
		return sprintf("%.0f", v)
	if (v >= 10)
		return sprintf("%.1f", v)
	if (v >= 1)
		return sprintf("%.2f", v)
	if (v >= 0.01)
		return sprintf("%.3f", v)
	return sprintf("%.2g", v)
}

function fmt_ratio(r) {
	if (r >= 100)
		return sprintf("%.0fx", r)
	if (r >= 10)
		return sprintf("%.1fx", r)
	return sprintf("%.2fx", r)
}

function cell(s, w, c, m,    v, r) {
	v = median(s, w, c, m)
	if (v == "")
		return "n/a"
	r = ratio(s, w, c, m)
	return r == "" ? fmt(v) : fmt(v) " (" fmt_ratio(r) ")"
}

function default_unit(w, m) {
	if (m == "bandwidth")
		return "GB/s"
	if (m == "rate")
		return "M/s"
	return "us"
}

# The rows of a table: each latency workload's median, then its p99, then
# the other workloads' figures.
function table_rows(    j, w) {
	nrow = 0
	for (j = 1; j <= nwl; j++)
		if (kind(wls[j]) == "lat") {
			row_w[++nrow] = wls[j]; row_m[nrow] = "one-way median"
			row_l[nrow] = wls[j]
		}
	for (j = 1; j <= nwl; j++)
		if (kind(wls[j]) == "lat") {
			w = wls[j]
			row_w[++nrow] = w; row_m[nrow] = "one-way p99"
			row_l[nrow] = "p99" substr(w, 4)
		}
	for (j = 1; j <= nwl; j++) {
		w = wls[j]
		if (kind(w) == "bw") {
			row_w[++nrow] = w; row_m[nrow] = "bandwidth"
			row_l[nrow] = w
		} else if (kind(w) == "rate") {
			row_w[++nrow] = w; row_m[nrow] = "rate"
			row_l[nrow] = w
			sub(/ stream$/, "", row_l[nrow])
		}
	}
}

function pad(t, n, right) {
	while (length(t) < n)
		t = right ? " " t : t " "
	return t
}

# engine_bench's rows: after the others, each workload's average post
# time, then its median completion time, where section s has them.
function engine_rows(s,    j, w, k, mm) {
	split("post time,completion", mm, ",")
	for (k = 1; k <= 2; k++)
		for (j = 1; j <= nwl; j++) {
			w = wls[j]
			if (!((s, w, mm[k]) in unit_of))
				continue
			row_w[++nrow] = w; row_m[nrow] = mm[k]
			row_l[nrow] = (k == 1 ? "post " : "done ") substr(w, 4)
		}
}

function print_tables(    i, s, r, b, c, u, wid, t, line, sep, skip) {
	for (i = 1; i <= nsec; i++) {
		s = secs[i]
		table_rows()
		engine_rows(s)
		print ""
		print "## " sec_title(s) ": medians of " \
		    (placement == "" ? nrounds " round(s)" \
		                     : "each program's rounds run " placement) \
		    "; in " \
		    "parentheses the ratio to " baselines_of(s) \
		    (pin_of(s) == "" ? "" : ", measured " pin_of(s))
		print ""
		for (r = 1; r <= nrow; r++) {
			u = unit_of[s, row_w[r], row_m[r]]
			unit_cell[r] = u == "" ? default_unit(row_w[r], row_m[r]) : u
			for (b = 1; b <= ncon[s]; b++)
				cells[r, b] = cell(s, row_w[r], con[s, b], row_m[r])
			# The engine sections leave out the rows of workloads
			# they do not have (latency, rate); shm and tcp those
			# of the engine's own workloads.
			skip[r] = s ~ /^eng-/ ? !row_has(s, r) : !(row_w[r] in wl_main)
		}
		wid[0] = length("workload"); wid[-1] = length("unit")
		for (b = 1; b <= ncon[s]; b++)
			wid[b] = length(con[s, b])
		for (r = 1; r <= nrow; r++) {
			if (skip[r])
				continue
			if (length(row_l[r]) > wid[0])
				wid[0] = length(row_l[r])
			if (length(unit_cell[r]) > wid[-1])
				wid[-1] = length(unit_cell[r])
			for (b = 1; b <= ncon[s]; b++) {
				t = cells[r, b]
				if (length(t) > wid[b])
					wid[b] = length(t)
			}
		}
		line = "| " pad("workload", wid[0], 0) " | " pad("unit", wid[-1], 0) " |"
		sep = "|" dashes(wid[0] + 2) "|" dashes(wid[-1] + 2) "|"
		for (b = 1; b <= ncon[s]; b++) {
			line = line " " pad(con[s, b], wid[b], 1) " |"
			sep = sep dashes(wid[b] + 1) ":|"
		}
		print line
		print sep
		for (r = 1; r <= nrow; r++) {
			if (skip[r])
				continue
			line = "| " pad(row_l[r], wid[0], 0) " | " \
			    pad(unit_cell[r], wid[-1], 0) " |"
			for (b = 1; b <= ncon[s]; b++)
				line = line " " pad(cells[r, b], wid[b], 1) " |"
			print line
		}
	}
	print ""
	print "Latency ratios above 1 and bandwidth or rate ratios below 1 " \
	    "mean slower than the baseline; n/a: not measured."
}

function row_has(s, r,    b) {
	for (b = 1; b <= ncon[s]; b++)
		if (cells[r, b] != "n/a")
			return 1
	return 0
}

function dashes(n,    t) {
	t = ""
	while (n-- > 0)
		t = t "-"
	return t
}

function sec_title(s,    t, b) {
	b = base(s)
	if (b == "shm")
		t = "shm (shared memory)"
	else if (b == "tcp")
		t = "tcp (TCP on loopback)"
	else if (b == "eng-tcp")
		t = "eng-tcp (the transfer engine, tcp://127.0.0.1)"
	else if (b == "eng-mem")
		t = "eng-mem (the transfer engine, mem://; UCX over sm)"
	else
		t = b
	return pin_of(s) == "" ? t : t ", " pin_of(s)
}

function baselines_of(s) {
	s = base(s)
	if (s == "shm")
		return "bare ring (latency, rate) or memcpy (bandwidth)"
	if (s == "tcp")
		return "raw-busy-poll (latency) or raw-blocking (bandwidth, rate)"
	if (s == "eng-tcp")
		return "raw-ack (bandwidth)"
	if (s == "eng-mem")
		return "memcpy (bandwidth)"
	return "nothing (no baseline for this section)"
}

# ---------------------------------------------------------------------------
# mode=plot
# ---------------------------------------------------------------------------

# Three blocks for gnuplot's `index`, two blank lines apart: latency (the
# medians), bandwidth and rate of the sections shm and tcp.  A block has a
# header line and one line per section and contender with figures of its
# metric: the label, then each workload's median and its ratio to the
# baseline, NaN where missing.  A contender without any figure at all gets
# a line of NaN in every block, labelled n/a, so that the picture shows it
# is missing; a block where nobody has figures has its header line only.
#
# When the run has engine sections (eng-tcp, eng-mem), a fourth block has
# their bandwidth at three workloads, always these three columns: bw 1 MiB,
# bw 16 MiB, bw 1024x4 KiB; only the contenders of eng_plot
# ("eng-tcp=a,b;eng-mem=c,d", default below in BEGIN), n/a as above.
#
# With pinnings, each of those blocks comes once per pinning, in the order
# of the pinnings (latency pinned, latency unpinned, bandwidth pinned,
# ...): block (panel - 1) * pinnings + pinning, counted from 1.  The
# labels do not name the pinning.
function print_plot(    p, q, i, j, b, s, c, m, n, w, line, any, v, r, lbl, eng, first,
    buf, nbuf, block_any) {
	split("one-way median,bandwidth,rate,bandwidth", pm, ",")
	eng = 0
	for (i = 1; i <= nsec; i++)
		if (secs[i] ~ /^eng-/)
			eng = 1
	first = 1
	for (p = 1; p <= 3 + eng; p++)
		for (q = 1; q <= (npin ? npin : 1); q++) {
			m = pm[p]
			if (!first)
				printf "\n\n"
			first = 0
			n = 0
			if (p == 4)
				n = split("bw 1 MiB,bw 16 MiB,bw 1024x4 KiB", pw, ",")
			else
				for (j = 1; j <= nwl; j++)
					if (metric_of(wls[j]) == m && (wls[j] in wl_main))
						pw[++n] = wls[j]
			line = "contender"
			for (j = 1; j <= n; j++)
				line = line OFS pw[j]
			for (j = 1; j <= n; j++)
				line = line OFS "ratio " pw[j]
			print line
			nbuf = 0
			block_any = 0
			for (i = 1; i <= nsec; i++) {
				s = secs[i]
				if ((p == 4) != (s ~ /^eng-/))
					continue
				if (npin && pin_of(s) != pin_list[q])
					continue
				for (b = 1; b <= ncon[s]; b++) {
					c = con[s, b]
					if (p == 4 && !((base(s), c) in in_eng_plot))
						continue
					any = 0
					line = ""
					for (j = 1; j <= n; j++) {
						v = median(s, pw[j], c, m)
						if (v != "")
							any = 1
						line = line OFS (v == "" ? "NaN" : sprintf("%.6g", v))
					}
					for (j = 1; j <= n; j++) {
						r = ratio(s, pw[j], c, m)
						line = line OFS (r == "" ? "NaN" : sprintf("%.4f", r))
					}
					lbl = base(s) " " c
					if (!any) {
						if ((s, c) in measured)
							continue
						lbl = lbl " (n/a)"
					}
					block_any = block_any || any
					buf[++nbuf] = lbl line
				}
			}
			# A block of n/a lines alone would have nothing to draw.
			if (block_any)
				for (j = 1; j <= nbuf; j++)
					print buf[j]
		}
}

function metric_of(w,    k) {
	k = kind(w)
	if (k == "lat")
		return "one-way median"
	if (k == "bw")
		return "bandwidth"
	if (k == "rate")
		return "rate"
	return ""
}

# Whether the row counts under `placement` (see the top).
function placed() {
	if (placement == "")
		return 1
	if (NF < 9 || $9 !~ /^[0-9]+$/)
		return 0
	return (placement == "near") == ($9 + 0 < (near_ns == "" ? 150 : near_ns + 0))
}
