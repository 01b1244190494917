"""Decode hostile bytes, each case in a forked child with a memory and CPU-time limit.

Run as ``python tests/fuzz_worker.py CODEC...`` (by :mod:`tests.test_fuzz`). It builds each
codec, encodes one 64x96 Kodak crop (rate ladders: their middle setting), decodes it once so
that weights, tables and compiled code are loaded before any fork, and prints one JSON line
``{"streams": {codec: hex}, "shape": [H, W, 3]}``. Then, per request line
``{"codec": name, "data": hex}`` on stdin, it forks a child that sets ``RLIMIT_AS`` (the
address space it has plus ``--memory`` bytes) and ``RLIMIT_CPU`` (``--cpu`` seconds), with a
wall-clock alarm as a backstop, decodes, and answers one JSON line
``{"outcome": ..., "detail": ..., "seconds": ...}``. ``outcome`` is ``"image"`` (with
``detail`` = ``[H, W, C, dtype]``), the exception's class name (``"PrefixTooShort"``,
``"CorruptStream"``, anything else), or ``"signal SIGXCPU"`` etc. when the child was killed.
"""

from __future__ import annotations

import argparse
import json
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


def _child(codec, data: bytes, memory: int, cpu: int, wall: int) -> dict:
    resource.setrlimit(resource.RLIMIT_AS, (_vm_size() + memory, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(wall)
    try:
        image = codec.decode(data)
    except BaseException as exc:  # every exception is an outcome here
        return {"outcome": type(exc).__name__, "detail": str(exc)[:300]}
    if not isinstance(image, np.ndarray):
        return {"outcome": "not an array", "detail": type(image).__name__}
    return {"outcome": "image", "detail": [*image.shape, str(image.dtype)]}


def run_case(codec, data: bytes, memory: int, cpu: int, wall: int) -> dict:
    """Decode ``data`` in a forked child under the limits; the child's outcome and its time."""
    read_end, write_end = os.pipe()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read_end)
        try:
            result = _child(codec, data, memory, cpu, wall)
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        raw = pipe.read()
    _, status = os.waitpid(pid, 0)
    seconds = time.perf_counter() - start
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        return {"outcome": f"signal {name}", "detail": "", "seconds": seconds}
    if not raw:
        return {"outcome": f"exit {os.WEXITSTATUS(status)}", "detail": "", "seconds": seconds}
    return {**json.loads(raw), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("codecs", nargs="+")
    parser.add_argument("--memory", type=int, default=1 << 30, help="bytes per case")
    parser.add_argument("--cpu", type=int, default=2, help="CPU seconds per case")
    parser.add_argument("--wall", type=int, default=30, help="wall seconds per case")
    args = parser.parse_args()
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever a codec prints goes to stderr, never into the protocol

    import torch

    from bench.codec import ProgressiveCodec
    from bench.images import load_rgb
    from bench.registry import load_registry

    torch.set_num_threads(1)
    source, top, left, height, width = CROP
    image = load_rgb(ROOT / "datasets" / "kodak" / source)[top : top + height, left : left + width]
    image = np.ascontiguousarray(image)
    registry = load_registry(entry_points=False)
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
    protocol.write(json.dumps({"streams": streams, "shape": list(image.shape)}) + "\n")
    protocol.flush()
    for line in sys.stdin:
        request = json.loads(line)
        result = run_case(
            codecs[request["codec"]], bytes.fromhex(request["data"]), args.memory, args.cpu,
            args.wall,
        )  # fmt: skip
        protocol.write(json.dumps(result) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
