/* Preemption of `tvaccine align` (see align_run.h). mpirun forwards SIGTERM to the ranks and
 * SIGKILLs them about 2 s later, Slurm a little later, and a step of a large model takes
 * far longer; so the run never waits for a step boundary. At each boundary every rank copies
 * its own layers' LoRA and AdamW state (small next to the model) into host memory. A signal
 * wakes a helper thread, which uses no MPI (the main thread may be inside any MPI call):
 *  - a lone process writes checkpoints/step-N.h5 from its copy;
 *  - with several ranks, each writes its part to checkpoints/.preempt-step-N.rank-K (a
 *    shared run folder is assumed, as for the run's other files), rank 0 waits for every
 *    part of the last step all ranks completed, writes the one HDF5 checkpoint of that step
 *    (SPEC 9) and removes the parts, which tells the other ranks they may exit.
 * A rank may be one step ahead of another (the step's gradient-norm allreduce keeps them
 * within one), so each keeps its last two step states: the newest step common to all ranks
 * is always held by all. Every rank then exits 0 without finishing its step.
 * MPI thread level: only the main thread ever calls MPI (the rule of MPI_THREAD_FUNNELED,
 * which the OpenMP worker threads already rely on), so no MPI_THREAD_MULTIPLE is needed and
 * no helper can deadlock in a collective against a rank that is stuck in a long step.
 * HDF5 is not thread-safe: rank 0's checkpoint and adapter writes hold io_lock, which the
 * helper takes before writing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "align_run.h"
#include "check.h"

#define PART_MAGIC UINT64_C(0x7476707265656d70) /* "tvpreemp" */
#define WAIT_FOR_PARTS_S 1.5                   /* mpirun's SIGKILL follows after about 2 s */

typedef struct {
  int valid; /* 0 while being written */
  AlignMeta meta;
  float *params, *m, *v; /* [local layers * layer_numel] */
  int64_t *steps;        /* [local layers * 7] */
} Slot;

struct Preempt {
  AlignRun *run;
  Slot slot[2];
  int newest; /* index of the newest valid slot */
  size_t numel, nsteps; /* local floats per array, local step counters */
  pthread_mutex_t state_lock, io_lock;
  pthread_t helper;
  int pipe_fd[2];
};

static int wake_fd = -1; /* the signal handler's only state: write end of the pipe */

static void on_stop_signal(int sig) {
  int saved = errno;
  unsigned char c = (unsigned char)sig;
  if (wake_fd >= 0) (void)!write(wake_fd, &c, 1);
  errno = saved;
}

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static char *part_path(const AlignRun *r, int rank, int64_t step) {
  size_t n = strlen(r->cfg.out) + 96;
  char *p = tv_malloc(n);
  snprintf(p, n, "%s/checkpoints/.preempt-step-%lld.rank-%d", r->cfg.out, (long long)step, rank);
  return p;
}

typedef struct {
  uint64_t magic;
  int64_t step, numel, nsteps;
  int32_t rank, l0, l1, pad;
} PartHeader;

static int write_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n > 0) {
    ssize_t w = write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    c += w, n -= (size_t)w;
  }
  return 0;
}

/* This rank's part of slot s: written to a temporary name and renamed, so a reader sees
 * whole parts only. */
static void write_part(Preempt *p, const Slot *s) {
  AlignRun *r = p->run;
  char *path = part_path(r, r->rank, s->meta.step);
  size_t n = strlen(path) + 8;
  char *tmp = tv_malloc(n);
  snprintf(tmp, n, "%s.tmp", path);
  PartHeader h = {.magic = PART_MAGIC, .step = s->meta.step, .numel = (int64_t)p->numel,
                  .nsteps = (int64_t)p->nsteps, .rank = r->rank, .l0 = r->l0, .l1 = r->l1};
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  int bad = fd < 0 || write_all(fd, &h, sizeof h) || write_all(fd, s->params, p->numel * 4) ||
            write_all(fd, s->m, p->numel * 4) || write_all(fd, s->v, p->numel * 4) ||
            write_all(fd, s->steps, p->nsteps * 8) || fsync(fd) != 0;
  if (fd >= 0) close(fd);
  if (bad || rename(tmp, path) != 0)
    fprintf(stderr, "tvaccine: error: preemption: rank %d cannot write %s: %s\n", r->rank, path,
            strerror(errno));
  free(tmp);
  free(path);
}

