"""
Fine-tune GPT-2 on a toy task with one method, or compare several: at several ranks, over several seeds.

    python train.py --method loraxs --rank 8                 # LoRA-XS on the sentiment task
    python train.py --method all --task plural               # none, full, LoRA, VeRA, LoRA-XS, TinyLoRA: one table
    python train.py --method all --seeds 3                   # every accuracy as mean ± std over 3 seeds
    python train.py --method lora,loraxs --seeds 3 --rank lora=1,4,16 loraxs=2,8,32     # a rank sweep
    torchrun --nproc_per_node 2 train.py --method loraxs     # data parallel

Read it top to bottom, starting at `main`: the settings (the flags and the runs they ask for, loraxs_mini/cli.py);
the task and the base model; then, for each run, add the adapters, train (`fine_tune`, the loop: batch, forward,
loss, backward, clip, step), score and save; then the comparison. Each run writes
<out>/<task>-<method>[-<subspace>]-r<rank>[-seed<s>].json (configuration, counts, accuracies, timings, memory) and the
adapter file next to it; several runs also write comparison-<task>.md, .json, .csv and .png (loraxs_mini/compare.py).

What does not depend on the run is done once: the base model is loaded once and copied for each run; zero-shot
accuracy is scored once (LoRA and VeRA start exactly at the base model, LoRA-XS within a tolerance checked on every
run); each matrix's SVD is computed once, for the largest rank, and sliced for the smaller ones.
"""

import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from loraxs_mini.adapters import SVDCache, add_adapters, check_adapters, parameter_counts, save_adapters
from loraxs_mini.cli import check_outputs, parse_args, plan_runs, run_name, training_steps
from loraxs_mini.compare import report
from loraxs_mini.data import check_fits, load_task, make_batch
from loraxs_mini.device import autocast, pick_device, start_processes, stop_processes, world
from loraxs_mini.errors import LoraxsError, friendly_errors
from loraxs_mini.evaluate import accuracy
from loraxs_mini.files import atomic_write
from loraxs_mini.measure import human_bytes, human_seconds, peak_memory_bytes
from loraxs_mini.model import IGNORE_INDEX
from loraxs_mini.pretrained import base_model
from loraxs_mini.recipe import GRAD_CLIP, batch_order, default_learning_rate, first_step, learning_rate_at

TASKS = Path(__file__).parent / "data"  # the shipped toy tasks
# The zero-shot accuracy of the base model stands for every run whose adapters, as added, move no log-probability
# by more than this. LoRA and VeRA move none (B = 0, b = 0); LoRA-XS's R ~ N(0, 1e-5²) moved the small pretrained
# model's by at most 1.4e-3 at r = 8 and 3.4e-3 at r = 32 in the README's sweep. A run beyond it scores its own.
ZERO_SHOT_TOLERANCE = 2e-2


def fine_tune(model, task, steps, batch_size, learning_rate, seed, device, eval_every=0):
    """
    The training loop. Returns the loss of every step, the number of tokens read, and the validation accuracy
    every `eval_every` steps (0: never) with the seconds spent scoring it. Scoring changes neither the weights
    nor the order of the batches: a run gives the same result with and without it.

    Under torchrun `model` is wrapped in DDP: every process draws the same global batch and takes its own rows
    (process p takes p, p + N, ...), and DDP averages the N gradients during backward. Weighting each process's
    mean loss by N x (its graded tokens / the batch's) makes that average exactly the gradient of the batch's
    mean loss, as if one process had read it all. Alone, the weight is 1.
    """
    process, world_size = world()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)  # AdamW's default would be 0.01
    train, losses, tokens, evaluations, scoring = task.splits["train"], [], 0, [], 0.0
    model.train()
    bar = tqdm(batch_order(len(train), steps, batch_size, seed), "training", disable=process != 0, dynamic_ncols=True)
    for step, indices in enumerate(bar):
        examples = [train[i] for i in indices]
        inputs, targets = make_batch(examples[process::world_size], device)  # (b, T) each: this process's rows
        with autocast(device):  # bfloat16 products on CUDA, float32 elsewhere
            _, loss = model(inputs, targets)  # mean cross-entropy over this process's completion tokens
        graded = sum(len(example.completion_tokens) + 1 for example in examples)  # + 1: the closing <|endoftext|>
        loss = loss * world_size * (targets != IGNORE_INDEX).sum() / graded
        loss.backward()  # gradients reach only the trainable tensors
        torch.nn.utils.clip_grad_norm_(trainable, GRAD_CLIP)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, steps, learning_rate)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        losses.append(batch_loss(loss, world_size, step))
        tokens += sum(len(example) for example in examples)
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:  # the last step is scored after the loop
            started = time.perf_counter()
            evaluations.append({"step": step + 1, "validation": accuracy(model, task, "validation", device)})
            scoring += time.perf_counter() - started  # accuracy() puts the model back in training mode
    return losses, tokens, evaluations, scoring


