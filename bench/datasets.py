"""Dataset manifests: which images a benchmark runs on, and proof that they are the right bytes.

One TOML manifest per dataset lives in ``datasets/`` (or ``$BENCH_DATASETS_DIR``)::

    [dataset]
    name = "kodak"
    bundled = true                 # files ship in datasets/<name>/ next to the manifest
    checksums = "published"        # or "pin-on-first-download"
    include = "*.png"              # pinned datasets: which archive members are images
    [[files]]                      # name (relative to the dataset folder), sha256, size in bytes
    name = "kodim01.png"
    sha256 = "..."
    size = 736501
    url = "https://..."            # canonical download address
    [[archives]]                   # or: archives whose members are the images
    url = "https://..."
    sha256 = ""                    # "" = unknown: pinned at first download

Datasets that are not bundled live in the data cache: ``$BENCH_DATA_DIR/<name>`` or the user
cache directory. Where checksums could not be known when the manifest was written, the first
download or import records them in ``PINNED.toml`` beside the files, with a visible warning, and
every later use is verified against the pins. Every problem (missing file, size or checksum
mismatch, an entry that points outside its folder) raises :class:`DatasetError` naming the file
and the fix.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import tempfile
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import tomllib
from platformdirs import user_cache_dir

from bench.hashing import sha256_file

PINS_FILE = "PINNED.toml"
CHECKSUM_MODES = ("published", "pin-on-first-download")


class DatasetError(Exception):
    """A dataset cannot be used as it is; the message says which file and what to do."""


class PinnedChecksumWarning(UserWarning):
    """Checksums were recorded from a first download, not checked against published values."""


@dataclass(frozen=True)
class FileEntry:
    """One image of a dataset: ``name`` relative to the dataset folder, ``size`` in bytes."""

    name: str
    sha256: str
    size: int
    url: str = ""
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Archive:
    """A download whose members are the dataset's images; ``sha256`` is ``""`` if unknown."""

    url: str
    sha256: str = ""


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest. ``path`` is the TOML file, ``sha256`` its digest (for provenance)."""

    name: str
    description: str
    path: Path
    sha256: str
    bundled: bool
    checksums: str
    files: tuple[FileEntry, ...] = ()
    archives: tuple[Archive, ...] = ()
    include: str = "*.png"
    license: str = ""
    homepage: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def root(self) -> Path:
        """The folder that holds (or will hold) the images."""
        if self.bundled:
            return self.path.parent / self.name
        return data_cache_dir() / self.name


def manifests_dir() -> Path:
    """``$BENCH_DATASETS_DIR`` if set, else the project's ``datasets/`` folder."""
    env = os.environ.get("BENCH_DATASETS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "datasets"


def data_cache_dir() -> Path:
    """Where downloaded datasets go: ``$BENCH_DATA_DIR`` or the user cache directory."""
    env = os.environ.get("BENCH_DATA_DIR")
    return Path(env) if env else Path(user_cache_dir("bench")) / "datasets"


def _safe_relative(name: str, where: str) -> str:
    """Reject names that would leave the dataset folder (absolute paths, '..', drive letters)."""
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or ".." in path.parts or ":" in name:
        raise DatasetError(f"{where}: entry {name!r} points outside its dataset folder")
    return str(path)


def _parse_files(raw: list[dict], where: str) -> tuple[FileEntry, ...]:
    entries = []
    for item in raw:
        try:
            entry = FileEntry(
                name=_safe_relative(str(item["name"]), where),
                sha256=str(item["sha256"]).lower(),
                size=int(item["size"]),
                url=str(item.get("url", "")),
                width=item.get("width"),
                height=item.get("height"),
            )
        except KeyError as exc:
            raise DatasetError(f"{where}: file entry {item!r} lacks {exc}") from None
        entries.append(entry)
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise DatasetError(f"{where}: duplicate file names")
    return tuple(entries)


def load_manifest(name_or_path: str | Path) -> Manifest:
    """Load a manifest by dataset name (from :func:`manifests_dir`) or by path to a TOML file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" and candidate.exists():
        path = candidate
    else:
        path = manifests_dir() / f"{name_or_path}.toml"
        if not path.exists():
            known = ", ".join(m.stem for m in sorted(manifests_dir().glob("*.toml"))) or "none"
            raise DatasetError(f"unknown dataset {name_or_path!r} (known: {known})")
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    try:
        raw = tomllib.loads(raw_bytes.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{path}: not a valid TOML manifest: {exc}") from None
    meta = raw.get("dataset", {})
    where = str(path)
    checksums = meta.get("checksums", "published")
    if checksums not in CHECKSUM_MODES:
        raise DatasetError(f"{where}: checksums must be one of {CHECKSUM_MODES}, not {checksums!r}")
    files = _parse_files(raw.get("files", []), where)
    archives = tuple(
        Archive(str(a["url"]), str(a.get("sha256", ""))) for a in raw.get("archives", [])
    )
    if not files and not archives:
        raise DatasetError(f"{where}: lists neither files nor archives")
    if checksums == "published" and (any(not a.sha256 for a in archives) or not files):
        raise DatasetError(f"{where}: checksums = 'published' but some are missing")
    return Manifest(
        name=str(meta.get("name", path.stem)),
        description=str(meta.get("description", "")),
        path=path.resolve(),
        sha256=hashlib.sha256(raw_bytes).hexdigest(),
        bundled=bool(meta.get("bundled", False)),
        checksums=checksums,
        files=files,
        archives=archives,
        include=str(meta.get("include", "*.png")),
        license=str(meta.get("license", "")),
        homepage=str(meta.get("homepage", "")),
    )


def list_manifests() -> list[Manifest]:
    """Every manifest in :func:`manifests_dir`, sorted by name. Broken ones raise."""
    return [load_manifest(p) for p in sorted(manifests_dir().glob("*.toml"))]


def _pinned_entries(manifest: Manifest) -> tuple[FileEntry, ...]:
    pins = manifest.root / PINS_FILE
    if not pins.exists():
        return ()
    try:
        raw = tomllib.loads(pins.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise DatasetError(f"{pins}: corrupt pin file ({exc}); delete it and fetch again") from None
    return _parse_files(raw.get("files", []), str(pins))


def expected_files(manifest: Manifest) -> tuple[FileEntry, ...]:
    """The files a complete copy must have: the manifest's, or the pins of a first download."""
    return manifest.files or _pinned_entries(manifest)


def _check_entry(root: Path, entry: FileEntry) -> str | None:
    try:
        path = (root / entry.name).resolve()
    except (OSError, RuntimeError) as exc:  # a symbolic link loop
        return f"{entry.name}: cannot resolve ({exc})"
    if not path.is_relative_to(root.resolve()):
        return f"{entry.name}: resolves outside {root} (symbolic link?)"
    if not path.is_file():
        return f"{entry.name}: missing"
    size = path.stat().st_size
    if size != entry.size:
        return f"{entry.name}: size {size} bytes, expected {entry.size} (truncated or replaced?)"
    digest = sha256_file(path)
    if digest != entry.sha256:
        return f"{entry.name}: checksum mismatch (sha256 {digest}, expected {entry.sha256})"
    return None


def verify(manifest: Manifest) -> list[Path]:
    """Check every file of the dataset; return their paths in manifest order.

    Raises :class:`DatasetError` listing every problem, with the command that fixes it.
    """
    entries = expected_files(manifest)
    root = manifest.root
    if not entries:
        raise DatasetError(
            f"dataset {manifest.name!r} is not downloaded yet (looked in {root}); run "
            f"`bench datasets fetch {manifest.name}` or "
            f"`bench datasets import {manifest.name} --from DIR`"
        )
    problems = [p for p in (_check_entry(root, e) for e in entries) if p]
    if problems:
        fix = (
            "restore the project's datasets/ folder from git"
            if manifest.bundled
            else f"run `bench datasets fetch {manifest.name}` (or import) again"
        )
        listing = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise DatasetError(
            f"dataset {manifest.name!r} failed verification in {root}:\n  {listing}\n{fix}"
        )
    return [root / e.name for e in entries]


def _write_pins(manifest: Manifest, entries: list[FileEntry], archive_sha: dict[str, str]) -> None:
    lines = [
        "# Checksums recorded at first download/import: NOT verified against published values.",
        f"# dataset = {manifest.name}",
    ]
    for url, digest in archive_sha.items():
        lines += ["[[archives]]", f'url = "{url}"', f'sha256 = "{digest}"', ""]
    for e in entries:
        lines += [
            "[[files]]",
            f'name = "{e.name}"',
            f'sha256 = "{e.sha256}"',
            f"size = {e.size}",
            "",
        ]
    (manifest.root / PINS_FILE).write_text("\n".join(lines))
    warnings.warn(
        f"dataset {manifest.name!r}: no published checksums; pinned {len(entries)} files "
        f"on first use in {manifest.root / PINS_FILE}. Later runs are verified against these.",
        PinnedChecksumWarning,
        stacklevel=3,
    )


def _entry_for(root: Path, name: str) -> FileEntry:
    path = root / name
    return FileEntry(name=name, sha256=sha256_file(path), size=path.stat().st_size)


def _copy_verified(src: Path, dst: Path, entry: FileEntry | None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, tmp)
    if entry is not None:
        problem = _check_entry(tmp.parent, FileEntry(tmp.name, entry.sha256, entry.size))
        if problem:
            tmp.unlink()
            raise DatasetError(f"{src}: {problem.split(': ', 1)[1]}")
    os.replace(tmp, dst)


Downloader = Callable[[str, Path], None]


def _urllib_download(url: str, dest: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "bench-progressive"})
    with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as out:
        shutil.copyfileobj(response, out)


