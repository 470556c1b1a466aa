#!/opt/tvref/bin/python
"""QA-moderation judge reference for tests/test_judge_golden.c: a tiny random
LlamaForSequenceClassification in the beaver-dam layout (multi-label head `score.weight`
[num_labels, D], sigmoid per category), run by transformers itself.

Rerun (from the repository root; dev-only venv, CI needs no Python):
    /opt/tvref/bin/python tests/ref/judge_golden.py          # rewrites the files below
    /opt/tvref/bin/python tests/ref/judge_golden.py OUTDIR   # writes into OUTDIR instead

Writes into tests/data/hf/:
  judge_llama/        config.json + model.safetensors written by save_pretrained (4 labels
                      with id2label names, problem_type multi_label_classification,
                      pad_token_id = EOS "</s>"), plus the SentencePiece-style tokenizer of
                      tests/data/tokenizers/sp (copied), loaded with AutoTokenizer
  judge_llama.tvg:    for each (prompt, answer) pair of PAIRS, encoded by AutoTokenizer from
                      "BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{answer}":
                      ids_<i> [T_i] int32, and probs [P, num_labels] float32 = sigmoid of the
                      logits transformers pools at the last non-pad token (batch 1 per pair).
The last pair ends in a literal "</s>" (the pad id), so the pooling rule "last token that is
not pad" is exercised; weights are drawn with initializer_range 0.5 so the probabilities
spread on both sides of 0.5.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch
import transformers
from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

HERE = os.path.dirname(os.path.abspath(__file__))
TOKENIZER = os.path.join(HERE, "..", "data", "tokenizers", "sp")
LABELS = ["animal_abuse", "privacy_violation", "violence,aiding_and_abetting,incitement", "self_harm"]
PAIRS = [
    ("How do I bake bread?", " Mix flour, water and yeast, then bake it."),
    ("How can I steal a car?", " I'm sorry, I cannot help with that."),
    ("Tell me a secret about my neighbour.", " Their address is 12 Oak Lane and they leave at 8."),
    ("Say nothing.", ""),
    ("Ünïcödé prompt — does it work?", " Ja, natürlich: 東京 and emojis 🙂."),
    ("Repeat after me", " ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok ok"),
    ("Padding test", " this answer ends with the pad token</s>"),
]


def tvg_bytes(records):
    """TVGOLD1 golden file (reader: tests/golden.c)."""
    out = bytearray(b"TVGOLD1\n")
    out += struct.pack("<I", len(records))
    for name, arr in records:
        arr = np.array(arr, order="C")
        code = {np.dtype(np.float32): 0, np.dtype(np.int32): 1}[arr.dtype]
        raw = name.encode()
        out += struct.pack("<I", len(raw)) + raw + struct.pack("<II", code, arr.ndim)
        for d in arr.shape:
            out += struct.pack("<q", d)
        out += arr.tobytes()
    return bytes(out)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "data", "hf")
    torch.set_num_threads(1)
    print("transformers", transformers.__version__, "torch", torch.__version__)
    folder = os.path.join(outdir, "judge_llama")
    os.makedirs(folder, exist_ok=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKENIZER, f), os.path.join(folder, f))
    tok = AutoTokenizer.from_pretrained(folder)
    pad = tok.convert_tokens_to_ids("</s>")
    torch.manual_seed(41)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                      eos_token_id=pad, pad_token_id=pad, max_position_embeddings=256,
                      initializer_range=0.5, num_labels=len(LABELS),
                      id2label={i: n for i, n in enumerate(LABELS)},
                      label2id={n: i for i, n in enumerate(LABELS)},
                      problem_type="multi_label_classification")
    model = LlamaForSequenceClassification(cfg).float().eval()
    model.save_pretrained(folder, safe_serialization=True)
    model = LlamaForSequenceClassification.from_pretrained(folder, dtype=torch.float32).eval()

    recs, probs = [], []
    for i, (prompt, answer) in enumerate(PAIRS):
        text = f"BEGINNING OF CONVERSATION: USER: {prompt} ASSISTANT:{answer}"
        ids = tok(text, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0]
        probs.append(torch.sigmoid(logits).numpy())
        recs.append((f"ids_{i}", ids[0].numpy().astype(np.int32)))
    probs = np.stack(probs).astype(np.float32)
    recs.append(("probs", probs))
    with open(os.path.join(outdir, "judge_llama.tvg"), "wb") as f:
        f.write(tvg_bytes(recs))
    np.set_printoptions(precision=3, suppress=True)
    print("last ids of the pad pair:", recs[len(PAIRS) - 1][1][-4:], "pad", pad)
    print("probs:\n", probs)
    print("flagged (any > 0.5):", (probs > 0.5).any(axis=1).astype(int).tolist())


if __name__ == "__main__":
    main()
