"""
Fine-tune GPT-2 on a toy task with one method, or compare several: at several
ranks, over several seeds.

    python train.py --method loraxs --rank 8                 # LoRA-XS on the sentiment task
    python train.py --method all --task plural               # none, full, LoRA, VeRA, LoRA-XS, TinyLoRA: one table
    python train.py --method all --seeds 3                   # every accuracy as mean ± std over 3 seeds
    python train.py --method lora,loraxs --seeds 3 --rank lora=1,4,16 loraxs=2,8,32     # a rank sweep
    torchrun --nproc_per_node 2 train.py --method loraxs     # data parallel

Each run prints its AdapterConfig and trainable parameter count, trains with
a progress bar, prints one summary line, and writes
<out>/<task>-<method>-r<rank>[-seed<s>].json (configuration, counts,
accuracies, timings, memory) and the adapter file next to it. With several
runs it also writes the comparison (see loraxs_mini/compare.py):
comparison-<task>.md, .json, .csv and, with matplotlib, .png.

The training loop is `fine_tune` below, written out: batch, forward, loss,
backward, clip, step, log. Lesson 06 builds the same loop up step by step.

What does not depend on the run is done once: the base model is loaded once
and copied for each run; zero-shot accuracy is scored once (LoRA and VeRA
start exactly at the base model, LoRA-XS within a tolerance checked on every
run); each LoRA-XS matrix's SVD is computed once, for the largest rank, and
sliced for the smaller ones.
"""

import copy
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from loraxs_mini.adapters import (
    ADAPTER_METHODS,
    DEFAULT_RANK,
    METHODS,
    SVD_METHODS,
    AdapterConfig,
    SVDCache,
    add_adapters,
    check_adapters,
    parameter_counts,
    save_adapters,
)
from loraxs_mini.compare import human_bytes, human_seconds, write_comparison
from loraxs_mini.data import check_fits, load_task, make_batch
from loraxs_mini.device import autocast, pick_device, world
from loraxs_mini.errors import ArgumentParser, LoraxsError, friendly_errors
from loraxs_mini.evaluate import accuracy
from loraxs_mini.files import atomic_write
from loraxs_mini.measure import peak_memory_bytes
from loraxs_mini.model import GPT, IGNORE_INDEX, PRESETS, GPTConfig
from loraxs_mini.pretrained import config_from_huggingface, load_pretrained, read_json
from loraxs_mini.recipe import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_STEPS,
    GRAD_CLIP,
    batch_order,
    default_learning_rate,
    learning_rate_at,
)

# The zero-shot accuracy of the base model stands for every run whose adapters, as added, move no log-probability
# by more than this. LoRA and VeRA move none (B = 0, b = 0); LoRA-XS's R ~ N(0, 1e-5²) moved the small pretrained
# model's by at most 1.4e-3 at r = 8 and 3.4e-3 at r = 32 in the README's sweep. A run beyond it scores its own.
ZERO_SHOT_TOLERANCE = 2e-2


