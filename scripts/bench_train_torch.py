#!/usr/bin/python3
"""bench_train_torch.py — the PyTorch peer of `anvil train --bench` (called by scripts/bench_train.sh).

A Llama model in plain PyTorch with the structure of anvil's training model: token embedding; n_layer
blocks of [RMSNorm (eps 1e-5) -> q, k, v projections without bias (GQA: kv heads shared by
n_head / n_kv_head query heads), RoPE (base 10000, adjacent pairs (2i, 2i+1), llama.cpp's "NORM"
layout), causal softmax attention scaled by 1/sqrt(head_dim), output projection, residual; RMSNorm ->
SwiGLU FFN w_down(silu(w_gate x) * w_up x), residual]; final RMSNorm; output head (tied to the
embedding or not); cross-entropy. AdamW (betas 0.9/0.95, eps 1e-8, weight decay 0.1 on the matrices
and the embedding, none on the norm weights), gradient clipping at 1.0, f32, random (seeded) token
batches. Times --steps full training steps (forward, backward, clip, optimizer step, zero_grad)
after --warmup-steps untimed ones and prints ONE JSON object (keys as `anvil train --bench`, plus
torch/blas details).

FLOPs per token: 6*N + 12*L*dim*T (PaLM appendix B), N = parameters of all matmuls including the
output head counted once (the embedding lookup is not a matmul). MFU = flops_per_token * tokens/s /
peak, peak from --peak-gflops (anvil's measured sgemm peak), null without it.

Best setup for the peer: OPENBLAS_NUM_THREADS and OMP_NUM_THREADS are set to --threads before torch
is imported (torch.set_num_threads does not reach OpenBLAS); OMP_WAIT_POLICY=passive with more than
one thread (unless already set; see below); OPENBLAS_CORETYPE is dropped unless ANVIL_BENCH_BLAS_CORE
names one (this machine's environment forces Haswell kernels, ~1.5x slower on Zen 4); glibc malloc
keeps freed memory instead of unmapping it (MALLOC_ENV below). torch 1.13 has no
scaled_dot_product_attention, so attention is one baddbmm (scale and causal mask fused) + softmax +
bmm per layer, with grouped query heads folded into the row dimension so k and v are never repeated;
AdamW uses the multi-tensor (foreach) path; gradients are set to None.
Which BLAS torch uses (Debian's torch takes whatever libblas.so.3 points to) is reported in "blas";
scripts/lib/torchblas.sh preloads OpenBLAS when libblas.so.3 is the slow reference BLAS.

--matmul-probe: only time a 1024x1024 f32 matmul at --threads and print {"matmul_gflops", "blas"}.

LoRA mode (--lora-r R > 0; --lora-alpha ALPHA, default R; --lora-targets, comma-separated GGUF names,
default all seven: attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down): the peer of LoRA
fine-tuning. The base model keeps its random (seeded) weights but is frozen (requires_grad False:
embedding, norms, all matrices, output head); each target matrix W [out, in] of every layer gets
PEFT's adapter, y = x W^T + (ALPHA/R) (x A^T) B^T with A [R, in] = kaiming_uniform_(a=sqrt(5)) and
B [out, R] = 0 (initialised after the base, from the same seeded generator), no dropout. Computed as
y = mm(x, W^T) then y.addmm_(mm(x, A^T), B^T, alpha=ALPHA/R): the scale and the residual add fuse into
the second LoRA GEMM (no extra elementwise pass); frozen weights get no weight gradient (.grad stays
None, checked). AdamW over A and B only (betas 0.9/0.999 and weight decay 0 as PEFT/HF's Trainer
default, eps 1e-8, --lr), gradient clipping at 1.0 over the LoRA parameters only. The JSON keeps its
keys ("params" = all parameters, frozen included) and adds "lora": {"r", "alpha", "targets",
"trainable_params"}.
FLOPs per token in LoRA mode: 4*N + 6*N_lora + 12*L*dim*T, with N the base matmul parameters as
above (output head once) and N_lora = sum over adapted matrices of R*(in + out) (= trainable_params):
forward 2*N + 2*N_lora; backward 2*N for the input gradients of the frozen matmuls (no weight
gradients) + 4*N_lora (input and weight gradients of the two LoRA matmuls); attention 12*L*dim*T as
in full training. (Autograd also skips the input gradient of layer 0's q/k/v/gate/up, whose input
depends on no trainable parameter; the formula still counts it.)
"""
import argparse
import json
import math
import os
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dim", type=int, default=288)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=None)
    p.add_argument("--ffn", type=int, default=768)
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--threads", "-t", type=int, default=1)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tied", dest="tied", action="store_true", default=True)
    g.add_argument("--untied", dest="tied", action="store_false")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rope-base", type=float, default=10000.0)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--peak-gflops", type=float, default=None)
    p.add_argument("--matmul-probe", action="store_true")
    p.add_argument("--lora-r", type=int, default=0, help="LoRA rank; 0 = full training (default)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: r)")
    p.add_argument("--lora-targets", default=",".join(LORA_TARGETS),
                   help="comma-separated GGUF names (default: all seven)")
    a = p.parse_args()
    if a.kv_heads is None:
        a.kv_heads = a.heads
    bad = []
    if a.threads < 1:
        bad.append("--threads must be >= 1")
    if a.dim % a.heads or (a.dim // a.heads) % 2:
        bad.append("--dim must be a multiple of --heads with an even head_dim")
    if a.kv_heads < 1 or a.heads % a.kv_heads:
        bad.append("--heads must be a multiple of --kv-heads")
    if min(a.layers, a.ffn, a.vocab, a.seq, a.batch, a.steps) < 1 or a.warmup_steps < 0:
        bad.append("sizes and --steps must be positive")
    a.lora_targets = [t for t in a.lora_targets.split(",") if t]
    if a.lora_r < 0:
        bad.append("--lora-r must be >= 0")
    if a.lora_r == 0 and a.lora_alpha is not None:
        bad.append("--lora-alpha needs --lora-r")
    if a.lora_alpha is None:
        a.lora_alpha = float(a.lora_r)
    unknown = [t for t in a.lora_targets if t not in LORA_TARGETS]
    if unknown or not a.lora_targets or len(set(a.lora_targets)) != len(a.lora_targets):
        bad.append("--lora-targets: a comma-separated subset of " + ",".join(LORA_TARGETS))
    if bad:
        p.error("; ".join(bad))
    return a


# LoRA target (GGUF tensor name) -> Block attribute
LORA_TARGETS = {"attn_q": "wq", "attn_k": "wk", "attn_v": "wv", "attn_output": "wo",
                "ffn_gate": "w_gate", "ffn_up": "w_up", "ffn_down": "w_down"}
ARGS = parse_args()

# glibc malloc returns every large block (> 32 MiB at most, usually far less) to the kernel at free:
# each of torch's per-op activation tensors is then faulted in afresh, which costs ~18 us per 4 KiB
# page on this kind of VM (4x slower training for the small config). Keep freed memory in the heap,
# as a jemalloc/tcmalloc LD_PRELOAD would: no mmap'd chunks, no trimming. These are read at process
# start, so re-execute once with them set (ANVIL_BENCH_TORCH_MALLOC=default keeps glibc's defaults).
MALLOC_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}
if os.environ.get("ANVIL_BENCH_TORCH_MALLOC", "") != "default" and \
        any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
    os.environ.update(MALLOC_ENV)
    os.execv(sys.executable, [sys.executable] + sys.argv)

