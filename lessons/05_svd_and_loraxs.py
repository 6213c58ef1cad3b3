# Lesson 05: the SVD, the best rank-r approximation, and LoRA-XS.
#
#     python lessons/05_svd_and_loraxs.py                 pretrained gpt2 (downloads once, 500 MB)
#     python lessons/05_svd_and_loraxs.py --model PATH    a local checkpoint folder instead
#     python lessons/05_svd_and_loraxs.py --quick         a synthetic "pretrained-like" matrix, for CI
#
# Code: loraxs_mini/adapters/loraxs.py. It is short: read it first.

# %% Settings
#
# In a notebook, set them here (offline: MODEL = a GPT-2 checkpoint folder, or QUICK = True). Run as
# a script, its flags set them: --quick, --model PATH.
MODEL = "gpt2"  # a preset (downloaded once) or a GPT-2 checkpoint folder
QUICK = False  # True: a synthetic pretrained-like matrix instead of MODEL's, in seconds (what CI runs)

# %% Setup
import time

import torch

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.adapters import (
    EVERY_LINEAR_SPLIT_QKV,
    LoRAXSLinear,
    add_adapters,
    describe_parameters,
    truncated_svd,
)
from loraxs_mini.lesson import load_model, pyplot, settings, show

MODEL, QUICK = settings(MODEL, QUICK)  # as a script, --model PATH and --quick set them
torch.manual_seed(0)

# %% 1. Every matrix is a rotation, a stretch and a rotation
#
#     W = U Σ Vᵀ      U: out x k, orthonormal columns   Σ: k singular values, descending
#                     V: in x k, orthonormal columns    (k = min(in, out))
#
# Are pretrained weights far from random? Measure it: how much of the matrix, |W|_F² = Σ σ_i², do
# its top r directions hold, against random weights of the same shape? (On the small pretrained
# GPT-2 of the development machines, block 0's c_attn: top 8 of 256 hold 20%, top 32 hold 51%;
# random: 7% and 26%. More than random, far from all.)
if QUICK:  # a stand-in with a pretrained-like, decaying spectrum
    U, _ = torch.linalg.qr(torch.randn(192, 64))
    V, _ = torch.linalg.qr(torch.randn(64, 64))
    W = (U * torch.arange(1, 65) ** -0.8) @ V.T
else:
    model = load_model(MODEL)
    W = model.transformer.h[0].attn.c_attn.weight.detach()  # out x in
S = torch.linalg.svdvals(W)
random_S = torch.linalg.svdvals(torch.randn_like(W) * W.std())


def share(singular_values, r):
    """The share of |W|_F² = Σ σ_i² that the top r directions hold."""
    return 100 * (singular_values[:r] ** 2).sum() / (singular_values**2).sum()


for r in (1, 8, 32):
    print(f"top {r:2d} of {len(S)} directions hold {share(S, r):5.1f}% of the squared norm "
          f"(random weights of the same shape: {share(random_S, r):4.1f}%)")  # fmt: skip

plt = pyplot()
if plt is not None:
    figure, (values, shares) = plt.subplots(1, 2, figsize=(10, 3.8))
    ranks = torch.arange(1, len(S) + 1)
    label = "synthetic stand-in" if QUICK else f"{MODEL}, block 0 c_attn"
    for singular_values, name in ((S, label), (random_S, "random, same shape and scale")):
        values.plot(ranks, singular_values, label=name)
        shares.plot(ranks, [share(singular_values, r).item() for r in ranks], label=name)
    values.set_yscale("log")
    values.set_xlabel("i")
    values.set_ylabel("σ_i (log scale)")
    values.set_title("singular values", fontsize=10)
    shares.set_xlabel("r")
    shares.set_ylabel("% of |W|² in the top r directions")
    shares.set_title("what the top r directions hold", fontsize=10)
    for axes in (values, shares):
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    show(figure, "05_spectrum")

# %% 2. Eckart-Young: truncating the SVD is the best you can do
#
# Among all matrices of rank r, W_r = U_r Σ_r V_rᵀ is the closest to W, and its error is
# exactly the singular values it drops:  |W - W_r|_F² = Σ_{i > r} σ_i². It is the only closest
# one when σ_r > σ_{r+1}; if the two are equal, any mix of u_r and u_{r+1} does as well.
r = 8
U_r, S_r, Vh_r = truncated_svd(W, r)
W_r = U_r @ torch.diag(S_r) @ Vh_r
print(f"|W - W_8|² = {(W - W_r).square().sum():.4f}   Σ dropped σ² = {S[r:].square().sum():.4f}")

# %% 3. LoRA-XS: freeze B = U_r and A = Σ_r V_rᵀ, train only R (r x r)
#
#     y = W x + (alpha / r) B R A x
#
# With R = I and alpha = r, B R A would be exactly W_r. That is not where training starts (R
# starts near 0, section 6, so ΔW ≈ 0): it is the subspace the update is confined to. LoRA-XS
# learns how to re-mix the r directions in which W itself acts most strongly.
layer = torch.nn.Linear(W.shape[1], W.shape[0])
with torch.no_grad():
    layer.weight.copy_(W)
loraxs = LoRAXSLinear(layer, rank=r, alpha=r)
with torch.no_grad():
    loraxs.R.copy_(torch.eye(r))
print("B R A == W_r with R = I:", torch.allclose(loraxs.delta_weight(), W_r, atol=1e-5))
print(f"trained: R {tuple(loraxs.R.shape)} = {loraxs.R.numel()} numbers")
print(f"frozen:  B {tuple(loraxs.B.shape)}, A {tuple(loraxs.A.shape)}")

