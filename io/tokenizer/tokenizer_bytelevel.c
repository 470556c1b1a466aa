/* GPT-2's byte-to-unicode map (byte-level BPE: Llama-3, Qwen2, GPT-2): every byte stands for
 * a printable character, so any byte string is a string of vocabulary characters. */
#include "tokenizer_internal.h"

/* GPT-2's split pattern, used by the ByteLevel pre-tokenizer when use_regex is true. */
const char *const tk_gpt2_pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Printable bytes stand for themselves: '!'..'~', U+00A1..U+00AC and U+00AE..U+00FF. The
 * other 68 bytes, in increasing order, take U+0100, U+0101, ... */
static int printable(unsigned b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

static uint32_t byte_cp(unsigned char b) {
  if (printable(b)) return b;
  if (b <= 0x20) return 256 + b;
  if (b <= 0xA0) return 256 + 33 + (b - 0x7F); /* 0x7F..0xA0 */
  return 256 + 67;                             /* 0xAD */
}

size_t tk_byte_char(unsigned char b, char out[2]) {
  uint32_t cp = byte_cp(b);
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  out[0] = (char)(0xC0 | (cp >> 6));
  out[1] = (char)(0x80 | (cp & 0x3F));
  return 2;
}

int tk_char_byte(uint32_t cp) {
  if (cp < 256) return printable(cp) ? (int)cp : -1;
  if (cp < 256 + 33) return (int)(cp - 256);
  if (cp < 256 + 67) return (int)(cp - 256 - 33 + 0x7F);
  if (cp == 256 + 67) return 0xAD;
  return -1;
}
