"""Download D4RL HDF5 files into the d4rl cache: resumable, size-checked, sha256 sidecar, corrupt files re-fetched."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from o2o.registry import DatasetSpec

log = logging.getLogger(__name__)

ENV_CACHE_DIR = "D4RL_DATASET_DIR"
ENV_BASE_URL = "O2O_D4RL_BASE_URL"

_CHUNK = 1 << 20  # bytes per read / hash update
_RETRIES = 3  # extra attempts after the first on broken transfers and server errors (5xx)
_CONNECT_RETRIES = 1  # extra attempts when the server cannot be contacted (each may wait `timeout`)
_BACKOFF_S = 1.0  # sleep before retry k is _BACKOFF_S * 2**k (tests set it to 0)
_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)


class DownloadError(RuntimeError):
    """A dataset could not be downloaded; the message names the URL and the reason."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot download {url}: {reason}")


class _Unreachable(Exception):
    """The server could not be contacted at all (DNS failure, refused, network unreachable, connect timeout)."""

    def __init__(self, reason: object) -> None:
        self.dns = isinstance(reason, socket.gaierror)  # retrying a failed name lookup is pointless
        super().__init__(str(reason))


class _Interrupted(Exception):
    """The transfer started but broke off (reset, timeout, short read); the .part file is resumable."""


def cache_dir() -> Path:
    """Directory of cached D4RL files: $D4RL_DATASET_DIR, else ~/.d4rl/datasets (the one d4rl itself uses)."""
    env = os.environ.get(ENV_CACHE_DIR, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".d4rl" / "datasets"


def source_url(spec: DatasetSpec) -> str:
    """URL to download `spec` from: $O2O_D4RL_BASE_URL/<file name> when that mirror is set, else the D4RL URL."""
    if not spec.url or not spec.filename:
        raise ValueError(f"dataset {spec.name!r} (source {spec.source!r}) has no download URL")
    base = os.environ.get(ENV_BASE_URL, "").strip()
    return f"{base.rstrip('/')}/{spec.filename}" if base else spec.url


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_sidecar(path: Path, digest: str) -> None:
    side = _sidecar(path)
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(f"{digest}  {path.name}\n")
    os.replace(tmp, side)


def verify(path: Path) -> bool:
    """Whether `path` matches its .sha256 sidecar; with no sidecar (d4rl's or a hand-placed file) write one, True."""
    path = Path(path)
    if not path.is_file():
        return False
    side = _sidecar(path)
    digest = sha256_file(path)
    if side.exists():
        fields = side.read_text().split()
        return bool(fields) and fields[0].lower() == digest
    try:
        _write_sidecar(path, digest)
    except OSError as e:  # read-only shared cache: the file is still usable
        log.debug("cannot write %s: %s", side, e)
    return True


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header; None where absent or '*'."""
    m = _CONTENT_RANGE.match(value.strip()) if value else None
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) else None), (int(m.group(3)) if m.group(3) != "*" else None)


def _attempt(url: str, part: Path, progress: bool, timeout: float) -> int | None:
    """One HTTP request appending to (or restarting) `part`; returns the expected total size, None if unknown."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "o2o-bench", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # the .part already holds all (or more than all) of the file
            _, total = _parse_content_range(e.headers.get("Content-Range"))
            e.close()
            if total == offset:
                return total
            part.unlink()
            raise _Interrupted(f"server refused to resume at byte {offset} (HTTP 416); restarting") from e
        raise
    except urllib.error.URLError as e:
        raise _Unreachable(e.reason) from e
    except (OSError, http.client.HTTPException) as e:  # connected, but no response
        raise _Interrupted(f"{type(e).__name__}: {e}") from e
    with resp:
        length = resp.headers.get("Content-Length")
        length_n = int(length) if length and length.isdigit() else None
        if offset and resp.status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Interrupted(f"server answered Range bytes={offset}- from byte {start}; restarting")
            mode = "ab"
            if total is None and length_n is not None:
                total = offset + length_n
        else:  # 200: a fresh transfer, also when the server ignored our Range header
            if offset:
                log.info("%s ignored the Range request; restarting %s from zero", url, part.name)
            offset, mode, total = 0, "wb", length_n
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name.removesuffix(".part"), disable=None if progress else True, leave=False)
        try:
            with open(part, mode) as f:
                while True:
                    try:
                        chunk = resp.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise _Interrupted(f"{type(e).__name__}: {e}") from e
                    if not chunk:
                        break
                    f.write(chunk)
                    bar.update(len(chunk))
        finally:
            bar.close()
    size = part.stat().st_size
    if total is not None and size < total:
        raise _Interrupted(f"short read: got {size} of {total} bytes")
    if total is not None and size > total:
        part.unlink()
        raise DownloadError(url, f"size mismatch: got {size} bytes, server announced {total}")
    return total


