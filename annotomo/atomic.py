"""Outputs that appear only when complete: temporary names beside the destination, renamed at the end.

Temporary files and folders are created with the permissions any program gives a new file (0666 and
0777 less the umask: 0644 and 0755 under umask 022), not tempfile's private 0600/0700, because the
rename keeps them and colleagues on a shared file system must be able to read the results.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path


def temporary_sibling(path, suffix: str = ".partial", directory: bool = False) -> Path:
    """Create a new, uniquely named empty file (or folder) `.NAME.XXXXXXXX.partial` beside `path`."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    for _ in range(100):
        candidate = folder / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            if directory:
                os.mkdir(candidate, 0o777)  # the umask applies, as for any new folder
            else:
                os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: could not find a free temporary name for {path.name}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it to `path` only if the block succeeds."""
    path = Path(path)
    tmp = temporary_sibling(path)
    mode = stat.S_IMODE(tmp.stat().st_mode)  # a library may write its own file over it (safetensors: 0600)
    try:
        yield tmp
        if stat.S_IMODE(tmp.stat().st_mode) != mode:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
