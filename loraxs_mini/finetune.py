"""
The fine-tuning loop, shared by train.py and the lessons.

One step:   loss = mean cross-entropy over the completion tokens of a batch
            loss.backward()       gradients reach only the trainable tensors
            clip, AdamW step      the optimizer only ever sees trainable tensors

The learning rate warms up linearly over the first tenth of the steps, then
decays linearly to zero. Batches come from a seeded shuffle, epoch after
epoch, so the same seed gives the same run.

Data parallel (torchrun --nproc_per_node N): every process builds the same
global batch and takes its own rows of it (process p takes p, p + N, ...). DDP averages
the N gradients; scaling each process's mean loss by N x (its tokens / all
tokens) makes that average exactly the gradient of the single-process loss.
"""

import math
import random
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm import tqdm

from .adapters import DEFAULT_RANK
from .data import make_batch
from .device import autocast, world
from .errors import LoraxsError
from .evaluate import count_correct
from .model import IGNORE_INDEX

# Chosen on the validation splits of both toy tasks, never on test (README.md, "How the defaults were chosen"): for
# each method at each rank of the README's sweep, the best of three or four rates, 2 seeds (3 to 5 at the defaults).
# Fewer trainable numbers need larger steps, since each number must move further; but neither LoRA's alpha / r nor
# LoRA-XS's alpha = r keeps the best rate fixed across ranks, so each rank has its own.
LEARNING_RATES = {
    "full": {None: 3e-5},
    "lora": {1: 3e-4, 2: 3e-4, 4: 3e-4, 8: 1e-3, 16: 1e-3},
    "vera": {64: 1e-2, 256: 3e-2, 1024: 1e-2},
    "loraxs": {2: 1e-1, 4: 3e-2, 8: 1e-2, 16: 3e-3, 32: 3e-3},
}
DEFAULT_STEPS = 150
DEFAULT_BATCH_SIZE = 16


@dataclass
class TrainingConfig:
    steps: int = DEFAULT_STEPS
    batch_size: int = DEFAULT_BATCH_SIZE  # examples per step, over all processes together
    learning_rate: float = 1e-3
    grad_clip: float = 1.0
    seed: int = 0


def default_learning_rate(method, rank=None):
    """The rate chosen for `method` at `rank` (default: the method's own); between measured ranks, the nearest one's."""
    rates = LEARNING_RATES.get(method, {None: 0.0})  # "none" trains nothing
    rank = DEFAULT_RANK.get(method) if rank is None else rank
    nearest = min(rates, key=lambda measured: 0 if measured is None else abs(math.log(measured / rank)))
    return rates[nearest]


def learning_rate_at(step, config):
    warmup = max(1, config.steps // 10)
    if step < warmup:
        return config.learning_rate * (step + 1) / warmup
    return config.learning_rate * (config.steps - step) / max(1, config.steps - warmup)


def batch_order(examples, config):
    """Indices of each step's examples: reshuffled every epoch by a seeded generator."""
    shuffler, order = random.Random(config.seed), []
    while len(order) < config.steps * config.batch_size:
        epoch = list(range(len(examples)))
        shuffler.shuffle(epoch)
        order += epoch
    return [order[step * config.batch_size : (step + 1) * config.batch_size] for step in range(config.steps)]


def finetune(model, task, config, device="cpu", progress=True):
    """
    Train `model` (possibly DDP-wrapped) on task's train split. Returns a dict:
    losses (one per step), tokens (read), seconds, tokens_per_second.
    """
    process, world_size = world()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise LoraxsError("nothing to train: this model has no trainable parameters (method 'none')")
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)  # AdamW's default is 0.01
    train = task.splits["train"]
    losses, tokens = [], 0
    model.train()
    start = time.perf_counter()
    bar = tqdm(batch_order(train, config), desc="training", disable=not progress or process != 0, dynamic_ncols=True)
    for step, indices in enumerate(bar):
        examples = [train[i] for i in indices]
        all_targets = sum(len(example.completion_tokens) + 1 for example in examples)  # the whole global batch
        mine = examples[process::world_size]
        inputs, targets = make_batch(mine, device)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, config)
        with autocast(device):
            _, loss = model(inputs, targets)
        # this process's share of the global mean (see the top of the file)
        scaled = loss * world_size * (targets != IGNORE_INDEX).sum() / all_targets
        scaled.backward()
        if config.grad_clip:
            torch.nn.utils.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        step_loss = scaled.detach() / world_size
        if world_size > 1:
            dist.all_reduce(step_loss)  # the global batch's mean loss, for the log
        step_loss = step_loss.item()
        if not math.isfinite(step_loss):
            raise LoraxsError(
                f"the loss became {step_loss} at step {step + 1}; training stopped and nothing was saved. "
                "Lower the learning rate (--lr) and try again"
            )
        losses.append(step_loss)
        tokens += sum(len(example) for example in examples)
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    seconds = time.perf_counter() - start
    return {"losses": losses, "tokens": tokens, "seconds": seconds, "tokens_per_second": tokens / seconds}


def accuracy(model, task, split, device="cpu", batch_size=32, progress=False):
    """Share of the split the model gets right; under torchrun each process scores its slice."""
    process, world_size = world()
    model = getattr(model, "module", model)  # the model inside a DDP wrapper
    examples = task.splits[split]
    with autocast(device):
        mine = examples[process::world_size]
        correct = torch.tensor(float(count_correct(model, task, mine, batch_size, progress and process == 0)))
    if world_size > 1:
        correct = correct.to(device)
        dist.all_reduce(correct)
    return correct.item() / len(examples)
