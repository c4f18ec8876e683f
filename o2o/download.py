"""Download D4RL HDF5 files into the d4rl cache: resumable, checked before use, sha256 sidecar, bad files re-fetched.

Trust rules (README, "Real D4RL data"):
- A file is accepted (renamed into the cache, its `<file>.sha256` sidecar written) only after it passed every check:
  its sha256 against the user's pin (CHECKSUMS_FILE) or else the registry's known size and sha256, then the
  caller's structure check (keys, dims). A cached file without a sidecar gets the same checks before its sidecar is
  written; one with a sidecar must still match it.
- A partial download (`<file>.part`) resumes only with `If-Range` and the validator (strong ETag, else Last-Modified)
  of the response it came from, saved beside it as `<file>.part.validator`; without one, or when the server answers
  a ranged request with 200 or with another validator, the download starts again from zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
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
from typing import Any

from tqdm import tqdm

from o2o.dataset import DatasetError
from o2o.records import atomic_write
from o2o.registry import DatasetSpec

log = logging.getLogger(__name__)

ENV_CACHE_DIR = "D4RL_DATASET_DIR"
ENV_BASE_URL = "O2O_D4RL_BASE_URL"
ENV_CHECKSUMS = "O2O_D4RL_CHECKSUMS"  # path of a checksums file used instead of <cache dir>/checksums.txt
CHECKSUMS_FILE = "checksums.txt"  # `sha256sum` format: "<64 hex digits>  <file name>" per line, '#' comments

_CHUNK = 1 << 20  # bytes per read / hash update
_RETRIES = 3  # extra attempts after the first on broken transfers and server errors (5xx)
_CONNECT_RETRIES = 1  # extra attempts when the server cannot be contacted (each may wait `timeout`)
_BACKOFF_S = 1.0  # sleep before retry k is _BACKOFF_S * 2**k (tests set it to 0)
_RETRYABLE_HTTP = frozenset({408, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)", re.IGNORECASE)
_SHA_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


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
    atomic_write(_sidecar(path), f"{digest}  {path.name}\n")


def _sidecar_digest(path: Path) -> str | None:
    """The sha256 recorded in `path`'s sidecar ('' when the sidecar is unreadable or empty), None without one."""
    side = _sidecar(path)
    if not side.exists():
        return None
    try:
        fields = side.read_text().split()
    except OSError:
        return ""
    return fields[0].lower() if fields else ""


def verify(path: Path) -> bool:
    """Whether `path` exists and matches its .sha256 sidecar (False without a sidecar: nothing vouches for it)."""
    path = Path(path)
    recorded = _sidecar_digest(path)
    return path.is_file() and bool(recorded) and recorded == sha256_file(path)


def checksums_path() -> Path:
    """The user's checksums file: $O2O_D4RL_CHECKSUMS, else <cache dir>/checksums.txt."""
    env = os.environ.get(ENV_CHECKSUMS, "").strip()
    return Path(env).expanduser() if env else cache_dir() / CHECKSUMS_FILE


def read_checksums(path: Path) -> dict[str, str]:
    """{file name: sha256} of a `sha256sum`-format file ({} when it does not exist); DatasetError on a bad line."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise DatasetError(f"{path}: cannot read the checksums file ({e})") from None
    pins: dict[str, str] = {}
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SHA_LINE.match(line)
        if m is None:
            raise DatasetError(f"{path}:{i}: not a checksum line '<64 hex digits>  <file name>': {line[:80]!r}")
        pins[os.path.basename(m.group(2).strip())] = m.group(1).lower()
    return pins


def expected_content(spec: DatasetSpec) -> tuple[int | None, str | None, str]:
    """(size, sha256, where from) `spec`'s file must have: the user's pin, else the registry's known values."""
    path = checksums_path()
    pinned = read_checksums(path).get(spec.filename or "")
    if pinned:
        return None, pinned, str(path)
    return spec.file_size, spec.sha256, "the registry (TensorFlow Datasets' record of D4RL's files)"


def content_problem(path: Path, spec: DatasetSpec, digest: str) -> str | None:
    """Why the file at `path` (sha256 `digest`) is not `spec`'s file (one line), or None when nothing says so."""
    size, sha, source = expected_content(spec)
    if size is not None and path.stat().st_size != size:
        why = f"it has {path.stat().st_size} bytes, {spec.name}'s file has {size}"
    elif sha is not None and digest != sha:
        why = f"its sha256 is {digest}, {spec.name}'s file has {sha}"
    else:
        return None
    return (f"not the file of {spec.name}: {why} (from {source}); a file you trust can be pinned as "
            f"'<sha256>  {spec.filename}' in {checksums_path()}")


