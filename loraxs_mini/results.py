"""
What train.py keeps of each run: one record (docs/results.md explains every field), written to
<out>/<name>.json beside the adapter file, and said in one line.
"""

import json

from .adapters import parameter_counts
from .device import world
from .files import atomic_write
from .measure import human_bytes, human_seconds, peak_memory_bytes


def counts(model, setup):
    """3,072 trainable parameters: 0.002469% of the 124,439,808 in gpt2; set up in 1.1s"""
    trainable, base = parameter_counts(model)
    share = f"{100 * trainable / base:.4g}% of the {base:,} in {model.config.name}"
    return f"{trainable:,} trainable parameters: {share}; set up in {human_seconds(setup)}"


def record(task, adapter, args, model, before, after, losses, curve, timings, **run):
    """
    The run's record. `before`, `after`: {validation, test} accuracy; `timings`: seconds of set-up, training and
    the whole run, and the tokens read; `run`: steps, learning_rate, device, initial_change and the adapter file.
    """
    (trainable, base), (setup, training, wall, tokens) = parameter_counts(model), timings
    return {
        "task": task.name, "method": adapter.method, "rank": adapter.rank, "seed": adapter.seed,
        "adapter_config": adapter.to_dict(), "init_from": args.init_from, "base_model": model.config.name,
        "steps": run["steps"], "batch_size": args.batch_size, "learning_rate": run["learning_rate"],
        "device": run["device"], "processes": world()[1], "trainable_parameters": trainable,
        "base_parameters": base, "trainable_share": trainable / base, "initial_change": run["initial_change"],
        "zero_shot_accuracy": before, "accuracy": after, "first_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-10:]) / len(losses[-10:]) if losses else None, "losses": losses,
        "evaluations": curve, "setup_seconds": setup, "training_seconds": training, "wall_seconds": wall,
        "tokens_per_second": tokens / training if training else 0.0,
        "peak_memory_bytes": peak_memory_bytes(run["device"]),
        "adapter_file": run["adapter_file"], "adapter_bytes": run["adapter_bytes"],
    }  # fmt: skip


def write(result, path):
    """The record as JSON, whole or not at all (first process only: under torchrun every process has one)."""
    if world()[0] == 0:
        with atomic_write(path, "w") as file:
            json.dump(result, file, indent=2)


def one_line(result, path):
    """sentiment, loraxs r=8: test accuracy 0.500 -> 0.840 with 3,072 trainable parameters (0.0025%) in 1m59s; ..."""
    rank = f" r={result['rank']}" if result["rank"] else ""
    line = f"{result['method']}{rank} on {result['task']}: test accuracy {result['zero_shot_accuracy']['test']:.3f} "
    line += f"-> {result['accuracy']['test']:.3f} with {result['trainable_parameters']:,} trainable parameters "
    line += f"({100 * result['trainable_share']:.4g}%) in {human_seconds(result['training_seconds'])}"
    if result["adapter_file"]:
        line += f"; adapter {human_bytes(result['adapter_bytes'])} in {result['adapter_file']}"
    return f"{line}; results in {path} (docs/results.md explains each field)"
