"""
Fine-tune GPT-2 on a toy task with one method, or compare several.

    python train.py --method loraxs --rank 8                 # LoRA-XS on the sentiment task
    python train.py --method all --task plural               # none, full, LoRA, VeRA, LoRA-XS, one table
    python train.py --method all --rank lora=8,vera=256      # each method's rank (default: its authors')
    python train.py --init-from ../shared/pretrained-small-gpt2 --method lora,loraxs
    torchrun --nproc_per_node 2 train.py --method loraxs     # data parallel

For each method it prints the trainable parameter count and the zero-shot
accuracy, trains with a progress bar, prints one summary line, and writes
<out>/<task>-<method>-r<rank>.json (configuration, counts, accuracies,
timings, memory) and the adapter file next to it. With several methods it also
prints a Markdown table and writes it (and, with matplotlib, a plot) to <out>.
"""

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from loraxs_mini.adapters import (
    ADAPTER_METHODS,
    DEFAULT_RANK,
    METHODS,
    SVD_METHODS,
    AdapterConfig,
    add_adapters,
    parameter_counts,
    save_adapters,
)
from loraxs_mini.data import check_fits, load_task
from loraxs_mini.errors import LoraxsError, friendly_errors
from loraxs_mini.files import atomic_write
from loraxs_mini.finetune import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_LEARNING_RATES,
    DEFAULT_STEPS,
    TrainingConfig,
    accuracy,
    finetune,
    pick_device,
    world,
)
from loraxs_mini.measure import peak_memory_bytes
from loraxs_mini.pretrained import load_base_model


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Fine-tune GPT-2 with LoRA, VeRA, LoRA-XS or fully; compare them.")
    parser.add_argument("--method", default="loraxs", help=f"one of {', '.join(METHODS)}, a comma list, or 'all'")
    defaults = ", ".join(f"{method} {rank}" for method, rank in DEFAULT_RANK.items())
    parser.add_argument(
        "--rank", default=None, help=f"adapter rank r, for every method (8) or each (lora=8,vera=256); {defaults}"
    )
    parser.add_argument(
        "--alpha", default=None, help="LoRA / LoRA-XS scale, update x alpha/r, for both or each (lora=16); "
        "default: LoRA 8, LoRA-XS alpha = r",
    )  # fmt: skip
    parser.add_argument(
        "--targets", default=None, help="comma list of layers to adapt (default: all four per block; "
        "attn.c_attn.q, .k, .v adapt the thirds of the fused c_attn separately)",
    )  # fmt: skip
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout on the adapter input (default 0)")
    parser.add_argument("--svd", choices=SVD_METHODS, default="gram", help="how LoRA-XS computes its SVD (gram)")
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
    parser.add_argument("--seed", type=int, default=0)
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
    return methods


def check_numbers(args):
    if args.batch_size < 1:
        raise LoraxsError(f"--batch-size must be at least 1, got {args.batch_size}")
    for name, value in (("--steps", args.steps), ("--epochs", args.epochs), ("--lr", args.lr)):
        if value is not None and not value > 0:
            raise LoraxsError(f"{name} must be positive, got {value}")


def per_method(text, flag, kind, methods):
    """'8' -> the same value for each of `methods`; 'lora=8,vera=256' -> one value for each method named."""
    if text is None:
        return {}
    pairs = [item.partition("=") for item in text.split(",")] if "=" in text else [(m, "=", text) for m in methods]
    values = {}
    for method, _, value in pairs:
        if method.strip() not in methods:
            raise LoraxsError(f"{flag} {text}: {method.strip()!r} is not one of {', '.join(methods)}")
        try:
            values[method.strip()] = kind(value)
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise LoraxsError(f"{flag} {text}: {value!r} is not {expected}") from None
    return values


def adapter_configs(args, methods):
    """One AdapterConfig per method, from the flags: every setting is checked here, before anything is loaded."""
    ranks = per_method(args.rank, "--rank", int, ADAPTER_METHODS)
    alphas = per_method(args.alpha, "--alpha", float, ("lora", "loraxs"))  # VeRA has no alpha
    targets = args.targets.split(",") if args.targets else None
    return {
        method: AdapterConfig(method, ranks.get(method), alphas.get(method), targets, args.dropout, args.seed, args.svd)
        for method in methods
    }


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


def human_bytes(n):
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def human_seconds(seconds):
    return f"{seconds:.1f}s" if seconds < 60 else f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def run_name(task_name, adapter):
    """sentiment-loraxs-r8, or sentiment-full: what names a run's files."""
    return f"{task_name}-{adapter.method}" + (f"-r{adapter.rank}" if adapter.rank else "")


