"""Shared fixtures for the dataset tests: tiny JPEGs, a loopback HTTP server with Range support, and a
guard that keeps every dataset test off the network (only 127.0.0.1 and file:// URLs are opened)."""
from __future__ import annotations

import hashlib
import http.server
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import mounted  # noqa: F401  (the data tests import it from here)
from PIL import Image


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A small random-colour JPEG (``size`` = (width, height)), different for each seed."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, size=3)
    noise = rng.integers(-40, 40, size=(h, w, 3))
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, "JPEG", quality=90)
    return path


class LoopbackServer:
    """Serves ``files`` (URL path -> bytes) on 127.0.0.1; records every request's path and Range header.

    Modes (per URL path, in ``modes``): ``"drop_once"`` sends half of the body of the first full GET and
    closes the connection; ``"no_range"`` ignores Range headers (always 200 with the whole file).
    """

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, str] = {}
        self.requests: list[tuple[str, str | None]] = []
        self._dropped: set[str] = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                mode = server.modes.get(self.path)
                start = 0
                m = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if m and mode != "no_range":
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                payload = body[start:]
                if mode == "drop_once" and self.path not in server._dropped:
                    server._dropped.add(self.path)
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """A URL outside 127.0.0.1 fails as on a machine without internet access (the real hosts are never asked)."""
    real = urllib.request.urlopen

    def urlopen(request, *args, **kwargs):
        url = request.full_url if isinstance(request, urllib.request.Request) else request
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "file" and parts.hostname != "127.0.0.1":
            raise urllib.error.URLError(f"no network in the tests ({parts.hostname})")
        return real(request, *args, **kwargs)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)


def git_blob_of(data: bytes) -> str:
    """git's blob id of ``data`` (what ``git hash-object`` prints), computed the naive way."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def serve_pinned(server: "LoopbackServer", contents: dict[str, bytes], sha256: bool = True) -> tuple:
    """Serve ``contents`` (repository path -> bytes) and return stand-in :class:`PinnedFile` entries for
    them, with the git blob ids (and SHA-256) of these generated bytes; the real tables keep the real ones."""
    from hyp2.data._pinned import PinnedFile

    files = []
    for path, data in contents.items():
        server.files["/repo/" + path] = data
        files.append(PinnedFile(path.rsplit("/", 1)[-1], f"{server.url}/repo/{path}", git_blob_of(data),
                                hashlib.sha256(data).hexdigest() if sha256 else None))
    return tuple(files)


