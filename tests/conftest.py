"""Shared fixtures: tiny models, the optional ../shared assets, and a private download cache."""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from loraxs_mini import GPT, GPTConfig, LoraxsError, tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SMALL_PRETRAINED = SHARED / "pretrained-small-gpt2"
sys.path.insert(0, str(ROOT / "lessons"))  # the exercise checker, lessons/check.py, imports as `check`

if (SHARED / "tiktoken_cache").is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))

requires_small_pretrained = pytest.mark.skipif(
    not SMALL_PRETRAINED.is_dir(), reason="../shared/pretrained-small-gpt2 is not here"
)


def tokenizer_problem():
    """None when GPT-2's tokenizer files are here or can be downloaded (once, 1.5 MB); else what went wrong."""
    try:
        tokenizer.get_tokenizer()
    except LoraxsError as error:
        return str(error)
    return None


NO_TOKENIZER = (
    "GPT-2's tokenizer files (1.5 MB) are not here and cannot be downloaded; point TIKTOKEN_CACHE_DIR at a folder "
    "that holds them to run this test"
)
TOKENIZER_PROBLEM = tokenizer_problem()  # asked once, when the tests are collected
requires_tokenizer = pytest.mark.skipif(TOKENIZER_PROBLEM is not None, reason=NO_TOKENIZER)  # for subprocess tests


# .ci/run sets it: there, the docs and notebook tests must run, so what would skip them fails them instead.
NOTHING_MAY_SKIP = os.environ.get("LORAXS_MINI_NOTHING_MAY_SKIP") == "1"


def require(*modules, tokenizer=False):
    """Skip with the reason when a module (the optional extras) or the tokenizer is missing; fail in CI."""
    missing = [module for module in modules if importlib.util.find_spec(module) is None]
    reason = f"needs {', '.join(missing)} (pip install -e '.[test]')" if missing else None
    reason = reason or (NO_TOKENIZER if tokenizer and TOKENIZER_PROBLEM is not None else None)
    if reason:
        (pytest.fail if NOTHING_MAY_SKIP else pytest.skip)(reason)


@pytest.fixture(autouse=True)
def skip_where_the_tokenizer_is_needed_but_missing(monkeypatch):
    """Offline without the tokenizer's files, a test that reaches for it is skipped with one reason, not failed."""
    if TOKENIZER_PROBLEM is not None:
        monkeypatch.setattr(tokenizer, "get_tokenizer", lambda: pytest.skip(NO_TOKENIZER))


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never touch the user's ~/.cache during tests."""
    monkeypatch.setenv("LORAXS_MINI_CACHE", str(tmp_path / "cache"))


def tiny_gpt(seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(GPTConfig.from_name("tiny", **overrides))


@pytest.fixture(scope="session")
def hf_tiny(tmp_path_factory):
    """A tiny random GPT-2 made and saved by `transformers` itself: (model, folder)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=96, vocab_size=50257)
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # move every tensor off its default (LayerNorm 1, biases 0) so a mix-up shows
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    folder = tmp_path_factory.mktemp("hf_tiny")
    model.save_pretrained(folder)  # transformers writes safetensors by default
    return model, folder
