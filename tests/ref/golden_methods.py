#!/usr/bin/python3
"""Independent PyTorch reference for ONE optimizer step of each alignment method (SPEC 4-6).

Writes, in the golden format of tests/golden.h (writer shared with golden_core.py):
    tests/data/golden_method_sft.tvg                  plain step (SPEC 4)
    tests/data/golden_method_vaccine.tvg              Vaccine step (SPEC 5)
    tests/data/golden_method_tvaccine.tvg             T-Vaccine steps 3-5, A = {1, 3},
                                                      freeze_scope layer (SPEC 6)
    tests/data/golden_method_tvaccine_attention.tvg   same, freeze_scope attention
    tests/data/golden_method_tvaccine_sampled.tvg     T-Vaccine step with probe and sampling
                                                      (SPEC 6 steps 1-5)

Rerun (from the repository root; Debian's torch 1.13 CPU is enough; torch 2.15 in a venv
writes the same bytes):
    /usr/bin/python3 tests/ref/golden_methods.py            # writes tests/data/golden_method_*.tvg
    /usr/bin/python3 tests/ref/golden_methods.py OUTDIR     # writes them into OUTDIR instead
Seeds are fixed and torch runs single-threaded, so a rerun reproduces the committed files byte
for byte (compare with cmp). The script also runs self-checks and exits non-zero if one fails.

The model code (rope, RMSNorm, LoRA linear, weight init, file writer) is imported from
golden_core.py; the forward pass is re-written here only to add the perturbation a_l + e_l of
SPEC 5/6 at the hook point, and a self-check proves it equals golden_core.forward bit for bit
when no perturbation is given.

Everything is computed in float64 from the float32-rounded weights that are stored in the
file (the C code sees exactly those); dropout is 0. One tiny untied GQA model and one batch
are shared by all four files (V 53, D 24, F 40, L 4, H 4, Hkv 2, head_dim 8, untied, LoRA
r 4 alpha 8 on all seven targets with non-zero random B; B 3 x T 8 tokens). Every file holds:

  cfg.*                      model config, same names as golden_core.py
  method.kind                int32: 0 sft, 1 vaccine, 2 tvaccine
  method.rho                 float32 (0 for sft)
  method.layers              int32 [S]: the perturbed / recorded layers (empty for sft,
                             every layer for vaccine, A for tvaccine)
  method.freeze_scope        int32: 0 layer, 1 attention (0 for sft and vaccine)
  optim.lr, optim.weight_decay, optim.max_grad_norm, optim.beta1, optim.beta2, optim.eps,
  optim.warmup_ratio         float32
  optim.t, optim.total_steps int32: the 0-based step t of T total (fresh AdamW state, so the
                             bias corrections use k = 1 for every trained parameter;
                             warmup_ratio 0.25 of 10 gives W = 3 warmup steps)
  optim.lr_t                 float32: SPEC 4 schedule at t (computed in double from optim.lr)
  optim.clip_scale           float32: min(1, max_grad_norm / (grad_norm + 1e-6))
  input_ids, labels          int32 [B, T]; labels -100 on the prompt prefix and padding
  <base weights>             HF names, as golden_core.py
  <name>.lora_A/B.weight     LoRA before the step (every layer, every target)
  loss                       (sft) mean CE of the single pass
  loss_pass1, loss_pass2     (vaccine, tvaccine) pass 1 loss, perturbed pass 2 loss
  grad_norm                  pre-clip global L2 norm over the trainable set (of the pass whose
                             gradients are applied: the only pass for sft, pass 2 otherwise)
  vaccine.N                  (vaccine, tvaccine) sqrt(sum_{l in layers} ||g_l||^2)
  grad_a.{l}                 (vaccine, tvaccine) g_l = dLoss/da_l of pass 1, [B, T, D], for
                             each l in method.layers
  grad.<name>                pre-clip gradient of every TRAINABLE LoRA tensor (applied pass);
                             AdamW's moments after the step are (1 - beta1) * clip_scale * grad
                             and (1 - beta2) * (clip_scale * grad)^2
  after.<name>               every LoRA tensor after the step (frozen ones bit-identical to
                             the before values)

The sampled T-Vaccine file also holds the probe and the draw (SPEC 6 steps 1-2), so that the
C trainer runs its own probe and sampling at step t (t % K == 0 and t % J == 0):
  probe_ids, probe_labels    int32 [Bp, T]: the harmful probe batch
  probe.norms                float32 [L]: n_l = ||dLoss/da_l|| on the probe batch
  probe.probs                float32 [L]: p_l = n_l / sum_j n_j
  sample.seed, sample.S, sample.K, sample.J   int32: the trainer's seed and T-Vaccine S, K, J
  sample.uniforms            float32 [S]: the uniforms of the draw (diagnostic only: the
                             reference re-implements core/rng.c's Philox4x32-10 stream and
                             draws them itself; the C test draws its own)
  method.layers              the set A the reference sampled; grad_a.*, grad.* and after.*
                             belong to the step on that A
"""
import math
import os
import sys

