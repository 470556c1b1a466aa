#!/opt/tvref/bin/python
"""Loads a LoRA adapter folder written BY TVACCINE (`tvaccine export`, io/hf/peft.c) into
Hugging Face PEFT exactly as a user would -- PeftModel.from_pretrained on the folder as it
is, no fixups -- and writes the logits it gives, so the tvaccine -> PEFT direction of the
adapter format is checked by the real library (tests/ref/hf_models.py checks PEFT -> tvaccine).

Usage (from the repository root, with the dev-only venv of tests/ref/hf_models.py):
    /opt/tvref/bin/python tests/ref/check_tvaccine_adapter.py ADAPTER_DIR MODEL_DIR GOLDEN_OUT \
        [--tokens FILE.tvg] [--compare FILE.tvg [--name logits]] [--tol 1e-4]

  ADAPTER_DIR  adapter_config.json + adapter_model.safetensors written by tvaccine
  MODEL_DIR    the Hugging Face base model folder the adapter belongs to
  GOLDEN_OUT   .tvg written here: input_ids [B,T] int32, base_logits and logits [B,T,V]
               float32 (base model alone, and base + adapter), computed in float32
  --tokens     take input_ids from this .tvg (e.g. tests/data/hf/llama_gqa.tvg); default:
               a fixed pseudo-random [2, 9] batch of ids below the vocabulary size
  --compare    also compare the base + adapter logits against tensor --name of this .tvg
               (e.g. logits tvaccine computed with the same adapter) by
               max|a-b| / max|b|; exit 1 above --tol

Beyond PEFT's own loading, the script fails when the adapter file and the loaded model do not
match one to one (a key PEFT silently skipped, a module with no tensor in the file) or when
the values loaded differ from the file's, since from_pretrained only warns about those.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np
import torch

from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hf_models import write_tvg  # noqa: E402  (same format, one writer)


def read_tvg(path):
    """Reader of the golden format (see tests/golden.h); returns {name: numpy array}."""
    with open(path, "rb") as f:
        buf = f.read()
    if buf[:8] != b"TVGOLD1\n":
        sys.exit("%s: not a golden file (bad magic)" % path)
    (count,), pos, out = struct.unpack_from("<I", buf, 8), 12, {}
    for _ in range(count):
        (n,) = struct.unpack_from("<I", buf, pos)
        name = buf[pos + 4:pos + 4 + n].decode("ascii")
        pos += 4 + n
        dtype, ndim = struct.unpack_from("<II", buf, pos)
        pos += 8
        dims = struct.unpack_from("<%dq" % ndim, buf, pos)
        pos += 8 * ndim
        numel = int(np.prod(dims)) if ndim else 1
        arr = np.frombuffer(buf, dtype="<f4" if dtype == 0 else "<i4", count=numel, offset=pos)
        out[name] = arr.reshape(dims).astype(np.float32 if dtype == 0 else np.int32)
        pos += 4 * numel
    return out


def logits_of(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.numpy()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("adapter_dir")
    ap.add_argument("model_dir")
    ap.add_argument("golden_out")
    ap.add_argument("--tokens")
    ap.add_argument("--compare")
    ap.add_argument("--name", default="logits")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    torch.set_num_threads(1)

    with open(os.path.join(a.adapter_dir, "adapter_config.json")) as f:
        acfg = json.load(f)
    print("%s: peft_type %s, r %s, lora_alpha %s, lora_dropout %s, target_modules %s" %
          (a.adapter_dir, acfg.get("peft_type"), acfg.get("r"), acfg.get("lora_alpha"),
           acfg.get("lora_dropout"), acfg.get("target_modules")))

    base = AutoModelForCausalLM.from_pretrained(a.model_dir, dtype=torch.float32,
                                                attn_implementation="eager").eval()
    V = base.config.vocab_size
    if a.tokens:
        ids = torch.from_numpy(read_tvg(a.tokens)["input_ids"].astype(np.int64))
    else:
        ids = torch.randint(0, V, (2, 9), generator=torch.Generator().manual_seed(7))
    base_logits = logits_of(base, ids)

    model = PeftModel.from_pretrained(base, a.adapter_dir).eval()  # the folder as it is

    # One to one: every tensor of the file landed in the model with its value, and every
    # LoRA module of the model got a tensor from the file.
    file_sd = load_file(os.path.join(a.adapter_dir, "adapter_model.safetensors"))
    model_sd = get_peft_model_state_dict(model)
    problems = []
    for k in sorted(set(file_sd) - set(model_sd)):
        problems.append("in the file but not used by PEFT: " + k)
    for k in sorted(set(model_sd) - set(file_sd)):
        problems.append("expected by PEFT but not in the file: " + k)
    for k in sorted(set(file_sd) & set(model_sd)):
        if not torch.equal(file_sd[k].float(), model_sd[k].float()):
            problems.append("loaded value differs from the file: " + k)
    for p in problems:
        print("  " + p)
    if problems:
        sys.exit("%s: %d problem(s) loading into PEFT" % (a.adapter_dir, len(problems)))
    print("%s: all %d adapter tensors loaded by PeftModel.from_pretrained" %
          (a.adapter_dir, len(file_sd)))

    logits = logits_of(model, ids)
    moved = float(np.abs(logits - base_logits).max() / np.abs(base_logits).max())
    print("adapter moves logits by %.3g of max|logit|%s" %
          (moved, " (a zero-B adapter does nothing)" if moved == 0 else ""))
    size = write_tvg(a.golden_out, [("input_ids", ids.numpy().astype(np.int32)),
                                    ("base_logits", base_logits.astype(np.float32)),
                                    ("logits", logits.astype(np.float32))])
    print("wrote %s (%d bytes)" % (a.golden_out, size))

    if a.compare:
        ref = read_tvg(a.compare)[a.name]
        if ref.shape != logits.shape:
            sys.exit("%s %s has shape %s, PEFT logits %s" %
                     (a.compare, a.name, ref.shape, logits.shape))
        err = float(np.abs(logits - ref).max() / np.abs(ref).max())
        print("max|peft - %s:%s| / max|ref| = %.3g (tolerance %.0e)" %
              (a.compare, a.name, err, a.tol))
        if not err <= a.tol:
            sys.exit(1)


if __name__ == "__main__":
    main()
