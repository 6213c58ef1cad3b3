"""
Prompt-completion data: the toy tasks in data/, or your own.

Each example is one JSON line, {"prompt": ..., "completion": ...}. The model
reads prompt + completion + <|endoftext|> and learns to predict only the
completion and the end-of-text token that closes it:

    tokens    p1  p2  p3  c1  c2  EOT
    input     p1  p2  p3  c1  c2
    target     -   -  c1  c2  EOT         (- = IGNORE_INDEX: the prompt is context, not a lesson)

A task is scored one of two ways, chosen from its data:
    classification  every completion is one of a few labels (" positive" / " negative"):
                    the answer is the label the model finds most likely, no text is generated
    exact match     anything else: greedy decoding until <|endoftext|>, right only if the
                    generated text equals the completion exactly
"""

import json
import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import LoraxsError
from .model import IGNORE_INDEX
from .tokenizer import END_OF_TEXT, encode

SPLITS = ("train", "validation", "test")
MAX_LABELS = 10  # at most this many distinct completions: a classification task


@dataclass
class Example:
    prompt: str
    completion: str
    prompt_tokens: list
    completion_tokens: list
    source: str = ""  # "file, line N": where to look when something is wrong with it

    def __len__(self):  # tokens the model reads: prompt + completion (the EOT is only a target)
        return len(self.prompt_tokens) + len(self.completion_tokens)


@dataclass
class Task:
    name: str
    splits: dict  # split name -> list of Example
    labels: list  # the classification labels, or None for exact match

    def describe(self):
        sizes = ", ".join(f"{len(self.splits[split])} {split}" for split in SPLITS)
        how = f"classification among {self.labels}" if self.labels else "exact match of the greedy answer"
        return f"task {self.name}: {sizes} examples; scored by {how}"


MAX_DATA_BYTES = 256 * 2**20  # a split of a toy task is kilobytes; beyond this a file is not what was meant


