# Lesson 01: the GPT-2 model, and where its 124 million parameters live.
#
#     python lessons/01_gpt2_model.py            about 4 seconds on a 2-core CPU
#     python lessons/01_gpt2_model.py --quick    a tiny model, for CI
#
# Read it top to bottom, or run it cell by cell (# %% marks a cell in VS Code, PyCharm, Jupyter).
# The model itself is in loraxs_mini/model.py: keep it open beside this file.

# %% Settings
#
# In a notebook, set it here. Run as a script, the flag --quick sets it.
QUICK = False  # True: a tiny model instead of GPT-2's shape, in seconds (what CI runs)

# %% Setup
from collections import Counter

import torch
import torch.nn.functional as F

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.lesson import pyplot, quick_setting, show
from loraxs_mini.tokenizer import decode, encode

QUICK = quick_setting(QUICK)  # as a script, the flag --quick sets it
torch.manual_seed(0)

# %% 1. One forward pass, shape by shape
#
# The model is a few lines of loraxs_mini/model.py (GPT.forward). Here they are again, run one at a
# time on a batch of B = 2 sequences of T = 16 token ids, printing each shape:
#
#     idx (B, T) -> embeddings (B, T, C) -> L blocks (B, T, C) -> LayerNorm -> logits (B, T, V)
config = GPTConfig.from_name("tiny" if QUICK else "gpt2")
model = GPT(config).eval()
idx = torch.randint(0, config.vocab_size, (2, 16))
print("idx                 ", tuple(idx.shape))  # (B, T): token ids
with torch.no_grad():
    positions = torch.arange(idx.shape[1])  # 0, 1, ..., T-1
    x = model.transformer.wte(idx) + model.transformer.wpe(positions)  # what each token is + where it stands
    print("embeddings          ", tuple(x.shape))  # (B, T, C)
    block = model.transformer.h[0]
    qkv = block.attn.c_attn(block.ln_1(x))  # queries, keys and values of every token, side by side
    print("block 0: q, k, v    ", tuple(qkv.shape))  # (B, T, 3C)
    hidden = block.mlp.c_fc(block.ln_2(x))  # the MLP widens to 4C, then comes back to C
    print("block 0: MLP inside ", tuple(hidden.shape))  # (B, T, 4C)
    for block in model.transformer.h:  # each block adds its attention and MLP outputs to x
        x = block(x)
    print(f"{f'after {config.n_layer} blocks':20s}", tuple(x.shape))  # (B, T, C): the residual stream keeps its width
    logits = model.lm_head(model.transformer.ln_f(x))  # the head is wte itself: a score per vocabulary entry
    print("logits              ", tuple(logits.shape))  # (B, T, V)
    same = torch.allclose(logits, model(idx)[0], atol=1e-5)
print("the model's own forward gives the same logits:", same)

# %% 2. A configuration is five numbers
#
# GPT-2 is fully described by its vocabulary size V, its context T_max, the number of blocks L,
# the width C of the residual stream and the number of attention heads H (each head works in
# D = C / H dimensions). The four public checkpoints differ only in L, C and H.
for name in ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"):
    c = GPTConfig.from_name(name)
    print(f"{name:12s} L={c.n_layer:2d}  C={c.n_embd:4d}  H={c.n_head:2d}  D={c.n_embd // c.n_head}")

# %% 3. Counting parameters without allocating them
#
# On the "meta" device PyTorch tracks shapes but stores nothing, so even the 1.5B-parameter
# gpt2-xl costs no memory here. The tied output head (lm_head = wte) is counted once.
with torch.device("meta"):
    shapes_only = GPT(GPTConfig.from_name("gpt2"))


# Where do they live? Group the parameters by component.
def component(name):
    if "wte" in name:
        return "token embedding wte (V x C)"
    if "wpe" in name:
        return "position embedding wpe (T_max x C)"
    if ".attn." in name:
        return "attention: c_attn, c_proj"
    if ".mlp." in name:
        return "MLP: c_fc, c_proj"
    return "LayerNorms"


groups = Counter()
for name, parameter in shapes_only.named_parameters():
    groups[component(name)] += parameter.numel()
