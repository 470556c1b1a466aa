#!/usr/bin/env python3
"""PyTorch reference for `tvaccine bench`: one LoRA training step on config M.

Config M: hidden 512, 8 layers, 8 heads / 8 kv heads (head_dim 64), SwiGLU ffn 1376,
vocab 8192, untied LM head, RMSNorm eps 1e-5, rope theta 10000, seq 256, batch 4,
LoRA r 8 alpha 1 dropout 0 on q,k,v,o,gate,up,down (base frozen), AdamW on LoRA only,
grad-norm clip 1.0, mean next-token cross-entropy on random tokens. float32, eager.
One step = zero_grad, forward, loss, backward, clip, optimizer.step. One JSON line out.

Measured with Debian's torch 1.13.0a0 (CPU, OpenMP + pthread OpenBLAS), which lacks
F.scaled_dot_product_attention, so the masked-softmax path runs; torch >= 2 uses SDPA.
torch.set_num_threads does not reach OpenBLAS's own pool, so --threads n also sets
OPENBLAS_NUM_THREADS/OMP_NUM_THREADS to n before torch loads (unless already set).
"""
import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

_pre = argparse.ArgumentParser(add_help=False)
_pre.add_argument("--threads", type=int, default=2)
_n = str(_pre.parse_known_args()[0].threads)
os.environ.setdefault("OPENBLAS_NUM_THREADS", _n)
os.environ.setdefault("OMP_NUM_THREADS", _n)

import torch  # noqa: E402  (after the thread environment is set)
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

HAS_SDPA = hasattr(F, "scaled_dot_product_attention")


class LoRALinear(nn.Module):
    """y = W x + (alpha/r) * B (A x); W frozen, stored [out, in]."""

    def __init__(self, din, dout, r, alpha):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dout, din) * 0.02, requires_grad=False)
        bound = 1.0 / math.sqrt(din)  # kaiming-uniform with a = sqrt(5)
        self.lora_A = nn.Parameter(torch.empty(r, din).uniform_(-bound, bound))
        # B would be 0 at init; small random so the step is not degenerate.
        self.lora_B = nn.Parameter(torch.randn(dout, r) * 0.01)
        self.scale = alpha / r

    def forward(self, x):
        return F.linear(x, self.weight) + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scale


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Layer(nn.Module):
    def __init__(self, a):
        super().__init__()
        d, hd, r, al = a.hidden, a.hidden // a.heads, a.rank, a.alpha
        self.nh, self.nkv, self.hd = a.heads, a.kv_heads, hd
        self.ln1, self.ln2 = RMSNorm(d, a.eps), RMSNorm(d, a.eps)
        self.q = LoRALinear(d, a.heads * hd, r, al)
        self.k = LoRALinear(d, a.kv_heads * hd, r, al)
        self.v = LoRALinear(d, a.kv_heads * hd, r, al)
        self.o = LoRALinear(a.heads * hd, d, r, al)
        self.gate = LoRALinear(d, a.ffn, r, al)
        self.up = LoRALinear(d, a.ffn, r, al)
        self.down = LoRALinear(a.ffn, d, r, al)

    def attn(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.nkv != self.nh:  # grouped-query attention
            rep = self.nh // self.nkv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        if HAS_SDPA:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd)) + mask
            y = torch.matmul(torch.softmax(s, dim=-1), v)
        return self.o(y.transpose(1, 2).reshape(B, T, self.nh * self.hd))

    def forward(self, x, cos, sin, mask):
        h = x + self.attn(self.ln1(x), cos, sin, mask)
        m = self.ln2(h)
        return h + self.down(F.silu(self.gate(m)) * self.up(m))


class Model(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed = nn.Embedding(a.vocab, a.hidden)
        self.embed.weight.requires_grad_(False)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.hidden, a.eps)
        self.head = nn.Linear(a.hidden, a.vocab, bias=False)  # untied
        self.head.weight.requires_grad_(False)
        hd = a.hidden // a.heads
        inv = 1.0 / (a.theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
        f = torch.outer(torch.arange(a.seq, dtype=torch.float32), inv)
        emb = torch.cat((f, f), dim=-1)  # frequencies repeated twice (half-split)
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)
        self.register_buffer("mask", torch.full((a.seq, a.seq), float("-inf")).triu(1),
                             persistent=False)

    def forward(self, ids):
        T = ids.shape[1]
        cos, sin, mask = self.cos[:T], self.sin[:T], self.mask[:T, :T]
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, cos, sin, mask)
        return self.head(self.norm(x))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--ffn", type=int, default=1376)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.alpha, a.eps, a.theta = 1.0, 1e-5, 10000.0
    if a.hidden % a.heads or a.heads % a.kv_heads or (a.hidden // a.heads) % 2:
        p.error("hidden/heads/kv-heads do not divide")
    if a.steps < 1:
        p.error("--steps must be >= 1")

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = Model(a)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq + 1))
    inp, tgt = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
    print(f"torch {torch.__version__} threads {a.threads} openblas "
          f"{os.environ['OPENBLAS_NUM_THREADS']} sdpa {HAS_SDPA} "
          f"trainable {sum(q.numel() for q in params)}", file=sys.stderr)

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(inp)
        loss = F.cross_entropy(logits.view(-1, a.vocab), tgt.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item()

    times, loss = [], float("nan")
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = step()
        dt = time.perf_counter() - t0
        warm = i < a.warmup
        if not warm:
            times.append(dt)
        print(f"{'warmup' if warm else 'step'} {i}: {dt:.3f}s loss {loss:.4f}", file=sys.stderr)

    med = statistics.median(times)
    print(json.dumps({
        "impl": "pytorch",
        "torch": torch.__version__,
        "threads": a.threads,
        "step_s": med,
        "step_s_min": min(times),
        "tokens_per_s": a.batch * a.seq / med,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "loss": loss,
    }))


if __name__ == "__main__":
    main()
