# Lesson 09: which subspace? LoRA-XS freezes W's top singular directions; would any others do?
#
#     python lessons/09_which_subspace.py                 gpt2 (downloads once); about 2 minutes on a 2-core CPU
#     python lessons/09_which_subspace.py --model PATH    any GPT-2 checkpoint folder
#     python lessons/09_which_subspace.py --quick         a tiny random model, for CI
#
# Code: loraxs_mini/adapters/loraxs.py (its `subspace` setting), loraxs_mini/adapters/lorasb.py (short: read it).

# %% Settings
#
# In a notebook, set them here (offline: MODEL = a GPT-2 checkpoint folder, or QUICK = True). Run as
# a script, its flags set them: --quick, --model PATH.
MODEL = "gpt2"  # a preset (downloaded once) or a GPT-2 checkpoint folder
QUICK = False  # True: a tiny random model instead of MODEL, in seconds (what CI runs)

# %% Setup
import copy
import tempfile
import time
from pathlib import Path
from statistics import median

import torch

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.adapters import add_adapters, find_targets
from loraxs_mini.adapters.base import FirstStep
from loraxs_mini.adapters.lorasb import first_update
from loraxs_mini.data import load_task, make_batch
from loraxs_mini.lesson import load_model, pyplot, repository, settings, show
from loraxs_mini.pretrained import save_pretrained
from loraxs_mini.recipe import (
    DEFAULT_BATCH_SIZE,
    GRAD_CLIP,
    batch_order,
    default_learning_rate,
    first_step,
    learning_rate_at,
)

MODEL, QUICK = settings(MODEL, QUICK)  # as a script, --model PATH and --quick set them
if QUICK:  # a tiny random GPT-2, saved once, plays the pretrained base model
    torch.manual_seed(0)
    MODEL = str(Path(tempfile.mkdtemp()) / "tiny")
    save_pretrained(GPT(GPTConfig.from_name("tiny")), MODEL)
STEPS = 6 if QUICK else 50  # full fine-tuning steps for the update we study (train.py's default run: 150)
RANKS = (1, 2, 4, 8, 16, 32)
torch.manual_seed(0)


# %% 1. What can B R A express?
#
# LoRA-XS's update is ΔW = B R A with B (out x r) and A (r x in) frozen. Whatever R learns, the
# columns of ΔW stay in span(B) and its rows in span(Aᵀ). Take orthonormal bases U (out x r) of the
# one and V (in x r) of the other: the updates LoRA-XS can reach are exactly U M Vᵀ for any r x r
# matrix M. The one closest to a given ΔW is its projection,
#
#     M = Uᵀ ΔW V,       U M Vᵀ = (U Uᵀ) ΔW (V Vᵀ),
#
# and the share of ΔW it keeps is  ||Uᵀ ΔW V||² / ||ΔW||²  (squared Frobenius norms). That share is
# what this lesson measures: how much of a real fine-tuning update each frozen subspace can hold.
# Its ceiling is ΔW's own top r singular directions (Eckart-Young): no pair of r-dimensional
# subspaces keeps more than (σ_1² + ... + σ_r²) / Σ σ_i² of ΔW's.
def captured_share(delta, U, V):
    """The share of ΔW (out x in) that U M Vᵀ can hold, for U (out x r) and V (in x r) with orthonormal columns."""
    return ((U.T @ delta @ V).norm() ** 2 / delta.norm() ** 2).item()


# %% 2. A real fine-tuning update
#
# Full fine-tuning of every weight on the sentiment task, the loop of lesson 06 at full fine-tuning's
# rate, for a third of train.py's budget; then ΔW = W_after - W_before for each of the matrices the
# adapters target.
base = load_model(MODEL)
task = load_task("sentiment", repository() / "data")
train = task.splits["train"]
rate = default_learning_rate("full")
model = copy.deepcopy(base).train()
optimizer = torch.optim.AdamW(model.parameters(), lr=rate, weight_decay=0.0)
for step, indices in enumerate(batch_order(len(train), STEPS, DEFAULT_BATCH_SIZE, seed=0)):
    _, loss = model(*make_batch([train[i] for i in indices]))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate_at(step, STEPS, rate)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
