# Lesson 07: saving only the adapter, loading it back, merging it into the weights, exporting.
#
#     python lessons/07_merge_and_export.py                 gpt2 (downloads once); about 22 seconds on a 2-core CPU
#     python lessons/07_merge_and_export.py --model PATH    any GPT-2 checkpoint folder
#     python lessons/07_merge_and_export.py --quick         a tiny random model, for CI
#
# Code: loraxs_mini/adapters/saving.py, merge_adapters in loraxs_mini/adapters/inject.py.

# %% Settings
#
# In a notebook, set them here (offline: MODEL = a GPT-2 checkpoint folder, or QUICK = True). Run as
# a script, its flags set them: --quick, --model PATH.
MODEL = "gpt2"  # a preset (downloaded once) or a GPT-2 checkpoint folder
QUICK = False  # True: a tiny random model instead of MODEL, in seconds (what CI runs)

# %% Setup
import tempfile
import time
from pathlib import Path

import torch

from loraxs_mini import GPT, GPTConfig, LoraxsError
from loraxs_mini.adapters import adapted_layers, add_adapters, load_adapters, merge_adapters, save_adapters
from loraxs_mini.lesson import load_model, settings
from loraxs_mini.pretrained import load_pretrained, save_pretrained
from loraxs_mini.safetensors_file import load_file

MODEL, QUICK = settings(MODEL, QUICK)  # as a script, --model PATH and --quick set them
folder = Path(tempfile.mkdtemp())
if QUICK:  # a tiny random GPT-2, saved once, plays the pretrained base model
    save_pretrained(GPT(GPTConfig.from_name("tiny")), folder / "tiny")
    MODEL = folder / "tiny"

# %% 1. A trained adapter
#
# To have something worth saving, give every R a random value (as if training had moved it).
model = add_adapters(load_model(MODEL), "loraxs", rank=8).eval()
torch.manual_seed(0)
with torch.no_grad():
    for layer in adapted_layers(model).values():
        layer.R.normal_(std=0.01)
prompt = torch.randint(0, 50257, (1, 32))
with torch.no_grad():
    adapted_logits, _ = model(prompt)

# %% 2. Save only what was trained
#
# The file holds the 8 x 8 matrices R, and as metadata the AdapterConfig (method, rank, alpha,
# targets, seed, ...), the base model's shape, a fingerprint of its weights and a checksum of
# each frozen B and A. B and A themselves are not stored: they are the SVD of the base weights,
# recomputed on loading, and the checksums catch an SVD that comes out differently. That is why
# LoRA-XS adapters are kilobytes. frozen=True stores B and A too: bigger, exact on any machine.
path = folder / "loraxs-r8.safetensors"
size = save_adapters(model, path)
tensors, metadata = load_file(path)
print(f"{path.name}: {size:,} bytes, {len(tensors)} tensors of shape {tuple(next(iter(tensors.values())).shape)}")
for key in ("adapter_config", "base_model"):
    print(f"  {key}: {metadata[key]}")
size_with_frozen = save_adapters(model, folder / "loraxs-r8-frozen.safetensors", frozen=True)
print(f"with B and A stored too: {size_with_frozen:,} bytes")

# %% 3. Load it into a fresh copy of the base model
fresh = load_adapters(load_pretrained(MODEL), path).eval()
with torch.no_grad():
    print("same logits after loading:", torch.equal(fresh(prompt)[0], adapted_logits))

# It refuses a base model with other weights: R only means something with the B and A it was trained with.
try:
    load_adapters(GPT(fresh.config), path)
except LoraxsError as error:
    print("refused:", error)


# %% 4. Merge: W <- W + (alpha / r) B R A, and the adapters disappear
#
# An adapted layer runs two products per token (W x, and B R A x); merged, only W' x.
def seconds_per_forward(m, repeats=3 if QUICK else 10):
    batch = torch.randint(0, 50257, (4, 64))
    with torch.no_grad():
        m(batch)
        start = time.perf_counter()
        for _ in range(repeats):
            m(batch)
    return (time.perf_counter() - start) / repeats


with_adapters = seconds_per_forward(fresh)
merged = merge_adapters(fresh)
print("adapted layers left after merging:", len(adapted_layers(merged)))
with torch.no_grad():
    difference = (merged(prompt)[0] - adapted_logits).abs().max().item()
print(f"merged logits differ by {difference:.1e} (float32 rounding)")
print(f"forward pass: {1000 * with_adapters:.1f} ms with adapters, {1000 * seconds_per_forward(merged):.1f} ms merged")

# %% 5. Export: an ordinary GPT-2 checkpoint that any tool can open
save_pretrained(merged, folder / "merged")
print("wrote", sorted(p.name for p in (folder / "merged").iterdir()))
try:
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(folder / "merged").eval()
    with torch.no_grad():
        print("transformers agrees:", torch.allclose(hf(prompt).logits, adapted_logits, atol=1e-4))
except ImportError:
    print("(pip install transformers to open the export with Hugging Face)")

# %% Exercises (lessons/exercises/ex07_merge_and_export.py; check with: python lessons/check.py 07)
#
# 1. merged_linear(adapter): a new nn.Linear that computes what the adapted layer computes
# 2. Experiment: adapter_file_bytes(method, rank). Save LoRA and LoRA-XS adapters at ranks 4, 8 and 16:
#    by what factor does each doubling of the rank grow the file, and why?