def _offline_hint(url: str, dest: Path, reason: str) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    return (
        f"{host} is unreachable ({reason}). Without network access, download the file {dest.name} from {url} "
        f"elsewhere and put it at {dest}; or set {ENV_BASE_URL} to a mirror that holds the D4RL files under the "
        f"same names, or {ENV_CACHE_DIR} to a directory that already holds them."
    )


def download(url: str, dest: Path, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` via a resumable `dest.part`, check its size, and write `dest.sha256`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    log.info("downloading %s to %s", url, dest)
    reason = ""
    for attempt in range(_RETRIES + 1):
        if attempt:
            time.sleep(_BACKOFF_S * 2 ** (attempt - 1))
            log.warning("retrying %s (attempt %d of %d): %s", url, attempt + 1, _RETRIES + 1, reason)
        try:
            _attempt(url, part, progress, timeout)
            break
        except urllib.error.HTTPError as e:
            reason = f"HTTP {e.code} {e.reason}"
            e.close()
            if e.code not in _RETRYABLE_HTTP:
                if os.environ.get(ENV_BASE_URL, "").strip():
                    reason += f" (is the file missing from the {ENV_BASE_URL} mirror?)"
                raise DownloadError(url, reason) from None
        except _Unreachable as e:
            reason = str(e)
            if e.dns or attempt >= min(_CONNECT_RETRIES, _RETRIES):
                raise DownloadError(url, _offline_hint(url, dest, reason)) from None
        except _Interrupted as e:
            reason = str(e)
        except OSError as e:  # local I/O: disk full, permissions
            raise DownloadError(url, f"cannot write {part}: {e}") from e
    else:
        kept = f"; {part} is kept and the next call resumes it" if part.exists() else ""
        raise DownloadError(url, f"{reason} (after {_RETRIES + 1} attempts){kept}")
    digest = sha256_file(part)
    _sidecar(dest).unlink(missing_ok=True)
    os.replace(part, dest)
    _write_sidecar(dest, digest)
    return dest


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock on `path`.lock (so parallel runs download a file once); no-op where impossible."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # read-only cache
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _problem(path: Path, validate: Callable[[Path], None] | None) -> str | None:
    """Why the file at `path` must not be used (one line), or None if it is fine."""
    if not verify(path):
        return f"sha256 differs from {_sidecar(path).name}"
    if validate is not None:
        try:
            validate(path)
        except Exception as e:  # noqa: BLE001 - any failure of the validator means corrupt
            return " ".join(f"{type(e).__name__}: {e}".split())
    return None


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
    _sidecar(path).unlink(missing_ok=True)


def fetch_d4rl(spec: DatasetSpec, *, validate: Callable[[Path], None] | None = None, progress: bool = True) -> Path:
    """Path of `spec`'s HDF5 file in cache_dir(), downloaded (again, if the cached copy is corrupt) when needed."""
    if not spec.url or not spec.filename:
        raise ValueError(f"dataset {spec.name!r} (source {spec.source!r}) has no download URL")
    path = cache_dir() / spec.filename
    with _lock(path):
        if path.exists():
            problem = _problem(path, validate)
            if problem is None:
                return path
            warnings.warn(f"cached dataset {path} is corrupt ({problem}); downloading it again", stacklevel=2)
            _discard(path)
        url = source_url(spec)
        download(url, path, progress=progress)
        problem = _problem(path, validate)
        if problem is not None:
            _discard(path)
            raise DownloadError(url, f"the downloaded file {path} is corrupt ({problem}); it was deleted")
    return path
