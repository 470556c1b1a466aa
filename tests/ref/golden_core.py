#!/usr/bin/python3
"""Independent PyTorch reference for the core engine's golden test (tests/test_golden_core.c).

Builds tiny random Llama-family models from scratch in plain torch (no transformers), runs
forward + backward in float64 with LoRA on all seven projections, and writes the inputs,
weights, logits, loss, LoRA gradients and dLoss/da_l of every layer to tests/data/*.tvg.

Rerun (from the repository root; Debian's torch 1.13 CPU is enough):
    /usr/bin/python3 tests/ref/golden_core.py            # writes tests/data/golden_core_*.tvg
    /usr/bin/python3 tests/ref/golden_core.py OUTDIR     # writes them into OUTDIR instead
The seeds are fixed and torch runs single-threaded, so a rerun reproduces the committed
files byte for byte (compare with cmp).

File format (reader: tests/golden.c): magic b"TVGOLD1\\n", u32 record count, then per
record u32 name_len, name bytes, u32 dtype (0 float32, 1 int32), u32 ndim, ndim x i64 dims,
numel elements; all little-endian.
"""
import math
import os
import struct
import sys

import numpy as np
import torch

LORA_TARGETS = [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"),
                ("self_attn", "o_proj"), ("mlp", "gate_proj"), ("mlp", "up_proj"),
                ("mlp", "down_proj")]

VARIANTS = {
    "untied": dict(seed=1001, V=67, D=32, F=40, L=2, H=4, Hkv=2, Dh=8, eps=1e-5,
                   theta=10000.0, rope_scaling=0, tie=0, bias=0, r=4, alpha=8.0, B=2, T=9),
    "tied": dict(seed=2002, V=53, D=48, F=72, L=3, H=4, Hkv=1, Dh=16, eps=1e-5,
                 theta=500000.0, rope_scaling=1, rope_factor=8.0, rope_low=1.0,
                 rope_high=4.0, rope_old_ctx=8, tie=1, bias=0, r=3, alpha=1.0, B=3, T=7),
    "bias": dict(seed=3003, V=67, D=32, F=40, L=1, H=4, Hkv=2, Dh=8, eps=1e-5,
                 theta=10000.0, rope_scaling=0, tie=0, bias=1, r=2, alpha=2.0, B=2, T=9),
}


def f32(x):
    """The value the C side sees for a float32 config field, as a Python float."""
    return float(np.float32(x))


# ---------------------------------------------------------------- rotary embedding
def rope_inv_freq(c):
    Dh = c["Dh"]
    inv_freq = 1.0 / (f32(c["theta"]) ** (torch.arange(0, Dh, 2, dtype=torch.float64) / Dh))
    if c["rope_scaling"] == 1:
        # Hugging Face _compute_llama3_parameters, in float64.
        factor, low, high = c["rope_factor"], c["rope_low"], c["rope_high"]
        old_ctx = c["rope_old_ctx"]
        low_freq_wavelen = old_ctx / low
        high_freq_wavelen = old_ctx / high
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
        s = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - s) * scaled / factor + s * scaled
        medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
        new = torch.where(medium, smoothed, scaled)
        # The rule must actually change frequencies here, in every one of its three cases
        # except possibly "keep", or the test would not exercise it.
        assert bool(medium.any()) and bool((wavelen > low_freq_wavelen).any())
        inv_freq = new
    return inv_freq


def rope_cos_sin(c, T):
    inv_freq = rope_inv_freq(c)
    t = torch.arange(T, dtype=torch.float64)
    freqs = torch.outer(t, inv_freq)           # [T, Dh/2]
    emb = torch.cat([freqs, freqs], dim=-1)    # [T, Dh]: frequencies repeated twice
    return emb.cos(), emb.sin()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x, cos, sin):
    # x [B, nh, T, Dh]; cos/sin [T, Dh]
    return x * cos + rotate_half(x) * sin


