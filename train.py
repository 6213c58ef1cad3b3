"""
Fine-tune GPT-2 on a toy task with one method, or compare several: at several ranks, over several seeds.

    python train.py --method loraxs --rank 8                 # LoRA-XS on the sentiment task
    python train.py --method all --task plural               # none, full, LoRA, VeRA, LoRA-XS, TinyLoRA: one table
    python train.py --method all --seeds 3                   # every accuracy as mean ± std over 3 seeds
    python train.py --method lora,loraxs --seeds 3 --rank lora=1,4,16 loraxs=2,8,32     # a rank sweep
    torchrun --nproc_per_node 2 train.py --method loraxs     # data parallel

Read it top to bottom, starting at `main`: the settings (the flags and the runs they ask for, loraxs_mini/cli.py);
the task and the base model; then `one_run` for each run: add the adapters, train (`fine_tune`, the loop: batch,
forward, loss, backward, clip, step), score and save; then the comparison. Each run writes
<out>/<task>-<method>[-<subspace>]-r<rank>[-seed<s>].json (docs/results.md explains it) and the adapter file next
to it; several runs also write comparison-<task>.md, .json, .csv and .png (loraxs_mini/compare.py).

The default run: 150 steps of 16 examples, the gradient's norm clipped to 1.0, the learning rate warmed up over
the first tenth of the steps and decayed linearly to zero, each method at the rate chosen for it at its rank.
These numbers live in loraxs_mini/recipe.py, which lesson 06 follows too; --steps (or --epochs), --batch-size and
--lr change them.

What does not depend on the run is done once: the base model is loaded once and copied for each run; zero-shot
accuracy is scored once (a run whose adapters start at the base model shares it); each matrix's SVD is computed
once, for the largest rank, and sliced for the smaller ones.
"""

import copy
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm

from loraxs_mini import evaluate, recipe, results
from loraxs_mini.adapters import add_adapters, save_adapters
from loraxs_mini.cli import parse_args, plan_runs, prepare_runs, training_steps
from loraxs_mini.compare import report
from loraxs_mini.data import load_task, make_batch
from loraxs_mini.device import autocast, say, start_processes, stop_processes, world
from loraxs_mini.errors import LoraxsError, friendly_errors
from loraxs_mini.pretrained import base_model

TASKS = Path(__file__).parent / "data"  # the shipped toy tasks


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
    order = recipe.batch_order(len(train), steps, batch_size, seed)
    for step, indices in enumerate(bar := tqdm(order, "training", disable=process != 0, dynamic_ncols=True)):
        examples = [train[i] for i in indices]
        inputs, targets = make_batch(examples[process::world_size], device)  # (b, T) each: this process's rows
        with autocast(device):  # bfloat16 products on CUDA, float32 elsewhere
            _, loss = model(inputs, targets)  # mean cross-entropy over this process's completion tokens
        loss = loss * world_size * graded(examples[process::world_size]) / graded(examples)
        loss.backward()  # gradients reach only the trainable tensors
        torch.nn.utils.clip_grad_norm_(trainable, recipe.GRAD_CLIP)
        for group in optimizer.param_groups:
            group["lr"] = recipe.learning_rate_at(step, steps, learning_rate)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

        losses.append(batch_loss(loss, world_size, step))
        tokens += sum(len(example) for example in examples)
        bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
        if eval_every and (step + 1) % eval_every == 0 and step + 1 < steps:  # the last step is scored after the loop
            started = time.perf_counter()
            evaluations.append({"step": step + 1, "validation": evaluate.accuracy(model, task, "validation", device)})
            scoring += time.perf_counter() - started  # accuracy() puts the model back in training mode
    return losses, tokens, evaluations, scoring


def graded(examples):
    """The tokens a batch is graded on: each completion and its closing <|endoftext|> (the prompt is context)."""
    return sum(len(example.completion_tokens) + 1 for example in examples)


def batch_loss(loss, world_size, step):
    """The whole batch's mean loss, for the log (summed over processes); a loss that is not finite stops the run."""
    loss = loss.detach() / world_size
    if world_size > 1:
        dist.all_reduce(loss)
    if not torch.isfinite(loss):
        raise LoraxsError(f"the loss became {loss.item()} at step {step + 1}; training stopped and nothing was "
                          "saved. Lower the learning rate (--lr) and try again")  # fmt: skip
    return loss.item()


