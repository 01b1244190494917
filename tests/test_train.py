"""The MeanScaleHyperprior trainer: a tiny real run, stop/resume, export, and bad checkpoints."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from plugins.learned.training import msh as tr  # noqa: E402
from plugins.learned.training.data import read_rgb  # noqa: E402
from plugins.learned.training.ema import CHECKPOINT_KEY  # noqa: E402
from plugins.learned.training.evaluation import code_image, to_tensor  # noqa: E402
from plugins.learned.training.msh_export import MAX_WEIGHTS_BYTES  # noqa: E402
from plugins.learned.training.run import CHECKPOINT_NAME, LOG_NAME  # noqa: E402
from plugins.learned.weights import BUNDLED_NAME  # noqa: E402
from plugins.learned.weights.format import sidecar_path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The training photos live in ../shared beside the project (never inside it).
TRAIN = Path(os.environ.get("BENCH_TRAIN_DATA", ROOT.parent / "shared" / "datasets" / "train"))
KODAK = ROOT / "datasets" / "kodak"
SOURCES = ["bsds500/test/100007.jpg", "bsds500/test/100039.jpg", "mcmaster18/01.png"]
TINY = dict(N=8, M=8, crop=64, batch=2, log_every=1, checkpoint_every=100, precision="fp32",
            channels_last=False)  # fmt: skip
TINY_EVAL = {**TINY, "eval_images": ("kodim01",)}

pytestmark = pytest.mark.skipif(
    not all((TRAIN / s).is_file() for s in SOURCES) or not (KODAK / "kodim01.png").is_file(),
    reason="training images or Kodak not present",
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("train-data")
    for s in SOURCES:
        shutil.copy(TRAIN / s, folder / s.replace("/", "_"))
    return folder


@pytest.fixture(scope="module")
def stopped_and_resumed(data_dir, tmp_path_factory):
    """A run stopped by SIGTERM at iteration 3, then resumed to 6; and a straight run to 6."""
    out = tmp_path_factory.mktemp("run") / "ck"

    def send_sigterm(iteration, terms):
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    first = tr.train(
        out, data=str(data_dir), kodak=str(KODAK), iterations=50, eval_every=2,
        eval_images=("kodim01",), on_iteration=send_sigterm, **TINY,
    )  # fmt: skip
    stored_after_stop = tr.load_checkpoint(out)
    # per-process settings (mode, stop) are not inherited: the resumed leg names its mode again
    second = tr.train(out, resume=True, iterations=6, precision="fp32", channels_last=False)
    straight_out = tmp_path_factory.mktemp("straight") / "ck"
    straight = tr.train(
        straight_out, data=str(data_dir), kodak=str(KODAK), iterations=6, eval_every=2,
        eval_images=("kodim01",), **TINY,
    )  # fmt: skip
    return out, first, stored_after_stop, second, straight_out, straight


def test_sigterm_stops_with_checkpoint_and_resume_continues(stopped_and_resumed):
    out, first, stored, second, straight_out, _ = stopped_and_resumed
    assert first["stopped_by"] == "SIGTERM"
    assert first["iteration"] == 3
    assert stored["iteration"] == 3
    assert second["iteration"] == 6 and second["stopped_by"] is None
    # Identical config apart from the operational iterations target.
    c1, c2 = dict(first["config"]), dict(second["config"])
    assert c1.pop("iterations") == 50 and c2.pop("iterations") == 6
    assert c1 == c2
    records = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()]
    train_its = [r["iteration"] for r in records if r["type"] == "train"]
    assert train_its == [1, 2, 3, 4, 5, 6]
    for r in records:
        if r["type"] == "train":
            assert {"loss", "mse", "bpp", "seconds"} <= r.keys()
            assert np.isfinite(r["loss"]) and r["bpp"] > 0
    evals = [r for r in records if r["type"] == "eval"]
    assert [e["iteration"] for e in evals] == [2, 4, 6]
    assert evals[0]["images"] == ["kodim01"] and evals[0]["bpp"] > 0 and evals[0]["psnr_rgb"] > 0
    assert not list(out.glob("*.tmp"))


def test_resumed_run_equals_uninterrupted_run(stopped_and_resumed):
    out, _, _, _, straight_out, _ = stopped_and_resumed
    a = tr.load_checkpoint(out)["model"]
    b = tr.load_checkpoint(straight_out)["model"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_other_model_config_and_new_run_refuses_existing(stopped_and_resumed):
    out = stopped_and_resumed[0]
    with pytest.raises(tr.CheckpointError, match="N=16"):
        tr.train(out, resume=True, N=16, iterations=7)
    with pytest.raises(tr.CheckpointError, match="scale_min=1.0"):
        tr.train(out, resume=True, scale_min=1.0, iterations=7)
    with pytest.raises(tr.CheckpointError, match="quantization='noise'"):
        tr.train(out, resume=True, quantization="noise", iterations=7)
    with pytest.raises(tr.CheckpointError, match="--resume"):
        tr.train(out, data=str(out), iterations=7, **TINY)


def test_corrupt_checkpoint_gives_clear_error(stopped_and_resumed, tmp_path):
    good = stopped_and_resumed[0] / CHECKPOINT_NAME
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    data = good.read_bytes()
    (bad_dir / CHECKPOINT_NAME).write_bytes(data[: len(data) // 2])
    with pytest.raises(tr.CheckpointError, match="corrupt"):
        tr.load_checkpoint(bad_dir)
    with pytest.raises(tr.CheckpointError, match="corrupt"):
        tr.train(bad_dir, resume=True)
    with pytest.raises(tr.CheckpointError, match="corrupt"):
        tr.export(bad_dir, tmp_path / "w.safetensors")
    (bad_dir / CHECKPOINT_NAME).write_bytes(b"not a checkpoint at all")
    with pytest.raises(tr.CheckpointError, match="corrupt"):
        tr.load_checkpoint(bad_dir)
    with pytest.raises(tr.CheckpointError, match="no checkpoint"):
        tr.load_checkpoint(tmp_path / "missing")


def test_export_round_trip(stopped_and_resumed, tmp_path, data_dir):
    from safetensors.torch import load_file

    out = stopped_and_resumed[0]
    weights = tmp_path / "tiny.safetensors"
    sidecar = tr.export(out, weights, kodak=KODAK, kodak_images=["kodim01", "kodim05"])
    assert weights.is_file() and weights.stat().st_size <= MAX_WEIGHTS_BYTES
    on_disk = json.loads(sidecar_path(weights).read_text())
    assert on_disk == json.loads(json.dumps(sidecar))
    assert on_disk["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert on_disk["config"]["N"] == 8 and on_disk["config"]["M"] == 8
    assert on_disk["iterations"] == 6
    assert on_disk["training_set"]["manifest_sha256"] == tr.manifest_sha256(data_dir)
    assert on_disk["last_training_eval"]["iteration"] == 6
    assert on_disk["kodak_eval"]["num_images"] == 2 and on_disk["kodak_eval"]["bpp_mean"] > 0
    assert {"torch", "compressai"} <= on_disk["versions"].keys()

    tensors = load_file(str(weights))
    assert tensors["g_a.0.weight"].dtype == torch.float16
    assert tensors["gaussian_conditional._quantized_cdf"].numel() > 0  # CDF tables stored

    model, meta = tr.load_weights(weights)
    assert meta["N"] == "8"
    for name, t in model.state_dict().items():
        assert torch.equal(t, tensors[name].to(t.dtype)), name

    # A real image crop: entropy coding round trip == forward pass with rounding.
    img = read_rgb(data_dir / "mcmaster18_01.png")[100:228, 50:178]
    x = to_tensor(img)
    with torch.no_grad():
        enc = model.compress(x)
        dec = model.decompress(enc["strings"], enc["shape"])["x_hat"]
        y = model.g_a(x)
        z = model.h_a(y)
        z_hat = model.entropy_bottleneck.quantize(
            z, "dequantize", model.entropy_bottleneck._get_medians()
        )
        scales, means = model.h_s(z_hat).chunk(2, 1)
        y_hat = model.gaussian_conditional.quantize(y, "dequantize", means)
        ref = model.g_s(y_hat).clamp(0, 1)
    assert sum(len(s) for g in enc["strings"] for s in g) > 0
    assert torch.allclose(dec, ref, atol=1e-5)
    coded = code_image(model, img[:100, :90])  # padding path: not a multiple of 64
    assert coded["reconstruction"].shape == (100, 90, 3) and coded["bpp"] > 0

    # A later session continues from the shipped file: a new run initialised from it.
    again = tmp_path / "continued"
    tr.train(again, data=str(data_dir), kodak=str(KODAK), iterations=8, eval_every=0,
             init=str(weights), **TINY)  # fmt: skip
    continued = tr.load_checkpoint(again)
    assert continued["iteration"] == 8  # 6 from the export, then 2 more
    # float16 export zeroes the likelihood lower bound (1e-9); training gets it back, else
    # log(0) stops a long run with an infinite rate (seen at iteration 7965 of the relay)
    shipped = load_file(str(weights))
    for key in ("entropy_bottleneck.likelihood_lower_bound.bound",
                "gaussian_conditional.likelihood_lower_bound.bound"):  # fmt: skip
        assert float(shipped[key]) == 0.0
        assert float(continued["model"][key]) == pytest.approx(1e-9)
    # the fresh Adam state starts with a learning-rate warm-up, not full-size steps
    lr = continued["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(tr.TrainConfig().lr * 2 / tr.TrainConfig().warmup)
    with pytest.raises(tr.CheckpointError, match="N=8, M=8"):
        tr.train(tmp_path / "wrong", data=str(data_dir), iterations=7, eval_every=0,
                 init=str(weights), **{**TINY, "N": 16})  # fmt: skip


def test_training_images_skip_small_and_refuse_kodak(tmp_path, data_dir):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    shutil.copy(data_dir / "mcmaster18_01.png", folder / "big.png")
    Image.new("RGB", (40, 200)).save(folder / "small.png")
    notes: list[str] = []
    images = tr.load_training_images(folder, 64, KODAK, log=notes.append)
    assert len(images) == 1 and images[0].dtype == np.uint8
    assert any("skipping" in n and "small.png" in n for n in notes)
    shutil.copy(KODAK / "kodim01.png", folder / "renamed.png")
    with pytest.raises(ValueError, match="Kodak"):
        tr.load_training_images(folder, 64, KODAK, log=notes.append)
    with pytest.raises(ValueError, match="Kodak"):
        tr.load_training_images(KODAK, 64, KODAK, log=notes.append)


def test_downscaled_crops_lose_the_finest_detail_and_plain_crops_replay():
    """``scale_min < 1`` cuts larger squares and shrinks them with an antialiased filter: on
    one-pixel stripes (the finest detail an image holds) the crops turn towards flat grey; with
    ``scale_min == 1`` the batches are the plain crops' bit for bit (a relay replays)."""
    from plugins.learned.training.data import sample_batch

    stripes = np.zeros((300, 300, 3), dtype=np.uint8)
    stripes[:, ::2] = 255
    plain = sample_batch([stripes], np.random.default_rng(1), 4, 64)
    same = sample_batch([stripes], np.random.default_rng(1), 4, 64, scale_min=1.0)
    assert torch.equal(plain, same)
    assert plain.shape == (4, 3, 64, 64) and plain.dtype == torch.float32
    assert float(plain.std()) > 0.49  # 0 and 1 in equal parts
    shrunk = sample_batch([stripes], np.random.default_rng(1), 4, 64, scale_min=0.25)
    assert shrunk.shape == plain.shape and 0.0 <= float(shrunk.min()) <= float(shrunk.max()) <= 1
    assert abs(float(shrunk.mean()) - 0.5) < 0.05 and float(shrunk.std()) < 0.3
    small = np.full((70, 90, 3), 7, dtype=np.uint8)  # the larger square is capped by the image
    assert torch.all(sample_batch([small], np.random.default_rng(0), 3, 64, 0.1) == 7 / 255)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="scale_min"):
            sample_batch([stripes], np.random.default_rng(0), 1, 64, bad)


