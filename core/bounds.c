/* Range checks and their wording (see bounds.h). */
#include "bounds.h"

#include <math.h>
#include <stdio.h>

int real_bounds_hold(const RealBounds *b, double v) {
  if (!isfinite(v) || v < b->lo || (b->lo_open && v == b->lo)) return 0;
  return !b->has_hi || v < b->hi || (!b->hi_open && v == b->hi);
}

void real_bounds_text(const RealBounds *b, char *buf, size_t n) {
  if (!b->has_hi)
    snprintf(buf, n, "%s %g", b->lo_open ? ">" : ">=", b->lo);
  else
    snprintf(buf, n, "in %c%g, %g%c", b->lo_open ? '(' : '[', b->lo, b->hi,
             b->hi_open ? ')' : ']');
}
