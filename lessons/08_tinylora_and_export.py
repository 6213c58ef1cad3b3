# Lesson 08: from LoRA-XS to TinyLoRA, and from our adapter to a file any LoRA server reads.
#
#     python lessons/08_tinylora_and_export.py                 gpt2 (downloads once); about 22 seconds on a 2-core CPU
#     python lessons/08_tinylora_and_export.py --model PATH    any GPT-2 checkpoint folder
#     python lessons/08_tinylora_and_export.py --quick         a tiny random model, for CI
#
# Code: loraxs_mini/adapters/tinylora.py (short: read it first), loraxs_mini/export.py.

# %% Settings
#
# In a notebook, set them here (offline: MODEL = a GPT-2 checkpoint folder, or QUICK = True). Run as
# a script, its flags set them: --quick, --model PATH.
MODEL = "gpt2"  # a preset (downloaded once) or a GPT-2 checkpoint folder
QUICK = False  # True: a tiny random model instead of MODEL, in seconds (what CI runs)

# %% Setup
import copy
import tempfile
from pathlib import Path

import torch

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.adapters import adapted_layers, add_adapters, parameter_counts
from loraxs_mini.export import export_to_peft
from loraxs_mini.lesson import load_model, pyplot, settings, show
from loraxs_mini.pretrained import load_pretrained, save_pretrained

MODEL, QUICK = settings(MODEL, QUICK)  # as a script, --model PATH and --quick set them
folder = Path(tempfile.mkdtemp())
if QUICK:  # a tiny random GPT-2, saved once, plays the pretrained base model
    torch.manual_seed(0)
    save_pretrained(GPT(GPTConfig.from_name("tiny")), folder / "tiny")
    MODEL = str(folder / "tiny")
torch.manual_seed(0)

# %% 1. R, written as a mix of fixed random matrices
#
# LoRA-XS trains the r x r matrix R between its frozen B = U_r and A = Σ_r V_rᵀ: r² numbers per
# layer. TinyLoRA takes the same truncated SVD but, as PEFT does, splits Σ_r evenly between the two:
# B = U_r Σ_r^½ and A = Σ_r^½ V_rᵀ. With R = I both give U_r Σ_r V_rᵀ, and every R of one is an R
# of the other, so they reach the same updates; what changes is the step: entry R_ij moves ΔW by
# √(σ_i σ_j) u_i v_jᵀ in TinyLoRA and by σ_j u_i v_jᵀ in LoRA-XS. Then it writes R = Σ_i v_i P_i,
# with u fixed random matrices P_i drawn from a seed. Only v trains: u numbers per layer, and u no
# longer depends on r.
r, u = 2, 3
P = torch.normal(0.0, 1.0 / r**0.5, size=(u, r, r))  # (u, r, r): frozen, rebuilt from the seed
v = torch.tensor([0.5, -1.0, 2.0])  # (u,): the trained numbers
R = torch.einsum("i,ijk->jk", v, P)  # Σ_i v_i P_i: (u) x (u, r, r) -> (r, r)
print(f"v = {v.tolist()} gives R =\n{R}")

# %% 2. Which R can it reach?
#
# The R's that TinyLoRA can make are the span of P_1 ... P_u: at most u of the r² directions of
# r x r matrices. Flatten each P_i to a vector of r² numbers and count the independent ones:
for u in (1, 2, 4, 8):
    P = torch.normal(0.0, 1.0 / r**0.5, size=(u, r, r))
    print(
        f"r = {r}, u = {u}: R can move in {torch.linalg.matrix_rank(P.reshape(u, r * r)).item()} of {r * r} directions"
    )
# u = r² reaches every R, exactly as LoRA-XS at rank r does; u < r² a random slice of them;
# u > r² adds nothing but redundant numbers. PEFT's default is r = 2 and u = 64: redundant.

# %% 3. On a model: the count falls from r² to u per layer, and further with weight tying
#
# Weight tying shares one v across a group of layers: with weight_tying = 1 the whole model trains
# u numbers. That is how the paper ("Learning to Reason in 13 Parameters") gets to 13.
base = load_model(MODEL)
settings = [
    ("loraxs", dict(rank=2)),
    ("tinylora", dict(rank=2, u=4)),  # u = r²: the same updates as LoRA-XS, the same count
    ("tinylora", dict(rank=2, u=4, weight_tying=1.0)),  # one v for every layer
    ("tinylora", dict(rank=2, u=64)),  # PEFT's default r and u
]
for method, options in settings:
    model = add_adapters(copy.deepcopy(base), method, **options)
    print(f"{method:8s} {str(options):44s} {parameter_counts(model)[0]:>6,} trained numbers")

# The whole model's count as u grows, for three degrees of tying (rank 2; LoRA-XS's r² per layer for scale).
# Counting needs no SVD: on the "meta" device the layers have shapes only.
us, tyings = (1, 2, 4, 16, 64), (0.0, 0.5, 1.0)
with torch.device("meta"):
    shape_only = GPT(base.config)
