"""FLOPs of HC and of the mean-scale base, encoder and decoder, beside the HC paper's Table 1.

Counts come from ``torch.utils.flop_counter.FlopCounterMode`` on a 256x256 input
(:func:`plugins.hc.flops.count`, on the learned library's counter :mod:`plugins.learned.flops`;
what each side runs is stated there; the codecs' ``info()`` and the report's codec table carry
the same per-pixel figures). torch counts 2 FLOPs per
multiply-accumulate; the paper's figures (HC_N128 encoder 2.70e9, decoder 2.51e9; Balle 2018
N=128 2.36e9) are of the size of one transform's MACs, so the table shows our MACs
(FLOPs / 2) beside them as well. A script, not a test (it measures no time)::

    .venv/bin/python benchmarks/flops.py
    .venv/bin/python benchmarks/flops.py --json      # machine-readable
    .venv/bin/python benchmarks/flops.py --cost 5    # what the count costs a worker process

``--cost N`` measures what a run pays for the codec table's figures: in N fresh processes that
have imported torch (as a worker has), the first count (the base model's; it imports
``torch._dynamo``, which torch's flop counter needs) and a second model's (HC's), wall
(``time.perf_counter``) and CPU (``time.process_time``) seconds, medians, one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from plugins.hc.flops import PAPER_TABLE1, SIDE, count  # noqa: E402

#: One fresh process's timings of the first count (the base's) and a second model's (HC's).
COST_SCRIPT = """
import json, time
import torch
torch.set_num_threads(1)
from plugins.hc.flops import hc_flops
from plugins.hc.nets import HCConfig
from plugins.learned.flops import base_model_flops
out = {}
for name, fn in (("first (base)", base_model_flops), ("second (hc)", lambda: hc_flops(HCConfig()))):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    out[name] = [time.perf_counter() - wall, time.process_time() - cpu]
print(json.dumps(out))
"""


def cost(repeats: int) -> None:
    """Print the median wall and CPU seconds of the counts in ``repeats`` fresh processes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", COST_SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True
        )
        done.check_returncode()
        runs.append(json.loads(done.stdout))
    print(f"count cost in a fresh process with torch imported, median of {repeats}, 1 thread")
    for name in runs[0]:
        wall = statistics.median(r[name][0] for r in runs)
        cpu = statistics.median(r[name][1] for r in runs)
        print(f"  {name}: {wall:.3f} s wall, {cpu:.3f} s CPU")
    print(f"  load average after: {os.getloadavg()[0]:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--cost", type=int, metavar="N", help="time the count in N processes")
    args = parser.parse_args()
    if args.cost:
        cost(args.cost)
        return 0
    rows = {name: count(name) for name in ("msh", "hc")}
    paper = {"msh": PAPER_TABLE1["balle2018-n128"], "hc": PAPER_TABLE1["hc"]}
    if args.json:
        out = {
            name: {
                "encoder_flops": f.encoder,
                "decoder_flops": f.decoder,
                "encoder_flops_per_pixel": f.encoder_per_pixel,
                "decoder_flops_per_pixel": f.decoder_per_pixel,
                "parts_flops": f.parts,
                "paper_table1": paper[name],
            }
            for name, f in rows.items()
        }
        print(json.dumps({"input": [1, 3, SIDE, SIDE], **out}, indent=2))
        return 0
    print(f"input 1x3x{SIDE}x{SIDE}; FLOPs as torch counts them (2 per MAC)\n")
    print(
        "| model | side | FLOPs | FLOPs/pixel | MACs (FLOPs/2) | paper Table 1 |\n"
        "|---|---|---|---|---|---|"
    )
    for name, f in rows.items():
        for side, value in (("encoder", f.encoder), ("decoder", f.decoder)):
            print(
                f"| {name} | {side} | {value:.3e} | {value / SIDE**2:,.0f} | {value / 2:.3e} | "
                f"{paper[name][side]:.2e} |"
            )
    print(
        "\nparts (MACs): "
        + "; ".join(
            f"{name}: " + ", ".join(f"{k} {v / 2:.3e}" for k, v in f.parts.items())
            for name, f in rows.items()
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
