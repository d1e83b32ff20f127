"""Download layer against a real local HTTP server (threaded, 127.0.0.1)."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import random
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from aeqa_model.data import download
from aeqa_model.data.download import fetch_pip_wheel, fetch_source, fetch_url, resolve_cache_dir
from aeqa_model.io import InputError


def make_tgz(size: int = 200_000) -> bytes:
    """A small .tgz whose compressed size is well above one read chunk."""
    payload = random.Random(0).randbytes(size)  # incompressible, so the archive stays large
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("corpus/data.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


ARCHIVE = make_tgz()
SHA = hashlib.sha256(ARCHIVE).hexdigest()


class Routes:
    """What the server answers per path, and what it was asked."""

    def __init__(self):
        self.routes: dict[str, dict] = {}
        self.requests: list[tuple[str, str | None]] = []


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        state: Routes = self.server.state
        state.requests.append((self.path, self.headers.get("Range")))
        route = state.routes.get(self.path)
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if route.get("status_sequence"):
            status = route["status_sequence"].pop(0)
            if status != 200:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        body: bytes = route["body"]
        start = 0
        range_header = self.headers.get("Range")
        if range_header and route.get("ranges", True):
            start = int(range_header.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", route.get("type", "application/gzip"))
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if route.get("drop_first_at") and not route.get("dropped"):
            # Send part of the body, then hang up: a dropped connection.
            route["dropped"] = True
            self.wfile.write(body[start:route["drop_first_at"]])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.state = Routes()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield base, httpd.state
    httpd.shutdown()
    httpd.server_close()


def fetch(name, spec, cache, **kwargs):
    return fetch_url(name, spec, cache, retries=kwargs.pop("retries", 2), backoff=0.0, timeout=5,
                     progress=False, sleep=lambda s: None, log=lambda m: None, **kwargs)


def test_success(server, tmp_path):
    base, state = server
    state.routes["/data.tgz"] = {"body": ARCHIVE}
    result = fetch("corpus", {"type": "url", "url": f"{base}/data.tgz", "sha256": SHA, "size": len(ARCHIVE)},
                   tmp_path)
    path = Path(result.path)
    assert path == tmp_path / "corpus" / "data.tgz"
    assert path.read_bytes() == ARCHIVE
    assert result.sha256 == SHA and not result.from_cache and result.checksum_verified
    assert not path.with_name("data.tgz.part").exists()


def test_resume_after_dropped_connection(server, tmp_path):
    base, state = server
    cut = 70_000
    state.routes["/data.tgz"] = {"body": ARCHIVE, "drop_first_at": cut}
    result = fetch("corpus", {"type": "url", "url": f"{base}/data.tgz", "sha256": SHA}, tmp_path)
    assert Path(result.path).read_bytes() == ARCHIVE
    assert state.requests[0] == ("/data.tgz", None)
    # The retry asked only for the missing bytes.
    assert state.requests[1] == ("/data.tgz", f"bytes={cut}-")


def test_resume_server_without_range_support_restarts(server, tmp_path):
    base, state = server
    state.routes["/data.tgz"] = {"body": ARCHIVE, "drop_first_at": 50_000, "ranges": False}
    result = fetch("corpus", {"type": "url", "url": f"{base}/data.tgz", "sha256": SHA}, tmp_path)
    assert Path(result.path).read_bytes() == ARCHIVE


def test_checksum_mismatch_names_file_url_and_checksums(server, tmp_path):
    base, state = server
    corrupt = bytearray(ARCHIVE)
    corrupt[1000] ^= 0xFF
    state.routes["/data.tgz"] = {"body": bytes(corrupt)}
    url = f"{base}/data.tgz"
    with pytest.raises(InputError) as err:
        fetch("corpus", {"type": "url", "url": url, "sha256": SHA}, tmp_path)
    message = str(err.value)
    actual = hashlib.sha256(bytes(corrupt)).hexdigest()
    assert "data.tgz" in message and url in message and SHA in message and actual in message
    # Nothing under the final name, and the proven-wrong bytes are not kept for resuming.
    assert list((tmp_path / "corpus").iterdir()) == []


def test_truncated_file_is_an_error(server, tmp_path):
    base, state = server
    state.routes["/data.tgz"] = {"body": ARCHIVE[:100_000]}
    with pytest.raises(InputError, match="size 100000 bytes, expected"):
        fetch("corpus", {"type": "url", "url": f"{base}/data.tgz", "size": len(ARCHIVE)}, tmp_path)
    assert not (tmp_path / "corpus" / "data.tgz").exists()


def test_html_page_with_status_200(server, tmp_path):
    base, state = server
    state.routes["/data.tgz"] = {"body": b"<!DOCTYPE html><html><body>Please log in</body></html>",
                                 "type": "text/html"}
    with pytest.raises(InputError, match="HTML page") as err:
        fetch("corpus", {"type": "url", "url": f"{base}/data.tgz", "sha256": SHA}, tmp_path)
    assert "data.tgz" in str(err.value) and SHA in str(err.value)
    assert list((tmp_path / "corpus").iterdir()) == []


def test_404_is_an_error_without_retries(server, tmp_path):
    base, state = server
    with pytest.raises(InputError, match="HTTP 404"):
        fetch("corpus", {"type": "url", "url": f"{base}/missing.tgz", "sha256": SHA}, tmp_path)
    assert len(state.requests) == 1
    assert not (tmp_path / "corpus" / "missing.tgz").exists()


def test_transient_503_is_retried(server, tmp_path):
    base, state = server
    state.routes["/data.tgz"] = {"body": ARCHIVE, "status_sequence": [503, 503]}
    result = fetch("corpus", {"type": "url", "url": f"{base}/data.tgz", "sha256": SHA}, tmp_path, retries=3)
    assert Path(result.path).read_bytes() == ARCHIVE
    assert len(state.requests) == 3


def test_backoff_is_exponential(server, tmp_path):
    base, state = server
    state.routes["/busy.tgz"] = {"body": ARCHIVE, "status_sequence": [503] * 10}
    waits = []
    with pytest.raises(InputError, match="HTTP 503"):
        fetch_url("corpus", {"type": "url", "url": f"{base}/busy.tgz"}, tmp_path, retries=3, backoff=0.5,
                  timeout=5, progress=False, sleep=waits.append, log=lambda m: None)
    assert waits == [0.5, 1.0, 2.0]


def test_mirror_fallback(server, tmp_path):
    base, state = server
    state.routes["/good/data.tgz"] = {"body": ARCHIVE}
    spec = {"type": "url", "urls": [f"{base}/gone/data.tgz", f"{base}/good/data.tgz"], "sha256": SHA}
    result = fetch("corpus", spec, tmp_path)
    assert result.origin == f"{base}/good/data.tgz"
    assert Path(result.path).name == "data.tgz"


def test_md5_checksum(server, tmp_path):
    base, state = server
    state.routes["/data.tgz"] = {"body": ARCHIVE}
    md5 = hashlib.md5(ARCHIVE).hexdigest()
    result = fetch("corpus", {"type": "url", "url": f"{base}/data.tgz", "md5": md5}, tmp_path)
    assert result.checksum_verified


def test_cache_reuse_without_network(server, tmp_path):
    base, state = server
    state.routes["/data.tgz"] = {"body": ARCHIVE}
    spec = {"type": "url", "url": f"{base}/data.tgz", "sha256": SHA}
    fetch("corpus", spec, tmp_path)
    state.routes.clear()
    n_requests = len(state.requests)
    result = fetch("corpus", spec, tmp_path)
    assert result.from_cache and len(state.requests) == n_requests
    # Also when the URL is unreachable.
    result = fetch("corpus", {**spec, "url": "http://127.0.0.1:9/data.tgz"}, tmp_path)
    assert result.from_cache


def test_cache_not_poisoned_after_failure(server, tmp_path):
    base, state = server
    spec = {"type": "url", "url": f"{base}/data.tgz", "sha256": SHA}
    state.routes["/data.tgz"] = {"body": ARCHIVE[:-10] + b"0123456789"}
    with pytest.raises(InputError):
        fetch("corpus", spec, tmp_path)
    state.routes["/data.tgz"] = {"body": ARCHIVE}
    result = fetch("corpus", spec, tmp_path)
    assert not result.from_cache and Path(result.path).read_bytes() == ARCHIVE
    # A bad file placed under the final name is detected and replaced.
    Path(result.path).write_bytes(b"garbage")
    result = fetch("corpus", spec, tmp_path)
    assert not result.from_cache and Path(result.path).read_bytes() == ARCHIVE


def test_stale_partial_file_is_replaced(server, tmp_path):
    base, state = server
    state.routes["/data.tgz"] = {"body": ARCHIVE}
    part = tmp_path / "corpus" / "data.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # wrong bytes from an earlier, different file
    result = fetch("corpus", {"type": "url", "url": f"{base}/data.tgz", "sha256": SHA}, tmp_path)
    assert Path(result.path).read_bytes() == ARCHIVE and not part.exists()


def test_no_checksum_records_sha256(server, tmp_path):
    base, state = server
    data = gzip.compress(b"hello\n" * 100)
    state.routes["/refs.gz"] = {"body": data}
    result = fetch("refs", {"type": "url", "url": f"{base}/refs.gz", "sha256": None}, tmp_path)
    assert result.sha256 == hashlib.sha256(data).hexdigest() and not result.checksum_verified
    assert result.notes


def test_cache_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("AEQA_DATA_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir("results/.cache") == tmp_path / "env"
    monkeypatch.delenv("AEQA_DATA_CACHE")
    assert resolve_cache_dir("results/.cache") == Path("results/.cache")


# ------------------------------------------------------------------ pip wheels

WHEEL = b"PK\x05\x06" + b"\x00" * 18  # an empty zip is enough here
WHEEL_SHA = hashlib.sha256(WHEEL).hexdigest()


def fake_pip(calls, content=WHEEL, code=0):
    def run(cmd):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        if code == 0:
            (dest / "Demo_Pkg-1.2-py3-none-any.whl").write_bytes(content)
        return code
    return run


def test_pip_wheel_download_and_cache(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(download, "_run_pip", fake_pip(calls))
    spec = {"type": "pip_wheel", "package": "demo-pkg", "version": "1.2", "sha256": WHEEL_SHA}
    result = fetch_source("demo", spec, tmp_path, log=lambda m: None)
    assert Path(result.path) == tmp_path / "demo" / "Demo_Pkg-1.2-py3-none-any.whl"
    cmd = calls[0]
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in cmd and "--only-binary=:all:" in cmd and "demo-pkg==1.2" in cmd
    # Second call: from the cache, pip not run again.
    again = fetch_pip_wheel("demo", spec, tmp_path, log=lambda m: None)
    assert again.from_cache and len(calls) == 1
    assert [p.name for p in (tmp_path / "demo").iterdir()] == ["Demo_Pkg-1.2-py3-none-any.whl"]


def test_pip_wheel_checksum_mismatch_not_cached(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "_run_pip", fake_pip([], content=WHEEL + b"tampered"))
    spec = {"type": "pip_wheel", "package": "demo-pkg", "version": "1.2", "sha256": WHEEL_SHA}
    with pytest.raises(InputError, match="sha256 mismatch") as err:
        fetch_pip_wheel("demo", spec, tmp_path, log=lambda m: None)
    assert WHEEL_SHA in str(err.value)
    assert list((tmp_path / "demo").iterdir()) == []


def test_pip_failure_is_an_input_error(monkeypatch, tmp_path):
    monkeypatch.setattr(download, "_run_pip", fake_pip([], code=1))
    spec = {"type": "pip_wheel", "package": "nope", "version": "0.0", "sha256": WHEEL_SHA}
    with pytest.raises(InputError, match="pip download nope==0.0"):
        fetch_pip_wheel("demo", spec, tmp_path, log=lambda m: None)


def test_unknown_source_type(tmp_path):
    with pytest.raises(InputError, match="unknown type"):
        fetch_source("x", {"type": "ftp"}, tmp_path)
