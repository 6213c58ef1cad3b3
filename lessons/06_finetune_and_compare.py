# Lesson 06: fine-tuning on the toy task, and comparing full fine-tuning, LoRA, VeRA and LoRA-XS.
#
#     python lessons/06_finetune_and_compare.py                 gpt2 (downloads once), about 13 minutes on a 2-core CPU
#     python lessons/06_finetune_and_compare.py --model PATH    any GPT-2 checkpoint folder (see lessons/README.md)
#     python lessons/06_finetune_and_compare.py --quick         a tiny random model and a few steps, for CI
#
# Code: loraxs_mini/data.py (batches), loraxs_mini/evaluate.py (scoring), loraxs_mini/finetune.py (the loop).
# train.py does all of this from the command line: python train.py --method all

# %% Setup
import sys

import torch

from loraxs_mini.adapters import add_adapters, parameter_counts
from loraxs_mini.data import check_fits, load_task, make_batch
from loraxs_mini.errors import friendly_errors
from loraxs_mini.finetune import DEFAULT_STEPS, TrainingConfig, accuracy, default_learning_rate, finetune
from loraxs_mini.model import IGNORE_INDEX
from loraxs_mini.pretrained import load_base_model
from loraxs_mini.tokenizer import decode

QUICK = "--quick" in sys.argv
MODEL = sys.argv[sys.argv.index("--model") + 1] if "--model" in sys.argv else "gpt2"
if QUICK:
    MODEL = "random:tiny"
STEPS = 10 if QUICK else DEFAULT_STEPS

# %% 1. The task
#
# Short reviews, answered with " positive" or " negative". The validation and test reviews use
# adjectives and sentence templates that never occur in training: the model can only get them
# right with what it knew before fine-tuning.
task = load_task("sentiment")
print(task.describe())
for example in task.splits["test"][:3]:
    print(repr(example.prompt), "->", repr(example.completion))

# %% 2. What the model reads, and what it is graded on
#
# prompt + completion + <|endoftext|>, shifted by one: the loss covers only the completion and the
# closing token. The prompt positions get IGNORE_INDEX (-100): context, not a lesson.
inputs, targets = make_batch(task.splits["train"][:1])
for position, (token, target) in enumerate(zip(inputs[0].tolist(), targets[0].tolist())):
    graded = "ignored" if target == IGNORE_INDEX else f"must predict {decode([target])!r}"
    print(f"{position:2d} reads {decode([token])!r:14} {graded}")

# %% 3. Zero-shot: the pretrained model, untouched
#
# Classification never generates text: it compares log p(" positive" | prompt) with
# log p(" negative" | prompt) and picks the larger.
with friendly_errors():
    model = load_base_model(MODEL, verbose=False)
check_fits(task, model.config.block_size)
add_adapters(model, "none")
print(f"zero-shot test accuracy: {accuracy(model, task, 'test'):.3f}")

# %% 4. One method, step by step: LoRA-XS
#
# A fresh model, adapters in, everything else frozen; then the loop of loraxs_mini/finetune.py:
# loss on the completion, backward (only R gets gradients), clip, AdamW.
torch.manual_seed(0)
model = add_adapters(load_base_model(MODEL, verbose=False), "loraxs")  # rank 8, every linear layer
trainable, base = parameter_counts(model)
print(f"loraxs: {trainable:,} trainable parameters of {base:,}")
config = TrainingConfig(steps=STEPS, learning_rate=default_learning_rate("loraxs"))
result = finetune(model, task, config)
print(
    f"loss {result['losses'][0]:.2f} -> {result['losses'][-1]:.2f}; test accuracy {accuracy(model, task, 'test'):.3f}"
)

# %% 5. All methods on the same data, seed and budget
#
# Each method as its authors configure it (loraxs_mini/adapters/config.py): LoRA and LoRA-XS at
# rank 8, VeRA at rank 256. The learning rates differ on purpose: the fewer numbers a method
# trains, the further each has to move (README.md shows how they were chosen on validation).
# One seed only: the seed alone moves these accuracies by several points, so do not rank the
# methods from this table. `python train.py --method all --seeds 3` gives mean ± std.
rows = []
for method in ("full", "lora", "vera", "loraxs"):
    torch.manual_seed(0)
    model = add_adapters(load_base_model(MODEL, verbose=False), method)
    trainable, base = parameter_counts(model)
    print(f"{method}: {trainable:,} trainable parameters")
    finetune(model, task, TrainingConfig(steps=STEPS, learning_rate=default_learning_rate(method)))
    rows.append((method, trainable, trainable / base, accuracy(model, task, "test", progress=True)))
print(f"\n{'method':8s} {'trainable':>12s} {'share':>9s} {'test acc.':>9s}")
for method, trainable, share, test_accuracy in rows:
    print(f"{method:8s} {trainable:>12,} {100 * share:>8.4f}% {test_accuracy:>9.3f}")

# %% Exercises (lessons/exercises/ex06_finetune_and_compare.py; python -m loraxs_mini.check 06)
#
# 1. completion_targets(prompt_tokens, completion_tokens, end_token): the (inputs, targets) pair of cell 2
# 2. learning_rate_at(step, steps, peak): linear warm-up over the first tenth, then linear decay to 0
# 3. pick_label(logits, label_tokens): the classification rule of cell 3, for single-token labels
