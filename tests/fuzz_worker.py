"""Decode hostile bytes in a forked child, each case under a memory and CPU-time limit.

Run as ``python tests/fuzz_worker.py CODEC...`` (by :mod:`tests.test_fuzz`). It builds each
codec, encodes one 64x96 Kodak crop (rate ladders: their middle setting), decodes it once so
that weights, tables and compiled code are loaded before any fork, and prints one JSON line
``{"streams": {codec: hex}, "shape": [H, W, 3]}``. Then, per request line
``{"codec": name, "data": hex}`` on stdin, a child forked from this prepared process decodes
the case under its own limits: ``RLIMIT_AS`` at the address space the child has plus
``--memory`` bytes, ``RLIMIT_CPU`` at the CPU time it has used (rounded up to the second)
plus ``--cpu`` seconds, and a wall-clock alarm of ``--wall`` seconds as a backstop; the
worker answers one JSON line ``{"outcome": ..., "detail": ..., "seconds": ...}``.
``outcome`` is ``"image"`` (with ``detail`` = ``[H, W, C, dtype]``), the exception's class
name (``"PrefixTooShort"``, ``"CorruptStream"``, anything else), or ``"signal SIGXCPU"`` etc.
when the child was killed.

The child decodes case after case until one kills it; the next case gets a new fork. A fork
per case cost about 27 ms of system time (copying and tearing down the page tables of a
process holding torch and six learned models, 620 MB), more than most decodes, and it adds
nothing the fuzz claims: each case still has its own limits, and a crash, a hang or a limit
is reported for the case that caused it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: The crop every codec encodes (kodim01, rows 100.., columns 200..).
CROP = ("kodim01.png", 100, 200, 64, 96)


def _vm_size() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _decode_case(codec, data: bytes, memory: int, cpu: int, wall: int) -> dict:
    """In the child: decode ``data`` under this case's limits (soft limits, raised or lowered
    from case to case; the hard limits stay as inherited)."""
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + memory, resource.RLIM_INFINITY))
    used = math.ceil(_cpu_seconds())
    resource.setrlimit(resource.RLIMIT_CPU, (used + cpu, resource.RLIM_INFINITY))
    signal.alarm(wall)
    try:
        image = codec.decode(data)
    except BaseException as exc:  # every exception is an outcome here
        return {"outcome": type(exc).__name__, "detail": str(exc)[:300]}
    finally:
        signal.alarm(0)
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY,) * 2)
    if not isinstance(image, np.ndarray):
        return {"outcome": "not an array", "detail": type(image).__name__}
    return {"outcome": "image", "detail": [*image.shape, str(image.dtype)]}


def _serve(codecs: dict, requests, answers, memory: int, cpu: int, wall: int) -> None:
    """The child's loop: one ``{"codec", "data"}`` line in, one outcome line out, until EOF."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    for line in requests:
        request = json.loads(line)
        codec = codecs[request["codec"]]
        result = _decode_case(codec, bytes.fromhex(request["data"]), memory, cpu, wall)
        answers.write(json.dumps(result) + "\n")
        answers.flush()


class Child:
    """A child forked from the prepared worker that decodes cases until one kills it."""

    def __init__(self, codecs: dict, memory: int, cpu: int, wall: int) -> None:
        request_read, request_write = os.pipe()
        answer_read, answer_write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # child
            os.close(request_write)
            os.close(answer_read)
            try:
                with os.fdopen(request_read) as requests, os.fdopen(answer_write, "w") as answers:
                    _serve(codecs, requests, answers, memory, cpu, wall)
            finally:
                os._exit(0)
        os.close(request_read)
        os.close(answer_write)
        self.requests = os.fdopen(request_write, "w")
        self.answers = os.fdopen(answer_read)

    def decode(self, name: str, data: bytes) -> dict | None:
        """The case's outcome, or ``None`` when the child died on it (then :meth:`death`)."""
        try:
            self.requests.write(json.dumps({"codec": name, "data": data.hex()}) + "\n")
            self.requests.flush()
        except BrokenPipeError:
            return None
        line = self.answers.readline()
        return json.loads(line) if line else None

    def death(self) -> str:
        """How the child ended (after :meth:`decode` returned ``None``)."""
        self.close()
        _, status = os.waitpid(self.pid, 0)
        if os.WIFSIGNALED(status):
            return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit {os.WEXITSTATUS(status)}"

    def close(self) -> None:
        for pipe in (self.requests, self.answers):
            with contextlib.suppress(BrokenPipeError):  # the child died with input unread
                pipe.close()


class Cases:
    """Runs each case in the current child, forking a new one after a case killed it."""

    def __init__(self, codecs: dict, memory: int, cpu: int, wall: int) -> None:
        self.codecs, self.limits = codecs, (memory, cpu, wall)
        self.child: Child | None = None

    def run(self, name: str, data: bytes) -> dict:
        """Decode ``data`` with codec ``name`` in the child; the outcome and its time."""
        if self.child is None:
            self.child = Child(self.codecs, *self.limits)
        start = time.perf_counter()
        result = self.child.decode(name, data)
        if result is None:
            result = {"outcome": self.child.death(), "detail": ""}
            self.child = None
        return {**result, "seconds": time.perf_counter() - start}

    def close(self) -> None:
        if self.child is not None:
            self.child.close()
            os.waitpid(self.child.pid, 0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("codecs", nargs="+")
    parser.add_argument("--plugin", action="append", default=[], help="a plugin file to load")
    parser.add_argument("--memory", type=int, default=1 << 30, help="bytes per case")
    parser.add_argument("--cpu", type=int, default=2, help="CPU seconds per case")
    parser.add_argument("--wall", type=int, default=30, help="wall seconds per case")
    args = parser.parse_args()
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever a codec prints goes to stderr, never into the protocol

    from bench.codec import ProgressiveCodec
    from bench.images import load_rgb
    from bench.registry import load_registry

    source, top, left, height, width = CROP
    image = load_rgb(ROOT / "datasets" / "kodak" / source)[top : top + height, left : left + width]
    image = np.ascontiguousarray(image)
    registry = load_registry(args.plugin, entry_points=False)
    codecs, streams = {}, {}
    for name in args.codecs:
        codec = registry.spec(name).factory()
        if isinstance(codec, ProgressiveCodec):
            data = codec.encode(image)
        else:
            settings = list(codec.settings())
            data = codec.encode_at(image, settings[len(settings) // 2])
        codec.decode(data)
        codecs[name], streams[name] = codec, data.hex()
    if "torch" in sys.modules:  # loaded by a learned codec: decodes compute with one thread
        sys.modules["torch"].set_num_threads(1)
    protocol.write(json.dumps({"streams": streams, "shape": list(image.shape)}) + "\n")
    protocol.flush()
    cases = Cases(codecs, args.memory, args.cpu, args.wall)
    for line in sys.stdin:
        request = json.loads(line)
        result = cases.run(request["codec"], bytes.fromhex(request["data"]))
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()
    cases.close()
    protocol.close()
    sys.stdout.flush()
    os._exit(0)  # no finalisation: collecting the models took many seconds under load


if __name__ == "__main__":
    main()