def _parse_content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header; None where absent or '*'."""
    m = _CONTENT_RANGE.match(value.strip()) if value else None
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) else None), (int(m.group(3)) if m.group(3) != "*" else None)


def _validator_file(part: Path) -> Path:
    return part.with_name(part.name + ".validator")


def _response_validator(headers: Any) -> str | None:
    """The validator If-Range can name for this response: its strong ETag, else its Last-Modified date."""
    etag = (headers.get("ETag") or "").strip()
    if etag and not etag.startswith("W/"):  # If-Range needs a strong validator
        return etag
    return (headers.get("Last-Modified") or "").strip() or None


def _saved_validator(part: Path) -> str | None:
    try:
        value = json.loads(_validator_file(part).read_text()).get("if_range")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def _save_validator(part: Path, value: str | None) -> None:
    side = _validator_file(part)
    if value is None:
        side.unlink(missing_ok=True)
        return
    atomic_write(side, json.dumps({"if_range": value}) + "\n")


def _drop_partial(part: Path) -> None:
    """Delete a partial download and its saved validator."""
    part.unlink(missing_ok=True)
    _validator_file(part).unlink(missing_ok=True)


def _restart(part: Path, why: str) -> _Interrupted:
    """Drop the partial download; the _Interrupted to raise so that the next attempt starts from zero."""
    _drop_partial(part)
    return _Interrupted(f"{why}; restarting from zero")


def _attempt(url: str, part: Path, progress: bool, timeout: float) -> int | None:
    """One HTTP request appending to (or restarting) `part`; returns the expected total size, None if unknown."""
    offset = part.stat().st_size if part.exists() else 0
    saved = _saved_validator(part) if offset else None
    if offset and saved is None:
        log.info("%s has no saved ETag or Last-Modified: the server cannot promise the same file; restarting", part)
        part.unlink()
        offset = 0
    headers = {"User-Agent": "o2o-bench", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        headers["If-Range"] = saved
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # If-Range held (same file) and the .part holds all (or more than all) of it
            _, total = _parse_content_range(e.headers.get("Content-Range"))
            e.close()
            if total == offset:
                return total
            raise _restart(part, f"server refused to resume at byte {offset} (HTTP 416)") from e
        raise
    except urllib.error.URLError as e:
        raise _Unreachable(e.reason) from e
    except (OSError, http.client.HTTPException) as e:  # connected, but no response
        raise _Interrupted(f"{type(e).__name__}: {e}") from e
    with resp:
        length = resp.headers.get("Content-Length")
        length_n = int(length) if length and length.isdigit() else None
        validator = _response_validator(resp.headers)
        if offset and resp.status == 206:
            start, total = _parse_content_range(resp.headers.get("Content-Range"))
            if validator != saved:
                raise _restart(part, f"{url} answered the resume with validator {validator!r}, not {saved!r} "
                                     "(the file changed on the server)")
            if start != offset:
                raise _restart(part, f"server answered Range bytes={offset}- from byte {start}")
            mode = "ab"
            if total is None and length_n is not None:
                total = offset + length_n
        else:  # 200: a fresh transfer, also when the file changed (If-Range failed) or the server ignored Range
            if offset:
                log.info("%s answered the resume of %s with the whole file; restarting from zero", url, part.name)
            offset, mode, total = 0, "wb", length_n
            _save_validator(part, validator)
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
        _drop_partial(part)
        raise DownloadError(url, f"size mismatch: got {size} bytes, server announced {total}")
    return total


def _offline_hint(url: str, dest: Path, reason: str) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    return (
        f"{host} is unreachable ({reason}). Without network access, download the file {dest.name} from {url} "
        f"elsewhere and put it at {dest}; or set {ENV_BASE_URL} to a mirror that holds the D4RL files under the "
        f"same names, or {ENV_CACHE_DIR} to a directory that already holds them."
    )


def download(url: str, dest: Path, *, progress: bool = True, timeout: float = 60.0,
             check: Callable[[Path, str], str | None] | None = None) -> Path:
    """Download `url` to `dest` via a resumable `dest.part`; accept it (rename, write `dest.sha256`) only when
    `check(part, sha256)` finds no problem, else delete it and raise DownloadError with the problem."""
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
    problem = check(part, digest) if check is not None else None
    _validator_file(part).unlink(missing_ok=True)
    if problem is not None:
        _drop_partial(part)
        raise DownloadError(url, f"the downloaded file was refused and deleted: {problem}")
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


def _problem(path: Path, digest: str, spec: DatasetSpec, validate: Callable[[Path], None] | None) -> str | None:
    """Why the file at `path` (sha256 `digest`) must not be used as `spec`'s file (one line), or None if it is fine."""
    recorded = _sidecar_digest(path)
    if recorded is not None and recorded != digest:
        return f"sha256 differs from {_sidecar(path).name}"
    problem = content_problem(path, spec, digest)
    if problem is None and validate is not None:
        try:
            validate(path)
        except Exception as e:  # noqa: BLE001 - any failure of the validator means corrupt
            problem = " ".join(f"{type(e).__name__}: {e}".split())
    return problem


def _discard(path: Path) -> None:
    path.unlink(missing_ok=True)
    _sidecar(path).unlink(missing_ok=True)


def fetch_d4rl(spec: DatasetSpec, *, validate: Callable[[Path], None] | None = None, progress: bool = True) -> Path:
    """Path of `spec`'s HDF5 file in cache_dir(), downloaded (again, if the cached copy is corrupt) when needed."""
    if not spec.url or not spec.filename:
        raise ValueError(f"dataset {spec.name!r} (source {spec.source!r}) has no download URL")
    expected_content(spec)  # a malformed checksums file is reported before any transfer
    path = cache_dir() / spec.filename
    with _lock(path):
        if path.exists():
            digest = sha256_file(path)
            problem = _problem(path, digest, spec, validate)
            if problem is None:
                if _sidecar_digest(path) is None:
                    _try_write_sidecar(path, digest)
                return path
            warnings.warn(f"cached dataset {path} cannot be used ({problem}); downloading it again", stacklevel=2)
            _discard(path)
        url = source_url(spec)
        download(url, path, progress=progress, check=lambda part, digest: _problem(part, digest, spec, validate))
    return path


def _try_write_sidecar(path: Path, digest: str) -> None:
    """Record a checked file's sha256 beside it; a read-only shared cache keeps the file usable without one."""
    try:
        _write_sidecar(path, digest)
    except OSError as e:
        log.debug("cannot write %s: %s", _sidecar(path), e)
