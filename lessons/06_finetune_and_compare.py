# Lesson 06: fine-tuning, one step at a time, then the loop; then full fine-tuning and every adapter compared.
#
#     python lessons/06_finetune_and_compare.py                 gpt2 (downloads once), about 13 minutes on a 2-core CPU
#     python lessons/06_finetune_and_compare.py --model PATH    any GPT-2 checkpoint folder (see lessons/README.md)
#     python lessons/06_finetune_and_compare.py --quick         a tiny random model and a few steps, for CI
#
# Code: loraxs_mini/data.py (batches), loraxs_mini/evaluate.py (scoring), loraxs_mini/recipe.py (the learning
# rates, their schedule, the order of the examples). train.py runs the same loop from the command line.

# %% Settings
#
# In a notebook, set them here (offline: MODEL = a GPT-2 checkpoint folder, or QUICK = True). Run as
# a script, its flags set them: --quick, --model PATH.
MODEL = "gpt2"  # a preset (downloaded once) or a GPT-2 checkpoint folder
QUICK = False  # True: a tiny random model instead of MODEL, in seconds (what CI runs)

# %% Setup
import tempfile
from pathlib import Path

import torch

from loraxs_mini import GPT, GPTConfig
from loraxs_mini.adapters import METHODS, add_adapters, parameter_counts
from loraxs_mini.data import check_fits, load_task, make_batch
from loraxs_mini.evaluate import accuracy
from loraxs_mini.lesson import load_model, pyplot, repository, settings, show
from loraxs_mini.model import IGNORE_INDEX
from loraxs_mini.pretrained import load_pretrained, save_pretrained
from loraxs_mini.recipe import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_STEPS,
    GRAD_CLIP,
    batch_order,
    default_learning_rate,
    first_step,
    learning_rate_at,
)
from loraxs_mini.tokenizer import decode

MODEL, QUICK = settings(MODEL, QUICK)  # as a script, --model PATH and --quick set them
STEPS = 10 if QUICK else DEFAULT_STEPS
if QUICK:  # a tiny random GPT-2 (train.py's random:tiny: drawn from seed 0), saved once, plays the pretrained model
    torch.manual_seed(0)
    MODEL = Path(tempfile.mkdtemp()) / "tiny"
    save_pretrained(GPT(GPTConfig.from_name("tiny")), MODEL)

# %% 1. The task
#
# Short reviews, answered with " positive" or " negative". The validation and test reviews use
# adjectives and sentence templates that never occur in training: the model can only get them
# right with what it knew before fine-tuning.
task = load_task("sentiment", repository() / "data")
train = task.splits["train"]
print(task.describe())
for example in task.splits["test"][:3]:
    print(repr(example.prompt), "->", repr(example.completion))

# %% 2. What the model reads, and what it is graded on
#
# prompt + completion + <|endoftext|>, shifted by one: the loss covers only the completion and the
# closing token. The prompt positions get IGNORE_INDEX (-100): context, not a lesson.
inputs, targets = make_batch(train[:1])  # (1, T) each
for position, (token, target) in enumerate(zip(inputs[0].tolist(), targets[0].tolist())):
    graded = "ignored" if target == IGNORE_INDEX else f"must predict {decode([target])!r}"
    print(f"{position:2d} reads {decode([token])!r:14} {graded}")

# %% 3. Zero-shot: the pretrained model, untouched
#
# Classification never generates text: it compares log p(" positive" | prompt) with
# log p(" negative" | prompt) and picks the larger (loraxs_mini/evaluate.py).
model = load_model(MODEL)
check_fits(task, model.config.block_size)
print(f"zero-shot test accuracy: {accuracy(model, task, 'test'):.3f}")

# %% 4. One training step, by hand
#
# LoRA-XS at rank 8 in every linear layer: everything else is frozen, so the optimizer is given
# only the R matrices. AdamW's own default, weight_decay=0.01, pulls every trained weight toward
# zero at each step; LoRA's own GPT-2 E2E recipe keeps that 0.01 (microsoft/LoRA, examples/NLG),
# the LoRA-XS paper's scripts use 0. We use 0: R starts at ~1e-5 and decay would only pull it back.
torch.manual_seed(0)
model = add_adapters(load_pretrained(MODEL), "loraxs")
trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
optimizer = torch.optim.AdamW(trainable, lr=default_learning_rate("loraxs"), weight_decay=0.0)
inputs, targets = make_batch(train[:DEFAULT_BATCH_SIZE])  # (16, T) each

