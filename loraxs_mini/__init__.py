"""
loraxs-mini: parameter-efficient fine-tuning of GPT-2, from scratch, for reading.

    model.py             a compact GPT-2
    pretrained.py        loading and saving Hugging Face GPT-2 checkpoints
    safetensors_file.py  the checkpoint file format, read and written by hand
    adapters/            LoRA, VeRA, LoRA-XS and TinyLoRA, side by side
    export.py            adapters to Hugging Face PEFT's format and back
"""

from .errors import LoraxsError
from .model import GPT, GPTConfig
from .pretrained import load_pretrained, save_pretrained

__all__ = ["GPT", "GPTConfig", "LoraxsError", "load_pretrained", "save_pretrained"]
