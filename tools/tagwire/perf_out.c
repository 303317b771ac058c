// tagwire perf: the report on stdout (an aligned table, CSV or JSON) and
// the progress line on stderr.
//
// Rows are printed as the measurements finish, so that a long run shows
// its figures early and a failed one keeps the figures it measured.  That
// is why the table has fixed column widths instead of fitting them to the
// rows, and why a JSON array is opened at the start and closed at the end
// whatever happened in between.  Every row has the same columns; a figure
// that does not apply to its test is "-" in the table, an empty field in
// CSV and null in JSON, so that a program reading the output finds the
// same keys in every row.
//
// The progress line is for a person watching a terminal: it is written
// only when stderr is one, and erased before each row, so that it never
// mixes with the report when both go to the same terminal.

#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "perf.h"

static int out_format;
static size_t out_total, out_started, out_rows;
static bool out_progress;

enum {
	C_TRANSPORT,
	C_TEST,
	C_SIZE,
	C_ITERS,
	C_PARTIES,
	C_MED,
	C_P99,
	C_MAX,
	C_GBPS,
	C_MMSGS,
	C_OP,
	C_ALGO,
	C_COUNT
};

static const struct column {
	const char *title; // table
	const char *key; // CSV and JSON
	int width; // table; negative: left aligned
} cols[C_COUNT] = {
	{ "transport", "transport", -9 },
	{ "test", "test", -9 },
	{ "size", "size", 8 },
	{ "iters", "iters", 10 },
	{ "parties", "parties", 7 },
	{ "median µs", "median_us", 10 },
	{ "p99 µs", "p99_us", 10 },
	{ "max µs", "max_us", 10 },
	{ "GB/s", "gbps", 8 },
	{ "M msg/s", "mmsgs", 8 },
	{ "op µs", "op_us", 9 },
	{ "algorithm", "algorithm", 0 },
};

// Characters, not bytes: "µ" is two bytes of UTF-8 and one column.
static int text_width(const char *s)
{
	int w = 0;
	for (; *s; s++)
		w += ((unsigned char)*s & 0xc0) != 0x80;
	return w;
}

static void cell(const char *s, int width, bool first)
{
	int pad = (width < 0 ? -width : width) - text_width(s);
	if (!first)
		putchar(' ');
	if (width > 0)
		for (int i = 0; i < pad; i++)
			putchar(' ');
	fputs(s, stdout);
	if (width < 0)
		for (int i = 0; i < pad; i++)
			putchar(' ');
}

// A figure for the table: about four significant digits.
static void fmt_table_num(char *buf, size_t cap, double v)
{
	if (isnan(v))
		snprintf(buf, cap, "-");
	else if (v > 0 && v < 0.001)
		snprintf(buf, cap, "%.1e", v);
	else if (v < 10)
		snprintf(buf, cap, "%.3f", v);
	else if (v < 100)
		snprintf(buf, cap, "%.2f", v);
	else if (v < 10000)
		snprintf(buf, cap, "%.1f", v);
	else
		snprintf(buf, cap, "%.0f", v);
}

// The cells of a row as text: table (human units) or CSV/JSON (plain
// numbers; "" for a figure that does not apply).
static void row_cells(const perf_row *r, bool table, char v[C_COUNT][40])
{
	const double fig[] = { r->median_us, r->p99_us, r->max_us, r->gbps,
		r->mmsgs, r->op_us };
	snprintf(v[C_TRANSPORT], 40, "%s", perf_transport_name[r->transport]);
	snprintf(v[C_TEST], 40, "%s", perf_kind_name[r->kind]);
	if (table)
		cli_fmt_bytes(v[C_SIZE], 40, r->size);
	else
		snprintf(v[C_SIZE], 40, "%llu", (unsigned long long)r->size);
	snprintf(v[C_ITERS], 40, "%llu", (unsigned long long)r->iters);
	snprintf(v[C_PARTIES], 40, "%u", (unsigned)r->parties);
	for (int c = C_MED; c <= C_OP; c++) {
		double x = fig[c - C_MED];
		if (table)
			fmt_table_num(v[c], 40, x);
		else if (isnan(x))
			v[c][0] = '\0';
		else
			snprintf(v[c], 40, "%.4f", x);
	}
	snprintf(v[C_ALGO], 40, "%s",
	    perf_row_algorithm(r->kind, r->parties, r->size));
}

static void clear_progress(void)
{
	if (out_progress && out_started > 0)
		fputs("\r\033[K", stderr);
}

void perf_out_begin(int format, size_t total)
{
	out_format = format;
	out_total = total;
	out_started = out_rows = 0;
	out_progress = isatty(STDERR_FILENO) == 1;
	if (format == PERF_FMT_JSON) {
		fputs("[", stdout);
	} else if (format == PERF_FMT_CSV) {
		for (int c = 0; c < C_COUNT; c++)
			printf("%s%s", c ? "," : "", cols[c].key);
		putchar('\n');
	} else {
		for (int c = 0; c < C_COUNT; c++)
			cell(cols[c].title, cols[c].width, c == 0);
		putchar('\n');
	}
	fflush(stdout);
}

void perf_out_start(int transport, const perf_meas *m)
{
	char label[96];
	out_started++;
	if (!out_progress)
		return;
	perf_label(label, sizeof(label), transport, m);
	fprintf(
	    stderr, "\r\033[K[%zu/%zu] %s ...", out_started, out_total, label);
	fflush(stderr);
}

void perf_out_row(const perf_row *r)
{
	char v[C_COUNT][40];
	clear_progress();
	row_cells(r, out_format == PERF_FMT_TABLE, v);
	if (out_format == PERF_FMT_CSV) {
		for (int c = 0; c < C_COUNT; c++)
			printf("%s%s", c ? "," : "", v[c]);
		putchar('\n');
	} else if (out_format == PERF_FMT_JSON) {
		printf("%s\n  {", out_rows ? "," : "");
		for (int c = 0; c < C_COUNT; c++) {
			bool text
			    = c == C_TRANSPORT || c == C_TEST || c == C_ALGO;
			printf("%s\"%s\": ", c ? ", " : "", cols[c].key);
			if (v[c][0] == '\0')
				fputs("null", stdout);
			else if (text)
				printf("\"%s\"", v[c]);
			else
				fputs(v[c], stdout);
		}
		putchar('}');
	} else {
		for (int c = 0; c < C_COUNT; c++)
			if (v[c][0] != '\0'
			    || c != C_ALGO) // no trailing blank
				cell(v[c], cols[c].width, c == 0);
		putchar('\n');
	}
	out_rows++;
	fflush(stdout);
}

void perf_out_end(void)
{
	clear_progress();
	if (out_format == PERF_FMT_JSON)
		fputs("\n]\n", stdout);
	fflush(stdout);
	fflush(stderr);
}