def parse_args(argv=None):
    parser = ArgumentParser(description="Fine-tune GPT-2 with LoRA, VeRA, LoRA-XS, TinyLoRA or fully; compare them.")
    parser.add_argument("--method", default="loraxs", help=f"one of {', '.join(METHODS)}, a comma list, or 'all'")
    defaults = ", ".join(f"{method} {rank}" for method, rank in DEFAULT_RANK.items())
    parser.add_argument(
        "--rank", nargs="+", default=None, help="adapter rank(s), for every method (8, or 4,8) or each "
        f"(lora=8,vera=256, or lora=1,4,16 loraxs=2,8,32 for a sweep); default {defaults}",
    )  # fmt: skip
    parser.add_argument(
        "--alpha", default=None, help="LoRA / LoRA-XS scale, update x alpha/r, for both or each (lora=16); "
        "default: LoRA 8, LoRA-XS alpha = r",
    )  # fmt: skip
    parser.add_argument(
        "--targets", default=None, help="comma list of layers to adapt (default: all four per block; "
        "attn.c_attn.q, .k, .v adapt the thirds of the fused c_attn separately)",
    )  # fmt: skip
    parser.add_argument("--u", type=int, default=None, help="TinyLoRA: trained numbers per group (default 64)")
    parser.add_argument(
        "--weight-tying", type=float, default=None, help="TinyLoRA: 0 each layer its own v (default), 1 one v for all"
    )
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout on the adapter input (default 0)")
    parser.add_argument("--svd", choices=SVD_METHODS, default="gram", help="how LoRA-XS and TinyLoRA compute the SVD")
    parser.add_argument("--task", default="sentiment", help="a task in data/ (sentiment, plural)")
    parser.add_argument("--data", default=None, help="your own data: a .jsonl file or a folder of train/test.jsonl")
    parser.add_argument(
        "--init-from",
        default="gpt2",
        help="gpt2 / gpt2-medium / gpt2-large / gpt2-xl, a checkpoint folder or .safetensors file, "
        "or random:<preset or folder> for random weights of that shape (default gpt2)",
    )
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {DEFAULT_STEPS})")
    budget.add_argument("--epochs", type=float, default=None, help="passes over the training split, instead of steps")
    parser.add_argument("--lr", type=float, default=None, help="learning rate (default: per method, see README)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="examples per step, all devices")
    parser.add_argument("--seed", type=int, default=0, help="the seed of the adapters' start and the data order")
    parser.add_argument(
        "--seeds", default=None, help="repeat every run with N seeds (--seed, --seed + 1, ...) or with these (0,3,7)"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    parser.add_argument("--out", default="out", help="results folder (default out/)")
    parser.add_argument("--no-save", action="store_true", help="do not write adapter files")
    parser.add_argument(
        "--save-frozen", action="store_true", help="store the frozen tensors in adapter files too (exact anywhere)"
    )
    return parser.parse_args(argv)


def chosen_methods(text):
    methods = list(METHODS) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise LoraxsError(f"unknown method {', '.join(unknown) or text!r}; choose from {', '.join(METHODS)} or 'all'")
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise LoraxsError(f"--method lists {', '.join(twice)} twice; name each method once")
    return methods


MAX_STEPS = 10_000_000  # far beyond any class; the data order for every step is drawn up front
MAX_SEED = 2**63 - 1  # torch.manual_seed's limit
MAX_SEEDS = 100  # runs per configuration


def check_numbers(args):
    if args.batch_size < 1:
        raise LoraxsError(f"--batch-size must be at least 1, got {args.batch_size}")
    for name, value in (("--steps", args.steps), ("--epochs", args.epochs), ("--lr", args.lr)):
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise LoraxsError(f"{name} must be a positive finite number, got {value}")
    if not 0 <= args.dropout < 1:
        raise LoraxsError(f"--dropout must be a probability in [0, 1), got {args.dropout}")
    if args.lr is not None and args.lr > 1:  # Adam moves every weight by about the rate at each step
        raise LoraxsError(f"--lr {args.lr:g} is more than 1: Adam would move every weight by about that much per step")
    if args.steps is not None and args.steps > MAX_STEPS:
        raise LoraxsError(f"--steps {args.steps:,} is more than {MAX_STEPS:,}; a class run needs hundreds")
    if not 0 <= args.seed <= MAX_SEED:
        raise LoraxsError(f"--seed must be between 0 and 2**63 - 1, got {args.seed}")


def whole_numbers(items, flag):
    try:
        return [int(item) for item in items]
    except ValueError:
        raise LoraxsError(f"{flag}: {', '.join(items)} must be whole numbers") from None


def per_method(words, flag, methods):
    """
    A flag's value for each method, as lists of numbers (strings):
        8  or  4,8                      the same list for every method in `methods`
        lora=8,vera=256                 one list per method named
        lora=1,4,16 loraxs=2,8,32       the same, as separate words (a sweep)
    """
    if words is None:
        return {}
    text = ",".join(words) if isinstance(words, list) else words
    items = [item.strip() for item in text.split(",")]
    if "=" not in text:
        return dict.fromkeys(methods, items)
    if "=" not in items[0]:
        raise LoraxsError(f"{flag} {text}: begin with a method name, as in lora=8")
    values, method = {}, None
    for item in items:
        if "=" in item:
            method, _, item = (part.strip() for part in item.partition("="))
            if method not in methods:
                raise LoraxsError(f"{flag} {text}: {method!r} is not one of {', '.join(methods)}")
            if method in values:
                raise LoraxsError(f"{flag} {text}: {method} is listed twice; give all its values at once")
            values[method] = []
        values[method].append(item)
    for method, items in values.items():
        if "" in items:
            raise LoraxsError(f"{flag} {text}: an empty value for {method}")
    return values


def chosen_seeds(args):
    """--seeds N: N seeds from --seed on; --seeds 0,3,7: these; neither: --seed alone."""
    if args.seeds is None:
        return [args.seed]
    items = [item.strip() for item in args.seeds.split(",")]
    seeds = whole_numbers(items, "--seeds")
    if len(seeds) == 1:
        if not 1 <= seeds[0] <= MAX_SEEDS:
            raise LoraxsError(f"--seeds must be between 1 and {MAX_SEEDS}, got {seeds[0]}; 3 to 5 show the spread")
        seeds = list(range(args.seed, args.seed + seeds[0]))
    if len(set(seeds)) < len(seeds) or min(seeds) < 0 or max(seeds) > MAX_SEED:
        raise LoraxsError(f"--seeds {args.seeds}: give different seeds, none negative, none above 2**63 - 1")
    return seeds


def plan_runs(args):
    """Every run of the command, one AdapterConfig each: all settings are checked here, before anything loads."""
    ranks = {
        method: whole_numbers(items, "--rank")
        for method, items in per_method(args.rank, "--rank", ADAPTER_METHODS).items()
    }
    for method, values in ranks.items():
        if len(set(values)) < len(values):
            raise LoraxsError(f"--rank: a rank of {method} is listed twice")
    alphas = per_method(args.alpha, "--alpha", ("lora", "loraxs"))  # VeRA and TinyLoRA have no alpha
    if any(len(items) > 1 for items in alphas.values()):
        raise LoraxsError(f"--alpha {args.alpha}: one alpha per method")
    try:
        alphas = {method: float(items[0]) for method, items in alphas.items()}
    except ValueError:
        raise LoraxsError(f"--alpha {args.alpha}: give numbers") from None
    targets = args.targets.split(",") if args.targets else None
    methods = chosen_methods(args.method)
    if (args.u is not None or args.weight_tying is not None) and "tinylora" not in methods:
        raise LoraxsError("--u and --weight-tying are TinyLoRA's settings; add tinylora to --method or leave them out")
    runs = []
    for method in methods:
        tiny = {"u": args.u, "weight_tying": args.weight_tying} if method == "tinylora" else {}
        for rank in ranks.get(method, [None]) if method in ADAPTER_METHODS else [None]:
            for seed in chosen_seeds(args):
                runs.append(
                    AdapterConfig(method, rank, alphas.get(method), targets, args.dropout, seed, args.svd, **tiny)
                )
    return runs


def check_outputs(args, runs, task_name, seeded):
    """
    Before anything loads or trains: the results folder can be made and written, and no file this command will
    write is a folder. A run is never lost to a bad --out after it trained.
    """
    out = Path(args.out)
    existing = next(folder for folder in (out, *out.absolute().parents) if folder.exists())  # made only when written
    if not existing.is_dir():
        raise LoraxsError(f"--out {out}: {existing} is a file, not a folder; choose a folder for the results")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LoraxsError(f"--out {out}: this user cannot write in {existing}; choose another folder")
    names = [run_name(task_name, adapter, seeded) for adapter in runs]
    paths = [out / f"{name}.{suffix}" for name in names for suffix in ("json", "safetensors")]
    paths += [out / f"comparison-{task_name}.{suffix}" for suffix in ("md", "json", "csv", "png")]
    for path in paths:
        if path.is_dir():
            raise LoraxsError(f"{path} is a folder, but this command writes a file there; move it or change --out")
    if args.no_save:
        stale = [name for name in names if (out / f"{name}.safetensors").is_file()]
        if stale:
            warnings.warn(f"{out / stale[0]}.safetensors is from an earlier run; with --no-save this run leaves it "
                          "as it is, and its results say no adapter was saved", stacklevel=2)  # fmt: skip


def start_distributed(device):
    """Under torchrun: join the process group (NCCL on CUDA, gloo on CPU) and pick this process's GPU."""
    if "RANK" not in os.environ:
        return device
    cuda = device.startswith("cuda")
    dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def base_model(init_from):
    """
    --init-from: a preset or checkpoint (pretrained weights, see loraxs_mini/pretrained.py), or
    random:<preset or checkpoint folder>, the same shape with fresh weights drawn from seed 0: the baseline
    that shows what pretraining brings.
    """
    if not init_from.startswith("random:"):
        return load_pretrained(init_from)
    source = init_from.removeprefix("random:")
    if source in PRESETS:
        config = GPTConfig.from_name(source)
    elif Path(source, "config.json").is_file():
        config = config_from_huggingface(read_json(Path(source, "config.json")), Path(source).resolve().name)
    else:
        raise LoraxsError(
            f"--init-from random:{source} needs a preset ({', '.join(PRESETS)}) or a folder with a config.json "
            "to take the shape from"
        )
    config.name = f"random-{config.name}"
    torch.manual_seed(0)  # every run and seed of the command starts from the same random weights
    return GPT(config)


def fine_tune(model, task, steps, batch_size, learning_rate, seed, device):
    """
    The training loop. Returns the loss of every step and the number of tokens read.

    Under torchrun `model` is wrapped in DDP: every process draws the same global batch and takes its own rows
    (process p takes p, p + N, ...), and DDP averages the N gradients during backward. Weighting each process's
    mean loss by N x (its graded tokens / the batch's) makes that average exactly the gradient of the batch's
    mean loss, as if one process had read it all. Alone, the weight is 1.
    """
    process, world_size = world()
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=0.0)  # AdamW's default would be 0.01
    train, losses, tokens = task.splits["train"], [], 0
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
    return losses, tokens


def batch_loss(loss, world_size, step):
    """The whole batch's mean loss, for the log (summed over processes); a loss that is not finite stops the run."""
    loss = loss.detach() / world_size
    if world_size > 1:
        dist.all_reduce(loss)
    if not math.isfinite(loss.item()):
        raise LoraxsError(
            f"the loss became {loss.item()} at step {step + 1}; training stopped and nothing was saved. "
            "Lower the learning rate (--lr) and try again"
        )
    return loss.item()


def run_name(task_name, adapter, seeded):
    """sentiment-loraxs-r8, sentiment-full, or with --seeds sentiment-loraxs-r8-seed1: what names a run's files."""
    name = f"{task_name}-{adapter.method}" + (f"-r{adapter.rank}" if adapter.rank else "")
    return name + (f"-seed{adapter.seed}" if seeded else "")


@torch.no_grad()
def initial_change(model, base, probe):
    """The largest change of any log-probability on the probe batch: how far the adapters moved the model at start."""
    model.eval()
    before, after = (F.log_softmax(m(probe)[0].float(), dim=-1) for m in (base, model))
    return (after - before).abs().max().item()


def run_one(adapter, base, zero_shot, svd_cache, args, task, device, say, name):
    """Add `adapter` to a copy of the base model, train it, score it; returns its results dict."""
    method = adapter.method
    started = time.perf_counter()
    torch.manual_seed(adapter.seed)
    model = add_adapters(copy.deepcopy(base), adapter, progress=world()[0] == 0, svd_cache=svd_cache)
    if adapter.rank:
        say(str(adapter))
    trainable, base_count = parameter_counts(model)
    say(f"{trainable:,} trainable parameters: {100 * trainable / base_count:.4g}% of the {base_count:,} in "
        f"{model.config.name}")  # fmt: skip

    change = initial_change(model, base, make_batch(task.splits["validation"][:16], device)[0])
    if change > ZERO_SHOT_TOLERANCE:  # this start is not the base model: score its own zero-shot accuracy
        zero_shot = {split: accuracy(model, task, split, device, progress=True) for split in ("validation", "test")}
    say(f"zero-shot accuracy: validation {zero_shot['validation']:.3f}, test {zero_shot['test']:.3f}")

    steps = args.steps or DEFAULT_STEPS
    if args.epochs:
        steps = math.ceil(args.epochs * len(task.splits["train"]) / args.batch_size)
    learning_rate = args.lr or default_learning_rate(method, adapter.rank)
    losses, tokens, seconds = [], 0, 0.0
    final = zero_shot  # "none" trains nothing: its accuracy is the zero-shot one
    if method != "none":
        trained = model
        if world()[1] > 1:
            trained = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device] if "cuda" in device else None
            )
        if args.compile:
            trained = torch.compile(trained)
        start = time.perf_counter()
        losses, tokens = fine_tune(trained, task, steps, args.batch_size, learning_rate, adapter.seed, device)
        seconds = time.perf_counter() - start
        final = {split: accuracy(model, task, split, device, progress=True) for split in ("validation", "test")}

    adapter_file, adapter_bytes = None, 0
    if method != "none" and not args.no_save and world()[0] == 0:
        adapter_file = Path(args.out) / f"{name}.safetensors"
        adapter_bytes = save_adapters(model, adapter_file, frozen=args.save_frozen)
    return {
        "task": task.name,
        "method": method,
        "rank": adapter.rank,
        "seed": adapter.seed,
        "adapter_config": adapter.to_dict(),
        "init_from": args.init_from,
        "base_model": model.config.name,
        "steps": steps if method != "none" else 0,
        "batch_size": args.batch_size,
        "learning_rate": learning_rate,
        "device": device,
        "processes": world()[1],
        "trainable_parameters": trainable,
        "base_parameters": base_count,
        "trainable_share": trainable / base_count,
        "initial_change": change,
        "zero_shot_accuracy": zero_shot,
        "accuracy": final,
        "first_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "losses": losses,
        "training_seconds": seconds,
        "wall_seconds": time.perf_counter() - started,
        "tokens_per_second": tokens / seconds if seconds else 0.0,
        "peak_memory_bytes": peak_memory_bytes(device),
        "adapter_file": str(adapter_file) if adapter_file else None,
        "adapter_bytes": adapter_bytes,
    }