# threads and BLAS kernels must be fixed before torch (and with it OpenBLAS / libgomp) is loaded
os.environ["OPENBLAS_NUM_THREADS"] = str(ARGS.threads)
os.environ["OMP_NUM_THREADS"] = str(ARGS.threads)
os.environ["MKL_NUM_THREADS"] = str(ARGS.threads)
# Debian's OpenBLAS has its own pthread pool beside torch's OpenMP one: with spinning OpenMP workers
# the two pools fight over the cores during every sgemm (2 threads: 2-5x slower than 1 thread here);
# sleeping OpenMP workers measured best (better than 1 BLAS thread or 1 torch thread)
if ARGS.threads > 1:
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
os.environ.pop("OPENBLAS_CORETYPE", None)
if os.environ.get("ANVIL_BENCH_BLAS_CORE"):
    os.environ["OPENBLAS_CORETYPE"] = os.environ["ANVIL_BENCH_BLAS_CORE"]

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(ARGS.threads)
torch.set_num_interop_threads(1)


def blas_info():
    """The library that provides sgemm_ to torch (global symbol lookup, as the dynamic linker
    resolves libtorch's reference: LD_PRELOAD first) and, when it is OpenBLAS, OpenBLAS's own
    description of itself (version, kernel set, threads). Call after a matmul ran."""
    import ctypes

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]
    try:
        libdl = ctypes.CDLL("libc.so.6")
        if not hasattr(libdl, "dladdr"):
            libdl = ctypes.CDLL("libdl.so.2")
        try:  # global scope: the executable, LD_PRELOAD, RTLD_GLOBAL libraries
            fn = ctypes.CDLL(None).sgemm_
        except AttributeError:  # libtorch_cpu's own dependency tree
            tc = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
            fn = ctypes.CDLL(tc, mode=os.RTLD_NOLOAD).sgemm_
        addr = ctypes.cast(fn, ctypes.c_void_p)
        info = DlInfo()
        if not libdl.dladdr(addr, ctypes.byref(info)):
            return "unknown"
        path = os.path.realpath(info.dli_fname.decode())
    except (OSError, AttributeError):
        return "unknown"
    desc = ""
    if "openblas" in path:
        try:
            ob = ctypes.CDLL("libopenblas.so.0")
            ob.openblas_get_config.restype = ctypes.c_char_p
            ob.openblas_get_corename.restype = ctypes.c_char_p
            desc = " (%s, core %s, %d threads)" % (ob.openblas_get_config().decode(),
                                                   ob.openblas_get_corename().decode(),
                                                   ob.openblas_get_num_threads())
        except (OSError, AttributeError):
            desc = " (OpenBLAS)"
    elif "/blas/" in path:
        desc = " (reference BLAS)"
    elif "mkl" in path:
        desc = " (MKL)"
    return "sgemm_ from " + path + desc