import numpy as np
import torch

sys.dont_write_bytecode = True  # leave no __pycache__ beside the reference scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_core as gc  # noqa: E402  (pure module: its main() only runs as a script)

LORA_TARGETS = gc.LORA_TARGETS
ATTN_PROJS = ("q_proj", "k_proj", "v_proj", "o_proj")

# One tiny untied GQA model for all four files. head_dim * H (32) != D (24) on purpose, so a
# buffer sized by the wrong one of the two is caught. D 24 (not 32) keeps every file under
# 200 KB with the grad.* records. The seed is one for which no clipped LoRA gradient element
# is so close to AdamW's eps that float32 rounding of it would visibly move after.* (see
# self-check 8); most seeds have such an element.
CFG = dict(seed=4019, V=53, D=24, F=40, L=4, H=4, Hkv=2, Dh=8, eps=1e-5, theta=10000.0,
           rope_scaling=0, tie=0, bias=0, r=4, alpha=8.0, B=3, T=8)

# Batch layout: per row (prompt length, real length); the rest of the row is padding (id 0).
ROWS = [(3, 8), (2, 6), (4, 7)]

# Shared optimizer settings (the values the C side sees are the float32 roundings).
OPT = dict(lr=0.01, weight_decay=0.1, max_grad_norm=1.0, beta1=0.9, beta2=0.999, eps=1e-8,
           warmup_ratio=0.25, total_steps=10)  # W = ceil(0.25 * 10) = 3 warmup steps

# Per file: method, its layer set and the step t (W = 3: t 1 is in the warmup branch, lr_t =
# lr / 3; t 4, 5, 7 are in the cosine branch). max_grad_norm is 1.0 (clipping active) except in
# the attention-scope file, where 4.0 leaves clipping inactive so that branch is covered too.
FILES = [
    ("sft", dict(kind=0, rho=0.0, layers=[], scope=0, t=1)),
    ("vaccine", dict(kind=1, rho=3.0, layers=[0, 1, 2, 3], scope=0, t=5)),
    ("tvaccine", dict(kind=2, rho=3.0, layers=[1, 3], scope=0, t=7)),
    ("tvaccine_attention", dict(kind=2, rho=3.0, layers=[1, 3], scope=1, t=4,
                                max_grad_norm=4.0)),
]

f32 = gc.f32

# The sampled T-Vaccine file: probe and resample at step t (W = 3, so t 4 is in the cosine
# branch), S 2 of the 4 layers; the trainer seed (whose sampling stream the reference redraws)
# is the first from 11 that discriminating_seed accepts.
SAMPLED = dict(kind=2, rho=3.0, scope=0, t=4, S=2, K=4, J=4, seed=11)
# Probe batch rows (prompt length, real length), as ROWS.
PROBE_ROWS = [(2, 8), (3, 7)]


# ---------------------------------------------------------------- core/rng.c, re-implemented
# Philox4x32-10 with key = (seed lo, seed hi), counter = (stream lo, stream hi, index lo,
# index hi); stream ids by splitmix64 finalisers; rng_next_double = top 53 bits of
# (word1 << 32 | word0). Written from the published algorithm; self-check 9 compares it with
# the Random123 known-answer vector.
M32, M64 = 0xFFFFFFFF, (1 << 64) - 1


def philox4x32(seed, stream, index):
    c = [stream & M32, stream >> 32, index & M32, index >> 32]
    k0, k1 = seed & M32, seed >> 32
    for _ in range(10):
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c[3] ^ k1) & M32, p0 & M32]
        k0 = (k0 + 0x9E3779B9) & M32
        k1 = (k1 + 0xBB67AE85) & M32
    return c


def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def stream_id(tag, a, b, c):
    h = mix64(tag)
    h = mix64(h ^ a)
    return mix64(h ^ ((b << 32) | c))


RNG_TAG_SAMPLING = 3


def sampling_uniforms(seed, n):
    """The first n rng_next_double draws of the trainer's sampling stream."""
    out = []
    for i in range(n):
        w = philox4x32(seed, stream_id(RNG_TAG_SAMPLING, 0, 0, 0), i)
        out.append((((w[1] << 32) | w[0]) >> 11) * 2.0 ** -53)
    return out


