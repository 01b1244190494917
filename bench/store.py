"""The on-disk layout of one run (``results/<run>/``) and crash-safe appends to it.

Files:

* ``run.json``: the run's configuration and provenance (written at start, completed at end);
* ``rows.jsonl``: one JSON object per (codec, image, target bpp), appended as each finishes;
* ``units.jsonl``: one object per finished (codec, image): timings, stream size, notes;
* ``failures.jsonl``: one object per (codec, image) that failed (exception, timeout, crash);
* ``codecs.json``: each codec's :class:`~bench.codec.CodecInfo`;
* the report files written by :mod:`bench.report`.

Appends are single ``write`` calls on an ``O_APPEND`` descriptor followed by ``fsync``, so a run
killed at any instant leaves complete lines plus at most one partial last line, which
:func:`read_jsonl` drops (and :meth:`RunStore.repair` truncates) on resume.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

ROWS = "rows.jsonl"
UNITS = "units.jsonl"
FAILURES = "failures.jsonl"
RUN = "run.json"
CODECS = "codecs.json"


def _clean(value: Any) -> Any:
    """JSON has no NaN/inf: store them as null and strings so any JSON reader parses the files."""
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that writes NaN as ``null`` and infinities as ``"inf"``/``"-inf"``."""
    return json.dumps(_clean(value), allow_nan=False, **kwargs)


def read_jsonl(path: Path) -> list[dict]:
    """Every complete line of a JSON-lines file; a partial (unterminated) last line is ignored."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return [json.loads(line) for line in data[:end].splitlines() if line.strip()]


class RunStore:
    """Reads and appends the files of one run directory."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)

    def exists(self) -> bool:
        return (self.dir / RUN).exists()

    def repair(self) -> None:
        """Truncate a partial last line left by a killed run, in every JSON-lines file."""
        for name in (ROWS, UNITS, FAILURES):
            path = self.dir / name
            if not path.exists():
                continue
            data = path.read_bytes()
            end = data.rfind(b"\n") + 1
            if end != len(data):
                with open(path, "r+b") as f:
                    f.truncate(end)

    def append(self, name: str, record: dict) -> None:
        """Append one record as one line, durably."""
        line = (dumps(record) + "\n").encode()
        fd = os.open(self.dir / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_json(self, name: str, value: Any) -> None:
        """Replace a JSON file atomically (write a temporary file, then rename)."""
        path = self.dir / name
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(dumps(value, indent=2) + "\n")
        os.replace(tmp, path)

    def read_json(self, name: str) -> Any:
        path = self.dir / name
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: is {self.dir} a bench run directory?")
        return json.loads(path.read_text())

    def rows(self) -> list[dict]:
        return read_jsonl(self.dir / ROWS)

    def units(self) -> list[dict]:
        return read_jsonl(self.dir / UNITS)

    def failures(self) -> list[dict]:
        return read_jsonl(self.dir / FAILURES)
