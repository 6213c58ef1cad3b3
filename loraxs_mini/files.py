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
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import LoraxsError


def check_writable_folder(folder, what):
    """
    `folder` is a folder this user can write in, or can be made as one. Asked by doing it: the folder is made and a
    file written and removed there, then what was made for the question is removed again, so nothing is left.
    """
    folder = Path(folder)
    existing = next(path for path in (folder, *folder.absolute().parents) if path.exists())
    if not existing.is_dir():
        raise LoraxsError(f"{what} {folder}: {existing} is a file, not a folder; choose a folder")
    made = [path for path in (folder, *folder.absolute().parents) if not path.exists()]  # the deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()  # os.access can say yes where writing fails (a read-only mount)
    except OSError as error:
        raise LoraxsError(
            f"{what} {folder}: it cannot be made or written here ({error.strerror}); choose another folder"
        ) from None
    finally:
        for path in made:
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()


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
