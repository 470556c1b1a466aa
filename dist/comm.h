/* The MPI world of a run: ranks, the split of decoder layers into pipeline stages,
 * the few collectives the trainer needs, and the abort hook that stops every rank. */
#ifndef TV_COMM_H
#define TV_COMM_H

#include <stddef.h>
#include <stdint.h>

typedef struct Comm Comm;

/* Initialises MPI when nobody has yet and routes fatal errors to MPI_Abort. */
Comm *comm_init(int *argc, char ***argv);
void comm_finalize(Comm *c);

int comm_rank(const Comm *c);
int comm_size(const Comm *c);
int comm_local_rank(const Comm *c); /* rank among the ranks of this node = its GPU index */

/* The data x pipeline grid: the world's W ranks as D replicas of P = W / D pipeline stages.
 * World rank w is stage w % P of replica w / P: a replica's stages sit on consecutive ranks,
 * so under a block distribution of ranks over nodes (mpirun's and Slurm's default) a
 * pipeline's neighbours share a node. Returns the pipeline communicator of this rank's
 * replica (its ranks are the stages in order); the world keeps it and comm_finalize frees
 * it. Collective over the world; one error line when W is not a multiple of D. */
Comm *comm_split_grid(Comm *world, int data_parallel);
/* On a pipeline communicator: this rank's replica index and D (0 and 1 on any other Comm),
 * and the communicator of the D ranks that hold the same stage (NULL when D = 1), in
 * replica order. */
int comm_replica(const Comm *c);
int comm_num_replicas(const Comm *c);
Comm *comm_replica_peers(Comm *c);

/* Contiguous, balanced split of L layers over `ranks` stages: stage `rank` owns [l0, l1).
 * Earlier stages get the extra layer when L is not divisible. Fails (one error line) when
 * there are more ranks than layers. */
void comm_split_layers(int L, int ranks, int rank, int *l0, int *l1);

/* Stage sizes that balance an estimated cost: each decoder layer costs 1 and the last stage's
 * final norm, head and loss cost head_cost layers more (the embedding lookup is cheap).
 * Contiguous, at least one layer a stage; ties keep the even split's last stage. Pure. */
void comm_split_by_cost(int L, int ranks, double head_cost, int *layers_per_rank);
/* Use these stage sizes ([size], summing to L) for c's ranks from now on; NULL: the even
 * split of comm_split_layers. Checked: one error line when they do not fit. */
void comm_set_layer_split(Comm *c, int L, const int *layers_per_rank);
/* Layers [l0, l1) of `rank` under c's split (the even one unless set). */
void comm_rank_layers(const Comm *c, int L, int rank, int *l0, int *l1);

/* Element-wise sum over all ranks, in place. Doubles, so the result of adding per-rank
 * partial sums does not depend on float rounding of the transport. */
void comm_allreduce_sum(Comm *c, double *values, int n);
void comm_broadcast(Comm *c, void *buf, size_t bytes, int root);
void comm_barrier(Comm *c);

/* Gathers per-layer blocks on rank 0: each rank holds the blocks of its own layers
 * [l0, l1) (comm_rank_layers of L) contiguously in `local`; rank 0 receives all L blocks in
 * layer order in `all` (ignored elsewhere). */
void comm_gather_layers(Comm *c, const void *local, size_t block_bytes, int L, void *all);

/* The lowest rank whose `value` differs from rank 0's, or -1 when all agree (collective):
 * ranks compare digests of what each read on its own (config, data files). */
int comm_first_rank_differing(Comm *c, uint64_t value);

/* Largest value of an int over all ranks (e.g. "any rank was asked to stop"). */
int comm_allreduce_max_int(Comm *c, int value);

#endif