def batch_loss(loss, world_size, step):
    """The whole batch's mean loss, for the log (summed over processes); a loss that is not finite stops the run."""
    loss = loss.detach() / world_size
    if world_size > 1:
        dist.all_reduce(loss)
    if not math.isfinite(loss.item()):
        raise LoraxsError(f"the loss became {loss.item()} at step {step + 1}; training stopped and nothing was "
                          "saved. Lower the learning rate (--lr) and try again")  # fmt: skip
    return loss.item()


@torch.no_grad()
def initial_change(model, base, probe):
    """The largest change of any log-probability on the probe batch: how far the adapters moved the model at start."""
    model.eval()
    before, after = (F.log_softmax(m(probe)[0].float(), dim=-1) for m in (base, model))
    return (after - before).abs().max().item()


def say(message):
    """Print on the first process only: under torchrun every process runs this script."""
    if world()[0] == 0:
        print(message, flush=True)


def main(argv=None):
    started = time.perf_counter()
    args = parse_args(argv)
    runs = plan_runs(args)  # every AdapterConfig of the command, checked before anything loads
    device = start_processes(pick_device(args.device))
    process, world_size = world()  # this process's number under torchrun (0 alone), and how many there are

    # The task and the base model, once for every run.
    task = load_task(args.data or args.task, TASKS)
    say(task.describe())
    train = task.splits["train"]
    steps = training_steps(args, len(train), world_size)  # --steps, or --epochs of this task
    rates = [args.lr or default_learning_rate(adapter.method, adapter.rank, adapter) for adapter in runs]
    # Learning curves in every comparison: the validation accuracy at 6 points of the budget (--eval-every to change).
    eval_every = args.eval_every if args.eval_every is not None else (max(1, steps // 6) if len(runs) > 1 else 0)
    base = base_model(args.init_from).to(device).eval()  # loaded once, copied for each run
    check_fits(task, base.config.block_size)
    for adapter in runs:  # every rank and target against this model, before anything trains
        check_adapters(base, adapter)
    names = [run_name(task.name, adapter, args.seeds is not None) for adapter in runs]
    out = Path(args.out)
    if process == 0:
        check_outputs(out, names, task.name, args.no_save)
    if any(adapter.method_class.trains_base for adapter in runs) and not args.no_save:  # said before it happens
        size = human_bytes(4 * parameter_counts(base)[1])
        say(f"note: full fine-tuning saves every weight, {size} for each of its runs (--no-save saves no file)")
    svd_ranks = [adapter.rank for adapter in runs if adapter.method_class.uses_svd]
    svd_cache = SVDCache(max(svd_ranks)) if svd_ranks else None  # each matrix's SVD once, at the largest rank
    zero_shot = {split: accuracy(base, task, split, device, progress=True) for split in ("validation", "test")}

    results = []
    for number, (adapter, name, learning_rate) in enumerate(zip(runs, names, rates), 1):
        # One run: add the adapters to a copy of the base model, train, score, save.
        say(f"\n== {name}" + (f" (run {number} of {len(runs)})" if len(runs) > 1 else ""))
        run_started, trains = time.perf_counter(), adapter.method_class.trains
        torch.manual_seed(adapter.seed)
        # LoRA-SB starts from the step full fine-tuning would take on the loop's first batch; no other method reads it.
        needs_first = adapter.method_class.needs_first_step
        first = first_step(train, steps, args.batch_size, adapter.seed, learning_rate, device) if needs_first else None
        model = add_adapters(copy.deepcopy(base), adapter, progress=process == 0, svd_cache=svd_cache, first_step=first)
        setup = time.perf_counter() - run_started  # the copy, the SVDs (LoRA-XS, TinyLoRA), the first step (LoRA-SB)
        if adapter.rank:
            say(adapter)
        trainable, base_count = parameter_counts(model)
        say(f"{trainable:,} trainable parameters: {100 * trainable / base_count:.4g}% of the {base_count:,} in "
            f"{model.config.name}; set up in {human_seconds(setup)}")  # fmt: skip
        before = zero_shot
        change = initial_change(model, base, make_batch(task.splits["validation"][:16], device)[0])
        if change > ZERO_SHOT_TOLERANCE:  # this start is not the base model: score its own zero-shot accuracy
            before = {split: accuracy(model, task, split, device, progress=True) for split in ("validation", "test")}
        say(f"zero-shot accuracy: validation {before['validation']:.3f}, test {before['test']:.3f}")

        losses, tokens, seconds, final, curve = [], 0, 0.0, before, []  # what trains nothing scores as it started
        if trains:
            trained = model
            if world_size > 1:
                ids = [device] if "cuda" in device else None
                trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
            if args.compile:
                trained = torch.compile(trained)
            training_started = time.perf_counter()
            losses, tokens, curve, scoring = fine_tune(
                trained, task, steps, args.batch_size, learning_rate, adapter.seed, device, eval_every
            )
            seconds = time.perf_counter() - training_started - scoring
            final = {split: accuracy(model, task, split, device, progress=True) for split in ("validation", "test")}
            curve = [{"step": 0, "validation": before["validation"]}, *curve] if eval_every else []
            curve += [{"step": steps, "validation": final["validation"]}] if eval_every else []
        saved = trains and not args.no_save and process == 0  # the adapter file: only the trained tensors
        adapter_bytes = save_adapters(model, out / f"{name}.safetensors", frozen=args.save_frozen) if saved else 0
        result = {
            "task": task.name, "method": adapter.method, "rank": adapter.rank, "seed": adapter.seed,
            "adapter_config": adapter.to_dict(), "init_from": args.init_from, "base_model": model.config.name,
            "steps": steps if trains else 0, "batch_size": args.batch_size, "learning_rate": learning_rate,
            "device": device, "processes": world_size, "trainable_parameters": trainable,
            "base_parameters": base_count, "trainable_share": trainable / base_count, "initial_change": change,
            "zero_shot_accuracy": before, "accuracy": final, "first_loss": losses[0] if losses else None,
            "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None, "losses": losses,
            "evaluations": curve, "setup_seconds": setup, "training_seconds": seconds,
            "wall_seconds": time.perf_counter() - run_started,
            "tokens_per_second": tokens / seconds if seconds else 0.0, "peak_memory_bytes": peak_memory_bytes(device),
            "adapter_file": str(out / f"{name}.safetensors") if saved else None,
            "adapter_bytes": adapter_bytes,
        }  # fmt: skip
        results.append(result)
        if process == 0:
            with atomic_write(out / f"{name}.json", "w") as file:
                json.dump(result, file, indent=2)
        summary = f"{adapter.method}{f' r={adapter.rank}' if adapter.rank else ''} on {task.name}: test accuracy "
        summary += f"{before['test']:.3f} -> {final['test']:.3f} with {trainable:,} trainable parameters "
        summary += f"({100 * trainable / base_count:.4g}%) in {human_seconds(seconds)}"
        summary += f"; adapter {human_bytes(adapter_bytes)} in {result['adapter_file']}" if saved else ""
        say(f"{summary}; results in {out / name}.json (docs/results.md explains each field)")

    # The comparison, when there is more than one run: mean ± std over seeds, the summary, the table and the plot.
    if len(results) > 1 and process == 0:
        report(results, out, steps, args.batch_size, time.perf_counter() - started)
    stop_processes()


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
