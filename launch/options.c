/* Parsing of numeric command-line values with range checks and one clear error line. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "subcommands.h"

long long parse_int_option(const char *option, const char *text, long long lo, long long hi) {
  char *end = NULL;
  errno = 0;
  long long v = strtoll(text, &end, 10);
  if (errno || end == text || *end)
    tv_die("--%s expects an integer, got '%s'", option, text);
  if (v < lo || v > hi) tv_die("--%s %lld is out of range [%lld, %lld]", option, v, lo, hi);
  return v;
}

double parse_num_option(const char *option, const char *text, double lo, double hi) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || end == text || *end || !isfinite(v))
    tv_die("--%s expects a number, got '%s'", option, text);
  if (v < lo || v > hi) tv_die("--%s %g is out of range [%g, %g]", option, v, lo, hi);
  return v;
}