def run_method(adapter, args, task, device, say):
    """Train one method from a fresh base model; returns its results dict."""
    method = adapter.method
    started = time.perf_counter()
    say(f"\n== {run_name(task.name, adapter)}")
    torch.manual_seed(args.seed)
    model = load_base_model(args.init_from, verbose=False).to(device)
    check_fits(task, model.config.block_size)
    add_adapters(model, adapter, progress=world()[0] == 0)
    if adapter.rank:
        say(str(adapter))
    trainable, base = parameter_counts(model)
    say(f"{trainable:,} trainable parameters: {100 * trainable / base:.4g}% of the {base:,} in {model.config.name}")

    zero_shot = {split: accuracy(model, task, split, device, progress=True) for split in ("validation", "test")}
    say(f"zero-shot accuracy: validation {zero_shot['validation']:.3f}, test {zero_shot['test']:.3f}")

    steps = args.steps or DEFAULT_STEPS
    if args.epochs:
        steps = math.ceil(args.epochs * len(task.splits["train"]) / args.batch_size)
    config = TrainingConfig(
        steps=steps,
        batch_size=args.batch_size,
        learning_rate=args.lr or DEFAULT_LEARNING_RATES.get(method, 0.0),
        seed=args.seed,
    )
    training = {"losses": [], "tokens": 0, "seconds": 0.0, "tokens_per_second": 0.0}
    if method != "none":
        trained = model
        if world()[1] > 1:
            trained = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[device] if "cuda" in device else None
            )
        if args.compile:
            trained = torch.compile(trained)
        training = finetune(trained, task, config, device)
    final = {split: accuracy(model, task, split, device, progress=True) for split in ("validation", "test")}

    adapter_file, adapter_bytes = None, 0
    if method != "none" and not args.no_save and world()[0] == 0:
        adapter_file = Path(args.out) / f"{run_name(task.name, adapter)}.safetensors"
        adapter_bytes = save_adapters(model, adapter_file, frozen=args.save_frozen)
    losses = training["losses"]
    return {
        "task": task.name,
        "method": method,
        "rank": adapter.rank,
        "adapter_config": adapter.to_dict(),
        "init_from": args.init_from,
        "base_model": model.config.name,
        "steps": steps if method != "none" else 0,
        "batch_size": args.batch_size,
        "learning_rate": config.learning_rate,
        "seed": args.seed,
        "device": device,
        "processes": world()[1],
        "trainable_parameters": trainable,
        "base_parameters": base,
        "trainable_share": trainable / base,
        "zero_shot_accuracy": zero_shot,
        "accuracy": final,
        "first_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None,
        "losses": losses,
        "training_seconds": training["seconds"],
        "wall_seconds": time.perf_counter() - started,
        "tokens_per_second": training["tokens_per_second"],
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


def comparison_table(results):
    rows = [
        "| method | rank | trainable parameters | share of the model | adapter on disk | zero-shot test acc. "
        "| test acc. | training time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rank = str(r["rank"]) if r["method"] in ADAPTER_METHODS else "-"
        size = human_bytes(r["adapter_bytes"]) if r["adapter_file"] else "-"
        rows.append(
            f"| {r['method']} | {rank} | {r['trainable_parameters']:,} | {100 * r['trainable_share']:.4g}% | {size} "
            f"| {r['zero_shot_accuracy']['test']:.3f} | {r['accuracy']['test']:.3f} "
            f"| {human_seconds(r['training_seconds'])} |"
        )
    return "\n".join(rows) + "\n"


def plot_comparison(results, path):
    """Test accuracy against trainable parameters (log scale), if matplotlib is installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    trained = [r for r in results if r["trainable_parameters"] > 0]
    figure, axes = plt.subplots(figsize=(6, 4))
    for index, r in enumerate(trained):
        point = (r["trainable_parameters"], r["accuracy"]["test"])
        axes.scatter(*point, s=40)
        label = r["method"] + (f" r={r['rank']}" if r["method"] in ADAPTER_METHODS else "")
        axes.annotate(label, point, textcoords="offset points", xytext=(6, 8 if index % 2 else -14))  # alternate
    for r in results:
        if r["method"] == "none":
            axes.axhline(r["accuracy"]["test"], color="gray", linestyle="--", label="zero-shot (none)")
            axes.legend(loc="lower right")
    axes.set_xscale("log")
    axes.set_xlabel("trainable parameters (log scale)")
    axes.set_ylabel("test accuracy")
    axes.set_title(f"{results[0]['task']} on {results[0]['base_model']}")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    with atomic_write(path) as file:
        figure.savefig(file, format="png", dpi=120)
    plt.close(figure)
    return path


def main(argv=None):
    args = parse_args(argv)
    check_numbers(args)
    adapters = adapter_configs(args, chosen_methods(args.method))
    device = start_distributed(pick_device(args.device))
    process, world_size = world()  # this process's number under torchrun (0 alone), and how many there are
    if args.batch_size < world_size:
        raise LoraxsError(f"--batch-size {args.batch_size} is smaller than the {world_size} processes; raise it")

    def say(message):
        if process == 0:
            print(message, flush=True)

    task = load_task(args.data or args.task)
    say(task.describe())
    results = []
    for adapter in adapters.values():
        result = run_method(adapter, args, task, device, say)
        results.append(result)
        if process == 0:
            with atomic_write(Path(args.out) / f"{run_name(task.name, adapter)}.json", "w") as file:
                json.dump(result, file, indent=2)
        say(summary_line(result))
    if len(results) > 1 and process == 0:
        table = comparison_table(results)
        print("\n" + table)
        base = Path(args.out) / f"comparison-{task.name}"
        with atomic_write(base.with_suffix(".md"), "w") as file:
            file.write(table)
        plot = plot_comparison(results, base.with_suffix(".png"))
        print(f"wrote {base.with_suffix('.md')}" + (f" and {plot}" if plot else " (pip install matplotlib for a plot)"))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    with friendly_errors():
        sys.exit(main())
