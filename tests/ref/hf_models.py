#!/opt/tvref/bin/python
"""Hugging Face interoperability references for tests/test_hf_golden.c, made by the REAL
libraries (transformers, peft, safetensors), so the C loaders are checked against what those
libraries write and compute, not against our own reading of the formats.

Rerun (from the repository root; needs the dev-only venv, CI needs no Python):
    python3 -m venv /opt/tvref
    /opt/tvref/bin/pip install torch transformers peft safetensors tokenizers
    /opt/tvref/bin/python tests/ref/hf_models.py            # rewrites tests/data/hf/
    /opt/tvref/bin/python tests/ref/hf_models.py OUTDIR     # writes into OUTDIR instead
Seeds are fixed and torch runs single-threaded, so a rerun with the same library versions
reproduces every committed file byte for byte (check with `cmp` / `git status`). The
versions that made the committed files are printed at the start and recorded in each
config.json (`transformers_version`); other versions may write a different config layout.

What it writes into tests/data/hf/:
  llama_gqa/              LlamaForCausalLM, 4 heads / 2 kv heads, untied, F32, one
                          model.safetensors, rope_theta 10000 (transformers' own layout)
  llama_tied_llama3rope/  tied embeddings, head_dim 16 with 4 heads on width 32
                          (H*head_dim != hidden), llama3 rope scaling with
                          original_max_position_embeddings 16 (so the rule matters at the
                          test's 9 positions), eos_token_id a list
  qwen2_bias/             Qwen2ForCausalLM: biases on q, k, v, GQA 4/2; config.json has no
                          `attention_bias` (as on the Hub: Qwen2 implies it)
  llama_sharded_bf16/     BF16 weights in several shards + model.safetensors.index.json
  peft_llama_gqa/         PEFT LoRA adapter for llama_gqa: r 4, alpha 8, all seven
                          projections, dropout 0, random NON-ZERO A and B
  <name>.tvg              golden file per model: `input_ids` [B,T] int32 and `logits`
                          [B,T,V] float32 computed by transformers in float32 from the folder
                          as written (reloaded from disk); llama_gqa.tvg also holds
                          `peft_logits`, base + adapter as loaded by PeftModel.from_pretrained.

Two configs are rewritten after save_pretrained into the legacy layout that most checkpoints
on the Hub still have (transformers >= 5 writes `rope_parameters`; Llama-3.1 / Qwen2.5 files
carry top-level `rope_theta` and `rope_scaling`, and `torch_dtype`): qwen2_bias (rope_theta
10000, rope_scaling null) and llama_sharded_bf16 (rope_theta 500000 with a llama3
rope_scaling block, like Llama-3.1). Their goldens are computed by transformers loading the
rewritten files, so both layouts are held to the library's own reading of them.

Golden file format (reader: tests/golden.c): magic b"TVGOLD1\\n", u32 record count, then per
record u32 name_len, name bytes, u32 dtype (0 float32, 1 int32), u32 ndim, ndim x i64 dims,
numel elements; all little-endian.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np
import torch

import peft
import safetensors
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import (LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
B, T = 2, 9
V, D, F = 96, 32, 48

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}

MODELS = {
    "llama_gqa": dict(
        arch="llama", seed=11, dtype=torch.float32, shard=None, legacy=None,
        cfg=dict(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                 rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                 eos_token_id=2, max_position_embeddings=128)),
    "llama_tied_llama3rope": dict(
        arch="llama", seed=22, dtype=torch.float32, shard=None, legacy=None,
        cfg=dict(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=1, head_dim=16,
                 rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=dict(LLAMA3_ROPE),
                 tie_word_embeddings=True, bos_token_id=1, eos_token_id=[2, 3, 5],
                 max_position_embeddings=128)),
    "qwen2_bias": dict(
        arch="qwen2", seed=33, dtype=torch.float32, shard=None,
        legacy=dict(rope_theta=10000.0, rope_scaling=None),
        cfg=dict(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                 rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=None,
                 eos_token_id=4, max_position_embeddings=128)),
    "llama_sharded_bf16": dict(
        arch="llama", seed=44, dtype=torch.bfloat16, shard="20KB",
        legacy=dict(rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE)),
        cfg=dict(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=3,
                 num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                 rope_theta=500000.0, rope_scaling=dict(LLAMA3_ROPE),
                 tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                 max_position_embeddings=128)),
}
PEFT_BASE = "llama_gqa"
PEFT_SEED = 55
PEFT_DIR = "peft_llama_gqa"


# ---------------------------------------------------------------- golden file writer
def write_tvg(path, records):
    out = bytearray(b"TVGOLD1\n")
    out += struct.pack("<I", len(records))
    for name, arr in records:
        arr = np.array(arr, order="C")  # (ascontiguousarray would turn 0-d into 1-d)
        if arr.dtype == np.float32:
            dtype, data = 0, arr.astype("<f4")
        elif arr.dtype == np.int32:
            dtype, data = 1, arr.astype("<i4")
        else:
            raise TypeError("%s: unsupported dtype %s" % (name, arr.dtype))
        nb = name.encode("ascii")
        out += struct.pack("<I", len(nb)) + nb
        out += struct.pack("<II", dtype, arr.ndim)
        for d in arr.shape:
            out += struct.pack("<q", d)
        out += data.tobytes()
    with open(path, "wb") as f:
        f.write(bytes(out))
    return len(out)


# ---------------------------------------------------------------- models
def build_model(spec):
    cfg = dict(spec["cfg"])
    if spec["arch"] == "llama":
        config, cls = LlamaConfig(**cfg), LlamaForCausalLM
    else:
        config, cls = Qwen2Config(**cfg), Qwen2ForCausalLM
    torch.manual_seed(spec["seed"])  # transformers' own init; overwritten below anyway
    model = cls(config)
    # Not the tiny default init: weights of this size make every term (rope, GQA grouping,
    # biases, norms) move the logits by a lot, so a mistake anywhere shows.
    gen = torch.Generator().manual_seed(spec["seed"])
    with torch.no_grad():
        for name, p in model.named_parameters():  # a tied lm_head is listed once
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.2 * noise)
    return model.to(spec["dtype"]).eval()


def rewrite_legacy_config(folder, legacy, dtype):
    """Turns transformers 5's `rope_parameters` config into the Hub's older layout."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.pop("rope_parameters", None)
    cfg["rope_theta"] = legacy["rope_theta"]
    cfg["rope_scaling"] = legacy["rope_scaling"]
    cfg["torch_dtype"] = cfg.pop("dtype", str(dtype).replace("torch.", ""))
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def load_f32(arch, folder):
    cls = LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM
    return cls.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager").eval()