before, after = find_targets(base), find_targets(model)
updates = {name: (after[name].weight - layer.weight).detach() for name, layer in before.items()}  # ΔW, out x in
print(f"full fine-tuning, {STEPS} steps: final loss {loss.item():.3f}; {len(updates)} matrices changed")

# %% 3. Four candidate subspaces, and the ceiling
#
#     top        W's top r singular directions                 LoRA-XS (the paper)
#     bottom     W's bottom r                                   where MiLoRA starts its LoRA
#     random     a random orthonormal pair                      the control
#     gradient   the top r of full fine-tuning's first step     LoRA-SB: -η sign(∇_W L) on one batch
#     ceiling    ΔW's own top r                                 nothing of rank r keeps more
#
# A random pair keeps about (r / out)(r / in) of any fixed matrix, next to nothing: the question is
# how far above chance W's own directions, and the first step's, are.
inputs, targets, first_rate = first_step(train, STEPS, DEFAULT_BATCH_SIZE, 0, rate)  # the loop's first batch
probe = copy.deepcopy(base)
started = time.perf_counter()
gradient_steps = first_update(find_targets(probe), FirstStep(lambda: probe(inputs, targets)[1], first_rate))
print(f"the first-step estimate: one forward and backward pass, {time.perf_counter() - started:.2f} s")


def orthonormal(rows, rank, generator):
    return torch.linalg.qr(torch.randn(rows, rank, generator=generator)).Q  # (rows, rank), orthonormal columns


def singular_vectors(matrix):
    U, _, Vh = torch.linalg.svd(matrix, full_matrices=False)
    return U, Vh.T  # every left and right singular vector, largest first: slice [:, :r] for the top r


bases = {}  # layer -> candidate -> (U, V) with every column; one SVD per matrix, sliced for each rank
for name, layer in before.items():
    U_W, V_W = singular_vectors(layer.weight.detach())
    bases[name] = {
        "top": (U_W, V_W),
        "bottom": (U_W.flip(1), V_W.flip(1)),  # smallest first
        "gradient": singular_vectors(gradient_steps[name]),
        "ceiling": singular_vectors(updates[name]),
    }

shares = {}  # subspace -> [mean share over the layers, at each rank]
for rank in RANKS:
    generator = torch.Generator().manual_seed(rank)
    per_layer = []
    for name, candidates in bases.items():
        out, in_ = updates[name].shape
        pairs = {subspace: (U[:, :rank], V[:, :rank]) for subspace, (U, V) in candidates.items()}
        pairs["random"] = (orthonormal(out, rank, generator), orthonormal(in_, rank, generator))
        per_layer.append({subspace: captured_share(updates[name], U, V) for subspace, (U, V) in pairs.items()})
    for subspace in ("top", "bottom", "random", "gradient", "ceiling"):
        shares.setdefault(subspace, []).append(sum(layer[subspace] for layer in per_layer) / len(per_layer))
print("share of ΔW each subspace can hold, mean over the layers:")
print("r:        " + "".join(f"{rank:>9}" for rank in RANKS))
for subspace, row in shares.items():
    print(f"{subspace:9s} " + "".join(f"{share:9.4f}" for share in row))
in_, out = before[next(iter(before))].in_features, before[next(iter(before))].out_features
print(f"chance at r = 8 for the first layer ({out} x {in_}): (r / out)(r / in) = {64 / (in_ * out):.1e}")