def sample_without_replacement(p, uniforms):
    """SPEC 6 step 2: draw one layer with probabilities p, remove it, renormalise the rest,
    repeat; draw k uses uniforms[k] by the inverse CDF of the renormalised distribution.
    Returns (sorted layers, the smallest distance of a uniform to a CDF step)."""
    left = list(range(len(p)))
    picked, margin = [], float("inf")
    for u in uniforms:
        q = np.array([p[l] for l in left], dtype=np.float64)
        cdf = np.cumsum(q / q.sum())
        j = int(np.searchsorted(cdf, u, side="right"))
        margin = min(margin, float(np.min(np.abs(cdf - u))))
        picked.append(left.pop(j))
    return sorted(picked), margin


def probe_norms(c, base, lora, ids, labels):
    """SPEC 6 step 1: n_l = ||dLoss/da_l|| of the probe batch, p_l = n_l / sum n."""
    _, ga, _ = run_pass(c, base, lora, ids, labels, set(lora))
    n = np.array([math.sqrt(float((ga[l] ** 2).sum())) for l in range(c["L"])])
    return n, n / n.sum()


# ---------------------------------------------------------------- forward with perturbation
def forward(c, p, input_ids, labels, perturb=None):
    """golden_core.forward plus the hook of SPEC 5/6: h = x + (a_l + e_l) for l in perturb.

    Returns (loss, attn_outs); attn_outs[l] = a_l (without e_l) with retain_grad, so after
    backward attn_outs[l].grad = dLoss/da_l (= dLoss/d(a_l + e_l))."""
    perturb = perturb or {}
    B, T = input_ids.shape
    H, Hkv, Dh = c["H"], c["Hkv"], c["Dh"]
    eps = f32(c["eps"])
    scaling = c["alpha"] / c["r"]
    cos, sin = gc.rope_cos_sin(c, T)
    causal = torch.ones(T, T, dtype=torch.bool).triu(1)

    x = p["model.embed_tokens.weight"][input_ids.long()]
    attn_outs = []
    for i in range(c["L"]):
        pre = "model.layers.%d." % i
        xn = gc.rmsnorm(x, p[pre + "input_layernorm.weight"], eps)
        q = gc.lora_linear(xn, p, pre + "self_attn.q_proj", scaling)
        k = gc.lora_linear(xn, p, pre + "self_attn.k_proj", scaling)
        v = gc.lora_linear(xn, p, pre + "self_attn.v_proj", scaling)
        q = q.view(B, T, H, Dh).transpose(1, 2)
        k = k.view(B, T, Hkv, Dh).transpose(1, 2)
        v = v.view(B, T, Hkv, Dh).transpose(1, 2)
        q = gc.apply_rope(q, cos, sin)
        k = gc.apply_rope(k, cos, sin)
        k = k.repeat_interleave(H // Hkv, dim=1)
        v = v.repeat_interleave(H // Hkv, dim=1)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(Dh)
        scores = scores.masked_fill(causal, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        o = (probs @ v).transpose(1, 2).reshape(B, T, H * Dh)
        a = gc.lora_linear(o, p, pre + "self_attn.o_proj", scaling)  # hook point a_i
        if a.requires_grad:
            a.retain_grad()
        attn_outs.append(a)
        if i in perturb:
            h = x + (a + perturb[i].detach())   # e_l is a constant
        else:
            h = x + a
        hn = gc.rmsnorm(h, p[pre + "post_attention_layernorm.weight"], eps)
        g = gc.lora_linear(hn, p, pre + "mlp.gate_proj", scaling)
        u = gc.lora_linear(hn, p, pre + "mlp.up_proj", scaling)
        m = gc.lora_linear(torch.nn.functional.silu(g) * u, p, pre + "mlp.down_proj", scaling)
        x = h + m
    x = gc.rmsnorm(x, p["model.norm.weight"], eps)
    head = p["model.embed_tokens.weight"] if c["tie"] else p["lm_head.weight"]
    logits = x @ head.t()
    loss = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, c["V"]), labels[:, 1:].reshape(-1).long(),
        ignore_index=-100, reduction="mean")
    return loss, attn_outs


def run_pass(c, base, lora, ids, labels, trainable, perturb=None):
    """One forward + backward in float64. trainable: LoRA names that get gradients (pass 1
    makes them all trainable so that every a_l has a gradient; those grads are discarded).
    Returns (loss, {l: dLoss/da_l}, {name: grad})."""
    p = {k: v.to(torch.float64) for k, v in base.items()}
    for k, v in lora.items():
        p[k] = v.to(torch.float64).requires_grad_(k in trainable)
    loss, attn_outs = forward(c, p, ids, labels, perturb)
    if loss.requires_grad:
        loss.backward()
    ga = {l: a.grad.detach().clone() for l, a in enumerate(attn_outs) if a.grad is not None}
    grads = {k: p[k].grad.detach().clone() for k in lora if k in trainable}
    return float(loss), ga, grads


# ---------------------------------------------------------------- optimizer (SPEC 4)
def lr_at_step(lr, t, T, warmup_ratio):
    W = int(math.ceil(warmup_ratio * T))
    if t < W:
        return lr * t / max(1, W)
    return lr * max(0.0, 0.5 * (1.0 + math.cos(math.pi * (t - W) / max(1, T - W))))


def opt_values(meth):
    """The float32-rounded optimizer settings (what the C side holds), as Python floats."""
    o = dict(OPT, max_grad_norm=meth.get("max_grad_norm", OPT["max_grad_norm"]))
    o = {k: (f32(v) if isinstance(v, float) else v) for k, v in o.items()}
    t = meth["t"]
    o["t"] = t
    o["lr_t"] = lr_at_step(o["lr"], t, o["total_steps"], o["warmup_ratio"])
    return o


def clip_and_adamw(lora, grads, o):
    """Global-norm clip over the gradients given (= the trainable set), then one AdamW update
    with fresh moments (k = 1) of exactly those tensors, in float64. Tensors without a
    gradient are returned untouched (the same float32 tensor).
    Returns (after {name: float32 tensor}, after64 {name: float64, trained only}, pre-clip
    norm, clip scale)."""
    names = [k for k in lora if k in grads]
    norm = math.sqrt(sum(float((grads[k] ** 2).sum()) for k in names))
    scale = min(1.0, o["max_grad_norm"] / (norm + 1e-6))
    lr, wd, b1, b2, eps = o["lr_t"], o["weight_decay"], o["beta1"], o["beta2"], o["eps"]
    k = 1
    after, after64 = {}, {}
    for name, v in lora.items():
        if name not in grads:
            after[name] = v  # frozen: no decay, no moments, bit-identical
            continue
        pp = v.to(torch.float64).clone()
        g = grads[name] * scale
        pp -= lr * wd * pp
        m = (1 - b1) * g
        vv = (1 - b2) * g * g
        pp -= lr * (m / (1 - b1 ** k)) / (torch.sqrt(vv / (1 - b2 ** k)) + eps)
        after64[name] = pp
        after[name] = pp.to(torch.float32)
    return after, after64, norm, scale


# ---------------------------------------------------------------- the methods
def layer_of(name):
    return int(name.split(".")[2])


def proj_of(name):
    return name.split(".")[4]


def sft_step(c, base, lora, ids, labels, o):
    trainable = set(lora)
    loss, _, grads = run_pass(c, base, lora, ids, labels, trainable)
    after, after64, norm, scale = clip_and_adamw(lora, grads, o)
    return dict(loss=loss, grads=grads, after=after, after64=after64, norm=norm, scale=scale)


def vaccine_step(c, base, lora, ids, labels, o, rho):
    """SPEC 5: every layer perturbed, every LoRA tensor trained."""
    everything = set(lora)
    loss1, ga, _ = run_pass(c, base, lora, ids, labels, everything)  # weight grads discarded
    N = math.sqrt(sum(float((ga[l] ** 2).sum()) for l in range(c["L"])))
    e = {l: rho * ga[l] / (N + 1e-7) for l in range(c["L"])}
    loss2, _, grads = run_pass(c, base, lora, ids, labels, everything, e)
    after, after64, norm, scale = clip_and_adamw(lora, grads, o)
    return dict(loss1=loss1, loss2=loss2, ga=ga, N=N, e=e, grads=grads, after=after, after64=after64,
                norm=norm, scale=scale)


def tvaccine_trainable(lora, A, scope):
    if scope == 0:  # layer: all seven targets of the layers in A
        return {k for k in lora if layer_of(k) in A}
    # attention (reference code): attention LoRA only of layers in A, MLP LoRA everywhere
    return {k for k in lora if layer_of(k) in A or proj_of(k) not in ATTN_PROJS}


def tvaccine_step(c, base, lora, ids, labels, o, rho, A, scope):
    """SPEC 6 steps 3-5 with a fixed layer set A."""
    A = sorted(A)
    trainable = tvaccine_trainable(lora, A, scope)
    # Pass 1: only g_l for l in A is used (every a_l gets a gradient, the rest is ignored).
    loss1, ga_all, _ = run_pass(c, base, lora, ids, labels, set(lora))
    ga = {l: ga_all[l] for l in A}
    N = math.sqrt(sum(float((ga[l] ** 2).sum()) for l in A))
    e = {l: rho * ga[l] / (N + 1e-7) for l in A}
    loss2, _, grads = run_pass(c, base, lora, ids, labels, trainable, e)
    after, after64, norm, scale = clip_and_adamw(lora, grads, o)
    return dict(loss1=loss1, loss2=loss2, ga=ga, N=N, e=e, grads=grads, after=after, after64=after64,
                norm=norm, scale=scale, trainable=trainable)


# ---------------------------------------------------------------- data
def make_batch(c, gen):
    B, T, V = c["B"], c["T"], c["V"]
    assert len(ROWS) == B
    ids = torch.randint(1, V, (B, T), generator=gen, dtype=torch.int64)
    labels = ids.clone()
    for b, (prompt, length) in enumerate(ROWS):
        labels[b, :prompt] = -100   # masked prompt prefix
        ids[b, length:] = 0         # right padding (pad id 0) ...
        labels[b, length:] = -100   # ... ignored
    return ids.to(torch.int32), labels.to(torch.int32)


def make_probe_batch(c, gen):
    ids = torch.randint(1, c["V"], (len(PROBE_ROWS), c["T"]), generator=gen, dtype=torch.int64)
    labels = ids.clone()
    for b, (prompt, length) in enumerate(PROBE_ROWS):
        labels[b, :prompt] = -100
        ids[b, length:] = 0
        labels[b, length:] = -100
    return ids.to(torch.int32), labels.to(torch.int32)


def build():
    c = CFG
    gen = torch.Generator().manual_seed(c["seed"])
    base, lora = gc.make_params(c, gen)
    ids, labels = make_batch(c, gen)
    # drawn after the training batch, so the other files' bytes do not change
    probe_ids, probe_labels = make_probe_batch(c, gen)
    return c, base, lora, ids, labels, probe_ids, probe_labels


def discriminating_seed(n, p, S, first):
    """The first trainer seed from `first` whose draw from p differs from the draw a wrong
    rule, p proportional to n^2, would make, with every uniform 1e-3 from a CDF step: then
    that mistake changes the trained layers, not only the reported p."""
    wrong = n ** 2 / (n ** 2).sum()
    for seed in range(first, first + 1000):
        u = sampling_uniforms(seed, S)
        (A, m), (B, mw) = sample_without_replacement(p, u), sample_without_replacement(wrong, u)
        if A != B and min(m, mw) > 1e-3:
            return seed
    raise RuntimeError("no discriminating seed")


def tvaccine_sampled_step(c, base, lora, ids, labels, probe_ids, probe_labels, o, meth):
    """SPEC 6 steps 1-5 at step t: probe, sample A from the trainer's stream, then the step."""
    n, p = probe_norms(c, base, lora, probe_ids, probe_labels)
    meth["seed"] = discriminating_seed(n, p, meth["S"], meth["seed"])
    uniforms = sampling_uniforms(meth["seed"], meth["S"])
    A, margin = sample_without_replacement(p, uniforms)
    res = tvaccine_step(c, base, lora, ids, labels, o, meth["rho"], A, meth["scope"])
    res.update(norms=n, probs=p, uniforms=uniforms, margin=margin, probe_ids=probe_ids,
               probe_labels=probe_labels)
    return A, res


# ---------------------------------------------------------------- records
def records(c, base, lora, ids, labels, meth, o, res):
    i32 = lambda v: np.array(v, dtype=np.int32)
    fl = lambda v: np.array(v, dtype=np.float32)
    as_f32 = gc.as_f32
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
        ("method.kind", i32(meth["kind"])), ("method.rho", fl(meth["rho"])),
        ("method.layers", np.array(meth["layers"], dtype=np.int32).reshape(-1)),
        ("method.freeze_scope", i32(meth["scope"])),
        ("optim.lr", fl(o["lr"])), ("optim.weight_decay", fl(o["weight_decay"])),
        ("optim.max_grad_norm", fl(o["max_grad_norm"])), ("optim.beta1", fl(o["beta1"])),
        ("optim.beta2", fl(o["beta2"])), ("optim.eps", fl(o["eps"])),
        ("optim.warmup_ratio", fl(o["warmup_ratio"])), ("optim.t", i32(o["t"])),
        ("optim.total_steps", i32(o["total_steps"])), ("optim.lr_t", fl(o["lr_t"])),
        ("optim.clip_scale", fl(res["scale"])),
        ("input_ids", ids.numpy()), ("labels", labels.numpy()),
    ]
    rec += [(k, v.numpy()) for k, v in base.items()]
    rec += [(k, v.numpy()) for k, v in lora.items()]
    if meth["kind"] == 0:
        rec += [("loss", fl(res["loss"]))]
    else:
        rec += [("loss_pass1", fl(res["loss1"])), ("loss_pass2", fl(res["loss2"]))]
    rec += [("grad_norm", fl(res["norm"]))]
    if meth["kind"] != 0:
        rec += [("vaccine.N", fl(res["N"]))]
        rec += [("grad_a.%d" % l, as_f32(res["ga"][l])) for l in meth["layers"]]
    if "norms" in res:
        rec += [("probe_ids", res["probe_ids"].numpy()), ("probe_labels", res["probe_labels"].numpy()),
                ("probe.norms", fl(res["norms"])), ("probe.probs", fl(res["probs"])),
                ("sample.seed", i32(meth["seed"])), ("sample.S", i32(meth["S"])),
                ("sample.K", i32(meth["K"])), ("sample.J", i32(meth["J"])),
                ("sample.uniforms", fl(res["uniforms"]))]
    rec += [("grad." + k, as_f32(res["grads"][k])) for k in lora if k in res["grads"]]
    rec += [("after." + k, res["after"][k].numpy()) for k in lora]
    return rec