def one_run(adapter, name, base, task, zero_shot, steps, plan, args, device):
    """One run: add the adapters to a copy of the base model, train, score, save. Returns its record."""
    started, trains = time.perf_counter(), adapter.method_class.trains
    learning_rate = args.lr or recipe.default_learning_rate(adapter.method, adapter.rank, adapter)
    torch.manual_seed(adapter.seed)
    first = None  # LoRA-SB starts from the step full fine-tuning would take on the first batch; nothing else reads it
    if adapter.method_class.needs_first_step:
        first = recipe.first_step(task.splits["train"], steps, args.batch_size, adapter.seed, learning_rate, device)
    progress = world()[0] == 0
    model = add_adapters(copy.deepcopy(base), adapter, progress=progress, svd_cache=plan.svd_cache, first_step=first)
    setup = time.perf_counter() - started  # the copy, the SVDs (LoRA-XS, TinyLoRA), the first step (LoRA-SB)
    if adapter.rank:
        say(adapter)
    say(results.counts(model, setup))
    before, change = evaluate.starting_scores(model, base, task, zero_shot, device)
    say(f"zero-shot accuracy: validation {before['validation']:.3f}, test {before['test']:.3f}")

    losses, tokens, seconds, after, curve = [], 0, 0.0, before, []  # what trains nothing scores as it started
    if trains:
        trained = model
        if world()[1] > 1:
            ids = [device] if "cuda" in device else None
            trained = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
        if args.compile:
            trained = torch.compile(trained)
        training_started = time.perf_counter()
        losses, tokens, curve, scoring = fine_tune(
            trained, task, steps, args.batch_size, learning_rate, adapter.seed, device, plan.eval_every
        )
        seconds = time.perf_counter() - training_started - scoring
        after = evaluate.scores(model, task, device)
        if plan.eval_every:  # the learning curve from the start (step 0) to the end
            curve = [{"step": 0, "validation": before["validation"]}, *curve]
            curve.append({"step": steps, "validation": after["validation"]})
    out = Path(args.out)
    saved = trains and not args.no_save and world()[0] == 0  # the adapter file: only the trained tensors
    adapter_bytes = save_adapters(model, out / f"{name}.safetensors", frozen=args.save_frozen) if saved else 0
    result = results.record(
        task,
        adapter,
        args,
        model,
        before,
        after,
        losses,
        curve,
        (setup, seconds, time.perf_counter() - started, tokens),
        steps=steps if trains else 0,
        learning_rate=learning_rate,
        device=device,
        initial_change=change,
        adapter_file=str(out / f"{name}.safetensors") if saved else None,
        adapter_bytes=adapter_bytes,
    )
    results.write(result, out / f"{name}.json")
    say(results.one_line(result, out / f"{name}.json"))
    return result


def main(argv=None):
    started = time.perf_counter()
    args = parse_args(argv)
    runs = plan_runs(args)  # every AdapterConfig of the command, checked before anything loads
    device = start_processes(args.device)  # under torchrun, this process's own device

    # The task and the base model, once for every run.
    task = load_task(args.data or args.task, TASKS)
    say(task.describe())
    steps = training_steps(args, len(task.splits["train"]), world()[1])  # --steps, or --epochs of this task
    base = base_model(args.init_from).to(device).eval()  # loaded once, copied for each run
    plan = prepare_runs(args, runs, base, task, steps)  # every check that needs the model, before anything trains
    zero_shot = evaluate.scores(base, task, device)  # the accuracy every run starts from, unless its adapters move it

    finished = []
    for number, (adapter, name) in enumerate(zip(runs, plan.names), 1):
        say(f"\n== {name}" + (f" (run {number} of {len(runs)})" if len(runs) > 1 else ""))
        finished.append(one_run(adapter, name, base, task, zero_shot, steps, plan, args, device))

    # The comparison, when there is more than one run: mean ± std over seeds, the summary, the table and the plot.
    if len(finished) > 1 and world()[0] == 0:
        report(finished, Path(args.out), steps, args.batch_size, time.perf_counter() - started)
    stop_processes()


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
