/* Each rank's list of pipeline operations against tables written out by hand for small
 * (P, m): 1F1B's warm-up, steady pairs and cool-down, GPipe, forward-only passes, and the
 * micro-batches each rank holds at once (its slots). */
#include <stdio.h>
#include <string.h>

#include "pipeline.h"
#include "test_util.h"

/* The ops as text, "F0 F1 B0 ...". */
static void ops_text(PipelineSchedule kind, int P, int rank, int m, int backward, char *out,
                     size_t len) {
  PipeOp ops[64];
  int n = pipeline_schedule_ops(kind, P, rank, m, backward, ops);
  size_t at = 0;
  out[0] = 0;
  for (int i = 0; i < n && at < len; i++)
    at += (size_t)snprintf(out + at, len - at, "%s%c%d", i ? " " : "",
                           ops[i].kind == PIPE_FORWARD ? 'F' : 'B', ops[i].micro);
}

typedef struct {
  PipelineSchedule kind;
  int P, rank, m, backward;
  const char *ops;
  int slots;
} Row;

int main(void) {
  const Row rows[] = {
      /* one rank: forward and backward of each micro-batch in turn */
      {SCHEDULE_1F1B, 1, 0, 3, 1, "F0 B0 F1 B1 F2 B2", 1},
      /* two ranks, three micro-batches */
      {SCHEDULE_1F1B, 2, 0, 3, 1, "F0 F1 B0 F2 B1 B2", 2},
      {SCHEDULE_1F1B, 2, 1, 3, 1, "F0 B0 F1 B1 F2 B2", 1},
      /* three ranks, four micro-batches */
      {SCHEDULE_1F1B, 3, 0, 4, 1, "F0 F1 F2 B0 F3 B1 B2 B3", 3},
      {SCHEDULE_1F1B, 3, 1, 4, 1, "F0 F1 B0 F2 B1 F3 B2 B3", 2},
      {SCHEDULE_1F1B, 3, 2, 4, 1, "F0 B0 F1 B1 F2 B2 F3 B3", 1},
      /* fewer micro-batches than the warm-up wants: all forwards, then all backwards */
      {SCHEDULE_1F1B, 4, 0, 2, 1, "F0 F1 B0 B1", 2},
      {SCHEDULE_1F1B, 4, 2, 2, 1, "F0 F1 B0 B1", 2},
      {SCHEDULE_1F1B, 4, 3, 2, 1, "F0 B0 F1 B1", 1},
      {SCHEDULE_1F1B, 4, 1, 1, 1, "F0 B0", 1},
      /* GPipe: every forward, then every backward, holding all of them */
      {SCHEDULE_GPIPE, 2, 0, 3, 1, "F0 F1 F2 B0 B1 B2", 3},
      {SCHEDULE_GPIPE, 2, 1, 3, 1, "F0 F1 F2 B0 B1 B2", 3},
      /* a rank below backward_stop only forwards */
      {SCHEDULE_1F1B, 3, 0, 4, 0, "F0 F1 F2 F3", 3},
      {SCHEDULE_GPIPE, 3, 1, 4, 0, "F0 F1 F2 F3", 2},
  };
  for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
    const Row *r = &rows[i];
    char got[256];
    ops_text(r->kind, r->P, r->rank, r->m, r->backward, got, sizeof got);
    EXPECT(!strcmp(got, r->ops), "%s P=%d rank %d m=%d%s: got \"%s\", want \"%s\"",
           schedule_name(r->kind), r->P, r->rank, r->m, r->backward ? "" : " forward-only", got,
           r->ops);
    int slots = pipeline_schedule_slots(r->kind, r->P, r->rank, r->m, r->backward);
    EXPECT(slots == r->slots, "%s P=%d rank %d m=%d: %d slots, want %d", schedule_name(r->kind),
           r->P, r->rank, r->m, slots, r->slots);
  }
  /* Every 1F1B list up to P = m = 8 holds each forward once, each backward once and after
   * its forward, and never more micro-batches at once than its slots. */
  for (int P = 1; P <= 8; P++)
    for (int rank = 0; rank < P; rank++)
      for (int m = 1; m <= 8; m++) {
        PipeOp ops[16];
        int n = pipeline_schedule_ops(SCHEDULE_1F1B, P, rank, m, 1, ops), held = 0, most = 0;
        int fwd[8] = {0}, bwd[8] = {0}, bad = n != 2 * m;
        for (int o = 0; o < n && !bad; o++) {
          if (ops[o].kind == PIPE_FORWARD) {
            fwd[ops[o].micro]++;
            held++;
          } else {
            bad |= !fwd[ops[o].micro];
            bwd[ops[o].micro]++;
            held--;
          }
          most = held > most ? held : most;
        }
        for (int i = 0; i < m; i++) bad |= fwd[i] != 1 || bwd[i] != 1;
        EXPECT(!bad, "1F1B P=%d rank %d m=%d is not a complete schedule", P, rank, m);
        EXPECT(most == pipeline_schedule_slots(SCHEDULE_1F1B, P, rank, m, 1),
               "1F1B P=%d rank %d m=%d holds %d micro-batches, slots say %d", P, rank, m, most,
               pipeline_schedule_slots(SCHEDULE_1F1B, P, rank, m, 1));
      }
  return tv_test_report("test_pipeline_schedule");
}
