#!/usr/bin/env python3
"""Golden data for the tokenizer test (tests/test_tokenizer_golden.c), from Hugging Face's
`tokenizers` library: trains two small BPE tokenizers on a generated corpus, writes them
and some variants to tests/data/tokenizers/<name>/, and the library's encodings and
decodings of a varied test corpus beside them.

Run (rerunnable; deterministic for a given tokenizers version):
    python3 -m venv /opt/tvref && /opt/tvref/bin/pip install tokenizers
    /opt/tvref/bin/python tests/ref/tokenizer_golden.py

Files (all UTF-8 text):
  corpus.txt               one test line per line, escaped: \\\\ \\n \\r \\t \\xHH
  <name>/tokenizer.json    (+ tokenizer_config.json)
  <name>/expected.txt      header lines "# ...", "prefix: ids", "suffix: ids", then per
                           corpus line (the first `lines` of them) five TAB-separated fields:
                           ids without specials | ids with specials ("+" = prefix ids suffix)
                           | decode(ids) ("\\s" = the corpus line itself)
                           | decode(special ids) ("-" = not stored: kept for every 10th line)
                           | decode(special ids, skip specials)
                           (the last two "\\s" = same as decode(ids)); decodes escaped.
                           Ids are written as two base-64 digits each, no separator
                           (A-Z a-z 0-9 + / = 0..63, most significant first).
Python strings cannot hold invalid UTF-8, so the corpus has none (the C unit tests and the
fuzzer cover such input).
"""
import json
import os
import random
import sys
import unicodedata

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)
import tokenizers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "data", "tokenizers")

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
               r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

WORDS = ("the of and to in is you that it he was for on are as with his they at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her "
         "would make like him into time has look two more write go see number no way could people "
         "my than first water been call who oil its now find long down day did get come made may "
         "part tokenizer merge vaccine layer gradient harmful alignment perturbation model "
         "Llama Qwen GPT données naïve café résumé Straße über "
         "привет мир καλημέρα κόσμε שלום مرحبا नमस्ते दुनिया สวัสดี 你好 世界 こんにちは カタカナ "
         "안녕하세요 Việt Nam İstanbul ılık").split()
SCRIPTS = [
    "Ça va très bien, merci ! L'été dernier, j'ai vu « Les Misérables ».",
    "Größe, Maß und Übermaß — die Straße ist 12,5 km lang.",
    "¿Qué tal? ¡Muy bien! Añadir jalapeño al niño.",
    "Η γρήγορη καφέ αλεπού πηδάει πάνω από τον τεμπέλη σκύλο.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "العربية لغة جميلة، ١٢٣٤٥ و ٦٧٨٩٠.",
    "עברית: שלום עולם, מה שלומך?",
    "हिन्दी में लिखना: क्षत्रिय, द्वार, श्री, ज्ञान।",
    "ภาษาไทยไม่มีช่องว่างระหว่างคำ",
    "中文没有空格，标点符号也是全角的。数字１２３。",
    "日本語のテキスト、ひらがなとカタカナと漢字。",
    "한국어 텍스트: 한글은 음절 블록으로 구성됩니다.",
    "Tiếng Việt có nhiều dấu: ắ ằ ẳ ẵ ặ ế ề ể ễ ệ.",
    "Türkçe: İstanbul'da ılık bir gün; IĞDIR, ığdır.",
    "ქართული ენა, Հայերեն, አማርኛ, ᏣᎳᎩ, ᠮᠣᠩᠭᠣᠯ",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙 𝒶𝓁𝓅𝒽𝒶, ℕ ⊂ ℤ ⊂ ℚ ⊂ ℝ, ∀x∈ℝ: x²≥0",
]
EMOJI = ["😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳️\u200d🌈", "🇫🇷", "🇯🇵", "❤️", "1️⃣",
         "🧑🏿\u200d🚀", "🤷\u200d♀️", "🐍", "🦀", "✨", "👩🏻\u200d💻", "☕", "©", "™"]
COMBINING = ["e\u0301", "a\u0308\u0304", "n\u0303", "Z\u0351\u0352\u0353\u0354\u0355", "o\u0338",
             "\u0915\u094d\u0937", "i\u0307", "\u1100\u1161\u11a8"]
SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\r\n", "\n\n", " \n ", "\u00a0", "\u3000",
          "\u2028", "\u0085", "\u200b", "\ufeff", "\u2009", "\u202f", " \t \n"]
PUNCT = ["!", "?", "...", "!!!", "?!", "—", "–", "«", "»", "“", "”", "‘", "’", "(", ")", "[", "]",
         "{", "}", "<", ">", "->", "=>", "==", "!=", "::", ";", ":", ",", ".", "#", "@", "$", "%",
         "^", "&", "*", "_", "-", "+", "=", "|", "\\", "/", "~", "`", '"', "'"]
CONTRACTIONS = ["I'm", "you're", "He's", "they'VE", "IT'S", "don't", "y'all", "'tis", "I’ll",
                "we'd", "She'll", "'S", "'T", "'Re", "O'Neil", "rock'n'roll", "'m", "''"]
SPECIAL_TEXT = ["<s>", "</s>", "<unk>", "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>",
                "<|start_header_id|>user<|end_header_id|>", "<|eot", "<s", "s>", "<0x41>",
                "<0xZZ>", "▁", "▁▁", "Ġ", "Ċ", "<mask>", "[SW]", "x[SW]", "[SW]y", "rstrip>",
                "good day", "Good day", "ZZ", "<|endoftext|>", "<<s>>", "</s></s>"]
CODE = ["def f(x):\n    return x ** 2", "for (int i = 0; i < n; i++) { a[i] += b[i]; }",
        "{\"key\": [1, 2.5e-3, null, true], \"k2\": \"v\"}", "https://example.com/a?b=c&d=%20e#f",
        "SELECT * FROM t WHERE id = 42;", "x_1 + y_2 = z^{3}", "#include <stdio.h>",
        "    indented\tline\t\twith tabs", "C:\\Users\\name\\file.txt", "a->b->c; p = &q;"]


def rand_digits(r):
    k = r.choice([1, 2, 3, 4, 5, 7, 10, 16])
    s = "".join(r.choice("0123456789") for _ in range(k))
    return r.choice([s, s + "." + s[:2], "-" + s, s + "%", "1,234,567", "3.14159", "０１２",
                     "٣٤٥", "²³", "Ⅻ", "½", "1st", "2nd", "10:45", "2024-01-31"])


def rand_char(r):
    """A random assigned, non-surrogate code point from across the planes."""
    while True:
        cp = r.choice([r.randrange(0x20, 0x250), r.randrange(0x370, 0x2000),
                       r.randrange(0x2000, 0x3000), r.randrange(0x3000, 0xA000),
                       r.randrange(0xAC00, 0xD7A4), r.randrange(0xF900, 0x10000),
                       r.randrange(0x10000, 0x20000), r.randrange(0x20000, 0x2FA20),
                       r.randrange(0x1, 0x20)])
        if 0xD800 <= cp < 0xE000:
            continue
        ch = chr(cp)
        if unicodedata.category(ch) in ("Cn", "Cs", "Co"):
            continue
        return ch


def rand_piece(r):
    k = r.random()
    if k < 0.45:
        w = r.choice(WORDS)
        t = r.random()
        return w.capitalize() if t < 0.15 else (w.upper() if t < 0.2 else w)
    if k < 0.52:
        return r.choice(CONTRACTIONS)
    if k < 0.60:
        return r.choice(PUNCT) * r.choice([1, 1, 1, 2, 3])
    if k < 0.66:
        return rand_digits(r)
    if k < 0.71:
        return r.choice(EMOJI)
    if k < 0.74:
        return r.choice(COMBINING)
    if k < 0.78:
        return r.choice(SPECIAL_TEXT)
    if k < 0.84:
        return "".join(rand_char(r) for _ in range(r.randint(1, 4)))
    if k < 0.88:  # some decomposed (NFD), for the NFC normaliser
        text = r.choice(SCRIPTS)
        return unicodedata.normalize("NFD", text) if r.random() < 0.3 else text
    if k < 0.90:
        return r.choice(CODE)
    if k < 0.92:
        return chr(r.choice([0, 1, 7, 8, 0x1b, 0x7f, 0x1f]))
    return r.choice(SPACES)


