"""
GPT-2's tokenizer: byte-pair encoding through tiktoken.

GPT-2 reads text as tokens from a vocabulary of 50,257 byte-pair pieces:
frequent words are one token, including their leading space (" positive" is
token 3967), rarer words are split into pieces. tiktoken downloads the two
vocabulary files once and caches them; `TIKTOKEN_CACHE_DIR` chooses where.
"""

import functools

from .errors import LoraxsError

END_OF_TEXT = 50256  # "<|endoftext|>", the only special token of GPT-2


@functools.lru_cache(maxsize=1)
def get_tokenizer():
    """The `tiktoken` GPT-2 encoding: .encode(str) -> list[int], .decode(list[int]) -> str."""
    import tiktoken

    try:
        return tiktoken.get_encoding("gpt2")
    except Exception as error:  # tiktoken reports a failed download in several ways
        raise LoraxsError(
            f"could not load the GPT-2 tokenizer ({type(error).__name__}: {error}). On its first use tiktoken "
            "downloads two small files; check your internet connection, or point TIKTOKEN_CACHE_DIR at a "
            "folder that already holds them."
        ) from None


def encode(text):
    return get_tokenizer().encode_ordinary(text)  # special tokens in the text are plain text, never control tokens


def decode(tokens):
    return get_tokenizer().decode(list(tokens))