# ---------------------------------------------------------------- self-checks
FAILED = []


def check(ok, what):
    print("  [%s] %s" % ("ok" if ok else "FAIL", what))
    if not ok:
        FAILED.append(what)


def maxdiff(a, b):
    return max(float((a[k].to(torch.float64) - b[k].to(torch.float64)).abs().max()) for k in a)


def self_checks(c, base, lora, ids, labels, results):
    print("self-checks:")
    sampled_checks(c, base, lora, ids, labels, results)
    everything = set(lora)

    # 1. This forward == golden_core.forward bit for bit (loss, LoRA grads, dLoss/da_l).
    p = {k: v.to(torch.float64) for k, v in base.items()}
    for k, v in lora.items():
        p[k] = v.to(torch.float64).requires_grad_(True)
    _, ref_loss, ref_attn = gc.forward(c, p, ids, labels)
    ref_loss.backward()
    loss, ga, grads = run_pass(c, base, lora, ids, labels, everything)
    same = (loss == float(ref_loss) and
            all(torch.equal(grads[k], p[k].grad) for k in lora) and
            all(torch.equal(ga[l], ref_attn[l].grad) for l in range(c["L"])))
    check(same, "forward without perturbation == golden_core.forward bit for bit "
          "(loss, LoRA grads, grad_a)")

    # 2. g_l is the gradient the hook sees: d loss / d rho along e(rho) = rho g/(N+1e-7)
    #    at rho -> 0 equals N^2/(N+1e-7) (central difference, float64).
    N = math.sqrt(sum(float((ga[l] ** 2).sum()) for l in range(c["L"])))
    h = 1e-4
    lp = run_pass(c, base, lora, ids, labels, set(),
                  {l: h * ga[l] / (N + 1e-7) for l in range(c["L"])})[0]
    lm = run_pass(c, base, lora, ids, labels, set(),
                  {l: -h * ga[l] / (N + 1e-7) for l in range(c["L"])})[0]
    fd = (lp - lm) / (2 * h)
    exact = N * N / (N + 1e-7)
    check(abs(fd - exact) <= 1e-6 * exact,
          "finite difference of the loss along e: %.12g vs N^2/(N+1e-7) %.12g" % (fd, exact))

    # 3. Clip + AdamW == torch.nn.utils.clip_grad_norm_ + torch.optim.AdamW (fresh state).
    for tag, (meth, o, res) in results.items():
        names = [k for k in lora if k in res["grads"]]
        params = [lora[k].to(torch.float64).clone().requires_grad_(True) for k in names]
        for prm, k in zip(params, names):
            prm.grad = res["grads"][k].clone()
        tnorm = float(torch.nn.utils.clip_grad_norm_(params, o["max_grad_norm"]))
        opt = torch.optim.AdamW(params, lr=o["lr_t"], betas=(o["beta1"], o["beta2"]),
                                eps=o["eps"], weight_decay=o["weight_decay"])
        opt.step()
        d = max(float((prm.detach().to(torch.float32) - res["after"][k]).abs().max())
                for prm, k in zip(params, names))
        d64 = max(float((prm.detach() - res["after64"][k]).abs().max())
                  for prm, k in zip(params, names))
        check(abs(tnorm - res["norm"]) <= 1e-12 * res["norm"] and d64 <= 1e-15 and d == 0,
              "%s: clip + AdamW == torch clip_grad_norm_ + AdamW (norm %.12g vs %.12g, "
              "max |after diff| %.2g in float64, %.2g in float32)"
              % (tag, tnorm, res["norm"], d64, d))

    # 4. T-Vaccine with A = every layer (freeze_scope layer) == the Vaccine step.
    o_v = results["vaccine"][1]
    v = results["vaccine"][2]
    tv = tvaccine_step(c, base, lora, ids, labels, o_v, f32(3.0), range(c["L"]), 0)
    check(tv["loss1"] == v["loss1"] and tv["loss2"] == v["loss2"] and tv["N"] == v["N"]
          and maxdiff(tv["grads"], v["grads"]) == 0 and maxdiff(tv["after"], v["after"]) == 0,
          "tvaccine(A = all layers, scope layer) == vaccine: losses, N, grads, after "
          "(max after diff %.3g)" % maxdiff(tv["after"], v["after"]))
    tva = tvaccine_step(c, base, lora, ids, labels, o_v, f32(3.0), range(c["L"]), 1)
    check(maxdiff(tva["after"], v["after"]) == 0,
          "tvaccine(A = all layers, scope attention) == vaccine")

    # 5. Vaccine with rho = 0 == SFT (same t).
    v0 = vaccine_step(c, base, lora, ids, labels, o_v, 0.0)
    s_same_t = sft_step(c, base, lora, ids, labels, o_v)
    check(v0["loss2"] == v0["loss1"] == s_same_t["loss"]
          and maxdiff(v0["after"], s_same_t["after"]) == 0,
          "vaccine(rho = 0) == sft at the same step")

    # 6. Frozen tensors bit-identical, trained ones changed, per T-Vaccine scope.
    for tag in ("tvaccine", "tvaccine_attention"):
        meth, o, res = results[tag]
        A, scope = meth["layers"], meth["scope"]
        frozen = [k for k in lora if k not in res["trainable"]]
        trained = [k for k in lora if k in res["trainable"]]
        if scope == 0:
            expect_frozen = [k for k in lora if layer_of(k) not in A]
        else:
            expect_frozen = [k for k in lora
                             if layer_of(k) not in A and proj_of(k) in ATTN_PROJS]
        check(frozen == expect_frozen and len(frozen) > 0,
              "%s: frozen set = %d tensors (%s)" % (tag, len(frozen),
                                                    "layers outside A" if scope == 0 else
                                                    "attention LoRA of layers outside A"))
        bit = all(np.array_equal(res["after"][k].numpy().view(np.uint32),
                                 lora[k].numpy().view(np.uint32)) for k in frozen)
        check(bit, "%s: frozen LoRA bit-identical before/after" % tag)
        moved = all(bool((res["after"][k] != lora[k]).all()) for k in trained)
        check(moved, "%s: every element of the %d trained tensors changed" % (tag, len(trained)))
        check(set(res["grads"]) == set(trained),
              "%s: clip norm / update over the trainable set only" % tag)
        # perturbation only on A: pass 2 with e on A equals pass 2 given explicit zeros elsewhere
        e_full = {l: (res["e"][l] if l in A else torch.zeros_like(res["e"][A[0]]))
                  for l in range(c["L"])}
        l2 = run_pass(c, base, lora, ids, labels, set(), e_full)[0]
        check(l2 == res["loss2"], "%s: perturbation only on layers %s" % (tag, A))

    # 7. The perturbation matters; clipping is exercised; e has norm rho over its layers.
    for tag, (meth, o, res) in results.items():
        if meth["kind"] != 0:
            en = math.sqrt(sum(float((res["e"][l] ** 2).sum()) for l in res["e"]))
            check(abs(en - meth["rho"] * res["N"] / (res["N"] + 1e-7)) <= 1e-12,
                  "%s: ||e|| = %.9g (rho %g)" % (tag, en, meth["rho"]))
            rel = abs(res["loss2"] - res["loss1"]) / res["loss1"]
            check(rel > 1e-2, "%s: loss pass1 %.9g -> pass2 %.9g (%.1f %% change)"
                  % (tag, res["loss1"], res["loss2"], 100 * rel))
    active = [t for t, (_, _, r) in results.items() if r["scale"] < 1]
    inactive = [t for t, (_, _, r) in results.items() if r["scale"] == 1]
    check(len(active) > 0 and len(inactive) > 0,
          "clipping active in %s; inactive in %s" % (active, inactive))

    # 8. AdamW's first step is lr_t * g / (|g| + eps): for an element with |g| near eps the
    #    update depends strongly on g, so a C gradient off by float32 rounding would move
    #    after.* there. Bound that: a gradient error of 1e-6 * max|g| of its tensor (what a
    #    float32 implementation achieves on golden_core) must move no after.* element by more
    #    than 1e-5 of its tensor's max |value| (10x below test_golden_core's tolerance).
    for tag, (meth, o, res) in results.items():
        gmin, sens = float("inf"), 0.0
        for k in res["grads"]:
            g = (res["grads"][k] * res["scale"]).abs()
            gmin = min(gmin, float(g.min()))
            d_after = o["lr_t"] * o["eps"] / (g + o["eps"]) ** 2 * (1e-6 * float(g.max()))
            sens = max(sens, float(d_after.max()) / float(res["after64"][k].abs().max()))
        check(sens < 1e-5,
              "%s: min |clipped grad| %.3g (eps %.0e); after.* moves by <= %.2g (relative to "
              "max|after|) for a 1e-6 relative gradient error" % (tag, gmin, o["eps"], sens))


