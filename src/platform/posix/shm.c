// POSIX shared-memory segments: create, open, close and unlink by name.
//
// A segment is created exclusively (O_EXCL), so two parties can never
// believe they both own the same fresh segment, and with mode 0600, so only
// the same user can map it.  Names are checked here rather than left to
// shm_open, whose treatment of extra slashes differs between systems.
//
// A mapping of a file that another process later shrinks raises SIGBUS on
// access past the new end.  Both calls compare the segment's size with the
// size they map (fstat) so that a segment that is already too short is
// refused; a shrink after that point cannot be guarded against in user
// space, which is why segments are created with mode 0600.
//
// Creation under a lock (shm.h) uses flock(2), not fcntl(2) record locks:
// a record lock belongs to the process and goes when any of its
// descriptors of the file is closed, so looking at the name again (which
// opens it) would drop it; flock belongs to the open file description.

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <tagwire/ring.h>

#include "core/log.h"
#include "platform/posix/shm.h"

// Segments smaller than this cannot hold anything useful (not even a ring
// header line) and are refused by tw_shm_open.
#define SHM_MIN_SIZE 64
// The longest name accepted, without the leading '/'.
#define SHM_NAME_MAX 200

// Turns "name" or "/name" into "/name" in `path` (SHM_NAME_MAX + 2 bytes).
static int shm_path(const char *name, char *path)
{
	if (name == NULL)
		return TW_EINVAL;
	const char *base = name[0] == '/' ? name + 1 : name;
	size_t len = strnlen(base, SHM_NAME_MAX + 1);
	if (len == 0 || len > SHM_NAME_MAX || memchr(base, '/', len) != NULL) {
		TW_WARN("shm",
		    "invalid shared memory name '%.40s' (want 1 to %d "
		    "characters without '/' after the first)",
		    name, SHM_NAME_MAX);
		return TW_EINVAL;
	}
	path[0] = '/';
	memcpy(path + 1, base, len + 1);
	return TW_OK;
}

// Whether `path` names the file open at `fd` now.
static bool shm_names_fd(const char *path, int fd)
{
	struct stat mine, named;
	int nfd = shm_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (nfd < 0)
		return false;
	bool same = fstat(fd, &mine) == 0 && fstat(nfd, &named) == 0
	    && mine.st_dev == named.st_dev && mine.st_ino == named.st_ino;
	close(nfd);
	return same;
}

// Takes the lock of a segment this process just created.  TW_EAGAIN: the
// name was removed before we had the lock (shm.h), the segment is lost.
static int shm_lock_fresh(const char *path, int fd)
{
	while (flock(fd, LOCK_EX) != 0) {
		if (errno == EINTR)
			continue;
		// Without locks the segment is made as tw_shm_create makes
		// it: should this process die before it marks the segment,
		// nobody will ever dare remove it.
		TW_LOG_ONCE(TW_LOG_INFO, "shm",
		    "cannot lock shared memory %s: %m; segments whose "
		    "creator dies while creating them stay behind",
		    path);
		return TW_OK;
	}
	return shm_names_fd(path, fd) ? TW_OK : TW_EAGAIN;
}

// tw_shm_create; with `lock_fd`, also takes the segment's lock and returns
// with it held there (tw__shm_create_locked).
static int shm_create(const char *name, size_t size, void **mem, int *lock_fd)
{
	char path[SHM_NAME_MAX + 2];
	if (mem == NULL || size == 0 || (uint64_t)size > (uint64_t)INT64_MAX)
		return TW_EINVAL;
	int status = shm_path(name, path);
	if (status != TW_OK)
		return status;
	int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		if (lock_fd != NULL && errno == EEXIST)
			return TW_EAGAIN;
		TW_ERROR("shm", "cannot create shared memory %s: %m", path);
		return TW_ESYS;
	}
	if (lock_fd != NULL && (status = shm_lock_fresh(path, fd)) != TW_OK) {
		// Not ours to remove: the name is gone or someone else's.
		close(fd);
		return status;
	}
	struct stat st;
	void *p = MAP_FAILED;
	if (ftruncate(fd, (off_t)size) != 0) {
		TW_ERROR("shm",
		    "cannot size shared memory %s to %zu bytes: %m", path,
		    size);
		goto err_unlink;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		TW_ERROR("shm", "cannot map shared memory %s (%zu bytes): %m",
		    path, size);
		goto err_unlink;
	}
	// Someone with our uid could have truncated the fresh segment between
	// ftruncate and mmap; touching the mapping would then raise SIGBUS.
	if (fstat(fd, &st) != 0) {
		TW_ERROR("shm", "cannot stat shared memory %s: %m", path);
		goto err_unmap;
	}
	if ((uint64_t)st.st_size < (uint64_t)size) {
		errno = EBUSY;
		TW_ERROR("shm",
		    "shared memory %s shrank to %lld bytes while it was "
		    "created: %m",
		    path, (long long)st.st_size);
		goto err_unmap;
	}
	if (lock_fd != NULL)
		*lock_fd = fd;
	else
		close(fd);
	*mem = p;
	return TW_OK;

