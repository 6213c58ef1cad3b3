"""
Exercises for lesson 06: fine-tuning.

Complete each function where it says TODO, then check your work:

    python lessons/check.py 06
"""

IGNORE_INDEX = -100  # a target the loss skips


def completion_targets(prompt_tokens, completion_tokens, end_token):
    """
    The model reads prompt + completion + [end_token], shifted by one: return (inputs, targets),
    two lists of the same length. inputs is every token but the last; targets[t] is the token after
    inputs[t], except that positions whose next token is still part of the prompt get IGNORE_INDEX.
    Example: prompt [5, 6, 7], completion [8, 9], end 0 -> inputs [5, 6, 7, 8, 9],
    targets [-100, -100, 8, 9, 0].
    """
    raise NotImplementedError("TODO")


def pick_label(logits, label_tokens):
    """
    logits (N, V) are the model's next-token scores right after each of N prompts; label_tokens
    holds the one token of each label (e.g. [" positive", " negative"] as token ids). Return a
    tensor of N label indices: for each prompt, the label the model finds most likely.
    """
    raise NotImplementedError("TODO")


def numbers_with_gradient(model, inputs, targets):
    """
    An experiment: where does the gradient go?

    Run one forward pass on (inputs, targets) (`_, loss = model(inputs, targets)`) and one
    backward pass, then return how many numbers (not tensors) of the model received a gradient.
    Try it on a model with LoRA-XS adapters and on one with method "full". Predict first: is it
    the method's trainable count, or the whole model?
    """
    raise NotImplementedError("TODO")