def tokens(seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)


def logits_of(model, ids):
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids))
    assert out.logits.dtype == torch.float32
    return out.logits.numpy().astype(np.float32)


def rope_sensitivity(spec, folder, ids, logits):
    """How much the llama3 rule moves the logits (plain rope with the same theta instead):
    a C loader that ignored rope_scaling must fail the test by far more than its tolerance."""
    cls = LlamaForCausalLM if spec["arch"] == "llama" else Qwen2ForCausalLM
    config = transformers.AutoConfig.from_pretrained(folder)
    config.rope_parameters = {"rope_type": "default",
                              "rope_theta": config.rope_parameters["rope_theta"]}
    plain = cls.from_pretrained(folder, config=config, dtype=torch.float32,
                                attn_implementation="eager").eval()
    diff = float(np.abs(logits_of(plain, ids) - logits).max() / np.abs(logits).max())
    assert diff > 1e-2, "llama3 rope scaling hardly matters here (%g)" % diff
    return diff


def check_rope(model, spec):
    """The config transformers read back must carry the rope the spec asked for."""
    rp = dict(model.config.rope_parameters)
    want_theta = spec["legacy"]["rope_theta"] if spec["legacy"] else spec["cfg"]["rope_theta"]
    assert rp["rope_theta"] == want_theta, rp
    want = spec["cfg"].get("rope_scaling")
    if want:
        for k, v in want.items():
            assert rp[k] == v, (k, rp)
    else:
        assert rp.get("rope_type", "default") == "default", rp