def rand_line(r):
    k = r.random()
    if k < 0.03:
        return ""
    if k < 0.06:
        return "".join(r.choice(SPACES) for _ in range(r.randint(1, 5)))
    if k < 0.10:
        return r.choice(SCRIPTS)
    n = r.choice([1, 2, 3, 4, 6, 8, 12]) if r.random() > 0.004 else r.randint(60, 150)
    out = []
    for _ in range(n):
        out.append(rand_piece(r))
        sep = r.random()
        out.append(" " if sep < 0.7 else ("" if sep < 0.85 else r.choice(SPACES)))
    line = "".join(out)
    if r.random() < 0.1:
        line = " " + line
    if r.random() < 0.1:
        line = line + r.choice(SPACES)
    return line


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def ids_text(ids):
    for i in ids:
        if not 0 <= i < 64 * 64:
            raise SystemExit("id %d does not fit two base-64 digits" % i)
    return "".join(B64[i // 64] + B64[i % 64] for i in ids)


def esc(s):
    out = []
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ch == "\x7f":
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out)


def train_sp(corpus):
    """Llama-2 style: ▁ for space, <unk> <s> </s> then the 256 byte tokens, byte fallback."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                 split=True)
    trainer = trainers.BpeTrainer(vocab_size=1400, special_tokens=["<unk>", "<s>", "</s>"],
                                  limit_alphabet=180, show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    trained = json.loads(tok.to_str())["model"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for t, _ in sorted(trained["vocab"].items(), key=lambda kv: kv[1]):
        if t not in vocab:
            vocab[t] = len(vocab)
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    return vocab, merges


def train_bl(corpus):
    """Llama-3 style: byte-level BPE over the Llama-3 split regex, specials after the vocab."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    trainer = trainers.BpeTrainer(vocab_size=1800, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    trained = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    return trained["vocab"], merges


def sp_decoder():
    return decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                              decoders.Strip(content=" ", left=1, right=0)])


def sp_base(vocab, merges):
    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), unk_token="<unk>",
                               byte_fallback=True, fuse_unk=True))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in
                            ("<unk>", "<s>", "</s>")])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tok.decoder = sp_decoder()
    return tok


def build_sp_variants(vocab, merges):
    prepend_replace = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    sp_cfg = {"add_bos_token": True, "add_eos_token": False,
              "bos_token": {"__type": "AddedToken", "content": "<s>", "lstrip": False, "normalized": False,
                            "rstrip": False, "single_word": False},
              "eos_token": "</s>", "pad_token": None, "unk_token": "<unk>"}
    out = {}
    # Llama-2 as Hugging Face ships it today: Prepend + Replace normaliser, no pre-tokenizer.
    tok = sp_base(vocab, merges)
    tok.normalizer = prepend_replace
    out["sp"] = (tok, sp_cfg)
    # The older Llama-2 / Mistral form: Metaspace pre-tokenizer, prepend only at the start;
    # plus added tokens with lstrip / rstrip / single_word.
    tok = sp_base(vocab, merges)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    tok.add_tokens([AddedToken("[SW]", single_word=True, normalized=False),
                    AddedToken("rstrip>", rstrip=True, normalized=False)])
    out["sp_meta_first"] = (tok, sp_cfg)
    # Metaspace that splits at every ▁ and always prepends; no unk fusing; merges as "a b".
    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), unk_token="<unk>",
                               byte_fallback=False, fuse_unk=False))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in
                            ("<unk>", "<s>", "</s>")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> $B", special_tokens=[("<s>", 1), ("</s>", 2)])
    out["sp_meta_always"] = (tok, None)
    # Normalised added tokens: matched against the Prepend/Replace output.
    tok = sp_base(vocab, merges)
    tok.normalizer = prepend_replace
    tok.add_tokens([AddedToken("good day", normalized=True),
                    AddedToken("ZZ", normalized=True, rstrip=True)])
    tok.add_special_tokens([AddedToken("<mask>", special=True, normalized=True, lstrip=True)])
    out["sp_norm_added"] = (tok, sp_cfg)
    return out