def test_crops_cut_by_threads_are_the_same_batches(data_dir):
    """A :class:`CropSampler` with loader threads draws the same random numbers in the same
    order and gives the same batches as one cutting on the calling thread."""
    from plugins.learned.training.data import CropSampler

    images = tr.load_training_images(data_dir, 64, KODAK, log=lambda _: None)
    rngs = [np.random.default_rng(5), np.random.default_rng(5)]
    with CropSampler(images, 6, 64, 0.5) as alone, CropSampler(images, 6, 64, 0.5, 3) as pooled:
        assert pooled.pool is not None and alone.pool is None
        for _ in range(3):
            assert torch.equal(alone(rngs[0]), pooled(rngs[1]))
        # the pooled sampler has drawn a fourth batch ahead; rewind puts its numbers back
        assert rngs[0].bit_generator.state != rngs[1].bit_generator.state
        pooled.rewind()
        assert rngs[0].bit_generator.state == rngs[1].bit_generator.state
        assert torch.equal(alone(rngs[0]), pooled(rngs[1]))
        with pytest.raises(ValueError, match="one generator"):
            pooled(np.random.default_rng(5))
    assert rngs[0].random() == rngs[1].random()  # leaving the context rewinds too


def test_prefetched_crops_resume_like_an_uninterrupted_run(data_dir, tmp_path):
    """Loader threads cut the next batch ahead of the step; a checkpoint saves the generator
    as the batches trained on left it, so a run stopped and resumed with loader threads ends
    with the weights of a straight run on the calling thread."""
    common = dict(data=str(data_dir), kodak=str(KODAK), eval_every=0, **TINY)
    stopped = tr.train(tmp_path / "a", iterations=6, stop_at=3, loader_threads=2, **common)
    assert stopped["iteration"] == 3
    tr.train(tmp_path / "a", resume=True, iterations=6, loader_threads=2, precision="fp32",
             channels_last=False)  # fmt: skip
    tr.train(tmp_path / "b", iterations=6, **common)
    a, b = (tr.load_checkpoint(tmp_path / n)["model"] for n in ("a", "b"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_time_limit_stops_a_leg_with_a_checkpoint(data_dir, tmp_path):
    """``time_limit`` (a GPU leg's lease) ends the loop after that many seconds, with a
    checkpoint at the iteration it reached; the planned end stays."""
    out = tmp_path / "ck"
    summary = tr.train(
        out, data=str(data_dir), kodak=str(KODAK), iterations=100_000, eval_every=0,
        time_limit=1.0, loader_threads=2, **TINY,
    )  # fmt: skip
    assert summary["stopped_by"] == "time limit"
    assert 0 < summary["iteration"] < 100_000
    stored = tr.load_checkpoint(out)
    assert stored["iteration"] == summary["iteration"]
    assert stored["config"]["iterations"] == 100_000


def test_bench_train_bad_data_and_bad_init_are_one_line_errors(data_dir, tmp_path, capsys):
    """A damaged image in the training folder, and --init with a file that is not exported
    weights: exit 3 (bad input) with one ``error:`` line naming the file, no traceback. The
    first through a real ``bench train`` process; the second through the trainer's ``main``,
    which ``bench train`` returns the exit status of (a second process adds only start-up)."""
    import subprocess
    import sys

    bad = tmp_path / "bad-data"
    shutil.copytree(data_dir, bad)
    (bad / "notes.txt").write_text("ignored: not an image suffix")
    (bad / "broken.png").write_bytes(b"not a png")
    not_weights = tmp_path / "w.safetensors"
    not_weights.write_bytes(b"\x00" * 64)
    common = ["--out", str(tmp_path / "out"), "--eval-every", "0", "--stop-at", "1"]
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--no-entry-points", "train", "msh", *common,
         "--data", str(bad)],  # fmt: skip
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.png (UnidentifiedImageError)" in errors[0], done.stderr

    assert tr.main([*common, "--data", str(data_dir), "--init", str(not_weights)]) == 3
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "is not a readable .safetensors file" in errors[0], stderr


def test_resume_does_not_inherit_per_process_settings(data_dir, tmp_path):
    """A leg stopped with --stop-at on a forced mode: the next leg runs on with the defaults."""
    out = tmp_path / "run"
    tr.train(out, data=str(data_dir), iterations=10, stop_at=2, eval_every=0, **TINY)
    assert tr.load_checkpoint(out)["iteration"] == 2
    cfg = tr.resolve_config(out, True)
    assert cfg.stop_at == 0 and cfg.precision == tr.TrainConfig().precision
    assert cfg.iterations == 10 and TINY["N"] == cfg.N
    summary = tr.train(out, resume=True, precision="fp32", channels_last=False)
    assert summary["iteration"] == 10


def test_resume_accepts_the_same_data_folder_written_another_way(
    stopped_and_resumed, data_dir, tmp_path, monkeypatch
):
    """``--data ../x`` and ``--data /abs/x`` name the same folder: a resumed run compares them
    resolved (and keeps the stored form); another folder is still refused."""
    out = stopped_and_resumed[0]
    stored = tr.load_checkpoint(out)["config"]["data"]
    monkeypatch.chdir(data_dir)
    relative = os.path.join("..", data_dir.name)
    assert relative != stored and Path(relative).resolve() == Path(stored)
    cfg = tr.resolve_config(out, True, data=relative)
    assert cfg.data == stored
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(tr.CheckpointError, match="data="):
        tr.resolve_config(out, True, data=str(other))


def test_trainer_keeps_evaluates_and_exports_the_average(data_dir, tmp_path):
    from safetensors.torch import load_file

    def send_sigterm(iteration, terms):
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    stopped = tmp_path / "stopped"
    tr.train(stopped, data=str(data_dir), kodak=str(KODAK), iterations=4, eval_every=2,
             ema_decay=0.5, on_iteration=send_sigterm, **TINY_EVAL)  # fmt: skip
    assert tr.load_checkpoint(stopped)["iteration"] == 2
    tr.train(stopped, resume=True, precision="fp32", channels_last=False)
    straight = tmp_path / "straight"
    tr.train(straight, data=str(data_dir), kodak=str(KODAK), iterations=4, eval_every=2,
             ema_decay=0.5, **TINY_EVAL)  # fmt: skip

    a, b = tr.load_checkpoint(stopped), tr.load_checkpoint(straight)
    assert a[CHECKPOINT_KEY]["since"] == 0 and a[CHECKPOINT_KEY]["decay"] == 0.5
    for k, v in b[CHECKPOINT_KEY]["weights"].items():  # the average survived the stop
        assert torch.equal(a[CHECKPOINT_KEY]["weights"][k], v), k
    assert not torch.equal(a[CHECKPOINT_KEY]["weights"]["g_a.0.weight"], a["model"]["g_a.0.weight"])

    evals = [json.loads(line) for line in (straight / LOG_NAME).read_text().splitlines()]
    evals = [r for r in evals if r["type"] == "eval"]
    assert [e["iteration"] for e in evals] == [2, 4]
    for e in evals:
        assert e["average"]["decay"] == 0.5
        assert e["average"]["bpp"] > 0 and e["average"]["psnr_rgb"] > 0
        assert "gap_db" in e["average"]["published_gap"]
        assert (e["average"]["bpp"], e["average"]["psnr_rgb"]) != (e["bpp"], e["psnr_rgb"])

    shipped = tr.export(straight, tmp_path / "avg.safetensors", kodak=KODAK,
                        kodak_images=["kodim01"])  # fmt: skip
    live = tr.export(straight, tmp_path / "live.safetensors", kodak=KODAK,
                     kodak_images=["kodim01"], live=True)  # fmt: skip
    assert shipped["shipped_weights"] == {"weights": "average", "decay": 0.5, "since_iteration": 0}
    assert live["shipped_weights"] == {"weights": "live"}
    assert shipped["config"]["ema_decay"] == 0.5
    avg_file = load_file(str(tmp_path / "avg.safetensors"))
    live_file = load_file(str(tmp_path / "live.safetensors"))
    name = "g_a.0.weight"
    assert torch.equal(avg_file[name], b[CHECKPOINT_KEY]["weights"][name].to(torch.float16))
    assert torch.equal(live_file[name], b["model"][name].to(torch.float16))

    # Switched on when resuming a run that had none: it starts at that checkpoint's weights.
    plain = tmp_path / "plain"
    tr.train(plain, data=str(data_dir), kodak=str(KODAK), iterations=2, eval_every=0, **TINY_EVAL)
    tr.train(plain, resume=True, iterations=3, ema_decay=0.9, precision="fp32",
             channels_last=False)  # fmt: skip
    resumed = tr.load_checkpoint(plain)
    assert resumed[CHECKPOINT_KEY]["since"] == 2 and resumed["config"]["ema_decay"] == 0.9


def test_a_run_from_shipped_weights_continues_their_schedule(tmp_path):
    """``--init`` without schedule options picks the exported run up where its cosine was, with
    its planned end and weight average; explicit options win; a finished schedule gives the
    defaults."""
    import math

    shipped = ROOT / "plugins" / "learned" / "weights" / f"{BUNDLED_NAME}.safetensors"
    side = json.loads(sidecar_path(shipped).read_text())
    # the shipped file's own rate may be constant (lr == lr_min): a copy of it with a decaying
    # cosine shows where on the curve the continued run starts
    side["config"] = {**side["config"], "lr": 1e-4, "lr_min": 1e-5}
    weights = tmp_path / "cosine.safetensors"
    shutil.copy(shipped, weights)
    sidecar_path(weights).write_text(json.dumps(side))
    stored, at = side["config"], side["iterations"]
    start, warmup = stored.get("start_iteration", 0), stored["warmup"]
    done = (at - start - warmup) / (stored["planned_iterations"] - start - warmup)
    low, peak = stored["lr_min"], stored["lr"]
    rate = low + 0.5 * (peak - low) * (1 + math.cos(math.pi * done))
    assert stored["lr_min"] < rate < stored["lr"]
    cfg = tr.resolve_config(tmp_path / "a", False, data=str(TRAIN), init=str(weights))
    assert cfg.lr == pytest.approx(rate, rel=1e-12)
    assert (cfg.iterations, cfg.lr_min, cfg.ema_decay) == (
        stored["planned_iterations"], stored["lr_min"], stored["ema_decay"]
    )  # fmt: skip
    planned = f"to lr {rate:.3g}, cosine to {low:.3g} at iteration {stored['planned_iterations']}"
    assert planned in tr.describe_schedule(cfg)
    given = tr.resolve_config(tmp_path / "b", False, data=str(TRAIN), init=str(weights), lr=3e-5)
    assert given.lr == 3e-5 and given.iterations == stored["planned_iterations"]
    finished = tmp_path / "finished.safetensors"
    shutil.copy(weights, finished)
    ended = {**side, "iterations": stored["planned_iterations"]}
    sidecar_path(finished).write_text(json.dumps(ended))
    plain = tr.resolve_config(tmp_path / "c", False, data=str(TRAIN), init=str(finished))
    assert (plain.lr, plain.iterations, plain.ema_decay) == (1e-4, 400_000, 0.0)


def test_fork_copies_the_state_with_a_new_objective(stopped_and_resumed, tmp_path):
    """``bench train-fork``: the arm resumes the same state (weights, Adam, RNG: the same first
    batch and noise, so the same rate before any update) under the new lambda; its log carries
    the source's with a ``fork`` record; bad forks are clear errors (exit 3) that write
    nothing."""
    import functools
    import subprocess
    import sys

    from plugins.learned.training.fork import fork, parse_changes

    def bench_fork(*args):
        return subprocess.run(
            [sys.executable, "-m", "bench", "--no-entry-points", "train-fork", *args],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip

    src = stopped_and_resumed[0]
    copy = tmp_path / "source-copy"  # the module's run stays as the other tests expect it
    shutil.copytree(src, copy)
    arm = tmp_path / "arm"
    before = tr.load_checkpoint(copy)["config"]["lmbda"]
    done = bench_fork("--checkpoint", str(copy), "--out", str(arm), "--set", "lmbda=0.05")
    assert done.returncode == 0, done.stderr
    assert f"lmbda {before!r} -> 0.05" in done.stdout
    stored = tr.load_checkpoint(arm)
    assert stored["config"]["lmbda"] == 0.05 and stored["config"]["out"] == str(arm)
    assert stored["iteration"] == tr.load_checkpoint(copy)["iteration"]
    records = [json.loads(line) for line in (arm / LOG_NAME).read_text().splitlines()]
    source_records = [json.loads(line) for line in (copy / LOG_NAME).read_text().splitlines()]
    assert records[:-1] == source_records
    assert records[-1]["type"] == "fork" and records[-1]["changed"] == {"lmbda": [before, 0.05]}

    first: dict[str, dict[str, float]] = {}
    end = stored["iteration"] + 1
    for name, out in (("source", copy), ("arm", arm)):
        keep = functools.partial(lambda n, _i, terms: first.setdefault(n, terms), name)
        tr.train(out, resume=True, iterations=end, precision="fp32", channels_last=False,
                 eval_every=0, on_iteration=keep)  # fmt: skip
    assert first["source"]["bpp"] == pytest.approx(first["arm"]["bpp"], rel=1e-6)
    assert first["source"]["loss"] != pytest.approx(first["arm"]["loss"], rel=1e-3)

    done = bench_fork("--checkpoint", str(src), "--out", str(arm), "--set", "lmbda=0.05")
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {arm / CHECKPOINT_NAME} already exists: choose another --out"
    ]
    refused = tmp_path / "refused"
    for pairs, message in (
        (["N=16"], "cannot be forked"),
        (["crop"], "FIELD=VALUE"),
        (["crop=big"], "crop takes a int"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_changes(pairs)
    assert parse_changes(["clip=0"]) == {"clip": 0.0}  # the gradient-norm bound: 0 is none
    for changes, message in (
        ({"lmbda": before}, "changes nothing"),
        ({"quantization": "exact"}, "quantization must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            fork(src, refused, changes)
    assert not refused.exists()


def test_train_ab_start_when_the_source_kept_running():
    """An A/B against a relay that was never stopped: the fork's log is the relay's up to the
    copy plus a ``fork`` record, the relay's log goes on without a ``leg``; both continued from
    the fork's iteration. Two arms neither of which trained since the copy are refused."""
    from plugins.learned.training.ab import ab_start

    shared = [
        {"type": "leg", "from_iteration": 100},
        {"type": "eval", "iteration": 1000},
        {"type": "it", "iteration": 1100},
    ]
    relay = [*shared, {"type": "it", "iteration": 1125}, {"type": "eval", "iteration": 2000}]
    arm = [*shared, {"type": "fork", "iteration": 1000}, {"type": "leg", "from_iteration": 1000}]
    assert ab_start(relay, arm) == 1000 and ab_start(arm, relay) == 1000
    with pytest.raises(ValueError, match="neither arm has trained"):
        ab_start([*shared, {"type": "it", "iteration": 1125}], shared)


def test_train_ab_pairs_arms_from_their_shared_state(stopped_and_resumed, tmp_path):
    """``bench train-ab``: a forked arm and a hand-copied arm are paired with their source from
    the iteration they resumed at, evaluation by evaluation; the table is what the logs say;
    logs of unrelated runs are refused (exit 3)."""
    import subprocess
    import sys

    from plugins.learned.training.ab import (
        arm_settings,
        markdown_table,
        paired_evaluations,
        read_log,
    )
    from plugins.learned.training.fork import fork

    source = tmp_path / "source"
    shutil.copytree(stopped_and_resumed[0], source)
    at = tr.load_checkpoint(source)["iteration"]
    forked, copied = tmp_path / "forked", tmp_path / "copied"
    fork(source, forked, {"lmbda": 0.05})
    shutil.copytree(source, copied)
    for out, lr in ((source, None), (forked, None), (copied, 3e-4)):
        extra = {"lr": lr, "lr_min": lr} if lr else {}
        tr.train(out, resume=True, iterations=at + 4, precision="fp32", channels_last=False,
                 **extra)  # fmt: skip

    for arm in (forked, copied):
        start, pairs = paired_evaluations(source, arm)
        assert start == at
        assert [p.iteration for p in pairs] == [at + 2, at + 4]  # the stored eval_every is 2
        evals = {
            (name, r["iteration"]): r
            for name, run in (("a", source), ("b", arm))
            for r in read_log(run)
            if r["type"] == "eval"
        }
        for p in pairs:
            assert not p.averaged  # the tiny run keeps no weight average
            a, b = evals["a", p.iteration], evals["b", p.iteration]
            assert p.a == (a["bpp"], a["psnr_rgb"], a["published_gap"]["gap_db"])
            assert p.difference_db == b["published_gap"]["gap_db"] - a["published_gap"]["gap_db"]
    table = markdown_table(pairs, "source", "copy").splitlines()
    assert table[0] == "| iterations | source | copy | difference |" and len(table) == 4
    assert table[-1].startswith(f"| {at + 4:,} | ") and " bpp) |" in table[-1]

    def bench_ab(*args):
        return subprocess.run(
            [sys.executable, "-m", "bench", "--no-entry-points", "train-ab", *args],
            capture_output=True, text=True, timeout=300, cwd=ROOT,
        )  # fmt: skip

    done = bench_ab(str(source), str(copied))
    assert done.returncode == 0, done.stderr
    assert f"since iteration {at:,}" in done.stdout
    assert f"B: {copied} ({arm_settings(copied)})" in done.stdout
    assert arm_settings(copied) != arm_settings(source)  # the copy's own rate
    assert "\n".join(table[1:]) in done.stdout
    with open(copied / LOG_NAME, "a") as log:  # a process killed while appending a record
        log.write('{"type": "train", "itera')
    assert paired_evaluations(source, copied)[1] == pairs
    with open(copied / LOG_NAME, "a") as log:  # no longer the last line: the log is corrupt
        log.write('\n{"type": "leg"}\n')
    with pytest.raises(ValueError, match="is not a JSON record"):
        read_log(copied)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / LOG_NAME).write_text('{"type": "leg", "from_iteration": 0}\n')
    refused = bench_ab(str(source), str(tmp_path / "other"))
    assert refused.returncode == 3 and "share no records" in refused.stderr
    assert "Traceback" not in refused.stderr
