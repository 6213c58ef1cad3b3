# Lesson 02: tokens, the safetensors file, loading pretrained weights, and a greedy generation.
#
#     python lessons/02_tokens_and_pretrained_weights.py                 downloads gpt2 once (500 MB)
#     python lessons/02_tokens_and_pretrained_weights.py --model PATH    a local checkpoint folder instead
#     python lessons/02_tokens_and_pretrained_weights.py --quick         a tiny random model, for CI
#
# Code: loraxs_mini/tokenizer.py, loraxs_mini/safetensors_file.py, loraxs_mini/pretrained.py.

# %% Settings
#
# In a notebook, set them here (offline: MODEL = a GPT-2 checkpoint folder, or QUICK = True). Run as
# a script, its flags set them: --quick, --model PATH.
MODEL = "gpt2"  # a preset (downloaded once) or a GPT-2 checkpoint folder
QUICK = False  # True: a tiny random model instead of MODEL, in seconds (what CI runs)

# %% Setup
import json
import struct
import tempfile
from pathlib import Path

import torch

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.lesson import load_model, settings
from loraxs_mini.pretrained import CONV1D_WEIGHTS, save_pretrained
from loraxs_mini.safetensors_file import load_file
from loraxs_mini.tokenizer import decode, encode

MODEL, QUICK = settings(MODEL, QUICK)  # as a script, --model PATH and --quick set them

# %% 1. Text becomes tokens
#
# GPT-2 never sees letters: byte-pair encoding cuts text into pieces from a vocabulary of
# 50,257. Common words are one token, with their leading space; rare words are split.
for text in ["The movie was wonderful.", " positive", " negative", " unbelievably", "LoRA-XS"]:
    tokens = encode(text)
    print(f"{text!r:28} -> {tokens}  {[decode([t]) for t in tokens]}")

# %% 2. Inside a safetensors file
#
# [8 bytes: header length N][N bytes of JSON][raw tensor bytes]. The JSON says, for every
# tensor, its dtype, shape and where its bytes are. Nothing is executed on loading.
folder = Path(tempfile.mkdtemp())
if QUICK:  # a tiny random GPT-2, saved in Hugging Face's layout, plays the pretrained model
    save_pretrained(GPT(GPTConfig.from_name("tiny")), folder / "tiny")
    MODEL = folder / "tiny"
model = load_model(MODEL).eval()  # offline? one line that says which setting to change
if Path(str(MODEL)).is_dir():
    path = Path(MODEL) / "model.safetensors"
else:
    from loraxs_mini.download import download_checkpoint

    path = download_checkpoint(str(MODEL))  # already in the cache: load_model downloaded it

with open(path, "rb") as file:
    (header_length,) = struct.unpack("<Q", file.read(8))  # little-endian unsigned 64-bit
    header = json.loads(file.read(header_length))
print(f"{path}: header of {header_length:,} bytes, {len(header) - ('__metadata__' in header)} tensors")
for name in list(header)[:4]:
    print(f"  {name}: {header[name]}")

# %% 3. Why four matrices per block are transposed
#
# OpenAI wrote GPT-2 with "Conv1D" layers: y = x @ W + b with W stored (in, out).
# nn.Linear computes y = x @ Wᵀ + b with W stored (out, in). Same numbers, other layout,
# so the loader transposes exactly these four per block:
print("transposed on loading:", ", ".join(CONV1D_WEIGHTS))
tensors, _ = load_file(path)
stored = next(t for name, t in tensors.items() if name.endswith("h.0.attn.c_attn.weight"))
ours = model.transformer.h[0].attn.c_attn.weight
print(f"stored {tuple(stored.shape)} (in x out)  ->  ours {tuple(ours.shape)} (out x in)")
x = torch.randn(3, stored.shape[0])
assert torch.allclose(x @ stored.float(), x @ ours.T, atol=1e-5)  # one computation, two layouts

# %% 4. The first words of a pretrained model: greedy decoding
#
# At each step: run the model, take the most likely next token (argmax), append it, repeat.
prompt = "The meaning of life is"
idx = torch.tensor([encode(prompt)])
out = model.generate(idx, max_new_tokens=20)
print(repr(decode(out[0].tolist())))

# Sampling instead: divide the logits by a temperature, keep the top k, draw.
sampled = model.generate(idx, 20, temperature=0.8, top_k=40, generator=torch.Generator().manual_seed(0))
print(repr(decode(sampled[0].tolist())))

# %% Exercises (lessons/exercises/ex02_tokens_and_pretrained_weights.py; python lessons/check.py 02)
#
# 1. conv1d_to_linear(weight): turn a Conv1D weight (in x out) into an nn.Linear weight.
# 2. greedy_decode(model, idx, n): the greedy loop of section 4, written yourself.
# 3. Experiment: next_token_entropy(logits, temperature). Measure how unsure sampling is at
#    τ = 0.5, 1 and 2 on the model's logits for a prompt. Where does it go as τ -> 0, and as τ grows?
