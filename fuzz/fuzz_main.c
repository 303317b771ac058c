// Replays fuzz inputs without libFuzzer: every file named on the command
// line, and every regular file in every directory named there, is read and
// handed to LLVMFuzzerTestOneInput once.  Linked with a fuzz target, this
// turns the committed corpus into an ordinary test that any compiler can
// build, so a crash the fuzzer once found stays fixed.
//
// Each input is copied into a buffer of exactly its size, so that under
// AddressSanitizer a read one byte past the input is caught, as it would be
// by libFuzzer.  Exits 0 after at least one input, 1 on an unreadable path
// or when there was nothing to replay (a misspelt corpus directory must not
// pass as an empty success).

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (fp == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	struct stat st;
	if (fstat(fileno(fp), &st) != 0 || st.st_size < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		fclose(fp);
		return -1;
	}
	size_t size = (size_t)st.st_size;
	// malloc(0) may return NULL; one spare byte keeps the pointer valid
	// while the input itself stays exactly `size` bytes long.
	uint8_t *buf = malloc(size > 0 ? size : 1);
	if (buf == NULL || fread(buf, 1, size, fp) != size) {
		fprintf(stderr, "%s: cannot read %zu bytes\n", path, size);
		free(buf);
		fclose(fp);
		return -1;
	}
	fclose(fp);
	LLVMFuzzerTestOneInput(buf, size);
	free(buf);
	return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

// Replays `path`, a file or a directory of files; returns the number of
// inputs replayed, or -1 on an error.
static long replay_path(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path) == 0 ? 1 : -1;
	struct dirent **names;
	int n = scandir(path, &names, NULL, by_name);
	if (n < 0) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	long done = 0;
	for (int i = 0; i < n; i++) {
		char file[4096];
		snprintf(file, sizeof(file), "%s/%s", path, names[i]->d_name);
		struct stat fst;
		if (names[i]->d_name[0] != '.' && stat(file, &fst) == 0
		    && S_ISREG(fst.st_mode)) {
			if (done >= 0 && replay_file(file) == 0)
				done++;
			else
				done = -1;
		}
		free(names[i]);
	}
	free(names);
	return done;
}

int main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	long total = 0;
	for (int i = 1; i < argc; i++) {
		long n = replay_path(argv[i]);
		if (n < 0)
			return 1;
		total += n;
	}
	printf("replayed %ld inputs\n", total);
	return total > 0 ? 0 : 1;
}
