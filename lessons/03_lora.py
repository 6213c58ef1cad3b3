# Lesson 03: LoRA, a low-rank update beside a frozen weight.
#
#     python lessons/03_lora.py            about 3 seconds on a 2-core CPU
#     python lessons/03_lora.py --quick    for CI
#
# Code: loraxs_mini/adapters/base.py (what all adapters share) and loraxs_mini/adapters/lora.py.

# %% Settings
#
# In a notebook, set it here. Run as a script, the flag --quick sets it.
QUICK = False  # True: a tiny model instead of GPT-2's shape, in seconds (what CI runs)

# %% Setup

import torch
import torch.nn.functional as F

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.adapters import LoRALinear, add_adapters, describe_parameters, parameter_counts
from loraxs_mini.lesson import pyplot, quick_setting, show

QUICK = quick_setting(QUICK)  # as a script, the flag --quick sets it
torch.manual_seed(0)

# %% 1. The idea
#
# Fine-tuning changes each weight matrix: W -> W + ΔW. LoRA bets that ΔW has low rank and
# writes it as a product of two thin matrices:
#
#     y = W x + (alpha / r) B A x        W: out x in (frozen)   A: r x in   B: out x r
#
# Parameters to train: r (in + out) instead of in x out.
layer = torch.nn.Linear(768, 2304)  # the shape of GPT-2's c_attn
lora = LoRALinear(layer, rank=8, alpha=8)
print(f"full matrix: {768 * 2304:,} numbers; LoRA r=8: {lora.A.numel() + lora.B.numel():,}")
print(f"A {tuple(lora.A.shape)}, B {tuple(lora.B.shape)}, frozen W {tuple(lora.base.weight.shape)}")

# %% 2. Zero at the start
#
# B starts at zero, so ΔW = B A = 0: the adapted model is exactly the pretrained one.
# A starts random, so that B receives a gradient from the first step (dL/dB = g (A x)ᵀ).
x = torch.randn(4, 768)
assert torch.equal(lora(x), layer(x))
print("with B = 0 the layer's output is bit-for-bit unchanged")

# %% 3. Computed on activations, never as a matrix
#
# (alpha / r) B (A x): first an r-dimensional projection, then back up. That is
# r (in + out) multiply-adds per token; forming ΔW first would cost in x out x r once and
# in x out per token.
with torch.no_grad():
    lora.B.normal_()
delta_from_activations = lora.update(x)
delta_from_matrix = x @ lora.delta_weight().T
print(
    "update from activations == update from ΔW:", torch.allclose(delta_from_activations, delta_from_matrix, atol=1e-4)
)
print("rank of ΔW:", torch.linalg.matrix_rank(lora.delta_weight()).item())

# %% 4. Merging: inference at no extra cost
#
# After training, fold ΔW into W once. The layer is then a plain matrix product again.
before = lora(x)
lora.merge()
after = lora(x)
print("merged output equals unmerged:", torch.allclose(before, after, atol=1e-4))
lora.unmerge()

# %% 5. LoRA in GPT-2
#
# add_adapters wraps every attn.c_attn, attn.c_proj, mlp.c_fc and mlp.c_proj and freezes
# everything else. Count before and after.
with torch.device("meta"):
    model = GPT(GPTConfig.from_name("gpt2"))
print("before:", f"{parameter_counts(model)[0]:,} trainable")
add_adapters(model, "lora", rank=8)
print("after: ", describe_parameters(model))

# %% 6. Learning a low-rank change
#
# A toy: a frozen random layer must learn to imitate W + ΔW_true, where ΔW_true has rank 2.
# LoRA at rank 2 recovers it; only A and B move.
size = 32 if QUICK else 128
base = torch.nn.Linear(size, size)
target_delta = torch.randn(size, 2) @ torch.randn(2, size) / size**0.5
student = LoRALinear(base, rank=2, alpha=2)
optimizer = torch.optim.Adam([student.A, student.B], lr=1e-2)
for _ in range(300 if QUICK else 1000):
    x = torch.randn(64, size)
    loss = F.mse_loss(student(x), base(x) + x @ target_delta.T)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
error = (student.delta_weight() - target_delta).norm() / target_delta.norm()
print(f"after training: loss {loss.item():.2e}, relative error of ΔW {error.item():.2e}")

# The two matrices side by side: what LoRA learned, and what it had to find.
plt = pyplot()
if plt is not None:
    figure, panels = plt.subplots(1, 2, figsize=(8, 3.8), layout="constrained")
    limit = target_delta.abs().max().item()
    learned = student.delta_weight().detach()
    for panel, matrix, title in zip(panels, (target_delta, learned), ("ΔW true", "ΔW = (α/r) B A, learned")):
        image = panel.imshow(matrix, cmap="RdBu", vmin=-limit, vmax=limit)
        panel.set_title(f"{title} (rank {torch.linalg.matrix_rank(matrix, atol=1e-3).item()})")
    figure.colorbar(image, ax=list(panels), shrink=0.8)
    show(figure, "03_lora_recovers_a_rank_2_update")

# %% Exercises (lessons/exercises/ex03_lora.py; check with: python lessons/check.py 03)
#
# 1. lora_forward(x, W, b, A, B, alpha): y = W x + b + (alpha / r) B A x, for x of shape (..., in)
# 2. merged_weight(W, A, B, alpha): the weight that makes a plain nn.Linear compute the same
# 3. Experiment: lora_fit_error(target, rank). Train a LoRA pair to match a rank-2 target at rank 1
#    and at rank 2. Predict the rank-1 error from the target's singular values before you run it.
