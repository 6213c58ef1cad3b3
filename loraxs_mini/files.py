"""
Writing files so that a crash never leaves half of one behind.

`atomic_write(path)` hands out a temporary file next to `path`; only when the
block finishes without an error is it renamed onto `path`. `os.replace` is
atomic on one file system, so `path` is either the old file, absent, or the
complete new one. Checkpoints, adapters, downloads and results all go
through here. `check_writable_folder` asks, before any work is done, whether
a folder can be written at all.
"""

import os
from contextlib import contextmanager
from pathlib import Path

from .errors import LoraxsError


def check_writable_folder(folder, what):
    """`folder` is a folder this user can write in, or can be made as one (it is made only when written)."""
    folder = Path(folder)
    existing = next(path for path in (folder, *folder.absolute().parents) if path.exists())
    if not existing.is_dir():
        raise LoraxsError(f"{what} {folder}: {existing} is a file, not a folder; choose a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LoraxsError(f"{what} {folder}: this user cannot write in {existing}; choose another folder")


@contextmanager
def atomic_write(path, mode="wb"):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(temporary, mode) as file:
            yield file
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # still there only if something failed
