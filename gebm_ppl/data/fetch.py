"""Finding source files: explicit folder → $GEBM_DATA_DIR → user cache → download, verified by SHA-256."""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from .._io import atomic_open
from .checksums import ChecksumMismatchError, file_digest
from .registry import ARCHIVES, DatasetSpec, SourceFile

__all__ = [
    "ChecksumMismatchError",
    "DataNotFoundError",
    "data_dirs",
    "default_cache_dir",
    "download_file",
    "file_digest",
    "locate",
]

ENV_DATA_DIR = "GEBM_DATA_DIR"
ENV_CACHE_DIR = "GEBM_CACHE_DIR"
ENV_MIRROR = "GEBM_DATA_MIRROR"
_CHUNK = 1 << 20


class DataNotFoundError(FileNotFoundError):
    """A source file is in none of the places looked at and could not be downloaded."""


def default_cache_dir() -> Path:
    """``$GEBM_CACHE_DIR``, else ``$XDG_CACHE_HOME/gebm_ppl``, else ``~/.cache/gebm_ppl``."""
    if os.environ.get(ENV_CACHE_DIR):
        return Path(os.environ[ENV_CACHE_DIR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "gebm_ppl"


def data_dirs() -> list[Path]:
    """The folders of ``$GEBM_DATA_DIR``, a list separated by ``os.pathsep`` (like PATH), in order.

    Empty entries are skipped; folders that do not exist are kept (the lookup just finds nothing there).
    """
    value = os.environ.get(ENV_DATA_DIR) or ""
    return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]


def _gunzip_digest(path: Path) -> str | None:
    """SHA-256 of the decompressed bytes of a gzip file; None if it is no valid gzip stream."""
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except (OSError, EOFError, zlib.error):  # BadGzipFile is an OSError; a torn stream an EOFError
        return None
    return h.hexdigest()


def _verify(path: Path, expected: str | None, what: str, content: str | None = None) -> str:
    actual = file_digest(path)
    if expected is None or actual == expected:
        return actual
    if content is not None:
        unzipped = _gunzip_digest(path)
        if unzipped == content:
            return actual
        also = f" and its decompressed bytes have SHA-256 {unzipped}, expected {content}"
    else:
        also = ""
    raise ChecksumMismatchError(
        f"SHA-256 mismatch for {what} {str(path)!r}: expected {expected}, got {actual} "
        f"({path.stat().st_size} bytes){also}. The file is truncated, modified or another version; "
        "delete or replace it."
    )


def _candidates(folder: Path, source: SourceFile) -> list[Path]:
    rel = Path(source.path)
    return [folder / rel, folder / rel.name] if rel.parent != Path(".") else [folder / rel]


def _progress(total: int | None, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=None, leave=False)


def download_file(url: str, dest: Path, sha256: str | None = None, md5: str | None = None, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` atomically, checking the SHA-256 (or MD5) before the rename.

    Raises:
        ChecksumMismatchError: the downloaded bytes have another hash (``dest`` is not written).
        OSError: the download failed (urllib's URLError is an OSError).
    """
    dest = Path(dest)
    algo, expected = ("sha256", sha256) if sha256 or not md5 else ("md5", md5)
    h = hashlib.new(algo)
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        e.close()  # an HTTPError holds the open response
        raise OSError(f"HTTP {e.code} {e.reason} for {url!r}") from None
    with response:
        total = response.headers.get("Content-Length")
        with atomic_open(dest, "wb") as f, _progress(int(total) if total else None, dest.name) as bar:
            while chunk := response.read(_CHUNK):
                f.write(chunk)
                h.update(chunk)
                bar.update(len(chunk))
            if expected is not None and h.hexdigest() != expected:
                raise ChecksumMismatchError(
                    f"{algo.upper()} mismatch for the download of {url!r}: expected {expected}, "
                    f"got {h.hexdigest()}; nothing was written to {str(dest)!r}."
                )
    return dest


def _url(source: SourceFile, mirror: str | None) -> str | None:
    if mirror:
        return mirror.rstrip("/") + "/" + source.path
    return source.url


def _download_archive(name: str, raw_dir: Path, mirror: str | None, timeout: float) -> None:
    """Fetch an archive (verified by its published MD5) and extract every registered member."""
    archive = ARCHIVES[name]
    url = mirror.rstrip("/") + "/" + Path(archive.url).name if mirror else archive.url
    target = raw_dir / archive.filename
    if not target.is_file() or file_digest(target, "md5") != archive.md5:
        download_file(url, target, md5=archive.md5, timeout=timeout)
    from .registry import DATASETS

    wanted = {archive.prefix + f.path: f for s in DATASETS.values() for f in s.files if f.archive == name}
    with tarfile.open(target, "r:*") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                src = tar.extractfile(member)
                with atomic_open(raw_dir / wanted[member.name].path, "wb") as f:
                    shutil.copyfileobj(src, f, _CHUNK)
    target.unlink()


def locate(
    spec: DatasetSpec,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    mirror: str | None = None,
    timeout: float = 60,
) -> dict[str, tuple[Path, str]]:
    """Find (or download) every source file of ``spec`` and verify it.

    Order: ``data_dir`` → each folder of ``$GEBM_DATA_DIR`` (a list separated by ``os.pathsep``, searched
    in order) → ``cache_dir/raw`` (default the user cache) →
    download into ``cache_dir/raw`` from the official URL (or ``mirror`` / ``$GEBM_DATA_MIRROR``,
    a base URL under which the files sit at their relative paths). In a folder a file is looked
    up at its relative path (``wine-quality/winequality-red.csv``) and then by its bare name.
    A gzip source with a ``content_sha256`` is also accepted when its decompressed bytes match it.

    Returns:
        ``{relative path: (local path, sha256)}``.

    Raises:
        FileNotFoundError: ``data_dir`` does not exist.
        DataNotFoundError: a file is nowhere and could not be downloaded (lists where it looked).
        ChecksumMismatchError: a file found or downloaded has the wrong SHA-256 (names it).
    """
    folders: list[tuple[str, Path]] = []
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise FileNotFoundError(f"data_dir {str(data_dir)!r} does not exist or is not a folder.")
        folders.append(("data_dir", data_dir))
    env_dirs = data_dirs()
    for i, folder in enumerate(env_dirs):
        folders.append((f"${ENV_DATA_DIR}" + (f"[{i}]" if len(env_dirs) > 1 else ""), folder))
    raw_dir = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()) / "raw"
    folders.append(("user cache", raw_dir))
    mirror = mirror if mirror is not None else os.environ.get(ENV_MIRROR)

    found: dict[str, tuple[Path, str]] = {}
    for source in spec.files:
        looked = []
        path = None
        for label, folder in folders:
            for candidate in _candidates(folder, source):
                looked.append(f"{label}: {candidate}")
                if candidate.is_file():
                    path = candidate
                    break
            if path is not None:
                break
        if path is None:
            path = _fetch(source, raw_dir, download, mirror, timeout, looked)
        found[source.path] = (path, _verify(path, source.sha256, f"{spec.name} source file", source.content_sha256))
    return found


def _fetch(source: SourceFile, raw_dir: Path, download: bool, mirror: str | None, timeout: float, looked) -> Path:
    where = "\n  ".join(looked)
    if not download:
        raise DataNotFoundError(f"{source.path!r} not found (download=False). Looked in:\n  {where}")
    dest = raw_dir / source.path
    try:
        if source.archive is not None:
            _download_archive(source.archive, raw_dir, mirror, timeout)
            if not dest.is_file():
                raise DataNotFoundError(f"the {source.archive!r} archive has no member {source.path!r}")
        else:
            url = _url(source, mirror)
            if url is None:
                raise DataNotFoundError("no download URL is known")
            if source.content_sha256 is None:
                download_file(url, dest, sha256=source.sha256, timeout=timeout)
            else:  # either hash may match: check the download beside dest, then rename it
                part = dest.with_name(f".{dest.name}.download")
                download_file(url, part, timeout=timeout)
                try:
                    _verify(part, source.sha256, f"the download of {url!r}, saved as", source.content_sha256)
                except ChecksumMismatchError as e:
                    part.unlink()
                    raise ChecksumMismatchError(f"{e} Nothing was kept in {str(raw_dir)!r}.") from None
                os.replace(part, dest)
    except ChecksumMismatchError:
        raise
    except OSError as e:
        origin = f"archive {source.archive!r}" if source.archive else repr(_url(source, mirror))
        raise DataNotFoundError(
            f"{source.path!r} not found, and the download from {origin} failed ({type(e).__name__}: {e}). "
            f"Looked in:\n  {where}\nSet data_dir or ${ENV_DATA_DIR} to a folder holding it."
        ) from e
    return dest