err_unmap:
	munmap(p, size);
err_unlink:
	shm_unlink(path);
	close(fd);
	return TW_ESYS;
}

int tw_shm_create(const char *name, size_t size, void **mem)
{
	return shm_create(name, size, mem, NULL);
}

int tw__shm_create_locked(
    const char *name, size_t size, void **mem, int *lock_fd)
{
	if (lock_fd == NULL)
		return TW_EINVAL;
	return shm_create(name, size, mem, lock_fd);
}

int tw__shm_trylock(const char *name, int *fd)
{
	char path[SHM_NAME_MAX + 2];
	if (fd == NULL)
		return TW_EINVAL;
	*fd = -1;
	int status = shm_path(name, path);
	if (status != TW_OK)
		return status;
	int f = shm_open(path, O_RDONLY | O_CLOEXEC, 0);
	if (f < 0) {
		if (errno == ENOENT)
			return TW_OK;
		TW_ERROR("shm", "cannot open shared memory %s: %m", path);
		return TW_ESYS;
	}
	if (flock(f, LOCK_EX | LOCK_NB) != 0) {
		if (errno != EWOULDBLOCK && errno != EINTR)
			TW_LOG_ONCE(TW_LOG_INFO, "shm",
			    "cannot lock shared memory %s: %m; segments "
			    "whose creator died while creating them stay "
			    "behind",
			    path);
		close(f);
		return TW_EAGAIN;
	}
	*fd = f;
	return TW_OK;
}

int tw__shm_unlink_locked(const char *name, int fd)
{
	char path[SHM_NAME_MAX + 2];
	if (fd < 0)
		return TW_EINVAL;
	int status = shm_path(name, path);
	if (status != TW_OK)
		return status;
	// Nobody can create the name again while it exists, and whoever else
	// removes a stale segment holds this lock: the name still denotes the
	// segment we checked when we remove it.
	if (!shm_names_fd(path, fd))
		return TW_EAGAIN;
	if (shm_unlink(path) != 0) {
		if (errno == ENOENT)
			return TW_EAGAIN;
		TW_ERROR("shm", "cannot remove shared memory %s: %m", path);
		return TW_ESYS;
	}
	return TW_OK;
}

void tw__shm_unlock(int fd)
{
	if (fd >= 0)
		close(fd);
}

int tw_shm_open(const char *name, size_t *size, void **mem)
{
	char path[SHM_NAME_MAX + 2];
	if (size == NULL || mem == NULL)
		return TW_EINVAL;
	int status = shm_path(name, path);
	if (status != TW_OK)
		return status;
	int fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
	if (fd < 0) {
		TW_ERROR("shm", "cannot open shared memory %s: %m", path);
		return TW_ESYS;
	}
	struct stat st;
	if (fstat(fd, &st) != 0) {
		TW_ERROR("shm", "cannot stat shared memory %s: %m", path);
		close(fd);
		return TW_ESYS;
	}
	if (st.st_size < SHM_MIN_SIZE || (uint64_t)st.st_size > SIZE_MAX) {
		TW_ERROR("shm",
		    "shared memory %s has %lld bytes, not a usable segment",
		    path, (long long)st.st_size);
		close(fd);
		return TW_EPROTO;
	}
	size_t len = (size_t)st.st_size;
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		TW_ERROR("shm", "cannot map shared memory %s (%zu bytes): %m",
		    path, len);
		close(fd);
		return TW_ESYS;
	}
	close(fd);
	*size = len;
	*mem = p;
	return TW_OK;
}

int tw_shm_close(void *mem, size_t size)
{
	if (mem == NULL || size == 0)
		return TW_EINVAL;
	if (munmap(mem, size) != 0) {
		TW_ERROR("shm", "cannot unmap shared memory at %p: %m", mem);
		return TW_ESYS;
	}
	return TW_OK;
}

int tw_shm_unlink(const char *name)
{
	char path[SHM_NAME_MAX + 2];
	int status = shm_path(name, path);
	if (status != TW_OK)
		return status;
	if (shm_unlink(path) != 0) {
		TW_ERROR("shm", "cannot remove shared memory %s: %m", path);
		return TW_ESYS;
	}
	return TW_OK;
}
