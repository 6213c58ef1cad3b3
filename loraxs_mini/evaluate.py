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

from .tokenizer import END_OF_TEXT, decode, encode


def batches(items, size):
    for start in range(0, len(items), size):
        yield items[start : start + size]


@torch.no_grad()
def label_log_likelihoods(model, examples, labels, batch_size=32):
    """(N, L) tensor: log p(label | prompt) for each example and label."""
    label_tokens = [encode(label) for label in labels]
    # One model input per distinct (prompt + label without its last token): single-token labels share one.
    rows, scored = {}, []  # scored: (example, label, row, position, token)
    for i, example in enumerate(examples):
        for k, tokens in enumerate(label_tokens):
            sequence = tuple(example.prompt_tokens + tokens[:-1])
            row = rows.setdefault(sequence, len(rows))
            for j, token in enumerate(tokens):  # position p predicts the token at p + 1
                scored.append((i, k, row, len(example.prompt_tokens) - 1 + j, token))
    needed = defaultdict(list)
    for entry in scored:
        needed[entry[2]].append(entry)

    scores = torch.zeros(len(examples), len(labels))
    sequences = list(rows)
    for first in range(0, len(sequences), batch_size):
        chunk = sequences[first : first + batch_size]
        inputs = torch.full((len(chunk), max(map(len, chunk))), END_OF_TEXT, dtype=torch.long)
        for r, sequence in enumerate(chunk):
            inputs[r, : len(sequence)] = torch.tensor(sequence)
        hidden = model.hidden_states(inputs.to(next(model.parameters()).device))
        entries = [entry for r in range(len(chunk)) for entry in needed[first + r]]
        at = torch.tensor([[entry[2] - first, entry[3]] for entry in entries])
        log_probs = F.log_softmax(model.lm_head(hidden[at[:, 0], at[:, 1]]).float(), dim=-1).cpu()  # only needed rows
        for (i, k, _, _, token), row_log_probs in zip(entries, log_probs):
            scores[i, k] += row_log_probs[token]
    return scores


@torch.no_grad()
def greedy_answers(model, examples, max_new_tokens, batch_size=32):
    """The greedy completion of each prompt, up to <|endoftext|> (as text)."""
    device = next(model.parameters()).device
    by_length = defaultdict(list)  # prompts of equal length batch without padding
    for i, example in enumerate(examples):
        by_length[len(example.prompt_tokens)].append(i)
    answers = [None] * len(examples)
    for indices in by_length.values():
        for chunk in batches(indices, batch_size):
            prompts = torch.tensor([examples[i].prompt_tokens for i in chunk], device=device)
            generated = model.generate(prompts, max_new_tokens, stop_token=END_OF_TEXT)[:, prompts.shape[1] :]
            for i, tokens in zip(chunk, generated.tolist()):
                answers[i] = decode(tokens[: tokens.index(END_OF_TEXT)] if END_OF_TEXT in tokens else tokens)
    return answers


def count_correct(model, task, examples, batch_size=32):
    """How many of `examples` the model gets right, scored the task's way."""
    if not examples:
        return 0
    was_training = model.training
    model.eval()
    try:
        if task.labels:
            predicted = label_log_likelihoods(model, examples, task.labels, batch_size).argmax(dim=1)
            return sum(task.labels[k] == example.completion for k, example in zip(predicted.tolist(), examples))
        longest = max(len(example.completion_tokens) for example in task.splits["train"])
        answers = greedy_answers(model, examples, max_new_tokens=longest + 2, batch_size=batch_size)
        return sum(answer == example.completion for answer, example in zip(answers, examples))
    finally:
        model.train(was_training)
