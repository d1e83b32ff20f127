"""Corrupt downloads against a real HTTP server on 127.0.0.1: a truncated archive (cut
connection, or a short file served as if complete), a wrong checksum, an HTML error page
served with status 200. Each is an error naming the file and the URL, and the cache is not
poisoned: nothing unverified sits under the final name, and the next good download works."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import random
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from aeqa_model.data.download import fetch_url
from aeqa_model.io import InputError

pytestmark = pytest.mark.fault


def _tgz() -> bytes:
    payload = random.Random(1).randbytes(150_000)  # incompressible: the archive spans several reads
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("corpus/train.en")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("en-ro.txt/train.en", random.Random(2).randbytes(100_000))
    return buffer.getvalue()


TGZ, ZIP = _tgz(), _zip()
GZ = gzip.compress(b"".join(f"reference line {i}\n".encode() for i in range(20_000)))
TEXT = b"".join(f"<seg id=\"{i}\">A test sentence {i}.</seg>\n".encode() for i in range(2000))
HTML = b"<!DOCTYPE html>\n<html><head><title>Error</title></head><body>Please sign in.</body></html>\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body, start = route["body"], 0
        if self.headers.get("Range") and route.get("ranges", True):
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", route.get("type", "application/octet-stream"))
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cut = route.get("cut_at")
        if cut is not None and cut > start:  # the connection drops at byte `cut`, every time
            self.wfile.write(body[start:cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.routes = {}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.routes
    httpd.shutdown()
    httpd.server_close()


def fetch(spec, cache):
    return fetch_url("corpus", spec, cache, retries=2, backoff=0.0, timeout=5, progress=False,
                     sleep=lambda s: None, log=lambda m: None)


def check_failure(err, cache: Path, filename: str, url: str, ledger, *words) -> None:
    """The error names the file and the URL; nothing unverified is under the final name."""
    message = ledger.message(str(err.value), names=[cache / "corpus" / filename, url])
    for word in words:
        assert word in message, message
    assert not (cache / "corpus" / filename).exists(), "an unverified file entered the cache"


def check_recovery(routes, path: str, body: bytes, spec, cache: Path, filename: str) -> None:
    """The server is fixed: the next download succeeds into the same cache."""
    routes[path] = {"body": body}
    result = fetch(spec, cache)
    assert Path(result.path) == cache / "corpus" / filename
    assert Path(result.path).read_bytes() == body and not result.from_cache
    assert not list((cache / "corpus").glob("*.part"))


def test_connection_cut_every_time(server, tmp_path, ledger):
    base, routes = server
    url = f"{base}/data.tgz"
    routes["/data.tgz"] = {"body": TGZ, "cut_at": 60_000, "ranges": False}
    spec = {"type": "url", "url": url, "sha256": sha(TGZ)}
    with pytest.raises(InputError) as err:
        fetch(spec, tmp_path)
    check_failure(err, tmp_path, "data.tgz", url, ledger, "truncated")
    check_recovery(routes, "/data.tgz", TGZ, spec, tmp_path, "data.tgz")


@pytest.mark.parametrize("checksum", [True, False], ids=["sha256", "no-checksum"])
@pytest.mark.parametrize("name,body", [("data.tgz", TGZ), ("en-ro.zip", ZIP), ("refs.gz", GZ)],
                         ids=["tgz", "zip", "gz"])
def test_truncated_archive_served_as_complete(server, tmp_path, ledger, name, body, checksum):
    """The mirror itself holds a cut file (consistent Content-Length): only its content can tell."""
    base, routes = server
    url = f"{base}/{name}"
    routes[f"/{name}"] = {"body": body[: len(body) * 2 // 3]}
    spec = {"type": "url", "url": url, "sha256": sha(body) if checksum else None}
    with pytest.raises(InputError) as err:
        fetch(spec, tmp_path)
    check_failure(err, tmp_path, name, url, ledger, "sha256 mismatch" if checksum else "archive")
    check_recovery(routes, f"/{name}", body, spec, tmp_path, name)


def test_wrong_checksum_in_config(server, tmp_path, ledger):
    base, routes = server
    url = f"{base}/data.tgz"
    routes["/data.tgz"] = {"body": TGZ}
    wrong = sha(b"another release of the corpus")
    with pytest.raises(InputError) as err:
        fetch({"type": "url", "url": url, "sha256": wrong}, tmp_path)
    check_failure(err, tmp_path, "data.tgz", url, ledger, wrong, sha(TGZ))
    assert not list((tmp_path / "corpus").iterdir()), "the proven-wrong bytes were kept"
    check_recovery(routes, "/data.tgz", TGZ, {"type": "url", "url": url, "sha256": sha(TGZ)}, tmp_path,
                   "data.tgz")


@pytest.mark.parametrize("name,body,checksum", [("data.tgz", TGZ, True), ("data.tgz", TGZ, False),
                                                ("newstest2014-deen-src.en.sgm", TEXT, False)],
                         ids=["archive-sha256", "archive-no-checksum", "text-no-checksum"])
def test_html_error_page_with_status_200(server, tmp_path, ledger, name, body, checksum):
    base, routes = server
    url = f"{base}/{name}"
    routes[f"/{name}"] = {"body": HTML, "type": "text/html"}
    spec = {"type": "url", "url": url, "sha256": sha(body) if checksum else None}
    with pytest.raises(InputError) as err:
        fetch(spec, tmp_path)
    check_failure(err, tmp_path, name, url, ledger, "HTML")
    check_recovery(routes, f"/{name}", body, spec, tmp_path, name)


def test_bad_first_mirror_good_second(server, tmp_path, ledger):
    """A mirror with an HTML page, one with a cut file: the third, good one is used and verified."""
    base, routes = server
    routes["/a/data.tgz"] = {"body": HTML}
    routes["/b/data.tgz"] = {"body": TGZ[:50_000]}
    routes["/c/data.tgz"] = {"body": TGZ}
    spec = {"type": "url", "urls": [f"{base}/a/data.tgz", f"{base}/b/data.tgz", f"{base}/c/data.tgz"]}
    result = fetch(spec, tmp_path)
    assert result.origin == f"{base}/c/data.tgz" and Path(result.path).read_bytes() == TGZ
    assert not list((tmp_path / "corpus").glob("*.part"))
