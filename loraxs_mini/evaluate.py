"""
Scoring a model on a task: classification by label likelihood, or exact match.

Classification never generates text. For each label it asks how likely the
model finds that label after the prompt,

    log p(label | prompt) = Σ_j log p(label_j | prompt, label_<j)

and answers with the most likely label. When every label is one token
(" positive" / " negative"), all labels are read off the same forward pass.

Exact match decodes greedily until <|endoftext|> and compares the text with
the completion, character for character.
"""

from collections import defaultdict

import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from .data import make_batch
from .device import autocast, world
from .tokenizer import END_OF_TEXT, decode, encode

# The base model's zero-shot accuracy stands for every run whose adapters, as added, move no log-probability by
# more than this. LoRA and VeRA move none (B = 0, b = 0); LoRA-XS's R ~ N(0, 1e-5²) moved the small pretrained
# model's by at most 1.4e-3 at r = 8 and 3.4e-3 at r = 32 in docs/comparison.md's sweep. A run beyond it scores its own.
ZERO_SHOT_TOLERANCE = 2e-2


def batches(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def padded(sequences, device):
    """(b, T) tensor of token lists of different lengths, filled on the right with <|endoftext|>."""
    inputs = torch.full((len(sequences), max(map(len, sequences))), END_OF_TEXT, dtype=torch.long)
    for row, sequence in enumerate(sequences):
        inputs[row, : len(sequence)] = torch.tensor(sequence)
    return inputs.to(device)


@torch.no_grad()
def label_log_likelihoods(model, examples, labels, batch_size=32, progress=False):
    """
    (N, L) tensor: log p(label | prompt) for each example and label.

    The model reads prompt + label[:-1]; the position before each label token
    predicts it. Only those positions go through the head (V = 50,257 columns
    each), not the whole sequence.

    When one label begins with another's tokens (" 4" and " 4.5"), the labels
    alone cannot be compared: p(" 4" ".5") = p(" 4") p(".5" | " 4") can never
    beat p(" 4"), so the shorter would always win. Then every label is scored
    as the whole completion the model was trained on, label and the closing
    <|endoftext|>: p(" 4" <|endoftext|>) against p(" 4" ".5" <|endoftext|>).
    Labels of which none begins another (the shipped tasks' " positive" and
    " negative") are compared by their own tokens, which is also what the one-pass
    aside below needs.
    """
    label_tokens = [encode(label) for label in labels]
    if any(a != b and b[: len(a)] == a for a in label_tokens for b in label_tokens):  # one label begins another
        label_tokens = [tokens + [END_OF_TEXT] for tokens in label_tokens]
    if all(len(tokens) == 1 for tokens in label_tokens):
        return single_token_label_log_likelihoods(model, examples, label_tokens, batch_size, progress)
    device = next(model.parameters()).device
    scores = torch.zeros(len(examples), len(labels))
    for k, tokens in enumerate(label_tokens):
        for first in tqdm(range(0, len(examples), batch_size), desc=f"scoring {labels[k]!r}", disable=not progress,
                          leave=False, dynamic_ncols=True):  # fmt: skip
            chunk = examples[first : first + batch_size]
            hidden = model.hidden_states(padded([example.prompt_tokens + tokens[:-1] for example in chunk], device))
            for row, example in enumerate(chunk):  # hidden: (b, T, C)
                positions = len(example.prompt_tokens) - 1 + torch.arange(len(tokens))  # those predicting the label
                log_probs = F.log_softmax(model.lm_head(hidden[row, positions]).float(), dim=-1)  # (len(label), V)
                scores[first + row, k] = log_probs[torch.arange(len(tokens)), tokens].sum()
    return scores


@torch.no_grad()
def single_token_label_log_likelihoods(model, examples, label_tokens, batch_size=32, progress=False):
    """
    An aside, for speed: when every label is one token (" positive", " negative"),
    every label reads the same input, the prompt, so one pass scores them all.
    The same numbers as the loop above in half the time with two labels
    (sentiment's 600 validation and test examples: 5.4 s instead of 11.6 s on a
    2-core CPU), and scoring runs three times in every training run.
    """
    label_ids = [tokens[0] for tokens in label_tokens]
    device = next(model.parameters()).device
    scores = torch.zeros(len(examples), len(label_ids))
    for first in tqdm(range(0, len(examples), batch_size), desc="scoring", disable=not progress, leave=False,
                      dynamic_ncols=True):  # fmt: skip
        chunk = examples[first : first + batch_size]
        hidden = model.hidden_states(padded([example.prompt_tokens for example in chunk], device))  # (b, T, C)
        last = torch.tensor([len(example.prompt_tokens) - 1 for example in chunk], device=device)
        log_probs = F.log_softmax(model.lm_head(hidden[torch.arange(len(chunk)), last]).float(), dim=-1)  # (b, V)
        scores[first : first + len(chunk)] = log_probs[:, label_ids].cpu()  # (b, L)
    return scores


@torch.no_grad()
def greedy_answers(model, examples, max_new_tokens, batch_size=32, progress=False):
    """The greedy completion of each prompt, up to <|endoftext|> (as text)."""
    device = next(model.parameters()).device
    by_length = defaultdict(list)  # prompts of equal length batch without padding
    for i, example in enumerate(examples):
        by_length[len(example.prompt_tokens)].append(i)
    chunks = [chunk for indices in by_length.values() for chunk in batches(indices, batch_size)]
    answers = [None] * len(examples)
    for chunk in tqdm(chunks, desc="generating", disable=not progress, leave=False, dynamic_ncols=True):
        prompts = torch.tensor([examples[i].prompt_tokens for i in chunk], device=device)
        generated = model.generate(prompts, max_new_tokens, stop_token=END_OF_TEXT)[:, prompts.shape[1] :]
        for i, tokens in zip(chunk, generated.tolist()):
            answers[i] = decode(tokens[: tokens.index(END_OF_TEXT)] if END_OF_TEXT in tokens else tokens)
    return answers


def accuracy(model, task, split, device="cpu", batch_size=32, progress=False):
    """
    The share of `split` the model gets right, scored the task's way. Under
    torchrun each process scores its own slice (p, p + N, ...) and the counts are
    summed across processes.
    """
    process, world_size = world()
    model = getattr(model, "module", model)  # the model inside a DDP wrapper
    examples = task.splits[split]
    mine = examples[process::world_size]
    was_training = model.training
    model.eval()
    try:
        with autocast(device):
            if task.labels:
                scores = label_log_likelihoods(model, mine, task.labels, batch_size, progress and process == 0)
                answers = [task.labels[k] for k in scores.argmax(dim=1).tolist()]
            else:
                longest = max(len(example.completion_tokens) for example in task.splits["train"])
                answers = greedy_answers(model, mine, longest + 2, batch_size, progress and process == 0)
    finally:
        model.train(was_training)
    correct = torch.tensor(float(sum(answer == example.completion for answer, example in zip(answers, mine))))
    if world_size > 1:
        correct = correct.to(device)
        dist.all_reduce(correct)
    return correct.item() / len(examples)


def scores(model, task, device="cpu"):
    """{validation, test}: the accuracy on both held-out splits, with a progress bar."""
    return {split: accuracy(model, task, split, device, progress=True) for split in ("validation", "test")}


def starting_scores(model, base, task, zero_shot, device="cpu"):
    """
    (scores, change): what a run starts from. The adapters, as added, moved the model's log-probabilities on 16
    validation examples by at most `change`; within ZERO_SHOT_TOLERANCE the base model's `zero_shot` scores stand
    for the run's (scored once per command), beyond it the run scores its own start.
    """
    change = initial_change(model, base, make_batch(task.splits["validation"][:16], device)[0])
    return (zero_shot if change <= ZERO_SHOT_TOLERANCE else scores(model, task, device)), change


@torch.no_grad()
def initial_change(model, base, probe):
    """The largest change of any log-probability on the probe batch: how far the adapters moved the model at start."""
    model.eval()
    before, after = (F.log_softmax(m(probe)[0].float(), dim=-1) for m in (base, model))
    return (after - before).abs().max().item()
