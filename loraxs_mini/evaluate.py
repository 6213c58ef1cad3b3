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
import torch.nn.functional as F
from tqdm import tqdm

from .tokenizer import END_OF_TEXT, decode, encode


def batches(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def label_log_likelihoods(model, examples, labels, batch_size=32, progress=False):
    """
    (N, L) tensor: log p(label | prompt) for each example and label.

    The model reads prompt + label[:-1], and the label's tokens are read off
    its predictions at the last len(label) positions. When labels are single
    tokens, every label of an example reads the same input (the prompt), so
    each distinct input is run once and only the rows needed go through the head.
    """
    label_tokens = [encode(label) for label in labels]
    readers = defaultdict(list)  # model input -> the (example, label) pairs that read their score from it
    for i, example in enumerate(examples):
        for k, tokens in enumerate(label_tokens):
            readers[tuple(example.prompt_tokens + tokens[:-1])].append((i, k))

    scores = torch.zeros(len(examples), len(labels))
    device = next(model.parameters()).device
    chunks = list(batches(list(readers), batch_size))
    for chunk in tqdm(chunks, desc="scoring", disable=not progress, leave=False, dynamic_ncols=True):
        inputs = torch.full((len(chunk), max(map(len, chunk))), END_OF_TEXT, dtype=torch.long)
        for row, sequence in enumerate(chunk):
            inputs[row, : len(sequence)] = torch.tensor(sequence)
        hidden = model.hidden_states(inputs.to(device))  # (b, T, C)
        for row, sequence in enumerate(chunk):
            pairs = readers[sequence]
            start = min(len(examples[i].prompt_tokens) for i, _ in pairs) - 1  # first position that predicts a label
            log_probs = F.log_softmax(model.lm_head(hidden[row, start : len(sequence)]).float(), dim=-1).cpu()
            for i, k in pairs:
                tokens = label_tokens[k]
                first = len(examples[i].prompt_tokens) - 1 - start
                scores[i, k] = log_probs[first + torch.arange(len(tokens)), tokens].sum()
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


def count_correct(model, task, examples, batch_size=32, progress=False):
    """How many of `examples` the model gets right, scored the task's way (`progress`: show a bar)."""
    if not examples:
        return 0
    was_training = model.training
    model.eval()
    try:
        if task.labels:
            predicted = label_log_likelihoods(model, examples, task.labels, batch_size, progress).argmax(dim=1)
            return sum(task.labels[k] == example.completion for k, example in zip(predicted.tolist(), examples))
        longest = max(len(example.completion_tokens) for example in task.splits["train"])
        answers = greedy_answers(model, examples, max_new_tokens=longest + 2, batch_size=batch_size, progress=progress)
        return sum(answer == example.completion for answer, example in zip(answers, examples))
    finally:
        model.train(was_training)