_, loss = model(inputs, targets)  # mean cross-entropy over the graded positions
loss.backward()  # gradients flow through the frozen weights, but are kept only for the trainable ones
with_gradient = sum(parameter.grad is not None for parameter in model.parameters())
print(f"loss {loss.item():.4f}; {with_gradient} tensors got a gradient, {len(trainable)} R matrices train")
norm = torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)  # if the gradient is longer than 1, shorten it to 1
optimizer.step()  # R <- R - lr · Adam's normalised step
optimizer.zero_grad(set_to_none=True)  # gradients add up across backward calls: clear them
with torch.no_grad():
    print(f"gradient norm {norm:.3f}; the same batch after one step: loss {model(inputs, targets)[1].item():.4f}")


# %% 5. The loop: that step, again and again
#
# Each step takes the next batch of a seeded shuffle, and the learning rate warms up over the first
# tenth of the steps, then falls linearly to zero (loraxs_mini/recipe.py). train.py writes the same
# loop, with two additions: several processes (torchrun) and bfloat16 on a GPU.
def fine_tune(model, steps, peak_learning_rate, seed=0):
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=peak_learning_rate, weight_decay=0.0)
    losses = []
    model.train()
    for step, indices in enumerate(batch_order(len(train), steps, DEFAULT_BATCH_SIZE, seed)):
        inputs, targets = make_batch([train[i] for i in indices])  # (16, T) each
        _, loss = model(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, steps, peak_learning_rate)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


torch.manual_seed(0)  # the same start as train.py --method loraxs --seed 0
model = add_adapters(load_pretrained(MODEL), "loraxs")
losses = fine_tune(model, STEPS, default_learning_rate("loraxs"))
print(f"loraxs: loss {losses[0]:.4f} -> {losses[-1]:.4f} in {STEPS} steps; "
      f"test accuracy {accuracy(model, task, 'test'):.3f}")  # fmt: skip

# %% 6. All methods on the same data, seed and budget
#
# Each method as its authors configure it (loraxs_mini/adapters/config.py): LoRA, LoRA-XS and
# LoRA-SB at rank 8, VeRA at rank 256, TinyLoRA at rank 2 with u = 64 (lesson 08). The learning rates differ
# on purpose: the fewer numbers a method trains, the further each has to move (docs/defaults.md
# shows how they were chosen on validation). One seed only: the seed alone moves these accuracies
# by several points, so do not rank the methods from this table. `python train.py --method all
# --seeds 3` gives mean ± std.
rows, curves = [], {}
for method in [name for name, method in METHODS.items() if method.trains]:  # "none": the zero-shot one above
    torch.manual_seed(0)
    rate = default_learning_rate(method)
    needs_first = METHODS[method].needs_first_step  # LoRA-SB starts from full fine-tuning's first step (lesson 09)
    first = first_step(train, STEPS, DEFAULT_BATCH_SIZE, 0, rate) if needs_first else None
    model = add_adapters(load_pretrained(MODEL), method, first_step=first)
    trainable, base = parameter_counts(model)
    print(f"{method}: {trainable:,} trainable parameters")
    curves[method] = fine_tune(model, STEPS, rate)
    rows.append((method, trainable, trainable / base, accuracy(model, task, "test", progress=True)))
print(f"\n{'method':8s} {'trainable':>12s} {'share':>9s} {'test acc.':>9s}")
for method, trainable, share, test_accuracy in rows:
    print(f"{method:8s} {trainable:>12,} {100 * share:>8.4f}% {test_accuracy:>9.3f}")

# How each got there: the loss of every step, smoothed over 10 steps. Which methods were still
# falling when the budget ran out? (train.py draws these for every comparison: curves-<task>.png.)
plt = pyplot()
if plt is not None:
    figure, axes = plt.subplots(figsize=(7, 4))
    for method, losses in curves.items():
        smooth = [sum(losses[max(0, i - 9) : i + 1]) / len(losses[max(0, i - 9) : i + 1]) for i in range(len(losses))]
        axes.plot(range(1, len(losses) + 1), smooth, label=method)
    axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss (mean of the last 10 steps; log scale)")
    axes.set_title(f"every method on one budget: {STEPS} steps of {DEFAULT_BATCH_SIZE} examples, seed 0", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    show(figure, "06_loss_curves")

# %% Exercises (lessons/exercises/ex06_finetune_and_compare.py; python lessons/check.py 06)
#
# 1. completion_targets(prompt_tokens, completion_tokens, end_token): the (inputs, targets) pair of section 2
# 2. pick_label(logits, label_tokens): the classification rule of section 3, for single-token labels
# 3. Experiment: numbers_with_gradient(model, inputs, targets). One backward pass: how many numbers get a
#    gradient with LoRA-XS, and with full fine-tuning? Compare with parameter_counts.