def _download(url: str, dest: Path, downloader: Downloader, name: str) -> None:
    try:
        downloader(url, dest)
    except OSError as exc:
        raise DatasetError(
            f"cannot download {url}: {exc}. Download it yourself, then run "
            f"`bench datasets import {name} --from DIR`"
        ) from None


def fetch(manifest: Manifest, downloader: Downloader = _urllib_download) -> list[Path]:
    """Download a dataset into the cache, verify it (or pin it), and return its file paths."""
    if manifest.bundled:
        return verify(manifest)
    root = manifest.root
    root.mkdir(parents=True, exist_ok=True)
    if manifest.files and not manifest.archives:
        for entry in manifest.files:
            if _check_entry(root, entry) is None:
                continue
            if not entry.url:
                raise DatasetError(f"{manifest.name}: no URL for {entry.name}; import it instead")
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                part = Path(tmp) / "download"
                _download(entry.url, part, downloader, manifest.name)
                _copy_verified(part, root / entry.name, entry)
        return verify(manifest)
    archive_sha: dict[str, str] = {}
    extracted: list[str] = []
    for archive in manifest.archives:
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            part = Path(tmp) / "archive"
            _download(archive.url, part, downloader, manifest.name)
            digest = sha256_file(part)
            if archive.sha256 and digest != archive.sha256:
                raise DatasetError(
                    f"{archive.url}: checksum mismatch (sha256 {digest}, expected "
                    f"{archive.sha256}); the download is corrupt or the file changed upstream"
                )
            archive_sha[archive.url] = digest
            extracted += _extract_images(part, root, manifest)
    if not manifest.files:
        _write_pins(manifest, [_entry_for(root, n) for n in sorted(extracted)], archive_sha)
    return verify(manifest)