plt = pyplot()
if plt is not None:
    figure, axes = plt.subplots(figsize=(6.5, 4))
    for subspace, row in shares.items():
        style = dict(color="gray", linestyle="--") if subspace == "ceiling" else {}
        axes.plot(RANKS, row, marker="o", label=subspace, **style)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("rank r")
    axes.set_ylabel("share of the fine-tuning update held (log)")
    axes.set_title(f"ΔW of {STEPS} steps of full fine-tuning, mean over {len(updates)} matrices", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    show(figure, "09_captured_share")

# What to look for: random is at chance; the gradient subspace holds far more of ΔW than W's top
# directions do, because the first step points where the rest of fine-tuning goes; W's top
# directions do somewhat better than chance. On the small pretrained GPT-2 (`--model
# ../shared/pretrained-small-gpt2`, 15 s) at r = 8: gradient 44%, top 0.16%, random 0.05%, bottom
# 0.03%, and the ceiling 86%: a real update is nearly low-rank, but not in W's directions.

# %% 4. Does holding more of ΔW mean a better model?
#
# Not necessarily, and that is the surprise of this lesson. R does not have to copy full
# fine-tuning's ΔW: it only has to find some update, in its subspace, that solves the task. On the
# two toy tasks (small pretrained GPT-2, 150 steps, 3 seeds, each at the rate chosen for it on
# validation; the tables and commands: docs/comparison.md#which-subspace-lora-xss-frozen-directions-and-lora-sb):
#
#     test accuracy, r = 8     top             random          bottom          LoRA-SB
#     sentiment                0.876 ± 0.045   0.888 ± 0.047   0.826 ± 0.022   0.903 ± 0.025
#     plural                   0.580 ± 0.020   0.447 ± 0.050   0.580 ± 0.020   0.547 ± 0.046
#
# On sentiment, which asks for one of two label tokens, no subspace beats another (beyond the spread
# over seeds) up to r = 8, and at r = 16 the random one is ahead. On plural, which asks the model to
# write a word, the top subspace is ahead of a random one from r = 8 on. LoRA-SB's start pays most
# at small ranks: at r = 2 it reaches 0.782 on sentiment where LoRA-XS reaches 0.657.


# %% 5. Directions or scale?
#
# The LoRA-XS paper's ablation ("SVD beats random") is run, in its code, with controls that each
# change two things at once: its bottom pair keeps the bottom's own singular values, its random
# pairs a random matrix's (docs/methods.md, "LoRA-XS (loraxs.py)", names the code). A frozen pair is
# directions (span B, span Aᵀ) and a scale (the singular values A carries). One step of training
# tells them apart.
# From R = 0, Adam's first step is R = -η sign(dL/dR), dL/dR = Bᵀ G Aᵀ with G = dL/dW: every entry of
# R moves by η, whatever the pair. Then ΔW = B R A, and to first order the loss changes by <G, ΔW>:
#
#     ||ΔW||               the step's size: the scale A carries sets it
#     -<G, ΔW> / ||ΔW||    how much loss a step of that size buys: the directions set it
#
# W's bottom pair at the top scale differs from the top pair only in its directions, and from the
# bottom pair at its own scale only in its scale. G: the gradient on the loop's first batch.
def first_step_effects(W, gradient, rank, learning_rate):
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    pairs = {
        "top": (U[:, :rank], S[:rank, None] * Vh[:rank]),
        "bottom, top scale": (U[:, -rank:], S[:rank, None] * Vh[-rank:]),
        "bottom, own scale": (U[:, -rank:], S[-rank:, None] * Vh[-rank:]),
    }
    effects = {}
    for name, (B, A) in pairs.items():
        R = -learning_rate * (B.T @ gradient @ A.T).sign()  # Adam's first step from R = 0
        delta = B @ R @ A  # out x in
        effects[name] = (delta.norm().item(), (gradient * delta).sum().item())
    return effects


targets_of = find_targets(base)
gradients = torch.autograd.grad(base(inputs, targets)[1], [layer.weight for layer in targets_of.values()])
effects = [first_step_effects(layer.weight.detach(), G, 8, 1e-2) for layer, G in zip(targets_of.values(), gradients)]
print(f"one Adam step on R at r = 8 (η = 1e-2), median over the {len(effects)} layers:")
print(f"{'pair':20s} {'||ΔW||':>10s} {'loss change':>12s} {'per unit of ||ΔW||':>19s}")
for name in effects[0]:
    size = median([layer[name][0] for layer in effects])
    change = median([layer[name][1] for layer in effects])
    per_unit = median([layer[name][1] / layer[name][0] for layer in effects])
    print(f"{name:20s} {size:10.4f} {change:12.2e} {per_unit:19.2e}")

# What to look for: on the small pretrained GPT-2 at r = 8, the bottom pair's step is 6.6x smaller
# at its own scale (||ΔW|| 0.030 against 0.200) and buys as much loss per unit of size (0.16 and
# 0.16): its scale sets how far a step goes, not where. At the top scale the bottom pair's step is as
# large as the top pair's (0.200), and buys about half as much (0.16 against 0.35): that is the
# directions. Adam's steps do not grow to make up for a small scale; a larger learning rate can,
# and each pair has its own (docs/defaults.md). Training answers the same question over 150 steps,
# each pair at its own rate (docs/comparison.md#the-papers-controls-directions-or-scale; the figure
# below is docs/controls.png):
#
#     test accuracy     top             bottom          bottom          random          random          Kaiming-
#     (3 seeds)                         top scale       own scale       top scale       own scale       uniform
#     sentiment r = 8   0.876 ± 0.045   0.826 ± 0.022   0.641 ± 0.069   0.888 ± 0.047   0.832 ± 0.055   0.848 ± 0.038
#     plural    r = 2   0.193 ± 0.070   0.013 ± 0.012   0.020 ± 0.000   0.173 ± 0.061   0.033 ± 0.023   0.120 ± 0.053
#     plural    r = 8   0.580 ± 0.020   0.580 ± 0.020   0.493 ± 0.031   0.447 ± 0.050   0.440 ± 0.072   0.493 ± 0.050
#
# On plural at r = 2 the random control falls behind the top pair because of its scale (at the top
# scale, random and top tie); at r = 8 because of its directions (its two scales tie). The bottom
# control is the other way round: its directions at r = 2, its scale at r = 8. On sentiment the
# random controls tie the top pair at every rank. So the paper's comparison, which changes both at
# once, cannot say which one matters; the matched-scale rows can.
if plt is not None:  # the sweep's figure, drawn by docs/comparison.md's command: no training here
    figure, axes = plt.subplots(figsize=(11, 4.2))
    axes.imshow(plt.imread(repository() / "docs" / "controls.png"))
    axes.axis("off")
    show(figure, "09_controls")

# %% 6. LoRA-SB in one call
#
# LoRA-SB freezes the gradient subspace above, B = U_r and A = V_rᵀ of the first-step estimate, and
# starts R = Σ_r, so that B R A is the best rank-r approximation of that step: the model starts where
# a first step shaped like full fine-tuning's, squeezed into rank r, would take it, at LoRA-SB's own
# rate (1,000 times full fine-tuning's first rate here), and rank 8 keeps about three quarters of
# that step. It needs a batch and a rate, which train.py gives from the loop's first step
# (recipe.first_step).
adapted = add_adapters(copy.deepcopy(base), "lorasb", rank=8, first_step=(inputs, targets, first_rate))
name = next(iter(updates))
layer = adapted.get_submodule(name)
U, S, Vh = torch.linalg.svd(gradient_steps[name], full_matrices=False)
gap = (layer.delta_weight() - U[:, :8] @ torch.diag(S[:8]) @ Vh[:8]).abs().max().item()
print(f"{name}: |B R A - (ΔW_1)_8| = {gap:.1e} at the start; R is {tuple(layer.R.shape)}, r² = 64 numbers")

# %% Exercises (lessons/exercises/ex09_which_subspace.py; check with: python lessons/check.py 09)
#
# 1. captured_share(delta, U, V): the share of ΔW that U M Vᵀ can hold (section 1), without copying it
# 2. first_step_update(model, inputs, targets, name, learning_rate): LoRA-SB's estimate of full
#    fine-tuning's first step for one layer, -η sign(∇_W L), as Adam's first step would be
# 3. Experiment: subspace_shares(delta, W, first_step, rank, seed). Before you run it: of the
#    top, random and gradient subspaces, which holds most of ΔW at r = 8, and which least?
# 4. Experiment: first_step_effects(W, gradient, rank, learning_rate), section 5's step for the top
#    pair and the bottom pair at both scales. Before you run it: which step is smallest, and which
#    buys least loss for its size? Then run train.py with `--subspace bottom` and `--subspace bottom
#    --scale own` at r = 8 on plural: does training agree with the first step?
