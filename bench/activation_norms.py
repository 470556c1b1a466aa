#!/usr/bin/env python3
"""What rho means at this scale: the attention-output norms ||a_l|| of a base model.

Usage (analysis only; CI never runs it):
  /opt/tvref/bin/python bench/activation_norms.py WORLD_DIR [--batch 16] [--batches 8]
      [--rho 0.1,0.3,1,3]

WORLD_DIR is a folder written by `tvaccine synth` (WORLD_DIR/base is a Hugging Face
Llama folder, WORLD_DIR/align.json the alignment rows). a_l is the output of layer l's o
projection before the residual add (SPEC section 2), the hook point of Vaccine and
T-Vaccine. Their perturbation has Frobenius norm rho over the whole [B, T, d] tensor of
the perturbed layers (SPEC sections 5 and 6), so the comparable activation figure is the
Frobenius norm of a_l over one training batch of real tokens (padding excluded), which
is what this prints per layer (mean over --batches batches of --batch rows, drawn in
file order), together with the per-token RMS of ||a_l|| and rho / ||a_l||_F for each
--rho. The rows are formatted with the Alpaca template and encoded with BOS and EOS as
the trainer does (dataset_encode.c), prompt plus answer.

Where the perturbation lands matters too: e_l = rho * g_l / N with g_l = dLoss/da_l and
N the norm over all perturbed layers, so layer l gets the share ||g_l|| / N of rho, and
within a layer it sits on the tokens with large gradients. With the loss on the answer
tokens (as the trainer), the program also prints each layer's share of rho (Vaccine:
all layers perturbed; the squares of the shares sum to 1) and, for rho 1, the RMS over
the batch's answer tokens of ||e_l(token)|| / ||a_l(token)||: the perturbation relative
to the activation it is added to (it scales linearly with rho).
"""
import argparse
import json
import math
import os
import sys

import torch
from tokenizers import Tokenizer
from transformers import LlamaForCausalLM

PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that "
                   "appropriately completes the request.\n\n### Instruction:\n{instruction}"
                   "\n\n### Response:\n")
PROMPT_INPUT = ("Below is an instruction that describes a task, paired with an input that "
                "provides further context. Write a response that appropriately completes the "
                "request.\n\n### Instruction:\n{instruction}\n\n### Input:\n{input}"
                "\n\n### Response:\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("world")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--rho", default="0.1,0.3,1,3")
    args = ap.parse_args()

    base = os.path.join(args.world, "base")
    tok = Tokenizer.from_file(os.path.join(args.world, "tokenizer.json"))
    with open(os.path.join(args.world, "align.json")) as f:
        rows = json.load(f)
    need = args.batch * args.batches
    if len(rows) < need:
        sys.exit(f"{args.world}/align.json: {len(rows)} rows, need {need}")
    model = LlamaForCausalLM.from_pretrained(base, torch_dtype=torch.float32).eval()
    eos = model.config.eos_token_id
    layers = model.config.num_hidden_layers

    captured = {}

    def hook(index):
        def save(_module, _inputs, output):
            output.retain_grad()
            captured[index] = output
        return save

    for i, layer in enumerate(model.model.layers):
        layer.self_attn.o_proj.register_forward_hook(hook(i))

    frob = [[] for _ in range(layers)]       # per batch: ||a_l||_F over real tokens
    token_sq = [0.0] * layers                # sum of per-token squared norms
    tokens = 0
    share = [0.0] * layers                   # sum over batches of ||g_l|| / N
    rel_sq = [0.0] * layers                  # sum of (||e_l|| / ||a_l||)^2 per answer token, rho 1
    answer_tokens = 0
    for b in range(args.batches):
        batch = rows[b * args.batch:(b + 1) * args.batch]
        ids = []
        prompt_len = []
        for r in batch:
            template = PROMPT_INPUT if r.get("input") else PROMPT_NO_INPUT
            text = template.format_map({"instruction": r["instruction"],
                                        "input": r.get("input", "")}) + r["output"]
            ids.append(tok.encode(text).ids + [eos])
            prompt_len.append(len(tok.encode(template.format_map(
                {"instruction": r["instruction"], "input": r.get("input", "")})).ids))
        longest = max(len(x) for x in ids)
        mask = torch.tensor([[1] * len(x) + [0] * (longest - len(x)) for x in ids])
        padded = torch.tensor([x + [model.config.pad_token_id or 0] * (longest - len(x))
                               for x in ids])
        labels = padded.clone()
        labels[mask == 0] = -100
        for i, n in enumerate(prompt_len):
            labels[i, :n] = -100
        model.zero_grad()
        model(input_ids=padded, attention_mask=mask, labels=labels).loss.backward()
        m = mask.unsqueeze(-1).float()
        answer = (labels != -100).roll(-1, dims=1)   # positions whose output is scored
        answer[:, -1] = False
        tokens += int(mask.sum())
        answer_tokens += int(answer.sum())
        grads = [captured[l].grad for l in range(layers)]
        n_all = math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) + 1e-7
        for l in range(layers):
            a = captured[l].detach() * m
            frob[l].append(float(a.pow(2).sum().sqrt()))
            token_sq[l] += float(a.pow(2).sum())
            share[l] += float(grads[l].pow(2).sum().sqrt()) / n_all
            e_tok = grads[l].norm(dim=-1) / n_all              # rho 1
            a_tok = captured[l].detach().norm(dim=-1) + 1e-12
            rel_sq[l] += float(((e_tok / a_tok) ** 2)[answer].sum())

    rhos = [float(x) for x in args.rho.split(",")]
    print(f"# {base}: {layers} layers, width {model.config.hidden_size}; "
          f"{args.batches} batches of {args.batch} align rows ({tokens} real tokens)")
    head = "| layer | per-token RMS of ‖a_l‖ | ‖a_l‖_F per batch (mean) |"
    head += "".join(f" rho {r:g} / ‖a_l‖_F |" for r in rhos)
    head += " share of rho | rho 1: RMS ‖e_l‖/‖a_l‖ on answer tokens |"
    print(head)
    print("|" + "---|" * (5 + len(rhos)))
    all_sq = 0.0
    for l in range(layers):
        f_mean = sum(frob[l]) / len(frob[l])
        all_sq += f_mean ** 2
        cells = "".join(f" {100 * r / f_mean:.1f} % |" for r in rhos)
        cells += f" {100 * share[l] / args.batches:.0f} % |"
        cells += f" {100 * math.sqrt(rel_sq[l] / answer_tokens):.1f} % |"
        print(f"| {l} | {math.sqrt(token_sq[l] / tokens):.3f} | {f_mean:.2f} |{cells}")
    total = math.sqrt(all_sq)
    cells = "".join(f" {100 * r / total:.1f} % |" for r in rhos)
    print(f"| all (Vaccine's N) | | {total:.2f} |{cells} | |")


if __name__ == "__main__":
    main()