def read_jsonl(path):
    """Examples from a JSON Lines file; a malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():  # a pipe would wait forever, a device (/dev/zero) never end
        raise LoraxsError(f"{path} is not a regular file; give a .jsonl file (or a folder of them) as --data")
    if path.stat().st_size > MAX_DATA_BYTES:
        size = f"{path.stat().st_size / 2**20:,.0f} MiB"
        raise LoraxsError(f"{path} is {size}, more than the {MAX_DATA_BYTES // 2**20} MiB a data file may hold here")
    try:
        # utf-8-sig: a byte-order mark at the start (some editors write one) is not part of the first record.
        # split("\n"), not splitlines(): JSON Lines ends records at \n only, and splitlines() would also cut at
        # U+2028 or U+0085, which JSON strings may hold as they are.
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError) as error:
        raise LoraxsError(f"cannot read {path}: {error}") from None
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise LoraxsError(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        except RecursionError:
            raise LoraxsError(f"{path}, line {number}: nested too deeply to be a prompt and a completion") from None
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("prompt"), str)
            or not isinstance(record.get("completion"), str)
        ):
            raise LoraxsError(
                f'{path}, line {number}: expected {{"prompt": "...", "completion": "..."}} with text values'
            )
        for field in ("prompt", "completion"):  # scoring reads the prompt's last token; training, a completion
            if not record[field]:
                raise LoraxsError(f"{path}, line {number}: the {field} is empty")
        prompt, completion = record["prompt"], record["completion"]
        examples.append(Example(prompt, completion, encode(prompt), encode(completion), f"{path}, line {number}"))
    if not examples:
        raise LoraxsError(f"{path} holds no examples")
    return examples


def shipped_tasks():
    """
    Where the toy tasks are when the caller does not say: the data/ folder (one holding a task) of the current folder
    or the nearest folder above it, so that the repository's data/ is found from its top, from lessons/ or below.
    """
    for folder in (Path.cwd(), *Path.cwd().parents):
        if any((folder / "data").glob("*/train.jsonl")):
            return folder / "data"
    raise LoraxsError(
        f"the toy tasks live in the repository's data/ folder, and none was found in {Path.cwd()} or above it. Run "
        "from inside a clone of the repository, or give your own data: a .jsonl file or a folder of them"
    )


def task_names(tasks):
    """The tasks in a folder: every subfolder with a train.jsonl."""
    return sorted(folder.name for folder in Path(tasks).iterdir() if (folder / "train.jsonl").is_file())


def load_task(name_or_path, tasks=None):
    """
    A task by name ("sentiment", a folder of `tasks`: by default the shipped ones, shipped_tasks()), a folder with
    train.jsonl and test.jsonl (validation.jsonl optional: else a tenth of train, set aside), or a single .jsonl
    file (split 80 / 10 / 10 in a fixed shuffle).
    """
    source = Path(name_or_path)
    if not source.exists():
        tasks = shipped_tasks() if tasks is None else Path(tasks)
        if not tasks.is_dir():
            raise LoraxsError(f"no task or data file {str(name_or_path)!r}, and no tasks folder {tasks}")
        if not (tasks / str(name_or_path)).is_dir():
            raise LoraxsError(
                f"no task or data file {str(name_or_path)!r}: use a shipped task ({', '.join(task_names(tasks))}), "
                "a folder with train.jsonl and test.jsonl, or one .jsonl file"
            )
        source = tasks / str(name_or_path)
    if source.is_dir():
        missing = [f"{split}.jsonl" for split in ("train", "test") if not (source / f"{split}.jsonl").is_file()]
        if missing:
            raise LoraxsError(f"the data folder {source} has no {' or '.join(missing)}")
        splits = {split: read_jsonl(source / f"{split}.jsonl") for split in ("train", "test")}
        if (source / "validation.jsonl").is_file():
            splits["validation"] = read_jsonl(source / "validation.jsonl")
        else:
            splits["train"], splits["validation"] = set_aside(splits["train"], 0.1)
    else:
        rest, test = set_aside(read_jsonl(source), 0.1)
        train, validation = set_aside(rest, 1 / 9)
        splits = {"train": train, "validation": validation, "test": test}
    for split in SPLITS:
        if not splits[split]:
            raise LoraxsError(f"{source}: the {split} split is empty; it needs more examples")
    warn_about_seen_examples(splits)
    return Task(source.name.removesuffix(".jsonl"), {split: splits[split] for split in SPLITS}, find_labels(splits))


def set_aside(examples, fraction):
    """(kept, set aside): a fixed shuffle, so every run sets aside the same examples."""
    shuffled = examples[:]
    random.Random(0).shuffle(shuffled)
    count = max(1, round(len(shuffled) * fraction)) if len(shuffled) > 1 else 0
    return shuffled[count:], shuffled[:count]


def warn_about_seen_examples(splits):
    """One warning for each held-out split that repeats training examples: on those, accuracy measures memory."""
    seen = {(example.prompt, example.completion) for example in splits["train"]}
    for split in ("validation", "test"):
        repeated = [example for example in splits[split] if (example.prompt, example.completion) in seen]
        if repeated:
            warnings.warn(
                f"{len(repeated)} of the {len(splits[split])} {split} examples are also training examples (first: "
                f"{repeated[0].source}); on those, accuracy measures what the model memorised, not what it learned",
                stacklevel=3,
            )


def find_labels(splits):
    """Classification labels if every completion is one of a few seen in training, else None."""
    labels = sorted({example.completion for example in splits["train"]})
    others = {example.completion for split in ("validation", "test") for example in splits[split]}
    return labels if 2 <= len(labels) <= MAX_LABELS and others <= set(labels) else None


def check_fits(task, block_size):
    """An example longer than the model's context is an error, never a silent crop."""
    for examples in task.splits.values():
        for example in examples:
            if len(example) > block_size:
                raise LoraxsError(
                    f"{example.source}: this example has {len(example)} tokens, more than the model's context "
                    f"of {block_size}; shorten it or use a model with a longer context"
                )


def make_batch(examples, device="cpu"):
    """
    Right-padded (inputs, targets), each (B, T). Only completion tokens and the
    closing EOT are targets; padding reads as EOT and is never a target.
    """
    sequences = [example.prompt_tokens + example.completion_tokens + [END_OF_TEXT] for example in examples]
    T = max(len(sequence) for sequence in sequences) - 1
    inputs = torch.full((len(examples), T), END_OF_TEXT, dtype=torch.long)
    targets = torch.full((len(examples), T), IGNORE_INDEX, dtype=torch.long)
    for row, (example, sequence) in enumerate(zip(examples, sequences)):
        inputs[row, : len(sequence) - 1] = torch.tensor(sequence[:-1])
        start = len(example.prompt_tokens) - 1  # the position that predicts the first completion token
        targets[row, start : len(sequence) - 1] = torch.tensor(sequence[len(example.prompt_tokens) :])
    return inputs.to(device), targets.to(device)