/* Reads rank k's part of `step` into the whole-model arrays; 0 when it is not (yet) there. */
static int read_part(Preempt *p, int k, int64_t step, float *params, float *m, float *v,
                     int64_t *steps) {
  AlignRun *r = p->run;
  char *path = part_path(r, k, step);
  FILE *f = fopen(path, "rb");
  free(path);
  if (!f) return 0;
  PartHeader h;
  size_t per = stage_lora(r->stage)->layer_numel;
  int ok = fread(&h, sizeof h, 1, f) == 1 && h.magic == PART_MAGIC && h.step == step &&
           h.rank == k && h.l0 >= 0 && h.l1 > h.l0 && h.l1 <= stage_config(r->stage)->num_layers &&
           (size_t)h.numel == (size_t)(h.l1 - h.l0) * per &&
           (size_t)h.nsteps == (size_t)(h.l1 - h.l0) * LORA_NUM_TARGETS;
  size_t off = (size_t)h.l0 * per, n = (size_t)h.numel, soff = (size_t)h.l0 * LORA_NUM_TARGETS;
  ok = ok && fread(params + off, 4, n, f) == n && fread(m + off, 4, n, f) == n &&
       fread(v + off, 4, n, f) == n && fread(steps + soff, 8, (size_t)h.nsteps, f) == (size_t)h.nsteps;
  fclose(f);
  return ok;
}

static int part_exists(Preempt *p, int k, int64_t step) {
  char *path = part_path(p->run, k, step);
  int there = access(path, F_OK) == 0;
  free(path);
  return there;
}

/* Rank k's marker that it has written every part it will write (named like a part, so
 * remove_parts removes it too). Rank 0 merges only after every marker is there, so no part
 * can appear after rank 0 has removed them. */
static char *written_path(const AlignRun *r, int k) {
  size_t n = strlen(r->cfg.out) + 96;
  char *path = tv_malloc(n);
  snprintf(path, n, "%s/checkpoints/.preempt-step-written.rank-%d", r->cfg.out, k);
  return path;
}

static void mark_parts_written(const AlignRun *r) {
  char *path = written_path(r, r->rank);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd >= 0) close(fd);
  free(path);
}

static int all_parts_written(const AlignRun *r) {
  int all = 1;
  for (int k = 1; k < r->size && all; k++) {
    char *path = written_path(r, k);
    all = access(path, F_OK) == 0;
    free(path);
  }
  return all;
}

/* Removes the part files of rank `rank` (-1: of every rank) from the checkpoint folder. */
static void remove_parts(const AlignRun *r, int rank) {
  char *dir = checkpoint_dir(r->cfg.out), suffix[32];
  snprintf(suffix, sizeof suffix, ".rank-%d", rank);
  DIR *d = opendir(dir);
  for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
    size_t n = strlen(e->d_name), k = strlen(suffix);
    if (strncmp(e->d_name, ".preempt-step-", 14) != 0) continue;
    if (rank >= 0 && (n < k || strcmp(e->d_name + n - k, suffix) != 0)) continue;
    size_t len = strlen(dir) + n + 2;
    char *path = tv_malloc(len);
    snprintf(path, len, "%s/%s", dir, e->d_name);
    unlink(path);
    free(path);
  }
  if (d) closedir(d);
  free(dir);
}

/* Rank 0 of several: the newest step of its own two whose parts every rank wrote. */
static void merge_parts(Preempt *p, const Slot *mine[2], int nmine, int sig) {
  AlignRun *r = p->run;
  LoraSet *ls = stage_lora(r->stage);
  int L = stage_config(r->stage)->num_layers;
  size_t total = (size_t)L * ls->layer_numel;
  float *params = tv_malloc(total * 4), *m = tv_malloc(total * 4), *v = tv_malloc(total * 4);
  int64_t *steps = tv_malloc((size_t)L * LORA_NUM_TARGETS * 8);
  const Slot *chosen = NULL;
  double t0 = mono_s();
  while (!all_parts_written(r) && mono_s() - t0 < WAIT_FOR_PARTS_S) usleep(20000);
  for (int pass = 0; !chosen && (pass++ == 0 || mono_s() - t0 < WAIT_FOR_PARTS_S);) {
    for (int i = 0; i < nmine && !chosen; i++) {
      int all = 1;
      for (int k = 1; k < r->size && all; k++) all = part_exists(p, k, mine[i]->meta.step);
      if (all) chosen = mine[i];
    }
    if (!chosen) usleep(20000);
  }
  if (!chosen) {
    fprintf(stderr, "tvaccine: error: preemption: not every rank wrote its state in %.1f s; "
            "no checkpoint written (the last saved one stands)\n", WAIT_FOR_PARTS_S);
  } else {
    int ok = read_part(p, 0, chosen->meta.step, params, m, v, steps);
    for (int k = 1; k < r->size && ok; k++)
      ok = read_part(p, k, chosen->meta.step, params, m, v, steps);
    if (!ok) {
      fprintf(stderr, "tvaccine: error: preemption: a part of step %lld is unreadable; no "
              "checkpoint written\n", (long long)chosen->meta.step);
    } else {
      char *path = align_write_checkpoint(r, &chosen->meta, params, m, v, steps);
      printf("align: stop requested: checkpoint saved at step %lld of %lld in %s (%s, %d "
             "ranks); continue with --resume %s\n", (long long)chosen->meta.step,
             (long long)r->total_steps, path, strsignal(sig), r->size, r->cfg.out);
      free(path);
    }
  }
  remove_parts(r, -1);
  free(params), free(m), free(v), free(steps);
}