def _extract_images(archive: Path, root: Path, manifest: Manifest) -> list[str]:
    """Extract members matching ``include`` (flattened to their base names) into ``root``."""
    if not zipfile.is_zipfile(archive):
        raise DatasetError(f"{manifest.name}: the download is not a zip archive")
    names: list[str] = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            member = info.filename
            wanted = fnmatch.fnmatch(member, manifest.include) or fnmatch.fnmatch(
                member, "*/" + manifest.include
            )
            if info.is_dir() or not wanted:
                continue
            base = _safe_relative(PurePosixPath(member).name, f"{manifest.name} archive")
            if base in names:
                raise DatasetError(f"{manifest.name}: two archive members are named {base}")
            with zf.open(info) as src, open(root / base, "wb") as dst:
                shutil.copyfileobj(src, dst)
            names.append(base)
    if not names:
        raise DatasetError(f"{manifest.name}: no archive member matches {manifest.include!r}")
    return names


def image_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a benchmark image (unreadable, alpha, more than 8 bits, larger
    than :data:`bench.codec.MAX_SIDE` / :data:`bench.codec.MAX_PIXELS`), or ``None``."""
    from bench.codec import check_image
    from bench.images import ImageReadError, load_rgb

    try:
        check_image(load_rgb(path))
    except (ImageReadError, ValueError) as exc:
        return f"{path.name}: {str(exc).removeprefix(f'{path}: ')}"
    return None


def _check_images(paths: list[Path], source: Path) -> None:
    problems = [p for p in map(image_problem, paths) if p]
    if problems:
        listing = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise DatasetError(
            f"{len(problems)} of {len(paths)} images under {source} cannot be used "
            f"(nothing imported):\n  {listing}"
        )


def import_from(manifest: Manifest, source: Path) -> list[Path]:
    """Copy a dataset from a local folder into the cache, verifying (or pinning) checksums.

    Every image is checked first (:func:`image_problem`); if any is bad, :class:`DatasetError`
    lists them and nothing is copied.
    """
    source = Path(source)
    if not source.is_dir():
        raise DatasetError(f"{source} is not a folder")
    if manifest.bundled:
        return verify(manifest)
    root = manifest.root
    root.mkdir(parents=True, exist_ok=True)
    entries = expected_files(manifest)
    if entries:
        sources = []
        for entry in entries:
            candidates = [source / entry.name, *source.rglob(PurePosixPath(entry.name).name)]
            found = next((c for c in candidates if c.is_file()), None)
            if found is None:
                raise DatasetError(f"{entry.name} not found under {source}")
            sources.append(found)
        _check_images(sources, source)
        for entry, found in zip(entries, sources, strict=True):
            _copy_verified(found, root / entry.name, entry)
        return verify(manifest)
    pattern = PurePosixPath(manifest.include).name
    found = sorted(p for p in source.rglob(pattern) if p.is_file())
    if not found:
        raise DatasetError(f"no files matching {pattern!r} under {source}")
    _check_images(found, source)
    names = []
    for path in found:
        if path.name in names:
            raise DatasetError(f"two files under {source} are named {path.name}")
        _copy_verified(path, root / path.name, None)
        names.append(path.name)
    _write_pins(manifest, [_entry_for(root, n) for n in names], {})
    return verify(manifest)