total = shapes_only.num_parameters()
for key, count in groups.items():
    print(f"{key:40s} {count:>12,}  {100 * count / total:5.1f}%")
print(f"{'total':40s} {total:>12,}")

# Per block: attention has 4 C² weights (Q, K, V and the output), the MLP 8 C² (C -> 4C -> C),
# so a block holds about 12 C², and L blocks about 12 L C² = 85M for gpt2. The other 39M are
# the embeddings: a third of GPT-2 small is its vocabulary.
C, L = 768, 12
print(f"12 L C^2 = {12 * L * C * C:,}")

# %% 4. Causal attention: the past never sees the future
#
# Attention weights are softmax(Q Kᵀ / sqrt(D) + M) with M = -inf above the diagonal, so
# token t mixes only tokens 0..t. Change the last token and watch which logits move.
changed = idx.clone()
changed[:, -1] = (changed[:, -1] + 1) % config.vocab_size
with torch.no_grad():
    moved = (model(changed)[0] - logits).abs().amax(dim=(0, 2))
print("largest change of the logits at each position:", [f"{m:.1e}" for m in moved.tolist()])
assert torch.all(moved[:-1] == 0) and moved[-1] > 0

# The weights themselves, for head 0 of block 0 on a real sentence: row t is where token t looks.
# Everything above the diagonal is exactly 0. (These weights are random, so each row spreads its
# attention over the past with no preference; a trained head picks out a few tokens.)
sentence = encode("The cat sat on the mat because it was warm")
with torch.no_grad():
    tokens = torch.tensor([sentence])  # (1, T)
    x = model.transformer.wte(tokens) + model.transformer.wpe(torch.arange(len(sentence)))  # (1, T, C)
    block = model.transformer.h[0]
    q, k, _ = block.attn.c_attn(block.ln_1(x)).split(config.n_embd, dim=-1)  # (1, T, C) each
    D = config.n_embd // config.n_head
    q, k = q[..., :D], k[..., :D]  # head 0: the first D dimensions, (1, T, D)
    scores = q @ k.transpose(-2, -1) / D**0.5  # (1, T, T)
    causal = torch.ones(len(sentence), len(sentence), dtype=torch.bool).tril()
    weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)[0]  # (T, T), each row sums to 1
rows_sum_to_1 = torch.allclose(weights.sum(1), torch.ones(len(sentence)))
print(f"largest weight above the diagonal: {weights.triu(1).max().item()}; every row sums to 1: {rows_sum_to_1}")
plt = pyplot()
if plt is not None:
    figure, axes = plt.subplots(figsize=(5.5, 4.8))
    image = axes.imshow(weights, cmap="Blues", vmin=0)
    labels = [decode([token]) for token in sentence]
    axes.set_xticks(range(len(labels)), labels, rotation=60, fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    axes.set_xlabel("attends to (key)")
    axes.set_ylabel("token (query)")
    axes.set_title("block 0, head 0: causal attention weights", fontsize=10)
    figure.colorbar(image, ax=axes, shrink=0.8)
    show(figure, "01_causal_attention")

# %% 5. The loss: predicting the next token
#
# The target at position t is the token at t + 1. Cross-entropy is -log p(correct token),
# averaged; a model that guesses uniformly pays log V = log 50257 = 10.8.
targets = torch.roll(idx, -1, dims=1)
with torch.no_grad():
    _, loss = model(idx, targets)
print(f"loss of random weights: {loss.item():.2f}   uniform guessing: {torch.log(torch.tensor(50257.0)):.2f}")
top = F.softmax(logits[0, -1], dim=-1).max().item()
print(f"the most likely next token gets p = {top:.1e}: random weights know nothing (1/V = {1 / 50257:.1e})")

# %% Exercises (lessons/exercises/ex01_gpt2_model.py, check with: python lessons/check.py 01)
#
# 1. causal_attention(q, k, v): write softmax(Q Kᵀ / sqrt(D) + M) V yourself, with the mask M.
# 2. gelu_tanh(x): GPT-2's activation, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³))).
# 3. Experiment: position_sensitivity(model, idx, position). Change one token and measure, position
#    by position, how far the logits move. Predict first which positions stay exactly still.
