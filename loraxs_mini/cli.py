"""
What the command lines share, and the plan of a train.py command.

- `ArgumentParser`: argparse whose usage mistakes are one `error:` line and
  exit status 1, like every other LoraxsError (argparse alone exits with 2).
- `parse_args`: train.py's flags, with argparse types that refuse a number
  that is not positive and finite (`positive`).
- `plan_runs(args)`: one train.py command is many runs, methods x ranks x
  seeds. Each becomes an AdapterConfig here, so every setting is checked (by
  AdapterConfig, the one place adapter settings are checked) before anything
  loads or trains.
- `prepare_runs(...)`: every check that needs the model and the task, and what
  the runs share (their names, the learning curves' steps, one SVD cache).

The grammar of --rank and --alpha:

    8  or  4,8                      the same values for every method
    lora=8,vera=256                 one list per method named
    lora=1,4,16 loraxs=2,8,32       the same, as separate words (a sweep)
"""

import argparse
import difflib
import math
import warnings
from pathlib import Path
from typing import NamedTuple

from .adapters import (
    DEFAULT_METHOD,
    METHODS,
    SVD_METHODS,
    AdapterConfig,
    SVDCache,
    adapter_methods,
    check_adapters,
    parameter_counts,
)
from .adapters.config import method_settings
from .data import check_fits
from .device import say, world
from .errors import LoraxsError
from .files import check_writable_folder
from .measure import human_bytes
from .recipe import DEFAULT_BATCH_SIZE, DEFAULT_STEPS

MAX_STEPS = 10_000_000  # far beyond any class; the data order for every step is drawn up front

