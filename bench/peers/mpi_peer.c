// mpi_peer: the peer workloads (peer_common.h) over MPI point-to-point,
// two ranks started by mpirun.  Rank 0 is side A (it sends first, keeps
// the time and prints the figures), rank 1 side B.  Messages go with
// MPI_Send and arrive with MPI_Recv into the caller's buffer, tag 0,
// MPI_COMM_WORLD.  The transport is mpirun's choice (run.sh passes
// --mca pml ob1 --mca btl self,vader or self,tcp); --transport only
// labels the figures.
//
// Each rank pins itself before MPI_Init starts any thread, from the rank
// that mpirun puts in the environment, so start it with --bind-to none.
#define _GNU_SOURCE
#define PEER_NO_FORK

#include <mpi.h>

#include "peer_common.h"

static int m_send(void *c, const void *buf, size_t len)
{
	int peer = *(int *)c;
	int rc = MPI_Send(buf, (int)len, MPI_BYTE, peer, 0, MPI_COMM_WORLD);
	if (rc != MPI_SUCCESS) {
		fprintf(stderr, "MPI_Send failed (%d)\n", rc);
		return -1;
	}
	return 0;
}

static int m_recv(void *c, void *buf, size_t len)
{
	int peer = *(int *)c, got;
	MPI_Status st;
	int rc
	    = MPI_Recv(buf, (int)len, MPI_BYTE, peer, 0, MPI_COMM_WORLD, &st);
	if (rc != MPI_SUCCESS) {
		fprintf(stderr, "MPI_Recv failed (%d)\n", rc);
		return -1;
	}
	MPI_Get_count(&st, MPI_BYTE, &got);
	if (got < 0 || (size_t)got != len) {
		fprintf(
		    stderr, "MPI_Recv: %d bytes, expected %zu\n", got, len);
		return -1;
	}
	return 0;
}

// The rank mpirun gives this process, or -1.
static int env_rank(void)
{
	static const char *const names[]
	    = { "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK" };
	for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++) {
		const char *v = getenv(names[i]);
		if (v != NULL)
			return atoi(v);
	}
	return -1;
}

int main(int argc, char **argv)
{
	struct peer_cfg cfg;
	peer_args(&cfg, "openmpi", "shm|tcp", argc, argv);
	alarm(cfg.watchdog_s);
	int early = env_rank();
	if (early == 0 || early == 1) {
		if (bench_pin(early == 0 ? cfg.cpu_a : cfg.cpu_b) != 0)
			perror("sched_setaffinity");
	}

	MPI_Init(&argc, &argv);
	int rank, size;
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (size != 2) {
		if (rank == 0)
			fprintf(stderr,
			    "mpi_peer: needs exactly 2 ranks, has "
			    "%d\n",
			    size);
		MPI_Finalize();
		return 2;
	}
	if (rank != early && rank == 0)
		fprintf(stderr,
		    "mpi_peer: rank unknown before MPI_Init, the "
		    "ranks are not pinned\n");
	int peer = 1 - rank;
	struct peer_ops ops = { m_send, m_recv, &peer };
	int rc = run_tests(&cfg, &ops, rank == 0);
	if (rc != 0)
		MPI_Abort(MPI_COMM_WORLD, 1);
	MPI_Finalize();
	return 0;
}
