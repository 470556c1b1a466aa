/* The valid range of a real-valued setting, written once next to the setting's owner and
 * read both by that owner's validator (core) and by the run config's key table (io). */
#ifndef TV_BOUNDS_H
#define TV_BOUNDS_H

#include <stddef.h>

typedef struct {
  double lo, hi;  /* hi is unused unless has_hi */
  char lo_open;   /* lo itself excluded */
  char hi_open;   /* hi itself excluded */
  char has_hi;
} RealBounds;

/* Finite values from lo (excluded if lo_open) up to hi (excluded if hi_open); hi < 0 means
 * no upper end. A brace initialiser, so it can stand in a static table. */
#define REAL_BOUNDS(lo_, lo_open_, hi_, hi_open_)                                   \
  {.lo = (lo_), .hi = (hi_), .lo_open = (lo_open_), .hi_open = (hi_open_),         \
   .has_hi = (hi_) >= 0}

int real_bounds_hold(const RealBounds *b, double v); /* v finite and inside */
/* ">= 0", "> 0" or "in [0, 1)": what a message says the value must be. */
void real_bounds_text(const RealBounds *b, char *buf, size_t n);

#endif
