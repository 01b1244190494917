"""The project's one file hash: sha256 of a file's bytes, cached per process."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_CACHE: dict[tuple[str, int, int], str] = {}
_LOCK = threading.Lock()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of the file at ``path``, read in 1 MiB blocks.

    Cached for this process by (resolved path, size, mtime in ns): a file rewritten in place
    gets a new size or mtime and is hashed again.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    hexdigest = digest.hexdigest()
    with _LOCK:
        _CACHE[key] = hexdigest
    return hexdigest
