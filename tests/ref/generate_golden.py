#!/opt/tvref/bin/python
"""Greedy generation reference for tests/test_generate_golden.c, made by transformers'
own `generate(do_sample=False)` (and PEFT's for the adapter), so our KV-cache decoder is
held to the library's decoding, EOS handling included.

Rerun (from the repository root; dev-only venv, CI needs no Python):
    /opt/tvref/bin/python tests/ref/generate_golden.py          # rewrites the files below
    /opt/tvref/bin/python tests/ref/generate_golden.py OUTDIR   # writes into OUTDIR instead
Seeds are fixed and torch runs single-threaded.

Writes into tests/data/hf/:
  gen_llama/          LlamaForCausalLM, 3 layers, GQA 4/2, untied, F32; weights drawn with
                      initializer_range 0.3 so the top two logits of every step are far
                      apart (float noise cannot reorder them; the smallest gap is printed and
                      stored); eos_token_id chosen as a token that prompt 0 produces at its
                      4th step without EOS, so the EOS stop is exercised
  peft_gen_llama/     PEFT LoRA adapter for gen_llama (r 4, alpha 8, all seven projections,
                      random non-zero A and B)
  gen_llama_generate.tvg:
      prompt_ids [P, Tmax] int32 (-1 after each prompt's end), prompt_len [P] int32,
      max_new_tokens, eos_id (int32 scalars),
      tokens [P, max_new_tokens] int32 (-1 after the end), out_len [P] int32: base model,
      peft_tokens, peft_out_len: base + adapter loaded by PeftModel.from_pretrained,
      min_gap, peft_min_gap (float32): smallest top-1 minus top-2 logit over all steps.
Each prompt is generated on its own (batch 1, no padding), as an independent reference for
our batched decoder.
"""
import os
import struct
import sys

import numpy as np
import torch
import transformers
import peft
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

V, D, F, LAYERS = 80, 32, 64, 3
MAX_NEW = 12
PROMPT_LENS = [1, 4, 11, 2, 7, 5]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def tvg_bytes(records):
    """TVGOLD1 golden file (reader: tests/golden.c)."""
    out = bytearray(b"TVGOLD1\n")
    out += struct.pack("<I", len(records))
    for name, arr in records:
        arr = np.array(arr, order="C")  # keeps 0-d scalars 0-d (ascontiguousarray does not)
        code = {np.dtype(np.float32): 0, np.dtype(np.int32): 1}[arr.dtype]
        raw = name.encode()
        out += struct.pack("<I", len(raw)) + raw + struct.pack("<II", code, arr.ndim)
        for d in arr.shape:
            out += struct.pack("<q", d)
        out += arr.tobytes()
    return bytes(out)


def prompts():
    g = torch.Generator().manual_seed(5)
    # ids 3.. so no prompt holds BOS 1, EOS or pad by accident
    return [torch.randint(3, V, (n,), generator=g) for n in PROMPT_LENS]


def greedy(model, ids_list, eos):
    """Per prompt: transformers' generate, and the smallest top-1 / top-2 logit gap seen."""
    outs, gap = [], float("inf")
    for ids in ids_list:
        res = model.generate(ids[None, :], attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             do_sample=False, max_new_tokens=MAX_NEW, eos_token_id=eos,
                             pad_token_id=0, output_scores=True, return_dict_in_generate=True)
        new = res.sequences[0, len(ids):].tolist()
        if eos is not None and eos in new:  # generate pads after EOS in batches; batch 1 stops
            new = new[: new.index(eos) + 1]
        for sc in res.scores:
            top = torch.topk(sc[0], 2).values
            gap = min(gap, float(top[0] - top[1]))
        outs.append(new)
    return outs, gap


def pack(outs):
    arr = np.full((len(outs), MAX_NEW), -1, np.int32)
    for i, o in enumerate(outs):
        arr[i, : len(o)] = o
    return arr, np.array([len(o) for o in outs], np.int32)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "data", "hf")
    torch.set_num_threads(1)
    print("transformers", transformers.__version__, "torch", torch.__version__, "peft", peft.__version__)
    torch.manual_seed(31)
    cfg = LlamaConfig(vocab_size=V, hidden_size=D, intermediate_size=F, num_hidden_layers=LAYERS,
                      num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
                      rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1,
                      eos_token_id=2, max_position_embeddings=64, initializer_range=0.3)
    model = LlamaForCausalLM(cfg).float().eval()
    ids_list = prompts()
    with torch.no_grad():
        free_run, _ = greedy(model, ids_list[:1], None)
    # EOS = the token prompt 0 emits at its 4th step, when it did not emit it earlier
    step = next(t for t in range(3, MAX_NEW - 1) if free_run[0][t] not in free_run[0][:t])
    eos = free_run[0][step]
    model.config.eos_token_id = eos
    model.generation_config.eos_token_id = eos
    folder = os.path.join(outdir, "gen_llama")
    model.save_pretrained(folder, safe_serialization=True)
    model = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        base, gap = greedy(model, ids_list, eos)

    torch.manual_seed(32)
    lcfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS, bias="none",
                      task_type="CAUSAL_LM")
    pm = get_peft_model(LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32), lcfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    adir = os.path.join(outdir, "peft_gen_llama")
    pm.save_pretrained(adir)
    os.remove(os.path.join(adir, "README.md"))  # a model card template, not needed
    pmodel = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32),
                                       adir).eval()
    with torch.no_grad():
        tuned, pgap = greedy(pmodel, ids_list, eos)

    pid = np.full((len(ids_list), max(PROMPT_LENS)), -1, np.int32)
    for i, ids in enumerate(ids_list):
        pid[i, : len(ids)] = ids.numpy()
    tok, olen = pack(base)
    ptok, polen = pack(tuned)
    recs = [("prompt_ids", pid), ("prompt_len", np.array(PROMPT_LENS, np.int32)),
            ("max_new_tokens", np.array(MAX_NEW, np.int32)), ("eos_id", np.array(eos, np.int32)),
            ("tokens", tok), ("out_len", olen), ("peft_tokens", ptok), ("peft_out_len", polen),
            ("min_gap", np.array(gap, np.float32)), ("peft_min_gap", np.array(pgap, np.float32))]
    with open(os.path.join(outdir, "gen_llama_generate.tvg"), "wb") as f:
        f.write(tvg_bytes(recs))
    print("eos", eos, "base lengths", olen.tolist(), "peft lengths", polen.tolist())
    print("smallest top-2 logit gap: base %.4g, peft %.4g" % (gap, pgap))


if __name__ == "__main__":
    main()
