"""
The checks of lesson 06 (fine-tuning): python lessons/check.py 06

Each check_<name> runs your function <name> from ex06_finetune_and_compare.py on fresh
inputs and compares it with an independent answer; its docstring is the hint
shown after a wrong attempt.
"""

import torch

from check import tiny_model
from loraxs_mini.adapters import METHODS, add_adapters, parameter_counts
from loraxs_mini.data import Example, make_batch
from loraxs_mini.evaluate import label_log_likelihoods


def check_completion_targets(module):
    """write the whole token list first and shift it by one; then decide which targets belong to the prompt"""
    for prompt, completion in (([5, 6, 7], [8, 9]), ([1], [2]), ([3, 4, 5, 6], [7])):
        inputs, targets = module.completion_targets(prompt, completion, 50256)
        expected_inputs, expected_targets = make_batch([Example("", "", prompt, completion)])
        assert list(inputs) == expected_inputs[0].tolist(), f"inputs for {prompt} + {completion} are wrong"
        assert list(targets) == expected_targets[0].tolist(), f"targets for {prompt} + {completion} are wrong"


def check_pick_label(module):
    """only the label tokens' columns of the logits matter; compare them within each row"""
    model = tiny_model().eval()
    prompts = [torch.randint(0, 50257, (6,)).tolist() for _ in range(16)]
    labels, label_tokens = [" yes", " no", " maybe"], [3763, 645, 3863]
    examples = [Example("", "", prompt, [3763]) for prompt in prompts]
    with torch.no_grad():
        logits = model(torch.tensor(prompts))[0][:, -1]  # (N, V): the next-token scores after each prompt
        expected = label_log_likelihoods(model, examples, labels).argmax(dim=1)
    got = module.pick_label(logits, label_tokens)
    assert torch.equal(torch.as_tensor(got), expected), "not the most likely label for every prompt"


def check_numbers_with_gradient(module):
    """which attribute does backward() fill in? Look at a frozen and at a trainable parameter after it"""
    examples = [Example("", "", [5, 6, 7], [8, 9]), Example("", "", [1, 2], [3])]
    inputs, targets = make_batch(examples)
    counts = []
    for method in [name for name, method in METHODS.items() if method.trains]:
        model = add_adapters(tiny_model(), method, rank=4, first_step=(inputs, targets, 1e-3))  # LoRA-SB starts there
        measured = module.numbers_with_gradient(model, inputs, targets)
        # What it measures: backward reaches the trainable numbers only, exactly the method's count.
        assert measured == parameter_counts(model)[0], (
            f"{method}: {measured:,}, expected {parameter_counts(model)[0]:,}"
        )
        counts.append(f"{method} {measured:,}")
    return "numbers with a gradient, each the method's trainable count: " + ", ".join(counts)