# ---------------------------------------------------------------- model pieces
def rmsnorm(x, w, eps):
    var = x.pow(2).mean(dim=-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * w


def lora_linear(x, p, name, scaling):
    y = x @ p[name + ".weight"].t()
    if name + ".bias" in p:
        y = y + p[name + ".bias"]
    a = p[name + ".lora_A.weight"]
    b = p[name + ".lora_B.weight"]
    return y + scaling * ((x @ a.t()) @ b.t())


def forward(c, p, input_ids, labels):
    B, T = input_ids.shape
    H, Hkv, Dh = c["H"], c["Hkv"], c["Dh"]
    eps = f32(c["eps"])
    scaling = c["alpha"] / c["r"]
    cos, sin = rope_cos_sin(c, T)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)

    x = p["model.embed_tokens.weight"][input_ids.long()]  # [B, T, D]
    attn_outs = []
    for i in range(c["L"]):
        pre = "model.layers.%d." % i
        xn = rmsnorm(x, p[pre + "input_layernorm.weight"], eps)
        q = lora_linear(xn, p, pre + "self_attn.q_proj", scaling)
        k = lora_linear(xn, p, pre + "self_attn.k_proj", scaling)
        v = lora_linear(xn, p, pre + "self_attn.v_proj", scaling)
        q = q.view(B, T, H, Dh).transpose(1, 2)
        k = k.view(B, T, Hkv, Dh).transpose(1, 2)
        v = v.view(B, T, Hkv, Dh).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        # GQA as HF repeat_kv: query head h reads kv head h // (H / Hkv).
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(Dh)
        scores = scores.masked_fill(causal, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        o = (probs @ v).transpose(1, 2).reshape(B, T, H * Dh)
        a = lora_linear(o, p, pre + "self_attn.o_proj", scaling)  # the hook point a_i
        a.retain_grad()
        attn_outs.append(a)
        h = x + a
        hn = rmsnorm(h, p[pre + "post_attention_layernorm.weight"], eps)
        g = lora_linear(hn, p, pre + "mlp.gate_proj", scaling)
        u = lora_linear(hn, p, pre + "mlp.up_proj", scaling)
        m = lora_linear(torch.nn.functional.silu(g) * u, p, pre + "mlp.down_proj", scaling)
        x = h + m
    x = rmsnorm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if c["tie"] else p["lm_head.weight"]
    logits = x @ head.t()  # [B, T, V]
    # HF shift: logits[:, :-1] predict labels[:, 1:]; -100 ignored; mean over the rest.
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, c["V"]), labels[:, 1:].reshape(-1).long(),
        ignore_index=-100, reduction="mean")
    return logits, loss, attn_outs


# ---------------------------------------------------------------- data
def make_params(c, gen):
    V, D, F, H, Hkv, Dh, r = c["V"], c["D"], c["F"], c["H"], c["Hkv"], c["Dh"], c["r"]

    def normal(shape, std, mean=0.0):
        return torch.randn(*shape, generator=gen, dtype=torch.float32) * std + mean

    def uniform(shape, bound):
        return (torch.rand(*shape, generator=gen, dtype=torch.float32) * 2 - 1) * bound

    shapes = {"q_proj": (H * Dh, D), "k_proj": (Hkv * Dh, D), "v_proj": (Hkv * Dh, D),
              "o_proj": (D, H * Dh), "gate_proj": (F, D), "up_proj": (F, D),
              "down_proj": (D, F)}
    base, lora = {}, {}
    base["model.embed_tokens.weight"] = normal((V, D), 0.2)
    for i in range(c["L"]):
        pre = "model.layers.%d." % i
        base[pre + "input_layernorm.weight"] = normal((D,), 0.1, 1.0)
        base[pre + "post_attention_layernorm.weight"] = normal((D,), 0.1, 1.0)
        for parent, proj in LORA_TARGETS:
            out_f, in_f = shapes[proj]
            name = pre + parent + "." + proj
            base[name + ".weight"] = normal((out_f, in_f), 0.2)
            if c["bias"] and proj in ("q_proj", "k_proj", "v_proj"):
                base[name + ".bias"] = normal((out_f,), 0.2)
            lora[name + ".lora_A.weight"] = uniform((r, in_f), 1.0 / math.sqrt(in_f))
            lora[name + ".lora_B.weight"] = normal((out_f, r), 0.1)
    base["model.norm.weight"] = normal((D,), 0.1, 1.0)
    if not c["tie"]:
        base["lm_head.weight"] = normal((V, D), 0.2)
    return base, lora


