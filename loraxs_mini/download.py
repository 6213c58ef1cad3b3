"""
Downloading GPT-2's weights once, safely, with the standard library.

The four public checkpoints live on the Hugging Face Hub as single
`model.safetensors` files (0.5 GB for gpt2 up to 6.4 GB for gpt2-xl). They are
fetched into a cache folder, `$LORAXS_MINI_CACHE` or `~/.cache/loraxs_mini`,
once. The bytes go to a temporary file that is renamed into place only after
its length matches the server's Content-Length and its safetensors header
agrees with its size, so an interrupted download is never mistaken for a
complete one. `HF_ENDPOINT` points at a mirror, as it does for Hugging Face's
own tools.
"""

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import LoraxsError
from .files import atomic_write
from .safetensors_file import read_header


def cache_dir():
    return Path(os.environ.get("LORAXS_MINI_CACHE") or Path.home() / ".cache" / "loraxs_mini")


def checkpoint_url(name):
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/openai-community/{name}/resolve/main/model.safetensors"


def download_checkpoint(name):
    """The local path of a preset's model.safetensors, downloading it on first use."""
    return download(checkpoint_url(name), cache_dir() / name / "model.safetensors")


def download(url, destination, timeout=30):
    destination = Path(destination)
    if destination.exists():  # only ever created by the rename below, so it is complete
        return destination
    made = [path for path in destination.parents if not path.exists()]  # to take away again if the download fails
    try:  # the cache folder first: a folder we cannot write is not a connection problem
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LoraxsError(
            f"cannot create the cache folder {destination.parent} ({error.strerror}); point LORAXS_MINI_CACHE at a "
            "folder you can write"
        ) from None
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            expected = response.headers.get("Content-Length")
            expected = int(expected) if expected is not None else None
            with atomic_write(destination) as file:
                with tqdm(
                    total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=destination.parent.name
                ) as bar:
                    while chunk := response.read(1 << 20):
                        file.write(chunk)
                        bar.update(len(chunk))
                received = file.tell()
                if expected is not None and received != expected:
                    raise http.client.IncompleteRead(b"", expected - received)
                file.flush()
                read_header(file.name)  # the header's offsets must fit the bytes we received
    except (OSError, http.client.HTTPException, LoraxsError) as error:
        for path in made:  # nothing of a failed download stays behind, not even its empty folder
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
        if isinstance(error, urllib.error.HTTPError):
            reason = f"HTTP {error.code} {error.reason}"
        elif isinstance(error, http.client.IncompleteRead):
            reason = "the connection closed before the whole file arrived"
        else:
            reason = str(getattr(error, "reason", None) or error)
        raise LoraxsError(
            f"could not download {url} ({reason}). Check your internet connection and try again; "
            f"nothing incomplete was kept. The file would be cached as {destination}. "
            "Or download model.safetensors and config.json yourself, put them in one folder, and give that folder "
            "instead of the preset name (train.py --init-from FOLDER, load_pretrained(FOLDER))."
        ) from None
    return destination
