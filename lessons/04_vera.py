# Lesson 04: VeRA, one frozen random pair for the whole model, and two trained vectors per layer.
#
#     python lessons/04_vera.py            about 4 seconds on a 2-core CPU
#     python lessons/04_vera.py --quick    for CI
#
# Code: loraxs_mini/adapters/vera.py.

# %% Settings
#
# In a notebook, set it here. Run as a script, the flag --quick sets it.
QUICK = False  # True: a tiny model instead of GPT-2's shape, in seconds (what CI runs)

# %% Setup

import torch

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.adapters import VeRALinear, VeRAProjections, adapted_layers, add_adapters, describe_parameters
from loraxs_mini.lesson import pyplot, quick_setting, show

QUICK = quick_setting(QUICK)  # as a script, the flag --quick sets it

# %% 1. The idea
#
# LoRA trains A and B. VeRA draws them at random once, freezes them, shares them across all
# layers, and trains only two scaling vectors per layer:
#
#     y = W x + diag(b) B diag(d) A x        d: r numbers,  b: out numbers
#
# Random projections of a wide enough rank already span useful directions; d chooses how much
# of each of the r directions to use, b rescales each output.
with torch.device("meta"):
    gpt2 = GPT(GPTConfig.from_name("gpt2"))
add_adapters(gpt2, "vera")  # VeRA's default rank, 256 (PEFT's default): see section 5 for why r can be large
print("GPT-2 with VeRA r=256:", describe_parameters(gpt2))

# %% 2. One pair, sliced for every shape
#
# GPT-2's layers are 768 -> 2304, 768 -> 768, 768 -> 3072 and 3072 -> 768. One pair sized for
# the largest, A: r x 3072 and B: 3072 x r, serves them all: a layer uses A[:, :in], B[:out, :].
model = GPT(GPTConfig.from_name("tiny" if QUICK else "mini"))
add_adapters(model, "vera", rank=4, seed=1234)
layers = adapted_layers(model)
first = next(iter(layers.values()))
print(f"shared A {tuple(first.projections.A.shape)}, B {tuple(first.projections.B.shape)}")
for name, layer in list(layers.items())[:4]:
    A, B = layer.shared_matrices()
    trained = f"d {tuple(layer.lambda_d.shape)}, b {tuple(layer.lambda_b.shape)}"
    print(f"  {name}: uses A {tuple(A.shape)}, B {tuple(B.shape)}; trains {trained}")
print("every layer holds the very same pair:", all(layer.projections is first.projections for layer in layers.values()))

# %% 3. Rebuilt from a seed
#
# A and B come from a seeded generator (A first, then B, uniform in ±sqrt(6 / fan_in)), so an
# adapter file needs only the seed (and a checksum, to catch a torch that draws differently;
# save_adapters(..., frozen=True) stores the pair itself). The same seed gives the same pair.
again = add_adapters(GPT(model.config), "vera", rank=4, seed=1234)
same = next(iter(adapted_layers(again).values())).projections
print("same seed, same A and B:", torch.equal(same.A, first.projections.A) and torch.equal(same.B, first.projections.B))

# %% 4. Zero at the start, and the shape of the update
#
# b starts at 0, so ΔW = 0; d starts at 0.1. After training, ΔW = diag(b) B diag(d) A has rank <= r.
x = torch.randn(2, first.in_features)
assert torch.equal(first(x), first.base(x))
with torch.no_grad():
    first.lambda_b.normal_()
print("rank of ΔW with random b:", torch.linalg.matrix_rank(first.delta_weight()).item(), "<= r = 4")

# %% 5. Why r can be large
#
# VeRA's count per layer is r + out: the rank costs only r numbers. Going from r = 8 to r = 256
# barely moves the total, where LoRA's grows 32-fold.
for rank in (8, 256):
    for method in ("lora", "vera"):
        with torch.device("meta"):
            m = add_adapters(GPT(GPTConfig.from_name("gpt2")), method, rank=rank)
        print(f"r={rank:3d} {method}: {describe_parameters(m)}")

# %% 6. What d and b learn
#
# A toy, as in lesson 03: a frozen random layer must imitate W + ΔW_true (rank 2). VeRA trains only
# d (r numbers) and b (out numbers) around its frozen random pair; watch where they go.
size, rank = (32, 16) if QUICK else (64, 64)
pair = VeRAProjections(rank, size, size, seed=0, like=torch.empty(0))
student = VeRALinear(torch.nn.Linear(size, size), pair)
target_delta = torch.randn(size, 2) @ torch.randn(2, size) / size**0.5
optimizer = torch.optim.Adam([student.lambda_d, student.lambda_b], lr=1e-2)
for _ in range(300 if QUICK else 1000):
    x = torch.randn(64, size)
    loss = torch.nn.functional.mse_loss(student(x), student.base(x) + x @ target_delta.T)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
error = (student.delta_weight() - target_delta).norm() / target_delta.norm()
print(f"relative error of ΔW after training: {error.item():.2f} (random directions: VeRA cannot fit it exactly)")
plt = pyplot()
if plt is not None:
    figure, (d_axes, b_axes) = plt.subplots(1, 2, figsize=(10, 3.5))
    d_axes.bar(range(rank), student.lambda_d.detach())
    d_axes.axhline(0.1, color="gray", linestyle="--", label="start, 0.1")
    d_axes.set_title(f"d: one scale per column of the shared pair (r = {rank})", fontsize=10)
    b_axes.bar(range(size), student.lambda_b.detach(), color="C1")
    b_axes.set_title(f"b: one scale per output (out = {size}); it started at 0", fontsize=10)
    d_axes.legend(fontsize=8)
    for axes, name in ((d_axes, "index in r"), (b_axes, "output")):
        axes.set_xlabel(name)
        axes.grid(True, alpha=0.3)
    show(figure, "04_vera_trained_d_and_b")

# %% Exercises (lessons/exercises/ex04_vera.py; check with: python lessons/check.py 04)
#
# 1. shared_pair(rank, max_in, max_out, seed): draw A and B exactly as VeRA (and PEFT) do
# 2. vera_delta_weight(A, B, d, b): diag(b) B diag(d) A, without building the diagonal matrices
# 3. Experiment: vera_fit_error(target, rank). How close can VeRA's best d get to a 24 x 24 target at
#    r = 8, and at r = 256? What does that say about the rank VeRA needs?
