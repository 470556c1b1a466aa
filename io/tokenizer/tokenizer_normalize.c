/* The normaliser pipeline (Prepend, NFC, Replace steps in order), shared by encoding and by
 * the preparation of added tokens that are matched on normalised text. */
#include <stdlib.h>

#include "tokenizer_internal.h"

/* How many of the first `zero` bytes of s survive as bytes aligned to the original start
 * after s is rewritten span by span: gaps keep their bytes, a replaced span that starts in
 * the zero region passes that alignment to all of its replacement. */
size_t tk_normalize(const Tokenizer *t, const char *s, size_t n, size_t zero, TkBuf *out) {
  TkBuf a = {0}, b = {0};
  tkbuf_put(&a, s, n);
  tkbuf_reserve(&a, 0); /* a real base pointer even for empty text */
  TkSpans sp = {0};
  for (int i = 0; i < t->n_norm; i++) {
    const TkNormStep *st = &t->norm[i];
    b.len = 0;
    tkbuf_reserve(&b, 0);
    if (st->kind == TK_NORM_PREPEND) {
      if (a.len) { /* tokenizers prepends nothing to an empty string */
        tkbuf_put(&b, st->text, st->text_len);
        if (zero) zero += st->text_len;
      }
      tkbuf_put(&b, a.p, a.len);
    } else if (st->kind == TK_NORM_NFC) {
      tk_nfc(a.p, a.len, &b);
      if (zero) zero = tk_utf8_len((const unsigned char *)b.p, b.len);
    } else {
      tkre_find_matches(st->re, a.p, a.len, &sp);
      size_t nz = 0;
      for (int k = 0; k < sp.n; k++) {
        const TkSpan *x = &sp.v[k];
        if (x->match) {
          if (x->a < zero) nz += st->text_len;
          tkbuf_put(&b, st->text, st->text_len);
        } else {
          if (x->a < zero) nz += (x->b < zero ? x->b : zero) - x->a;
          tkbuf_put(&b, a.p + x->a, x->b - x->a);
        }
      }
      zero = nz;
    }
    TkBuf tmp = a;
    a = b;
    b = tmp;
  }
  tkbuf_put(out, a.p, a.len);
  tkbuf_free(&a);
  tkbuf_free(&b);
  free(sp.v);
  return zero;
}
