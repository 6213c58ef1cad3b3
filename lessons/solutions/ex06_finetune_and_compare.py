"""Reference solutions for lesson 06. Try lessons/exercises/ex06_finetune_and_compare.py first!"""

IGNORE_INDEX = -100


def completion_targets(prompt_tokens, completion_tokens, end_token):
    tokens = prompt_tokens + completion_tokens + [end_token]
    inputs = tokens[:-1]
    targets = [IGNORE_INDEX] * (len(prompt_tokens) - 1) + completion_tokens + [end_token]
    return inputs, targets


def learning_rate_at(step, steps, peak):
    warmup = max(1, steps // 10)
    if step < warmup:
        return peak * (step + 1) / warmup
    return peak * (steps - step) / max(1, steps - warmup)


def pick_label(logits, label_tokens):
    return logits[:, label_tokens].argmax(dim=1)