def make_model(name, spec, outdir):
    folder = os.path.join(outdir, name)
    shutil.rmtree(folder, ignore_errors=True)
    model = build_model(spec)
    kw = {"max_shard_size": spec["shard"]} if spec["shard"] else {}
    model.save_pretrained(folder, **kw)
    if spec["legacy"]:
        rewrite_legacy_config(folder, spec["legacy"], spec["dtype"])

    files = sorted(os.listdir(folder))
    if spec["shard"]:
        shards = [f for f in files if f.startswith("model-") and f.endswith(".safetensors")]
        assert len(shards) >= 3 and "model.safetensors.index.json" in files, files
    else:
        assert "model.safetensors" in files, files

    # The golden is what transformers computes from the folder as written, in float32.
    ref = load_f32(spec["arch"], folder)
    check_rope(ref, spec)
    ids = tokens(spec["seed"] + 1000)
    logits = logits_of(ref, ids)
    if spec["dtype"] == torch.float32:  # the weights survive the files unchanged
        # (the in-memory model runs SDPA attention, the reloaded one eager: rounding only)
        np.testing.assert_allclose(logits, logits_of(model, ids), rtol=0, atol=1e-5)
    if spec["cfg"].get("rope_scaling"):
        print("%s: llama3 rope scaling moves logits by %.3f of max|logit|" %
              (folder, rope_sensitivity(spec, folder, ids, logits)))
    return folder, ids, logits, ref


def make_peft(base_folder, base_model, ids, base_logits, outdir):
    folder = os.path.join(outdir, PEFT_DIR)
    shutil.rmtree(folder, ignore_errors=True)
    # adapter_config.json's base_model_name_or_path: the repository-relative folder.
    base_model.name_or_path = "tests/data/hf/" + PEFT_BASE
    lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                      bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(base_model, lcfg)
    gen = torch.Generator().manual_seed(PEFT_SEED)
    n = 0
    with torch.no_grad():
        for pname, p in pm.named_parameters():
            if ".lora_A." in pname or ".lora_B." in pname:  # B non-zero: the adapter acts
                p.copy_(0.2 * torch.randn(p.shape, generator=gen, dtype=torch.float32))
                n += 1
    assert n == 2 * len(LORA_TARGETS) * base_model.config.num_hidden_layers, n
    pm.save_pretrained(folder)
    readme = os.path.join(folder, "README.md")  # PEFT's model-card stub: not part of the format
    if os.path.exists(readme):
        os.remove(readme)

    # Reload both from disk, exactly as a user would.
    fresh = load_f32("llama", base_folder)
    loaded = PeftModel.from_pretrained(fresh, folder).eval()
    peft_logits = logits_of(loaded, ids)
    np.testing.assert_allclose(peft_logits, logits_of(pm.eval(), ids), rtol=0, atol=1e-6)
    diff = float(np.abs(peft_logits - base_logits).max() / np.abs(base_logits).max())
    assert diff > 0.05, "adapter changes the logits too little (%g)" % diff
    print("%s: adapter moves logits by %.3f of max|logit|" % (folder, diff))
    return peft_logits


def folder_bytes(folder):
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))


def main():
    # PEFT writes target_modules from a Python set: fix the string hash seed so the order in
    # adapter_config.json (and so the file) is the same on every run.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    torch.set_num_threads(1)
    print("torch %s, transformers %s, peft %s, safetensors %s" %
          (torch.__version__, transformers.__version__, peft.__version__,
           safetensors.__version__))
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(
        os.path.join(here, "..", "data", "hf"))
    os.makedirs(outdir, exist_ok=True)
    total = 0
    for name, spec in MODELS.items():
        folder, ids, logits, ref = make_model(name, spec, outdir)
        rec = [("input_ids", ids.numpy().astype(np.int32)), ("logits", logits)]
        if name == PEFT_BASE:
            rec.append(("peft_logits", make_peft(folder, ref, ids, logits, outdir)))
            total += folder_bytes(os.path.join(outdir, PEFT_DIR))
        size = write_tvg(os.path.join(outdir, name + ".tvg"), rec)
        total += size + folder_bytes(folder)
        print("%s: %d bytes (folder) + %d bytes (golden), max|logit| %.3f" %
              (folder, folder_bytes(folder), size, float(np.abs(logits).max())))
    print("total %d bytes" % total)
    assert total < 1_000_000


if __name__ == "__main__":
    main()