def matmul_probe(threads):
    n = 1024
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    c = torch.empty(n, n)
    for _ in range(3):
        torch.mm(a, b, out=c)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        reps = 4
        for _ in range(reps):
            torch.mm(a, b, out=c)
        best = min(best, (time.perf_counter() - t0) / reps)
    return 2.0 * n ** 3 / best / 1e9


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope(x, cos, sin):
    """x (B, T, H, hd); rotate adjacent pairs (x[2i], x[2i+1]) by pos * base^(-2i/hd)."""
    x2 = x.unflatten(-1, (-1, 2))
    x0, x1 = x2[..., 0], x2[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.n_head, self.n_kv = a.heads, a.kv_heads
        self.hd = a.dim // a.heads
        self.attn_norm = RMSNorm(a.dim)
        self.wq = nn.Linear(a.dim, a.heads * self.hd, bias=False)
        self.wk = nn.Linear(a.dim, a.kv_heads * self.hd, bias=False)
        self.wv = nn.Linear(a.dim, a.kv_heads * self.hd, bias=False)
        self.wo = nn.Linear(a.heads * self.hd, a.dim, bias=False)
        self.ffn_norm = RMSNorm(a.dim)
        self.w_gate = nn.Linear(a.dim, a.ffn, bias=False)
        self.w_up = nn.Linear(a.dim, a.ffn, bias=False)
        self.w_down = nn.Linear(a.ffn, a.dim, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, D = x.shape
        hd, nkv, rep = self.hd, self.n_kv, self.n_head // self.n_kv
        h = self.attn_norm(x)
        q = rope(self.wq(h).view(B, T, self.n_head, hd), cos, sin)
        k = rope(self.wk(h).view(B, T, nkv, hd), cos, sin)
        v = self.wv(h).view(B, T, nkv, hd)
        # query head j*rep + r uses kv head j (llama.cpp's GQA): fold the rep query heads of a
        # kv head into the rows, so k and v are used as they are: (B*nkv, rep*T, hd)
        q = q.view(B, T, nkv, rep, hd).permute(0, 2, 3, 1, 4).reshape(B * nkv, rep * T, hd)
        k = k.permute(0, 2, 3, 1).reshape(B * nkv, hd, T)
        v = v.transpose(1, 2).reshape(B * nkv, T, hd)
        # scores = mask + scale * q k^T in one call; mask is 0 / -inf, (rep*T, T)
        att = torch.baddbmm(mask, q, k, alpha=1.0 / math.sqrt(hd))
        att = F.softmax(att, dim=-1)
        o = torch.bmm(att, v)  # (B*nkv, rep*T, hd)
        o = o.view(B, nkv, rep, T, hd).permute(0, 3, 1, 2, 4).reshape(B, T, D)
        x = x + self.wo(o)
        h = self.ffn_norm(x)
        return x + self.w_down(F.silu(self.w_gate(h)) * self.w_up(h))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.tok = nn.Embedding(a.vocab, a.dim)
        self.blocks = nn.ModuleList(Block(a) for _ in range(a.layers))
        self.norm = RMSNorm(a.dim)
        self.out = None if a.tied else nn.Linear(a.dim, a.vocab, bias=False)
        hd = a.dim // a.heads
        inv = a.rope_base ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
        ang = torch.arange(a.seq, dtype=torch.float64)[:, None] * inv[None, :]  # (T, hd/2)
        self.register_buffer("cos", ang.cos().float()[None, :, None, :], persistent=False)
        self.register_buffer("sin", ang.sin().float()[None, :, None, :], persistent=False)
        rep = a.heads // a.kv_heads
        causal = torch.full((a.seq, a.seq), float("-inf")).triu(1)
        self.register_buffer("mask", causal.repeat(rep, 1).contiguous(), persistent=False)
        # llama2.c-style init: N(0, 0.02), residual output projections N(0, 0.02/sqrt(2L))
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * a.layers) if name.endswith(("wo.weight", "w_down.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        x = self.tok(idx)
        for b in self.blocks:
            x = b(x, self.cos, self.sin, self.mask)
        x = self.norm(x)
        logits = F.linear(x, self.tok.weight if self.out is None else self.out.weight)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


class LoRALinear(nn.Module):
    """PEFT-style adapter around a frozen bias-free nn.Linear: y = x W^T + scale (x A^T) B^T."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        base.weight.requires_grad_(False)
        self.scale = alpha / r
        self.lora_a = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x):
        x2 = x.reshape(-1, x.shape[-1])
        y = F.linear(x2, self.base.weight)  # frozen: backward computes the input gradient only
        # y += scale * (x A^T) B^T in one GEMM with beta = 1 (mm saves its inputs, not y: in place is safe)
        y.addmm_(F.linear(x2, self.lora_a), self.lora_b.t(), alpha=self.scale)
        return y.view(*x.shape[:-1], y.shape[-1])


def add_lora(model, a):
    """Freeze every base parameter, wrap the targets; returns the LoRA parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    for b in model.blocks:
        for t in a.lora_targets:
            setattr(b, LORA_TARGETS[t], LoRALinear(getattr(b, LORA_TARGETS[t]), a.lora_r, a.lora_alpha))
    return [p for p in model.parameters() if p.requires_grad]


def matmul_params(a):
    hd = a.dim // a.heads
    per_layer = a.dim * a.heads * hd * 2 + a.dim * a.kv_heads * hd * 2 + 3 * a.dim * a.ffn
    return a.layers * per_layer + a.vocab * a.dim  # output head once, tied or not


def main():
    a = ARGS
    if a.matmul_probe:
        g = matmul_probe(a.threads)
        print(json.dumps({"matmul_gflops": round(g, 3), "threads": a.threads, "blas": blas_info()}))
        return
    torch.manual_seed(a.seed)
    model = Llama(a)
    if a.lora_r:
        params = add_lora(model, a)  # trainable: the LoRA A and B only
        opt = torch.optim.AdamW(params, lr=a.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=True)
    else:
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                lr=a.lr, betas=(0.9, 0.95), eps=1e-8, foreach=True)
        params = list(model.parameters())
    g = torch.Generator().manual_seed(a.seed + 1)
    nbatch = 4  # a few distinct random batches, cycled
    data = [torch.randint(0, a.vocab, (a.batch, a.seq + 1), generator=g) for _ in range(nbatch)]
    data = [(d[:, :-1].contiguous(), d[:, 1:].contiguous()) for d in data]

    def step(i):
        x, y = data[i % nbatch]
        loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    first_loss = None
    for i in range(a.warmup_steps):
        l = step(i)
        if first_loss is None:
            first_loss = l.item()
    t0 = time.perf_counter()
    for i in range(a.steps):
        l = step(a.warmup_steps + i)
        if first_loss is None:
            first_loss = l.item()
    dt = time.perf_counter() - t0
    last_loss = l.item()

    tokens_per_s = a.steps * a.batch * a.seq / dt
    if a.lora_r:
        frozen_grads = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
        if frozen_grads:
            sys.exit("bench_train_torch: frozen weights got gradients: " + ", ".join(frozen_grads[:4]))
        n_lora = sum(p.numel() for p in params)
        fpt = 4.0 * matmul_params(a) + 6.0 * n_lora + 12.0 * a.layers * a.dim * a.seq
    else:
        fpt = 6.0 * matmul_params(a) + 12.0 * a.layers * a.dim * a.seq
    gflops = fpt * tokens_per_s / 1e9
    out = {
        "tokens_per_s": tokens_per_s,
        "flops_per_token": fpt,
        "gflops": gflops,
        "mfu": gflops / a.peak_gflops if a.peak_gflops else None,
        "peak_gflops": a.peak_gflops,
        "params": sum(p.numel() for p in model.parameters()),
        "matmul_params": matmul_params(a),
        "threads": a.threads,
        "batch": a.batch,
        "seq": a.seq,
        "steps": a.steps,
        "warmup_steps": a.warmup_steps,
        "step_s": dt / a.steps,
        "loss_first": first_loss,
        "loss_last": last_loss,
        "ln_vocab": math.log(a.vocab),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "blas": blas_info(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "ld_preload": os.environ.get("LD_PRELOAD") or None,
        "malloc": " ".join("%s=%s" % (k, os.environ[k]) for k in MALLOC_ENV if k in os.environ) or "glibc defaults",
    }
    if a.lora_r:
        out["lora"] = {"r": a.lora_r, "alpha": a.lora_alpha, "targets": a.lora_targets,
                       "trainable_params": n_lora}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