MAX_SEEDS = 100  # runs per configuration: a billion seeds would be a billion planned runs


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are LoraxsErrors like any other: one error: line, exit status 1 (argparse: 2)."""

    def error(self, message):
        raise LoraxsError(f"{message} (--help lists every flag)")


def parse_args(argv=None):
    """train.py's flags."""
    methods = ", ".join(method.display_name for method in METHODS.values() if method.default_rank)
    parser = ArgumentParser(description=f"Fine-tune GPT-2 with {methods} or fully; compare them.")
    add = parser.add_argument
    add("--method", default=DEFAULT_METHOD, help=f"one of {', '.join(METHODS)}, a comma list, or 'all'")
    defaults = ", ".join(f"{name} {method.default_rank}" for name, method in METHODS.items() if method.default_rank)
    add("--rank", nargs="+", help=f"adapter rank(s), for every method (8, or 4,8) or each (lora=8,vera=256, or "
        f"lora=1,4,16 loraxs=2,8,32 for a sweep); default {defaults}")  # fmt: skip
    scaled = [method for method in METHODS.values() if method.has_alpha]
    alphas = ", ".join(f"{m.name} {'r' if m.default_alpha(3) == 3 else f'{m.default_alpha(3):g}'}" for m in scaled)
    add(
        "--alpha",
        help=f"the scale of {' and '.join(m.display_name for m in scaled)}, update x alpha/r, for all or "
        f"each (lora=16); default {alphas}",
    )
    add("--targets", help="comma list of layers to adapt (default: all four per block; attn.c_attn.q, .k, .v adapt "
        "the thirds of the fused c_attn separately)")  # fmt: skip
    for name, owners in method_settings().items():  # each method's own settings, as its class declares them
        setting = owners[0].settings[name]
        said = "; ".join(
            f"{m.display_name}: {m.settings[name].help} (default {m.settings[name].default})" for m in owners
        )
        add(f"--{name.replace('_', '-')}", type=type(setting.default), choices=setting.choices, help=said)
    add("--dropout", type=float, help="dropout on the adapter input (default 0)")
    add("--svd", choices=SVD_METHODS, help="how the methods built from W's SVD compute it (default gram)")
    add("--task", default="sentiment", help="a task in data/ (sentiment, plural)")
    add("--data", help="your own data: a .jsonl file or a folder of train/test.jsonl")
    add("--init-from", default="gpt2", help="gpt2 / gpt2-medium / gpt2-large / gpt2-xl, a checkpoint folder or "
        ".safetensors file, or random:<preset or folder> for random weights of that shape (default gpt2)")  # fmt: skip
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=positive(int, MAX_STEPS, "; a class run needs hundreds"),
                        help=f"optimizer steps (default {DEFAULT_STEPS})")  # fmt: skip
    budget.add_argument("--epochs", type=positive(float), help="passes over the training split, instead of steps")
    add("--eval-every", type=at_least_zero, help="score validation accuracy every N steps, for the learning curves "
        "(default: 6 points in a comparison, none in a single run; 0: none)")  # fmt: skip
    add(
        "--lr",
        type=positive(float, 1, ": Adam would move every weight by about that much per step"),
        help="learning rate (default: per method and rank, docs/defaults.md)",
    )
    add("--batch-size", type=positive(int), default=DEFAULT_BATCH_SIZE, help="examples per step, all devices")
    add("--seed", type=int, default=0, help="the seed of the adapters' start and the data order")
    add("--seeds", help="repeat every run with N seeds (--seed, --seed + 1, ...) or with these (0,3,7)")
    add("--device", default="auto", help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps")
    add("--compile", action="store_true", help="torch.compile the model for training")
    add("--out", default="out", help="results folder (default out/)")
    add("--no-save", action="store_true", help="do not write adapter files")
    add("--save-frozen", action="store_true", help="store the frozen tensors in adapter files too (exact anywhere)")
    return parser.parse_args(argv)


def at_least_zero(text):
    """An argparse type: a whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def positive(kind, at_most=None, why=""):
    """An argparse type: a positive, finite `kind` (int or float), at most `at_most`."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
        if not (value > 0 and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
        if at_most is not None and value > at_most:
            raise argparse.ArgumentTypeError(f"{value:g} is more than {at_most:,}{why}")
        return value

    return parse


def chosen_methods(text):
    """--method: names from the registry, a comma list of them, or 'all'."""
    methods = list(METHODS) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        close = difflib.get_close_matches((unknown or [text])[0].lower().replace("-", ""), METHODS, n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise LoraxsError(
            f"unknown method {', '.join(unknown) or text!r}{hint}; choose from {', '.join(METHODS)} or 'all'"
        )
    twice = sorted({m for m in methods if methods.count(m) > 1})
    if twice:
        raise LoraxsError(f"--method lists {', '.join(twice)} twice; name each method once")
    return methods


def whole_numbers(items, flag):
    try:
        return [int(item) for item in items]
    except ValueError:
        raise LoraxsError(f"{flag} {','.join(items)}: give whole numbers, such as {flag} 8 or {flag} 2,4,8") from None


def per_method(words, flag, methods, chosen=None):
    """
    A flag's values for each method, as lists of strings (the grammar at the top). A method named in them must be
    one of `methods` (those the flag applies to) and, if given, of `chosen` (--method's): no value goes unused.
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
        if chosen is not None and method not in chosen:
            raise LoraxsError(
                f"{flag} {text}: {method} is not in --method, so its value would go unused; add it to --method or "
                "leave the value out"
            )
    return values


def chosen_seeds(seeds, seed):
    """--seeds N: N seeds from --seed on; --seeds 0,3,7: these; neither: --seed alone."""
    if seeds is None:
        return [seed]
    chosen = whole_numbers([item.strip() for item in seeds.split(",")], "--seeds")
    if len(chosen) == 1:
        if not 1 <= chosen[0] <= MAX_SEEDS:
            raise LoraxsError(f"--seeds must be between 1 and {MAX_SEEDS}, got {chosen[0]}; 3 to 5 show the spread")
        chosen = list(range(seed, seed + chosen[0]))
    if len(set(chosen)) < len(chosen):
        raise LoraxsError(f"--seeds {seeds}: give different seeds")
    return chosen


def plan_runs(args):
    """Every run of the command, one AdapterConfig each, all checked here, before anything loads."""
    methods = chosen_methods(args.method)
    ranks = per_method(args.rank, "--rank", adapter_methods(), methods)
    ranks = {method: whole_numbers(items, "--rank") for method, items in ranks.items()}
    for method, values in ranks.items():
        if len(set(values)) < len(values):
            raise LoraxsError(f"--rank: a rank of {method} is listed twice")
    scaled = [name for name in adapter_methods() if METHODS[name].has_alpha]  # VeRA and TinyLoRA have no alpha
    alphas = per_method(args.alpha, "--alpha", scaled, methods)
    if any(len(items) > 1 for items in alphas.values()):
        raise LoraxsError(f"--alpha {args.alpha}: one alpha per method")
    try:
        alphas = {method: float(items[0]) for method, items in alphas.items()}
    except ValueError:
        raise LoraxsError(f"--alpha {args.alpha}: give numbers") from None
    # A flag goes to the methods of --method that use it, and is refused when none does: a method's own settings
    # (TinyLoRA's --u) to their owners, --alpha to the methods whose __init__ takes it, --svd to those built from
    # W's SVD, --rank, --targets and --dropout to the methods that add adapters.
    users = {name: lambda m, name=name: name in m.settings for name in method_settings()}
    users |= {"alpha": lambda m: m.has_alpha, "svd": lambda m: m.uses_svd}
    users |= dict.fromkeys(("rank", "targets", "dropout"), lambda m: m.default_rank is not None)
    for name, uses in users.items():
        if getattr(args, name) is not None and not any(uses(METHODS[method]) for method in methods):
            owners = [m.name for m in METHODS.values() if uses(m)]
            flag, one = f"--{name.replace('_', '-')}", "it" if len(owners) == 1 else "one of them"
            raise LoraxsError(f"{flag} is a setting of {' or '.join(owners)}; add {one} to --method or leave it out")
    own = {name: getattr(args, name) for name in method_settings() if getattr(args, name) is not None}
    targets = args.targets.split(",") if args.targets else None
    seeds = chosen_seeds(args.seeds, args.seed)
    runs = []
    for method in methods:
        settings = {name: value for name, value in own.items() if name in METHODS[method].settings}
        for rank in ranks.get(method, [None]):  # none and full: no rank
            for seed in seeds:
                shared = {"dropout": args.dropout, "svd": args.svd} if METHODS[method].default_rank else {}
                shared = {name: value for name, value in shared.items() if value is not None}  # else the default
                runs.append(AdapterConfig(method, rank, alphas.get(method), targets, seed=seed, **shared, **settings))
    return runs


def training_steps(args, examples, processes):
    """A run's steps: --steps, or --epochs passes over `examples` training examples; the batch size checked too."""
    if args.batch_size < processes:
        raise LoraxsError(f"--batch-size {args.batch_size} is smaller than the {processes} processes; raise it")
    if args.batch_size > examples:
        raise LoraxsError(
            f"--batch-size {args.batch_size} is more than the {examples} training examples; choose a smaller one"
        )
    steps = math.ceil(args.epochs * examples / args.batch_size) if args.epochs else args.steps or DEFAULT_STEPS
    if steps > MAX_STEPS:
        raise LoraxsError(f"--epochs {args.epochs:g} is more than {MAX_STEPS:,} steps; a class run needs hundreds")
    return steps


def run_name(task_name, adapter, seeded):
    """
    sentiment-loraxs-r8, sentiment-full, sentiment-loraxs-random-r8 (another subspace), or with --seeds
    sentiment-loraxs-r8-seed1: what names a run's files.
    """
    name = f"{task_name}-{adapter.method_class.run_label(adapter)}" + (f"-r{adapter.rank}" if adapter.rank else "")
    return name + (f"-seed{adapter.seed}" if seeded else "")


def check_outputs(out, names, task_name, no_save):
    """
    Before anything loads or trains: the results folder can be made and written, and no file this command will
    write is a folder. A run is never lost to a bad --out after it trained.
    """
    out = Path(out)
    check_writable_folder(out, "--out")
    paths = [out / f"{name}.{suffix}" for name in names for suffix in ("json", "safetensors")]
    paths += [out / f"comparison-{task_name}.{suffix}" for suffix in ("md", "json", "csv", "png")]
    paths += [out / f"curves-{task_name}.png"]
    for path in paths:
        if path.is_dir():
            raise LoraxsError(f"{path} is a folder, but this command writes a file there; move it or change --out")
    if no_save:
        stale = [name for name in names if (out / f"{name}.safetensors").is_file()]
        if stale:
            warnings.warn(f"{out / stale[0]}.safetensors is from an earlier run; with --no-save this run leaves it "
                          "as it is, and its results say no adapter was saved", stacklevel=2)  # fmt: skip


class Plan(NamedTuple):
    """What the runs of one command share, once the model and the task are known."""

    names: list  # each run's name: <task>-<method>[-<setting>][-r<rank>][-seed<s>], what its files are called
    eval_every: int  # score validation every so many steps, for the learning curves (0: never)
    svd_cache: SVDCache | None  # each matrix's SVD, computed once for the largest rank that needs it


def prepare_runs(args, runs, base, task, steps):
    """
    Before anything trains: every example against the model's context, every rank against every target layer,
    the output files; then what the runs share. A mistake is one error line with nothing trained or written.
    """
    check_fits(task, base.config.block_size)
    for adapter in runs:
        check_adapters(base, adapter)
    names = [run_name(task.name, adapter, args.seeds is not None) for adapter in runs]
    if world()[0] == 0:
        check_outputs(Path(args.out), names, task.name, args.no_save)
    if any(adapter.method_class.trains_base for adapter in runs) and not args.no_save:  # said before it happens
        size = human_bytes(4 * parameter_counts(base)[1])
        say(f"note: full fine-tuning saves every weight, {size} for each of its runs (--no-save saves no file)")
    # The learning curves: in a comparison, validation accuracy at 6 points of the budget unless --eval-every says.
    eval_every = args.eval_every if args.eval_every is not None else (max(1, steps // 6) if len(runs) > 1 else 0)
    svd_ranks = [adapter.rank for adapter in runs if adapter.method_class.uses_svd]
    return Plan(names, eval_every, SVDCache(max(svd_ranks)) if svd_ranks else None)