counts = {
    tying: [parameter_counts(add_adapters(copy.deepcopy(shape_only), "tinylora", rank=2, u=u, weight_tying=tying))[0]
            for u in us]
    for tying in tyings
}  # fmt: skip
loraxs_count = parameter_counts(add_adapters(copy.deepcopy(shape_only), "loraxs", rank=2))[0]
for tying, row in counts.items():
    print(f"weight_tying {tying}: " + ", ".join(f"u={u}: {count:,}" for u, count in zip(us, row)))
plt = pyplot()
if plt is not None:
    figure, axes = plt.subplots(figsize=(6.5, 4))
    for tying, row in counts.items():
        axes.plot(us, row, marker="o", label=f"TinyLoRA, weight_tying = {tying}")
    axes.axhline(loraxs_count, color="gray", linestyle="--", label=f"LoRA-XS r = 2 ({loraxs_count:,})")
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("u (trained numbers per group of layers)")
    axes.set_ylabel("trained numbers in the whole model")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    show(figure, "08_tinylora_counts")

# %% 4. TinyLoRA starts at the pretrained model, and still learns
#
# v starts at zero, so R = 0 and ΔW = B R A = 0. Unlike LoRA's B = 0, that does not stall the
# gradient: dL/dv_i = <P_i, dL/dR>, and the fixed P_i are not zero.
model = add_adapters(load_pretrained(MODEL), "tinylora", rank=2, u=4)
idx = torch.randint(0, 50257, (2, 16))
with torch.no_grad():
    print("starts exactly at the base model:", torch.equal(model(idx)[0], base(idx)[0]))
_, loss = model(idx, torch.roll(idx, -1, dims=1))
loss.backward()
layer = next(iter(adapted_layers(model).values()))
print("the gradient of the first layer's v:", [f"{g:.1e}" for g in layer.vector.v.grad.tolist()])

# %% 5. Every adapter here is a LoRA in disguise
#
# Each method writes ΔW as (out x r)(r x in), so it can be handed over as a LoRA pair A', B' with
# B' A' = ΔW: LoRA-XS as A' = A, B' = (alpha / r) B R; TinyLoRA as A' = A, B' = B R; VeRA as
# A' = Λ_d A, B' = Λ_b B. Each adapter class says how in its lora_factors(), right under its
# delta_weight(). Exact, not an approximation:
with torch.no_grad():
    for method in ("lora", "vera", "loraxs", "tinylora"):
        adapted = add_adapters(copy.deepcopy(base), method, rank=4, targets=["transformer.h.0.mlp.c_fc"])
        layer = adapted.transformer.h[0].mlp.c_fc
        for parameter in layer.parameters():
            if parameter.requires_grad:
                parameter.normal_(std=0.1)  # as if trained
        A, B = layer.lora_factors()
        gap = (B @ A - layer.delta_weight()).abs().max().item()
        print(f"{method:8s} A' {tuple(A.shape)}, B' {tuple(B.shape)}: |B'A' - ΔW| = {gap:.1e}")

# %% 6. A file that PEFT, and the servers that load PEFT LoRA files, can read
#
# export_to_peft writes adapter_config.json and adapter_model.safetensors. LoRA-XS goes out as a
# PEFT LoRA of rank r (PEFT has no LoRA-XS); TinyLoRA and VeRA as themselves. From the command line:
#     python -m loraxs_mini.export out/sentiment-loraxs-r8.safetensors --base gpt2 --to DIR
adapted = add_adapters(load_pretrained(MODEL), "loraxs", rank=8)
with torch.no_grad():
    for layer in adapted_layers(adapted).values():
        layer.R.normal_(std=0.01)
sizes = export_to_peft(adapted, folder / "peft-loraxs", MODEL)
print("wrote", {name: f"{size:,} bytes" for name, size in sizes.items()})
try:
    import peft
    import transformers

    hf = transformers.GPT2LMHeadModel.from_pretrained(MODEL).float()  # float32 like ours (the Hub's files are fp16)
    theirs = peft.PeftModel.from_pretrained(hf, folder / "peft-loraxs").float().eval()
    with torch.no_grad():
        difference = (theirs(idx).logits - adapted.eval()(idx)[0]).abs().max().item()
    print(f"PEFT runs it as {theirs.peft_config['default'].peft_type.value}; logits differ by {difference:.1e}")
except ImportError:
    print("(pip install transformers peft to load the export with Hugging Face PEFT)")

# %% Exercises (lessons/exercises/ex08_tinylora_and_export.py; check with: python lessons/check.py 08)
#
# 1. tinylora_R(v, P): R = Σ_i v_i P_i, for v (u,) and P (u, r, r)
# 2. loraxs_as_lora(A, B, R, scaling): the LoRA pair (A', B') of a LoRA-XS layer
# 3. Experiment: tinylora_fit_error(target, u, seed). How close can TinyLoRA's best v bring R to a
#    target r x r matrix, for u from 1 to r²? Predict where the error first reaches zero.