def summary_line(result):
    rank = f" r={result['rank']}" if result["method"] in ADAPTER_METHODS else ""
    line = (
        f"{result['method']}{rank} on {result['task']}: test accuracy {result['zero_shot_accuracy']['test']:.3f} -> "
        f"{result['accuracy']['test']:.3f} with {result['trainable_parameters']:,} trainable parameters "
        f"({100 * result['trainable_share']:.4g}%) in {human_seconds(result['training_seconds'])}"
    )
    if result["adapter_file"]:
        line += f"; adapter {human_bytes(result['adapter_bytes'])} in {result['adapter_file']}"
    return line


def main(argv=None):
    started = time.perf_counter()
    args = parse_args(argv)
    check_numbers(args)
    runs = plan_runs(args)
    seeded = args.seeds is not None
    device = start_distributed(pick_device(args.device))
    process, world_size = world()  # this process's number under torchrun (0 alone), and how many there are
    if args.batch_size < world_size:
        raise LoraxsError(f"--batch-size {args.batch_size} is smaller than the {world_size} processes; raise it")

    def say(message):
        if process == 0:
            print(message, flush=True)

    task = load_task(args.data or args.task)
    say(task.describe())
    if args.batch_size > len(task.splits["train"]):
        raise LoraxsError(
            f"--batch-size {args.batch_size} is more than the {len(task.splits['train'])} training examples of "
            f"{task.name}; choose a smaller one"
        )
    if args.epochs and args.epochs * len(task.splits["train"]) / args.batch_size > MAX_STEPS:
        raise LoraxsError(f"--epochs {args.epochs:g} is more than {MAX_STEPS:,} steps; a class run needs hundreds")
    base = base_model(args.init_from).to(device).eval()  # loaded once, copied for each run
    check_fits(task, base.config.block_size)
    for adapter in runs:  # every rank and target checked against the model before anything trains
        check_adapters(base, adapter)
    if process == 0:
        check_outputs(args, runs, task.name, seeded)
    svd_ranks = [adapter.rank for adapter in runs if adapter.method in ("loraxs", "tinylora")]
    svd_cache = SVDCache(max(svd_ranks)) if svd_ranks else None  # LoRA-XS and TinyLoRA start from the same SVDs
    zero_shot = {split: accuracy(base, task, split, device, progress=True) for split in ("validation", "test")}

    results = []
    for number, adapter in enumerate(runs, 1):
        name = run_name(task.name, adapter, seeded)
        say(f"\n== {name}" + (f" (run {number} of {len(runs)})" if len(runs) > 1 else ""))
        result = run_one(adapter, base, zero_shot, svd_cache, args, task, device, say, name)
        results.append(result)
        if process == 0:
            with atomic_write(Path(args.out) / f"{name}.json", "w") as file:
                json.dump(result, file, indent=2)
        say(summary_line(result))
    seconds = time.perf_counter() - started
    if len(results) > 1 and process == 0:
        seeds = len(chosen_seeds(args))
        title = (
            f"{task.name} on {base.config.name}: {seeds} seed{'s' * (seeds > 1)}, {results[-1]['steps']} steps of "
            f"{args.batch_size} examples"
        )
        facts = {"task": task.name, "base_model": base.config.name, "runs": len(results), "wall_seconds": seconds}
        text, words, plot = write_comparison(results, Path(args.out) / f"comparison-{task.name}", title, facts)
        print(f"\n{title}\n\n{text}\n" + "\n".join(words))
        per_run = human_seconds(seconds / len(results))
        plot_note = " and .png" if plot else " (pip install matplotlib for a plot)"
        print(f"\n{len(results)} runs in {human_seconds(seconds)} ({per_run} a run); wrote {args.out}/comparison-"
              f"{task.name}.md, .json, .csv{plot_note}")  # fmt: skip
    if dist.is_initialized():
        dist.barrier()  # every process reaches the end before the group is torn down (gloo can abort otherwise)
        dist.destroy_process_group()


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