# %% 4. r² parameters per layer, whatever the width
#
# Both on the same six matrices per block: q, k, v (section 8), attn.c_proj, mlp.c_fc, mlp.c_proj.
for name in ("gpt2", "gpt2-xl"):
    for method in ("lora", "loraxs"):
        with torch.device("meta"):
            m = GPT(GPTConfig.from_name(name))
        add_adapters(m, method, rank=8, targets=EVERY_LINEAR_SPLIT_QKV)
        print(f"{name:8s} {method:7s} r=8: {describe_parameters(m)}")

# %% 5. Where every update lives
#
# B R A = U_r (R Σ_r) V_rᵀ: whatever R becomes, the update's columns stay in span(U_r) and
# its rows in span(V_r). Projecting onto those subspaces changes nothing.
with torch.no_grad():
    loraxs.R.copy_(torch.randn(r, r))
delta = loraxs.delta_weight()
column_leak = (delta - U_r @ (U_r.T @ delta)).norm() / delta.norm()
row_leak = (delta - (delta @ Vh_r.T) @ Vh_r).norm() / delta.norm()
print(f"part of ΔW outside span(U_r): {column_leak:.1e}, outside span(V_r): {row_leak:.1e}")

# %% 6. The start: R ~ N(0, (1e-5)²)
#
# |ΔW x| <= (alpha / r) |R|_2 σ_1 |x|: with |R|_2 about 1e-5 (2 sqrt(r)), the adapted model
# starts a hundred-thousandth away from the pretrained one.
fresh = LoRAXSLinear(layer, rank=r, alpha=r)
x = torch.randn(16, W.shape[1])
bound = fresh.scaling * torch.linalg.matrix_norm(fresh.R, ord=2) * S[0] * x.norm(dim=1)
print(f"largest |ΔW x| / bound: {(fresh.update(x).norm(dim=1) / bound).max():.2f} (<= 1), "
      f"relative change of the output: {(fresh.update(x).norm() / layer(x).norm()):.1e}")  # fmt: skip

# %% 7. Three ways to the top r triplets
#
# svd:        all k triplets, keep r: the textbook route, and the slowest.
# gram:       eigh(WᵀW) = V Σ² Vᵀ gives V_r and σ², then U_r = W V_r / σ. Squaring costs
#             precision only in the small σ that LoRA-XS drops: the default.
# randomized: multiply W by 2r random vectors, sharpen them by power iterations, solve a small
#             SVD. Its cost grows with r, not with min(in, out), so it wins on large matrices;
#             on a small one its fixed costs can make it the slowest. The times below are this
#             machine's (each the median of 5 calls, after one to warm up). Where σ_r is close to
#             the values below it, it finds a slightly different subspace. Watch both the angle to
#             the exact subspace and the energy |U_mᵀ W|_F² / Σ_{i<=r} σ_i² it keeps (1 = as much
#             as the exact one).
reference = torch.linalg.svd(W.double(), full_matrices=False)[0][:, :r].float()
for method in ("svd", "gram", "randomized"):
    U_m, S_m, _ = truncated_svd(W, r, method)  # the warm-up call
    times = []
    for _ in range(5):
        start = time.perf_counter()
        truncated_svd(W, r, method)
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[2]  # the median
    angle = torch.linalg.matrix_norm(U_m - reference @ (reference.T @ U_m), ord=2)  # sin(largest principal angle)
    energy = (U_m.T @ W).square().sum() / S[:r].square().sum()
    print(f"{method:10s} {1000 * seconds:7.1f} ms   sin(angle to the float64 U_r) = {angle:.1e}   energy {energy:.4f}")

# %% 8. q, k and v: one SVD or three?
#
# GPT-2 computes queries, keys and values with one fused matrix, c_attn = [W_q; W_k; W_v]
# (3C x C). One SVD of the stack gives one U_r for all three: how much of it lies in each
# block of rows? If the value rows get little, a LoRA-XS update on the fused layer can barely
# change the values. The paper's code adapts q, k and v separately, each with its own SVD and
# R; here that is targets "attn.c_attn.q", ".k", ".v" (see adapters/qkv.py). Which does better
# is an experiment: on this project's two tasks, c_attn whole did
# (docs/defaults.md#at-the-default-ranks-lora-xss-layout-and-the-first-learning-rates).
# Try it: rerun that comparison on another task or model.
C = W.shape[1]
U_fused = torch.linalg.svd(W.double(), full_matrices=False)[0][:, :r]  # 3C x r: one U_r for the stack
mass = [U_fused[i * C : (i + 1) * C].square().sum().item() / r for i in range(3)]  # each column has norm 1
print(f"share of the fused U_r in the rows of W_q {mass[0]:.2f}, W_k {mass[1]:.2f}, W_v {mass[2]:.2f}")
# --quick uses a random stand-in: about a third each. On the small pretrained GPT-2 of the
# development machines, W_v's rows got 0.005 to 0.09 of it in every block, W_q and W_k the rest.

# %% Exercises (lessons/exercises/ex05_svd_and_loraxs.py; check with: python lessons/check.py 05)
#
# 1. best_rank_r(W, r): the best rank-r approximation of W, from torch.linalg.svd
# 2. loraxs_init(W, r): the frozen pair (B, A) of LoRA-XS
# 3. Experiment: loraxs_start_shift(W, rank, R). How far does W + B R A move from W with R = I, and
#    with R ~ 1e-5? Why does the code start R near zero, unlike the identity?
