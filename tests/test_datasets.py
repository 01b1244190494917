"""Dataset manifests: verification, tampering, escaping paths, downloads, imports and pinning."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import CROPS, kodak_crop, write_dataset

from bench import datasets
from bench.datasets import DatasetError, PinnedChecksumWarning
from bench.images import ImageReadError, load_rgb, save_png


def test_bundled_kodak_verifies_against_the_shared_manifest():
    manifest = datasets.load_manifest("kodak")
    paths = datasets.verify(manifest)
    assert [p.name for p in paths] == [f"kodim{i:02d}.png" for i in range(1, 25)]
    shared = Path(__file__).resolve().parents[2] / "shared/datasets/kodak/MANIFEST.tsv"
    if shared.exists():  # the bundled manifest carries the published checksums
        published = dict(line.split("\t")[:2] for line in shared.read_text().splitlines()[1:])
        assert {e.name: e.sha256 for e in manifest.files} == published


def test_every_shipped_manifest_parses():
    names = {m.name for m in datasets.list_manifests()}
    assert {"kodak", "clic-2020-professional-valid", "tecnick"} <= names


def test_tampered_file_gives_checksum_error(crops_dataset):
    image = crops_dataset.parent / "crops" / "a.png"
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF
    image.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="a.png: checksum mismatch"):
        datasets.verify(datasets.load_manifest(crops_dataset))


def test_missing_and_truncated_files_are_named(crops_dataset):
    folder = crops_dataset.parent / "crops"
    (folder / "b.png").unlink()
    (folder / "c.png").write_bytes((folder / "c.png").read_bytes()[:100])
    with pytest.raises(DatasetError) as info:
        datasets.verify(datasets.load_manifest(crops_dataset))
    assert "b.png: missing" in str(info.value) and "c.png: size 100 bytes" in str(info.value)


@pytest.mark.parametrize("name", ["../escape.png", "/etc/passwd", "sub/../../x.png", "C:x.png"])
def test_entries_pointing_outside_the_folder_are_refused(tmp_path, name):
    manifest = tmp_path / "evil.toml"
    manifest.write_text(
        f'[dataset]\nname = "evil"\nbundled = true\n[[files]]\nname = "{name}"\n'
        f'sha256 = "{"0" * 64}"\nsize = 1\n'
    )
    with pytest.raises(DatasetError, match="outside its dataset folder"):
        datasets.load_manifest(manifest)


def test_symlink_escaping_the_folder_is_refused(crops_dataset, tmp_path):
    folder = crops_dataset.parent / "crops"
    outside = tmp_path / "outside.png"
    shutil.move(folder / "a.png", outside)
    (folder / "a.png").symlink_to(outside)
    with pytest.raises(DatasetError, match="outside"):
        datasets.verify(datasets.load_manifest(crops_dataset))


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(DatasetError, match="kodak"):
        datasets.load_manifest("no-such-set")


def _pinned_manifest(tmp_path: Path, url: str) -> Path:
    manifest = tmp_path / "remote.toml"
    manifest.write_text(
        f'[dataset]\nname = "remote"\nchecksums = "pin-on-first-download"\n'
        f'include = "*.png"\n[[archives]]\nurl = "{url}"\nsha256 = ""\n'
    )
    return manifest


def _zip_of_crops(tmp_path: Path) -> Path:
    archive = tmp_path / "remote.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, spec in CROPS.items():
            save_png(tmp_path / name, kodak_crop(*spec))
            zf.write(tmp_path / name, f"remote/images/{name}")
        zf.writestr("remote/README.txt", "not an image")
    return archive


def test_fetch_pins_on_first_download_then_verifies(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "cache"))
    archive = _zip_of_crops(tmp_path)
    manifest = datasets.load_manifest(_pinned_manifest(tmp_path, archive.as_uri()))
    with pytest.raises(DatasetError, match="not downloaded yet"):
        datasets.verify(manifest)
    with pytest.warns(PinnedChecksumWarning, match="pinned 3 files"):
        paths = datasets.fetch(manifest)
    assert sorted(p.name for p in paths) == sorted(CROPS)
    assert (tmp_path / "cache/remote/PINNED.toml").exists()
    assert datasets.verify(manifest) == paths
    paths[0].write_bytes(b"changed")
    with pytest.raises(DatasetError, match="size 7 bytes"):
        datasets.verify(manifest)


def test_fetch_offline_says_how_to_import(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "cache"))
    manifest = datasets.load_manifest(_pinned_manifest(tmp_path, "http://127.0.0.1:9/x.zip"))
    with pytest.raises(DatasetError, match="bench datasets import remote --from DIR"):
        datasets.fetch(manifest)


def test_archive_with_wrong_published_checksum_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "cache"))
    archive = _zip_of_crops(tmp_path)
    manifest_path = _pinned_manifest(tmp_path, archive.as_uri())
    manifest_path.write_text(
        manifest_path.read_text().replace('sha256 = ""', f'sha256 = "{"a" * 64}"')
    )
    with pytest.raises(DatasetError, match="checksum mismatch"):
        datasets.fetch(datasets.load_manifest(manifest_path))


def test_import_verifies_against_known_checksums(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "cache"))
    source = write_dataset(tmp_path / "src").parent / "crops"
    manifest_path = write_dataset(tmp_path / "def")
    text = manifest_path.read_text().replace("bundled = true", "bundled = false")
    manifest_path.write_text(text)
    manifest = datasets.load_manifest(manifest_path)
    assert len(datasets.import_from(manifest, source)) == 3
    bad = tmp_path / "bad"
    shutil.copytree(source, bad)
    save_png(bad / "a.png", kodak_crop("kodim02.png", 0, 0, 64, 96))
    (tmp_path / "cache" / "crops" / "a.png").unlink()
    with pytest.raises(DatasetError, match="checksum mismatch|size"):
        datasets.import_from(manifest, bad)


def test_import_pins_when_checksums_are_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "cache"))
    source = write_dataset(tmp_path / "src").parent / "crops"
    manifest = datasets.load_manifest(_pinned_manifest(tmp_path, "http://127.0.0.1:9/x.zip"))
    with pytest.warns(PinnedChecksumWarning):
        assert len(datasets.import_from(manifest, source)) == 3


def test_unreadable_images_give_clear_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(ImageReadError, match="bad.png: cannot read image"):
        load_rgb(tmp_path / "bad.png")
    from PIL import Image

    Image.new("RGBA", (4, 4)).save(tmp_path / "alpha.png")
    with pytest.raises(ImageReadError, match="alpha"):
        load_rgb(tmp_path / "alpha.png")
    Image.new("L", (5, 3), 7).save(tmp_path / "grey.png")
    grey = load_rgb(tmp_path / "grey.png")
    assert grey.shape == (3, 5, 3) and grey.dtype.name == "uint8" and (grey == 7).all()


def _png16_rgb(path: Path, height: int = 6, width: int = 5) -> Path:
    """A real 16-bit RGB PNG (Pillow cannot write one; Pillow reads it as mode "RGB")."""
    samples = (np.arange(height * width * 3).reshape(height, width, 3) * 997).astype(">u2")
    rows = b"".join(b"\0" + samples[r].tobytes() for r in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )  # fmt: skip
    return path


def test_16bit_rgb_png_is_refused_not_silently_read_as_8bit(tmp_path):
    from PIL import Image

    path = _png16_rgb(tmp_path / "deep.png")
    with Image.open(path) as im:
        assert im.mode == "RGB"  # what made it slip through before
    with pytest.raises(ImageReadError, match="deep.png: 16-bit samples"):
        load_rgb(path)


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bench", "--no-entry-points", *args]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


def test_import_checks_every_image_and_names_the_bad_ones(tmp_path):
    source = write_dataset(tmp_path / "src").parent / "crops"
    _png16_rgb(source / "deep.png")
    (source / "junk.png").write_text("not an image")
    from PIL import Image

    Image.new("RGBA", (4, 4)).save(source / "alpha.png")
    shutil.copy(_pinned_manifest(tmp_path, "http://127.0.0.1:9/x.zip"), tmp_path / "m.toml")
    env = {"BENCH_DATA_DIR": str(tmp_path / "cache"), "BENCH_DATASETS_DIR": str(tmp_path)}
    done = _cli("datasets", "import", "remote", "--from", str(source), env=env)
    assert done.returncode == 3, done.stderr
    assert "3 of 6 images" in done.stderr and "verified" not in done.stdout
    for bad in ("deep.png: 16-bit samples", "junk.png: cannot read image", "alpha.png: has an"):
        assert bad in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "cache" / "remote").exists() or not any(
        (tmp_path / "cache" / "remote").glob("*.png")
    )


def test_pin_warning_is_one_line_and_list_survives_symlinks_and_broken_manifests(tmp_path):
    source = write_dataset(tmp_path / "src").parent / "crops"
    shutil.copy(_pinned_manifest(tmp_path, "http://127.0.0.1:9/x.zip"), tmp_path / "m.toml")
    env = {"BENCH_DATA_DIR": str(tmp_path / "cache"), "BENCH_DATASETS_DIR": str(tmp_path)}
    done = _cli("datasets", "import", "remote", "--from", str(source), env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: dataset 'remote': no published"), lines
    assert "remote: 3 images verified" in done.stdout
    # a bundled dataset whose image is a symbolic link out of its folder, and a broken manifest
    bundled = write_dataset(tmp_path / "sets", name="local")
    (tmp_path / "local.toml").write_text(bundled.read_text())
    shutil.copytree(bundled.parent / "local", tmp_path / "local")
    outside = tmp_path / "outside.png"
    shutil.move(tmp_path / "local" / "a.png", outside)
    (tmp_path / "local" / "a.png").symlink_to(outside)
    (tmp_path / "loop.toml").symlink_to(tmp_path / "loop.toml")
    (tmp_path / "dir.toml").mkdir()
    done = _cli("datasets", "list", env={**env, "COLUMNS": "400"})
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "a.png: resolves outside" in done.stdout
    assert done.stdout.count("broken manifest") == 2