def make_batch(c, gen):
    B, T, V = c["B"], c["T"], c["V"]
    ids = torch.randint(0, V, (B, T), generator=gen, dtype=torch.int64)
    labels = ids.clone()
    labels[0, :3] = -100          # masked prompt prefix
    ids[1, T - 2:] = 0            # right padding (pad id 0) ...
    labels[1, T - 2:] = -100      # ... ignored
    if B > 2:
        labels[2, 2] = -100       # one ignored position in the middle of a row
    return ids.to(torch.int32), labels.to(torch.int32)


# ---------------------------------------------------------------- file writer
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


def as_f32(t):
    return t.detach().to(torch.float32).numpy()


def run_variant(tag, c, outdir):
    gen = torch.Generator().manual_seed(c["seed"])
    base, lora = make_params(c, gen)
    ids, labels = make_batch(c, gen)

    # float64 copies of the float32-rounded values: the C code sees exactly these weights.
    p = {k: v.to(torch.float64) for k, v in base.items()}
    for k, v in lora.items():
        p[k] = v.to(torch.float64).requires_grad_(True)
    logits, loss, attn_outs = forward(c, p, ids, labels)
    loss.backward()

    n_targets = int((labels[:, 1:] != -100).sum())
    assert n_targets > 0

    i32 = lambda v: np.array(v, dtype=np.int32)
    fl = lambda v: np.array(v, dtype=np.float32)
    rec = [
        ("cfg.vocab_size", i32(c["V"])), ("cfg.hidden_size", i32(c["D"])),
        ("cfg.intermediate_size", i32(c["F"])), ("cfg.num_layers", i32(c["L"])),
        ("cfg.num_heads", i32(c["H"])), ("cfg.num_kv_heads", i32(c["Hkv"])),
        ("cfg.head_dim", i32(c["Dh"])), ("cfg.rms_norm_eps", fl(c["eps"])),
        ("cfg.rope_theta", fl(c["theta"])), ("cfg.rope_scaling", i32(c["rope_scaling"])),
        ("cfg.rope_factor", fl(c.get("rope_factor", 1.0))),
        ("cfg.rope_low_freq_factor", fl(c.get("rope_low", 1.0))),
        ("cfg.rope_high_freq_factor", fl(c.get("rope_high", 1.0))),
        ("cfg.rope_original_max_pos", i32(c.get("rope_old_ctx", 0))),
        ("cfg.tie_word_embeddings", i32(c["tie"])), ("cfg.attention_bias", i32(c["bias"])),
        ("cfg.lora_r", i32(c["r"])), ("cfg.lora_alpha", fl(c["alpha"])),
        ("input_ids", ids.numpy()), ("labels", labels.numpy()),
    ]
    rec += [(k, v.numpy()) for k, v in base.items()]
    rec += [(k, v.numpy()) for k, v in lora.items()]
    rec += [("logits", as_f32(logits)), ("loss", as_f32(loss))]
    rec += [("grad." + k, as_f32(p[k].grad)) for k in lora]
    rec += [("grad_a.%d" % i, as_f32(a.grad)) for i, a in enumerate(attn_outs)]

    path = os.path.join(outdir, "golden_core_%s.tvg" % tag)
    size = write_tvg(path, rec)
    print("%s: %d records, %d bytes, loss %.9f over %d targets" %
          (path, len(rec), size, float(loss), n_targets))


def main():
    torch.set_num_threads(1)
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(os.path.join(here, "..", "data"))
    os.makedirs(outdir, exist_ok=True)
    for tag, c in VARIANTS.items():
        run_variant(tag, c, outdir)


if __name__ == "__main__":
    main()
