"""Dataset manifests: verification, tampering, escaping paths, downloads, imports and pinning."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

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
