"""
The two methods every comparison needs beside the adapters: none and full.

    none   the pretrained model as it is, scored zero-shot: what fine-tuning starts from
    full   every weight of the model trains: what the adapters try to match with far fewer numbers

They add nothing to the model, so they have no rank, alpha or targets; they are methods
all the same, listed in the registry with the adapters, so that train.py and the
comparison treat all of them alike.
"""

from .base import Method


class ZeroShot(Method):
    name, display_name = "none", "zero-shot"
    trains = False


class FullFineTuning(Method):
    name, display_name = "full", "full fine-tuning"
    trains_base = True
    learning_rates = {None: 3e-5}  # the low edge of its grid (docs/defaults.md)