def sampled_checks(c, base, lora, ids, labels, results):
    meth, o, res = results["tvaccine_sampled"]
    # 9. Philox against the Random123 known-answer vector (key 0, counter 0) and the max one.
    check(philox4x32(0, 0, 0) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8] and
          philox4x32(M64, M64, M64) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD],
          "Philox4x32-10 matches the Random123 known-answer vectors")
    # 10. The draw: p_l from n_l; the uniforms are far from every CDF step, so float32 noise in
    #     the C side's p cannot change the set; sequential sampling = torch.multinomial's rule
    #     in distribution (exact pair probabilities vs 20000 torch draws, chi-square).
    p = res["probs"]
    check(abs(p.sum() - 1) < 1e-12 and (p > 0).all(), "p sums to 1: %s" % np.round(p, 6))
    check(res["margin"] > 1e-4, "sampled set %s: uniforms %s at least %.3g from a CDF step"
          % (meth["layers"], np.round(res["uniforms"], 6), res["margin"]))
    counts = {}
    tg = torch.Generator().manual_seed(1)
    for _ in range(20000):
        key = tuple(sorted(torch.multinomial(torch.tensor(p), meth["S"], replacement=False,
                                             generator=tg).tolist()))
        counts[key] = counts.get(key, 0) + 1
    chi2 = 0.0
    for a in range(c["L"]):
        for b in range(a + 1, c["L"]):
            e = 20000 * (p[a] * p[b] / (1 - p[a]) + p[b] * p[a] / (1 - p[b]))
            chi2 += (counts.get((a, b), 0) - e) ** 2 / e
    check(chi2 < 20.52, "torch.multinomial pair frequencies fit the sequential rule (chi2 %.2f, "
          "5 dof, p = 0.001 bound 20.52)" % chi2)
    # 11. The sampled step equals the fixed-set step on the same A.
    fixed = tvaccine_step(c, base, lora, ids, labels, o, meth["rho"], meth["layers"], 0)
    check(maxdiff(fixed["after"], res["after"]) == 0, "sampled step == fixed-set step on A")