static void *helper_main(void *arg) {
  Preempt *p = arg;
  AlignRun *r = p->run;
  unsigned char sig = 0;
  for (;;) {
    ssize_t n = read(p->pipe_fd[0], &sig, 1);
    if (n == 1) break;
    if (n < 0 && errno == EINTR) continue;
    return NULL;
  }
  if (sig == 0) return NULL; /* preempt_stop */
  pthread_mutex_lock(&p->io_lock);
  pthread_mutex_lock(&p->state_lock); /* the main thread blocks at its next boundary */
  const Slot *mine[2];
  int nmine = 0;
  for (int i = 0; i < 2; i++) {
    const Slot *s = &p->slot[(p->newest + i) % 2]; /* newest first */
    if (s->valid) mine[nmine++] = s;
  }
  if (r->size == 1) {
    char *path = align_write_checkpoint(r, &mine[0]->meta, mine[0]->params, mine[0]->m,
                                        mine[0]->v, mine[0]->steps);
    printf("align: stop requested: checkpoint saved at step %lld of %lld in %s (%s); "
           "continue with --resume %s\n", (long long)mine[0]->meta.step,
           (long long)r->total_steps, path, strsignal(sig), r->cfg.out);
    free(path);
  } else {
    for (int i = 0; i < nmine; i++) write_part(p, mine[i]);
    if (r->rank != 0) mark_parts_written(r);
    if (r->rank == 0) {
      merge_parts(p, mine, nmine, sig);
    } else {
      /* Rank 0 removes the parts once the checkpoint is written (or it gave up). */
      for (double t0 = mono_s(); mono_s() - t0 < WAIT_FOR_PARTS_S + 0.3;) {
        int left = 0;
        for (int i = 0; i < nmine; i++) left |= part_exists(p, r->rank, mine[i]->meta.step);
        if (!left) break;
        usleep(20000);
      }
      remove_parts(r, r->rank); /* a part rank 0 did not need */
    }
  }
  fflush(stdout);
  fflush(stderr);
  _exit(0);
}

static void slot_alloc(Preempt *p, Slot *s, int L) {
  s->params = tv_malloc(p->numel * sizeof(float));
  s->m = tv_malloc(p->numel * sizeof(float));
  s->v = tv_malloc(p->numel * sizeof(float));
  s->steps = tv_malloc(p->nsteps * sizeof(int64_t));
  s->meta.probs = tv_malloc((size_t)L * sizeof(double));
  s->meta.active = tv_malloc((size_t)L * sizeof(int32_t));
}

Preempt *preempt_start(AlignRun *r) {
  Preempt *p = tv_calloc(1, sizeof(Preempt));
  p->run = r;
  LoraSet *ls = stage_lora(r->stage);
  int nl = r->l1 - r->l0, L = stage_config(r->stage)->num_layers;
  p->numel = (size_t)nl * ls->layer_numel;
  p->nsteps = (size_t)nl * LORA_NUM_TARGETS;
  for (int i = 0; i < 2; i++) slot_alloc(p, &p->slot[i], L);
  pthread_mutex_init(&p->state_lock, NULL);
  pthread_mutex_init(&p->io_lock, NULL);
  if (pipe(p->pipe_fd) != 0) tv_die("preemption: cannot create a pipe: %s", strerror(errno));
  fcntl(p->pipe_fd[1], F_SETFL, O_NONBLOCK); /* a burst of signals never blocks the handler */
  preempt_keep(p, r, r->step);
  /* Parts a rank 0 that died mid-merge left behind belong to no checkpoint. */
  if (r->rank == 0) remove_parts(r, -1);
  if (pthread_create(&p->helper, NULL, helper_main, p) != 0)
    tv_die("preemption: cannot start the helper thread");
  wake_fd = p->pipe_fd[1];
  struct sigaction sa = {.sa_handler = on_stop_signal};
  sigemptyset(&sa.sa_mask);
  const int sigs[] = {SIGTERM, SIGINT, SIGUSR1};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
  return p;
}

