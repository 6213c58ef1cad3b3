"""
The training recipe: what the loop in train.py (and in lesson 06) follows.

The loop itself is written out where you read it, in train.py; this file holds
the three choices it makes, so that train.py, the lessons and the tests make
them the same way:

- the learning rate of each method at each rank (chosen on validation data,
  given by each method's class: its learning_rates),
- its schedule: a linear warm-up over the first tenth of the steps, then a
  linear decay to zero,

      lr(step) = peak · (step + 1) / warmup              for step < warmup = max(1, steps // 10)
      lr(step) = peak · (steps - step) / (steps - warmup) after,

- the order of the examples: a seeded shuffle, epoch after epoch, so that the
  same seed gives the same run.

`first_step` gives the loop's first batch and rate: LoRA-SB is built from the
step full fine-tuning would take on them (adapters/lorasb.py).
"""

import math
import random

from .adapters import METHODS
from .data import make_batch
from .errors import LoraxsError

DEFAULT_STEPS = 150
DEFAULT_BATCH_SIZE = 16  # examples per step, over all processes together
GRAD_CLIP = 1.0  # the gradient's norm is cut to this before each step: one odd batch cannot throw the model off


# Each method's rates were chosen on the validation splits of both toy tasks, never on test (docs/defaults.md): at
# each rank of the comparison's sweep (docs/comparison.md), the best of three or four rates, 2 seeds (3 to 5 at the
# defaults). Fewer trainable numbers need larger steps, since each number must move further; but neither LoRA's
# alpha / r nor LoRA-XS's alpha = r keeps the best rate fixed across ranks, so each rank has its own.
def default_learning_rate(method, rank=None, config=None):
    """
    The rate chosen for `method` at `rank` (default: the method's own); between measured ranks, the nearest one's.
    `config`, an AdapterConfig: the rates measured for its settings (LoRA-XS's subspace), where they differ.
    """
    method = METHODS[method]
    if not method.trains:
        return 0.0
    rates, rank = method.learning_rates_for(config), method.default_rank if rank is None else rank
    if not rates:
        raise LoraxsError(f"{method.display_name} has no learning rate chosen on validation yet; give one with --lr")
    nearest = min(rates, key=lambda measured: 0 if measured is None else abs(math.log(measured / rank)))
    return rates[nearest]


def learning_rate_at(step, steps, peak):
    """The rate at `step` (0-based) of `steps`: up linearly to `peak` over the first tenth, then down to zero."""
    warmup = max(1, steps // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (steps - step) / max(1, steps - warmup)


def batch_order(dataset_size, steps, batch_size, seed):
    """The indices of each step's examples (`steps` lists of `batch_size`): reshuffled every epoch, from `seed`."""
    shuffler, order = random.Random(seed), []
    while len(order) < steps * batch_size:
        epoch = list(range(dataset_size))
        shuffler.shuffle(epoch)
        order += epoch
    return [order[step * batch_size : (step + 1) * batch_size] for step in range(steps)]


def first_step(examples, steps, batch_size, seed, peak, device="cpu"):
    """(inputs, targets, learning rate) of the loop's first step: add_adapters(..., first_step=...) takes it."""
    first = batch_order(len(examples), steps, batch_size, seed)[0]
    return *make_batch([examples[i] for i in first], device), learning_rate_at(0, steps, peak)