def main():
    torch.set_num_threads(1)
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.normpath(os.path.join(here, "..", "data"))
    os.makedirs(outdir, exist_ok=True)

    c, base, lora, ids, labels, probe_ids, probe_labels = build()
    n_targets = int((labels[:, 1:] != -100).sum())
    print("model V %d D %d F %d L %d H %d Hkv %d Dh %d r %d alpha %g; batch %dx%d, %d targets"
          % (c["V"], c["D"], c["F"], c["L"], c["H"], c["Hkv"], c["Dh"], c["r"], c["alpha"],
             c["B"], c["T"], n_targets))

    results = {}
    for tag, meth in FILES:
        meth = dict(meth, rho=f32(meth["rho"]))
        o = opt_values(meth)
        if meth["kind"] == 0:
            res = sft_step(c, base, lora, ids, labels, o)
        elif meth["kind"] == 1:
            assert meth["layers"] == list(range(c["L"]))
            res = vaccine_step(c, base, lora, ids, labels, o, meth["rho"])
        else:
            res = tvaccine_step(c, base, lora, ids, labels, o, meth["rho"], meth["layers"],
                                meth["scope"])
        results[tag] = (meth, o, res)
    meth = dict(SAMPLED, rho=f32(SAMPLED["rho"]))
    o = opt_values(meth)
    meth["layers"], res = tvaccine_sampled_step(c, base, lora, ids, labels, probe_ids,
                                                probe_labels, o, meth)
    results["tvaccine_sampled"] = (meth, o, res)

    for tag, (meth, o, res) in results.items():
        rec = records(c, base, lora, ids, labels, meth, o, res)
        path = os.path.join(outdir, "golden_method_%s.tvg" % tag)
        size = gc.write_tvg(path, rec)
        losses = ("loss %.9f" % res["loss"] if meth["kind"] == 0 else
                  "loss1 %.9f loss2 %.9f N %.6g" % (res["loss1"], res["loss2"], res["N"]))
        print("%s: %d records, %d bytes; t %d lr_t %.6g; %s; grad_norm %.6g clip_scale %.6g; "
              "%d trainable tensors" % (path, len(rec), size, o["t"], o["lr_t"], losses,
                                        res["norm"], res["scale"], len(res["grads"])))
        assert size < 200 * 1024, "%s is too large" % path

    self_checks(c, base, lora, ids, labels, results)
    if FAILED:
        print("%d self-check(s) FAILED" % len(FAILED))
        sys.exit(1)
    print("all self-checks passed")


if __name__ == "__main__":
    main()