void preempt_keep(Preempt *p, AlignRun *r, int64_t steps_done) {
  LoraSet *ls = stage_lora(r->stage);
  Backend *be = r->be;
  int target = (p->newest + 1) % 2;
  if (!p->slot[p->newest].valid) target = p->newest; /* the first copy */
  Slot *s = &p->slot[target];
  pthread_mutex_lock(&p->state_lock);
  s->valid = 0;
  pthread_mutex_unlock(&p->state_lock);
  /* Copied without the lock: the helper only reads valid slots. */
  be->to_host(be, s->params, ls->params, p->numel * sizeof(float));
  be->to_host(be, s->m, ls->m, p->numel * sizeof(float));
  be->to_host(be, s->v, ls->v, p->numel * sizeof(float));
  memcpy(s->steps, ls->steps, p->nsteps * sizeof(int64_t));
  align_meta_capture(r, steps_done, &s->meta);
  pthread_mutex_lock(&p->state_lock);
  s->valid = 1;
  p->newest = target;
  pthread_mutex_unlock(&p->state_lock);
}

void preempt_save_kept(Preempt *p) {
  AlignRun *r = p->run;
  pthread_mutex_lock(&p->state_lock);
  const Slot *s = &p->slot[p->newest];
  int L = stage_config(r->stage)->num_layers;
  size_t block = stage_lora(r->stage)->layer_numel * sizeof(float);
  float *all[3] = {NULL, NULL, NULL};
  const float *mine[3] = {s->params, s->m, s->v};
  int64_t *steps = r->rank == 0 ? tv_malloc((size_t)L * LORA_NUM_TARGETS * sizeof(int64_t)) : NULL;
  /* Replica 0's pipeline holds the whole state; the other replicas hold copies of it. */
  for (int a = 0; a < 3 && r->replica == 0; a++) {
    if (r->rank == 0) all[a] = tv_malloc(block * (size_t)L);
    comm_gather_layers(r->pipe, mine[a], block, L, all[a]);
  }
  if (r->replica == 0)
    comm_gather_layers(r->pipe, s->steps, LORA_NUM_TARGETS * sizeof(int64_t), L, steps);
  if (r->rank == 0) {
    pthread_mutex_lock(&p->io_lock);
    char *path = align_write_checkpoint(r, &s->meta, all[0], all[1], all[2], steps);
    pthread_mutex_unlock(&p->io_lock);
    printf("align: checkpoint %s\n", path);
    free(path);
  }
  pthread_mutex_unlock(&p->state_lock);
  for (int a = 0; a < 3; a++) free(all[a]);
  free(steps);
}

void preempt_io_lock(Preempt *p) {
  if (p) pthread_mutex_lock(&p->io_lock);
}
void preempt_io_unlock(Preempt *p) {
  if (p) pthread_mutex_unlock(&p->io_lock);
}

void preempt_stop(Preempt *p) {
  if (!p) return;
  struct sigaction sa = {.sa_handler = SIG_DFL};
  sigemptyset(&sa.sa_mask);
  const int sigs[] = {SIGTERM, SIGINT, SIGUSR1};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) sigaction(sigs[i], &sa, NULL);
  wake_fd = -1;
  unsigned char quit = 0;
  (void)!write(p->pipe_fd[1], &quit, 1);
  pthread_join(p->helper, NULL);
  close(p->pipe_fd[0]);
  close(p->pipe_fd[1]);
  for (int i = 0; i < 2; i++) {
    Slot *s = &p->slot[i];
    free(s->params), free(s->m), free(s->v), free(s->steps);
    free(s->meta.probs), free(s->meta.active);
  }
  pthread_mutex_destroy(&p->state_lock);
  pthread_mutex_destroy(&p->io_lock);
  free(p);
}
