#!/usr/bin/python3
"""Independent reference for the dataset encoding test (tests/test_dataset.c).

Writes a tiny Llama-2-style tokenizer (SentencePiece-style BPE: Prepend + Replace
normaliser, byte fallback <0xNN>, BOS from a TemplateProcessing post-processor, a handful
of merges) to tests/data/datasets/tok/, then tokenizes tests/data/datasets/alpaca.json the
way the Stanford Alpaca / Vaccine reference preprocessing does it:

    source  = PROMPT_DICT[...].format_map(example)
    example = source + output + tokenizer.eos_token
    ids     = tokenizer(example, max_length=max_len, truncation=True)
    labels  = ids with the first len(tokenizer(source, truncation=True)) set to -100

and writes ids and labels for several max_len values to
tests/data/datasets/encoded_expected.json.

Needs only the Hugging Face `tokenizers` wheel (pip install tokenizers). Rerun from the
repository root:
    python3 tests/ref/dataset_ref.py
"""
import json
import os

from tokenizers import Tokenizer, decoders, models, normalizers, processors

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "..", "data", "datasets")

PROMPT_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")

MERGES = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("e", "r"), ("o", "n"),
          ("r", "e"), ("s", "t"), ("▁", "a"), ("#", "#"), ("##", "#"), ("▁", "s"),
          ("a", "t"), ("e", "s"), ("▁s", "t")]


def build_tokenizer():
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    chars = "▁" + "abcdefghijklmnopqrstuvwxyz" + "ABCDEFGHIJKLMNOPQRSTUVWXYZ" + "0123456789" + ".,:;!?'#-"
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    for a, b in MERGES:
        vocab.setdefault(a + b, len(vocab))
    model = models.BPE(vocab=vocab, merges=MERGES, unk_token="<unk>", fuse_unk=True,
                       byte_fallback=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"),
                                           normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    return tok


def main():
    tok = build_tokenizer()
    out_dir = os.path.join(DATA, "tok")
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": "<s>",
                   "eos_token": "</s>", "unk_token": "<unk>", "pad_token": None,
                   "model_max_length": 1000000}, f, indent=2)
        f.write("\n")

    with open(os.path.join(DATA, "alpaca.json")) as f:
        examples = json.load(f)
    cases = []
    for max_len in (512, 150, 124, 123, 120, 60):
        tok.enable_truncation(max_length=max_len)
        for i, ex in enumerate(examples):
            ex = dict(ex)
            ex.setdefault("input", "")
            source = (PROMPT_INPUT if ex["input"] != "" else PROMPT_NO_INPUT).format_map(ex)
            ids = tok.encode(source + ex["output"] + "</s>").ids
            n_source = len(tok.encode(source).ids)
            labels = [-100 if t < n_source else x for t, x in enumerate(ids)]
            cases.append({"max_len": max_len, "example": i, "ids": ids, "labels": labels})
    with open(os.path.join(DATA, "encoded_expected.json"), "w") as f:
        json.dump({"eos_id": 2, "pad_id": 2, "cases": cases}, f)
        f.write("\n")


if __name__ == "__main__":
    main()