def build_bl_variants(vocab, merges):
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"] + ["<|reserved_special_token_%d|>" % i for i in range(4)]
    out = {}
    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                      pair="<|begin_of_text|> $A <|begin_of_text|> $B:1",
                                      special_tokens=[("<|begin_of_text|>", bos)])])
    tok.decoder = decoders.ByteLevel()
    out["bytelevel"] = (tok, {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"})
    # GPT-2: the ByteLevel pre-tokenizer's own regex, a prefix space, merges always applied.
    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True)
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    out["bl_gpt2"] = (tok, None)
    # Qwen2: NFC normaliser, single-digit split, no BOS.
    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges)))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in
                            ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    out["bl_qwen2"] = (tok, {"bos_token": None, "eos_token": "<|endoftext|>",
                             "pad_token": "<|endoftext|>"})
    # Every split behaviour, inversion, and a String pattern, before the byte mapping.
    tok = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges)))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("-", behavior="removed"),
        pre_tokenizers.Split(Regex(r"\p{P}"), behavior="merged_with_previous"),
        pre_tokenizers.Split(" ", behavior="merged_with_next"),
        pre_tokenizers.Split(Regex(r"\d+|\s"), behavior="contiguous", invert=True),
        pre_tokenizers.Split(Regex(r"[aeiou]"), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    tok.decoder = decoders.ByteLevel()
    out["bl_splits"] = (tok, None)
    return out


def special_affixes(tok):
    """Prefix and suffix ids the post-processor puts around a sequence."""
    a = tok.encode("a", add_special_tokens=False).ids
    s = tok.encode("a", add_special_tokens=True).ids
    for i in range(len(s) - len(a) + 1):
        if s[i:i + len(a)] == a:
            return s[:i], s[i + len(a):]
    raise SystemExit("cannot find the plain ids inside the special ids")


def write_variant(name, tok, cfg, corpus, nlines):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    tok.save(os.path.join(d, "tokenizer.json"), pretty=False)
    cfg_path = os.path.join(d, "tokenizer_config.json")
    if cfg is not None:
        with open(cfg_path, "w", encoding="utf-8") as f:
            json.dump(cfg, f, ensure_ascii=False, indent=1)
    elif os.path.exists(cfg_path):
        os.remove(cfg_path)
    # reload from the file, so the expectations are those of the file as saved
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    pre, suf = special_affixes(tok)
    lines = ["# tokenizers %s variant %s lines %d" % (tokenizers.__version__, name, nlines),
             "prefix: " + ids_text(pre), "suffix: " + ids_text(suf)]
    for n, text in enumerate(corpus[:nlines]):
        ids = tok.encode(text, add_special_tokens=False).ids
        sids = tok.encode(text, add_special_tokens=True).ids
        dec = tok.decode(ids, skip_special_tokens=False)
        dspec = tok.decode(sids, skip_special_tokens=False)
        dskip = tok.decode(sids, skip_special_tokens=True)
        f1 = ids_text(ids)
        f2 = "+" if sids == pre + ids + suf else ids_text(sids)
        f3 = "\\s" if dec == text else esc(dec)
        f4 = "-" if n % 10 else ("\\s" if dspec == dec else esc(dspec))
        f5 = "\\s" if dskip == dec else esc(dskip)
        lines.append("\t".join([f1, f2, f3, f4, f5]))
    with open(os.path.join(d, "expected.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(lines) + "\n")


def main():
    r = random.Random(20240531)
    train = [rand_line(r) for _ in range(20000)]
    r = random.Random(7)
    corpus = [rand_line(r) for _ in range(10000)]
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "corpus.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(esc(s) + "\n" for s in corpus))
    sp_vocab, sp_merges = train_sp(train)
    bl_vocab, bl_merges = train_bl(train)
    full = {"sp", "bytelevel"}
    variants = {}
    variants.update(build_sp_variants(sp_vocab, sp_merges))
    variants.update(build_bl_variants(bl_vocab, bl_merges))
    for name, (tok, cfg) in variants.items():
        write_variant(name, tok, cfg, corpus, len(corpus) if name in full else 1000)
        print("wrote", name, file=sys.stderr)


if __name__ == "__main__":
    main()
