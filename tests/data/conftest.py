"""Shared fixtures for the dataset tests: tiny JPEGs and a loopback HTTP server with Range support."""
from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path

import numpy as np
import pytest
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
