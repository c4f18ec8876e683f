"""Tests of o2o.download against a local HTTP server (127.0.0.1 only, Range support, failure modes)."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from o2o import download as dl
from o2o.registry import REGISTRY, DatasetSpec
from o2o.specs import get_spec

DATA = bytes(range(256)) * 1200 + b"tail"  # 307204 bytes, not a multiple of anything
NAME = "hopper_medium-v2.hdf5"


@dataclass
class ServerState:
    """What the test server serves and how it misbehaves; what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    ignore_range: bool = False
    cut_first: bool = False  # close the connection half way through the first GET
    lie_length: int = 0  # announce this many bytes more than are sent (and ignore Range)
    delay_s: float = 0.0
    etag: str | None = '"v1"'  # validator sent with every answer (None: no ETag)
    last_modified: str | None = None
    honour_if_range: bool = True  # False: answer Range even when If-Range names another version
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    if_ranges: list[str | None] = field(default_factory=list)  # If-Range header of each request
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(http.server.BaseHTTPRequestHandler):
    """GET with optional Range, per ServerState."""

    timeout = 5  # a stuck client cannot hold a server thread for long

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        st: ServerState = self.server.state  # type: ignore[attr-defined]
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        with st.lock:
            st.requests.append((self.path, rng))
            st.if_ranges.append(if_range)
            first = len(st.requests) == 1
        current = st.etag or st.last_modified
        if rng and if_range is not None and if_range != current and st.honour_if_range:
            rng = None  # RFC 9110: the file changed, so the whole of it (200)
        if st.delay_s:
            time.sleep(st.delay_s)
        data = st.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404, "Not Found")
            return
        m = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if st.lie_length:
            self._send(200, data, {"Content-Length": str(len(data) + st.lie_length)})
        elif m and not st.ignore_range:
            start = int(m.group(1))
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}", "Content-Length": "0"})
            else:
                body = data[start:]
                self._send(206, body, {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                                       "Content-Length": str(len(body))})
        elif st.cut_first and first:
            self._send(200, data[: len(data) // 2], {"Content-Length": str(len(data))})
        else:
            self._send(200, data, {"Content-Length": str(len(data))})

    def _send(self, code: int, body: bytes, headers: dict[str, str]) -> None:
        st: ServerState = self.server.state  # type: ignore[attr-defined]
        self.send_response(code)
        if st.etag:
            headers = {**headers, "ETag": st.etag}
        if st.last_modified:
            headers = {**headers, "Last-Modified": st.last_modified}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    """A threaded HTTP server on 127.0.0.1:<free port>; shut down after the test (or after 60 s at the latest)."""
    st = ServerState(files={NAME: DATA})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    srv.state = st  # type: ignore[attr-defined]
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    guard = threading.Timer(60.0, srv.shutdown)
    guard.daemon = True
    guard.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", st
    finally:
        guard.cancel()
        srv.shutdown()
        srv.server_close()
        thread.join(5)


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No retry back-off; no env leaking in from the user's shell; the cache in tmp_path."""
    monkeypatch.setattr(dl, "_BACKOFF_S", 0.0)
    monkeypatch.delenv(dl.ENV_BASE_URL, raising=False)
    monkeypatch.setenv(dl.ENV_CACHE_DIR, str(tmp_path / "cache"))


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _spec_on(monkeypatch: pytest.MonkeyPatch, base: str) -> DatasetSpec:
    """hopper-medium-v2 served by the local mirror, without the registry's known size and sha256 (DATA is not it)."""
    monkeypatch.setenv(dl.ENV_BASE_URL, base + "/")
    spec = replace(REGISTRY["hopper-medium-v2"], file_size=None, sha256=None)
    assert spec.filename == NAME
    return spec


def _part_with_validator(dest: Path, data: bytes, validator: str) -> None:
    """A partial download as an earlier, killed download left it: the bytes and the validator of its answer."""
    dest.with_name(dest.name + ".part").write_bytes(data)
    dest.with_name(dest.name + ".part.validator").write_text(json.dumps({"if_range": validator}))


def test_full_download_writes_sha_sidecar(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    dest = tmp_path / "out" / NAME
    assert dl.download(f"{base}/{NAME}", dest, progress=False) == dest
    assert dest.read_bytes() == DATA
    assert dest.with_name(NAME + ".sha256").read_text() == f"{_sha(DATA)}  {NAME}\n"
    assert dl.sha256_file(dest) == _sha(DATA)
    assert not dest.with_name(NAME + ".part").exists()
    assert st.requests == [(f"/{NAME}", None)]
    assert dl.verify(dest)


def test_interrupted_transfer_is_resumed_with_range(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    st.cut_first = True
    dest = tmp_path / NAME
    dl.download(f"{base}/{NAME}", dest, progress=False)
    assert dest.read_bytes() == DATA
    assert len(st.requests) == 2
    assert st.requests[0][1] is None
    assert st.requests[1][1] == f"bytes={len(DATA) // 2}-"
    assert st.if_ranges == [None, '"v1"']  # the resume names the version its first half came from
    assert not dest.with_name(NAME + ".part.validator").exists()


def test_resume_uses_last_modified_without_etag(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    st.cut_first, st.etag, st.last_modified = True, None, "Wed, 21 Oct 2015 07:28:00 GMT"
    dest = tmp_path / NAME
    dl.download(f"{base}/{NAME}", dest, progress=False)
    assert dest.read_bytes() == DATA
    assert st.if_ranges == [None, st.last_modified]


def test_server_without_validator_is_not_resumed(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    st.cut_first, st.etag = True, None  # nothing tells whether the second request gets the same file
    dest = tmp_path / NAME
    dl.download(f"{base}/{NAME}", dest, progress=False)
    assert dest.read_bytes() == DATA
    assert st.requests == [(f"/{NAME}", None), (f"/{NAME}", None)]


def test_existing_part_file_is_resumed(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    dest = tmp_path / NAME
    _part_with_validator(dest, DATA[:1000], '"v1"')
    dl.download(f"{base}/{NAME}", dest, progress=False)
    assert dest.read_bytes() == DATA
    assert st.requests == [(f"/{NAME}", "bytes=1000-")]
    assert st.if_ranges == ['"v1"']


def test_part_file_without_validator_starts_again(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    dest = tmp_path / NAME
    dest.with_name(NAME + ".part").write_bytes(b"\xee" * 1000)  # left by an older version or by hand
    dl.download(f"{base}/{NAME}", dest, progress=False)
    assert dest.read_bytes() == DATA
    assert st.requests == [(f"/{NAME}", None)]


def test_file_replaced_on_server_between_kill_and_resume_is_not_spliced(server: tuple[str, ServerState],
                                                                        tmp_path: Path) -> None:
    base, st = server
    new = DATA[::-1]
    st.files[NAME], st.etag = new, '"v2"'
    dest = tmp_path / NAME
    _part_with_validator(dest, DATA[:1000], '"v1"')  # the first 1000 bytes of the old version
    dl.download(f"{base}/{NAME}", dest, progress=False)
    assert dest.read_bytes() == new
    assert st.if_ranges == ['"v1"']
    assert dl.verify(dest)


def test_server_ignoring_if_range_is_caught_by_its_etag(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    new = DATA[::-1]
    st.files[NAME], st.etag, st.honour_if_range = new, '"v2"', False  # answers 206 with the new version's bytes
    dest = tmp_path / NAME
    _part_with_validator(dest, DATA[:1000], '"v1"')
    dl.download(f"{base}/{NAME}", dest, progress=False)
    assert dest.read_bytes() == new
    assert st.requests == [(f"/{NAME}", "bytes=1000-"), (f"/{NAME}", None)]


def test_complete_part_file_answered_416_is_finalized(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    dest = tmp_path / NAME
    _part_with_validator(dest, DATA, '"v1"')
    dl.download(f"{base}/{NAME}", dest, progress=False)
    assert dest.read_bytes() == DATA
    assert st.requests == [(f"/{NAME}", f"bytes={len(DATA)}-")]
    assert dl.verify(dest)


def test_server_ignoring_range_restarts(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    st.ignore_range = True
    dest = tmp_path / NAME
    _part_with_validator(dest, b"\xff" * 5000, '"v1"')  # appending the full body to this would be wrong
    dl.download(f"{base}/{NAME}", dest, progress=False)
    assert dest.read_bytes() == DATA
    assert st.requests == [(f"/{NAME}", "bytes=5000-")]


def test_size_mismatch_raises_and_leaves_no_file(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    st.lie_length = 100
    dest = tmp_path / NAME
    with pytest.raises(dl.DownloadError, match="short read") as ei:
        dl.download(f"{base}/{NAME}", dest, progress=False)
    assert f"{base}/{NAME}" in str(ei.value)
    assert not dest.exists()
    assert len(st.requests) == dl._RETRIES + 1


def test_404_names_the_url(server: tuple[str, ServerState], tmp_path: Path) -> None:
    base, st = server
    url = f"{base}/missing.hdf5"
    with pytest.raises(dl.DownloadError, match="404") as ei:
        dl.download(url, tmp_path / "missing.hdf5", progress=False)
    assert url in str(ei.value)
    assert ei.value.url == url
    assert len(st.requests) == 1  # a 404 is not retried
    assert not (tmp_path / "missing.hdf5").exists()


def test_unreachable_host_says_where_to_put_the_file(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{NAME}"
    dest = tmp_path / "cache" / NAME
    with pytest.raises(dl.DownloadError) as ei:
        dl.download(url, dest, progress=False, timeout=2.0)
    msg = str(ei.value)
    for needle in (url, str(dest), dl.ENV_BASE_URL, dl.ENV_CACHE_DIR):
        assert needle in msg
    assert not dest.exists()


def test_fetch_downloads_then_uses_cache(server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch,
                                         tmp_path: Path) -> None:
    base, st = server
    spec = _spec_on(monkeypatch, base)
    path = dl.fetch_d4rl(spec, progress=False)
    assert path == tmp_path / "cache" / NAME
    assert path.read_bytes() == DATA
    assert dl.fetch_d4rl(spec, progress=False) == path
    assert len(st.requests) == 1


def test_corrupted_cached_file_is_fetched_again(server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch,
                                                 recwarn: pytest.WarningsRecorder) -> None:
    base, st = server
    spec = _spec_on(monkeypatch, base)
    path = dl.fetch_d4rl(spec, progress=False)
    raw = bytearray(path.read_bytes())
    raw[1234] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert not dl.verify(path)
    with pytest.warns(UserWarning, match=re.escape(str(path))) as w:
        assert dl.fetch_d4rl(spec, progress=False) == path
    assert "\n" not in str(w[0].message)
    assert path.read_bytes() == DATA
    assert len(st.requests) == 2
    assert dl.verify(path)


def test_cached_file_failing_validate_is_fetched_again(server: tuple[str, ServerState],
                                                       monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base, st = server
    spec = _spec_on(monkeypatch, base)
    path = tmp_path / "cache" / NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA[:100])  # put there by hand or by d4rl: no sidecar, truncated

    def validate(p: Path) -> None:
        if p.read_bytes() != DATA:
            raise OSError("truncated HDF5 file\n(unable to open)")

    with pytest.warns(UserWarning, match="truncated HDF5 file") as w:
        assert dl.fetch_d4rl(spec, validate=validate, progress=False) == path
    assert "\n" not in str(w[0].message)
    assert path.read_bytes() == DATA
    assert len(st.requests) == 1


def test_hand_placed_file_without_sidecar_is_used(server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch,
                                                  tmp_path: Path) -> None:
    base, st = server
    spec = _spec_on(monkeypatch, base)
    path = tmp_path / "cache" / NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA)
    assert dl.fetch_d4rl(spec, validate=lambda p: None, progress=False) == path
    assert st.requests == []
    assert path.with_name(NAME + ".sha256").read_text().split()[0] == _sha(DATA)


def test_download_still_invalid_raises(server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    base, _ = server
    spec = _spec_on(monkeypatch, base)

    def validate(p: Path) -> None:
        raise ValueError("no 'observations' key")

    with pytest.raises(dl.DownloadError, match="observations"):
        dl.fetch_d4rl(spec, validate=validate, progress=False)
    assert not (tmp_path / "cache" / NAME).exists()


def test_parallel_fetches_download_once(server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch) -> None:
    base, st = server
    st.delay_s = 0.3  # both would be in flight at once without the lock
    spec = _spec_on(monkeypatch, base)
    out: list[Path | BaseException] = []

    def run() -> None:
        try:
            out.append(dl.fetch_d4rl(spec, progress=False))
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            out.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert len(out) == 2 and all(isinstance(p, Path) and p.read_bytes() == DATA for p in out), out
    assert len(st.requests) == 1


def test_env_vars_are_honoured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = REGISTRY["antmaze-umaze-v2"]
    monkeypatch.delenv(dl.ENV_CACHE_DIR)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert dl.cache_dir() == tmp_path / "home" / ".d4rl" / "datasets"
    monkeypatch.setenv(dl.ENV_CACHE_DIR, str(tmp_path / "d4rl"))
    assert dl.cache_dir() == tmp_path / "d4rl"
    assert dl.source_url(spec) == spec.url
    monkeypatch.setenv(dl.ENV_BASE_URL, "http://mirror.example/d4rl//")
    assert dl.source_url(spec) == f"http://mirror.example/d4rl/{spec.filename}"


def test_mirror_and_cache_dir_used_by_fetch(server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path) -> None:
    base, st = server
    st.files["sub/" + NAME] = DATA
    monkeypatch.setenv(dl.ENV_BASE_URL, base + "/sub")
    monkeypatch.setenv(dl.ENV_CACHE_DIR, str(tmp_path / "elsewhere"))
    path = dl.fetch_d4rl(replace(REGISTRY["hopper-medium-v2"], file_size=None, sha256=None), progress=False)
    assert path == tmp_path / "elsewhere" / NAME and path.read_bytes() == DATA
    assert st.requests == [(f"/sub/{NAME}", None)]


def test_spec_without_url_is_rejected() -> None:
    spec = get_spec("local:hopper-medium")
    with pytest.raises(ValueError, match="no download URL"):
        dl.fetch_d4rl(spec)
    with pytest.raises(ValueError):
        dl.source_url(replace(REGISTRY["hopper-medium-v2"], url=None))


def test_registry_urls() -> None:
    names = [s.filename for s in REGISTRY.values()]
    for spec in REGISTRY.values():
        assert spec.url and spec.url.startswith("http://rail.eecs.berkeley.edu/datasets/offline_rl/"), spec.name
        assert spec.url.endswith(".hdf5"), spec.name
        assert spec.filename == os.path.basename(spec.url)
    assert len(set(names)) == len(names)


def test_truncated_hdf5_is_refetched_with_h5py_validator(server: tuple[str, ServerState],
                                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    import numpy as np

    src = tmp_path / "src.hdf5"
    with h5py.File(src, "w") as f:
        f["observations"] = np.arange(20000, dtype=np.float32).reshape(-1, 11 + 9)
    good = src.read_bytes()
    base, st = server
    st.files[NAME] = good
    spec = _spec_on(monkeypatch, base)
    path = tmp_path / "cache" / NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(good[: len(good) // 2])  # an old interrupted d4rl download: no sidecar

    def validate(p: Path) -> None:
        with h5py.File(p, "r") as f:
            f["observations"][-1]

    with pytest.warns(UserWarning, match=NAME):
        assert dl.fetch_d4rl(spec, validate=validate, progress=False) == path
    assert path.read_bytes() == good
    assert len(st.requests) == 1


def _cache_files(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "cache").glob("*") if not p.name.endswith(".lock"))


def test_registry_knows_d4rl_file_content() -> None:
    spec = REGISTRY["hopper-medium-v2"]
    assert spec.file_size == 152756557
    assert spec.sha256 == "5bdf1bc4a713c82941de44633df669b36c89850b652a25985166796d25cf71a0"
    known = [s for s in REGISTRY.values() if s.sha256 is not None]
    assert len(known) == 44 and all(len(s.sha256) == 64 and s.file_size > 10**6 for s in known)
    assert len({s.sha256 for s in known}) == len(known)


def test_other_file_served_under_a_d4rl_name_is_refused(server: tuple[str, ServerState],
                                                        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base, st = server
    monkeypatch.setenv(dl.ENV_BASE_URL, base)
    with pytest.raises(dl.DownloadError, match="not the file of hopper-medium-v2") as ei:
        dl.fetch_d4rl(REGISTRY["hopper-medium-v2"], progress=False)
    assert "\n" not in str(ei.value) and "checksums.txt" in str(ei.value)
    assert _cache_files(tmp_path) == []  # nothing accepted, nothing half-written


def test_pinned_checksum_is_honoured(server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch,
                                     tmp_path: Path) -> None:
    base, st = server
    monkeypatch.setenv(dl.ENV_BASE_URL, base)
    spec = REGISTRY["hopper-medium-v2"]
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "checksums.txt").write_text(f"# my mirror\n{_sha(DATA)}  {NAME}\n")
    assert dl.fetch_d4rl(spec, progress=False).read_bytes() == DATA  # the pin replaces the registry's values
    other = tmp_path / "pins.sha256"
    other.write_text(f"{_sha(b'something else')} *{NAME}\n")
    monkeypatch.setenv(dl.ENV_CHECKSUMS, str(other))
    assert dl.checksums_path() == other
    with pytest.warns(UserWarning, match="not the file of hopper-medium-v2"):
        with pytest.raises(dl.DownloadError, match=_sha(b"something else")):
            dl.fetch_d4rl(spec, progress=False)  # the cached copy and the download both differ from the pin
    assert _cache_files(tmp_path) == ["checksums.txt"]


def test_bad_checksums_file_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from o2o.dataset import DatasetError

    bad = tmp_path / "pins.txt"
    bad.write_text("abc hopper_medium-v2.hdf5\n")
    monkeypatch.setenv(dl.ENV_CHECKSUMS, str(bad))
    with pytest.raises(DatasetError, match=re.escape(f"{bad}:1: not a checksum line")):
        dl.fetch_d4rl(REGISTRY["hopper-medium-v2"], progress=False)


def test_cached_file_without_sidecar_is_checked_before_its_sidecar_is_written(
        server: tuple[str, ServerState], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    base, st = server
    del st.files[NAME]  # the mirror cannot replace it: 404
    monkeypatch.setenv(dl.ENV_BASE_URL, base)
    path = tmp_path / "cache" / NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(DATA)  # valid-looking, but not hopper-medium-v2's file
    with pytest.warns(UserWarning, match="not the file of hopper-medium-v2"):
        with pytest.raises(dl.DownloadError, match="404"):
            dl.fetch_d4rl(REGISTRY["hopper-medium-v2"], progress=False)
    assert _cache_files(tmp_path) == []
