#!/usr/bin/env python3
"""PyTorch + transformers + PEFT reference for tests/gpu/bench_gpu (run side by side by
tests/gpu/run.sh): one sft / vaccine / T-Vaccine step of a randomly initialised
Llama-2-7B-shaped model (LlamaConfig only, no download), bf16 weights, SDPA attention,
LoRA r 8 alpha 16 dropout 0.1 on all seven targets (PEFT), AdamW on the adapters, grad-norm
clip 1. Batch 10 x 200 random tokens.

Vaccine / T-Vaccine use the reference trainers' hook style at the hook point of SPEC 5/6
(the attention block's output a_l, i.e. self_attn's output before the residual add):
  pass 1: full backward hooks on self_attn record g_l = dLoss/da_l;
  e_l = rho g_l / (||g|| + 1e-7) over the recorded layers;
  pass 2: forward hooks add e_l to self_attn's output; backward; clip; AdamW.
T-Vaccine first probes every layer's ||g_l|| (one backward), samples S layers with
torch.multinomial(p, S) (without replacement) and trains and perturbs only those (the other
layers' adapters have requires_grad off).
Prints one JSON line per method: fastest step over --steps after --warmup, tokens/s and
torch.cuda.max_memory_allocated (reset per method). --device cpu is a dry run of the script's
flow (tiny --layers / --batch / --seq); its figures mean nothing.
"""
import argparse
import json
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(layers, device):
    cfg = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=layers, num_attention_heads=32, num_key_value_heads=32,
                      max_position_embeddings=4096, rms_norm_eps=1e-5)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa",
                                              torch_dtype=torch.bfloat16)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=TARGETS,
                      task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def decoder_layers(model):
    return model.base_model.model.model.layers


def layer_lora_params(layer):
    return [p for n, p in layer.named_parameters() if "lora_" in n]


class Hooks:
    """Records dLoss/da_l (pass 1) or adds e_l (pass 2) at self_attn's output."""

    def __init__(self, layers, chosen):
        self.layers, self.chosen, self.handles = layers, chosen, []
        self.grads, self.perturb = {}, {}

    def record(self):
        for i in self.chosen:
            def hook(mod, gin, gout, i=i):
                self.grads[i] = gout[0].detach()
            self.handles.append(self.layers[i].self_attn.register_full_backward_hook(hook))

    def add_perturbation(self):
        for i in self.chosen:
            def hook(mod, inp, out, i=i):
                return (out[0] + self.perturb[i],) + tuple(out[1:])
            self.handles.append(self.layers[i].self_attn.register_forward_hook(hook))

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def step(model, opt, method, ids, S, rho):
    layers = decoder_layers(model)
    L = len(layers)
    chosen = list(range(L))
    if method == "tvaccine":
        probe = Hooks(layers, chosen)
        probe.record()
        model(input_ids=ids, labels=ids).loss.backward()
        probe.remove()
        norms = torch.stack([probe.grads[i].float().norm() for i in chosen])
        chosen = sorted(torch.multinomial(norms / norms.sum(), S, replacement=False).tolist())
        opt.zero_grad(set_to_none=True)
        for i, layer in enumerate(layers):
            for p in layer_lora_params(layer):
                p.requires_grad_(i in chosen)
    if method in ("vaccine", "tvaccine"):
        h = Hooks(layers, chosen)
        h.record()
        model(input_ids=ids, labels=ids).loss.backward()
        h.remove()
        total = torch.sqrt(sum(h.grads[i].float().pow(2).sum() for i in chosen))
        scale = rho / (total + 1e-7)
        h.perturb = {i: (h.grads[i] * scale).to(h.grads[i].dtype) for i in chosen}
        opt.zero_grad(set_to_none=True)
        h.add_perturbation()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        h.remove()
    else:
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if method == "tvaccine":
        for layer in layers:
            for p in layer_lora_params(layer):
                p.requires_grad_(True)
    return loss.item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--seq", type=int, default=200)
    ap.add_argument("--S", type=int, default=8)
    ap.add_argument("--rho", type=float, default=3.0)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--methods", default="sft,vaccine,tvaccine")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    cuda = a.device == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for method in a.methods.split(","):
        model = build(a.layers, a.device)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3,
                                weight_decay=0.1)
        ids = torch.randint(0, 32000, (a.batch, a.seq), device=a.device)
        sync()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        best, loss = float("inf"), 0.0
        for i in range(a.warmup + a.steps):
            sync()
            t0 = time.perf_counter()
            loss = step(model, opt, method, ids, a.S, a.rho)
            sync()
            if i >= a.warmup:
                best = min(best, time.perf_counter() - t0)
        print(json.dumps({"impl": "torch-peft", "method": method, "layers": a.layers,
                          "batch": a.batch, "seq": a.seq, "S": a.S, "step_s": round(best, 4),
                          "tokens_per_s": round(a.batch * a.seq / best, 1),
                          "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)
                          if cuda else None,
                          "loss": round(loss, 5), "torch": torch.__version__}), flush=True)
        del model, opt
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
