"""Reference solutions for lesson 06. Try lessons/exercises/ex06_finetune_and_compare.py first!"""

IGNORE_INDEX = -100


def completion_targets(prompt_tokens, completion_tokens, end_token):
    tokens = prompt_tokens + completion_tokens + [end_token]
    inputs = tokens[:-1]
    targets = [IGNORE_INDEX] * (len(prompt_tokens) - 1) + completion_tokens + [end_token]
    return inputs, targets


def pick_label(logits, label_tokens):
    return logits[:, label_tokens].argmax(dim=1)


def numbers_with_gradient(model, inputs, targets):
    _, loss = model(inputs, targets)
    loss.backward()  # frozen tensors (requires_grad=False) keep .grad = None
    return sum(parameter.numel() for parameter in model.parameters() if parameter.grad is not None)
