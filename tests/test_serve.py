"""The search page's server, tested with real HTTP requests on 127.0.0.1: searches by id and by
upload against the ranking the command line gives, thumbnails of listed ids only, bad and huge
uploads, decompression bombs, paths that try to reach the file system, concurrent queries, and the
``serve`` command line itself."""
from __future__ import annotations

import builtins
import functools
import http.client
import io
import json
import re
import signal
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from demo_run import shared_demo_run
from PIL import Image

from hyp2 import gallery, serve
from hyp2.codes import load_codes
from hyp2.data import DataOptions, build_dataset
from hyp2.hasher import load_hasher
from hyp2.search import main as search_main
from hyp2.search import search

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 1 << 20  # the test server's upload limit: 1 MiB
PIXELS = 250_000  # and its pixel limit (500 x 500)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    run = shared_demo_run(tmp_path_factory)
    hasher = load_hasher(run.checkpoint)
    db = load_codes(run.codes)
    service = serve.SearchService(hasher, db, gallery.ImageSource.for_codes(db), top=5, max_upload=LIMIT,
                                  max_pixels=PIXELS)
    server = serve.make_server(service)  # 127.0.0.1, any free port
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    data = build_dataset("demo", DataOptions(image_size=32))
    yield {"run": run, "server": server, "hasher": hasher, "db": db, "data": data}
    server.shutdown()
    server.server_close()


def request(server, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = 60):
    """(status, headers, body) of one request, sent as written (no path normalisation)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def form(fields: dict[str, tuple[str, bytes] | str]) -> tuple[bytes, dict]:
    """A multipart/form-data body as a browser sends it: files are (file name, bytes)."""
    boundary = "----hyp2testboundary7MA4YWxkTrZu0gW"
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            head = (f'Content-Disposition: form-data; name="{name}"; filename="{value[0]}"\r\n'
                    f"Content-Type: application/octet-stream\r\n\r\n")
            parts.append(f"--{boundary}\r\n{head}".encode() + value[1] + b"\r\n")
        else:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": str(len(body))}


def png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def api_results(body: bytes) -> list[tuple]:
    return [(r["rank"], r["distance"], r["id"], tuple(r["labels"])) for r in json.loads(body)["results"]]


def assert_still_serving(server):
    status, _, body = request(server, "GET", "/")
    assert status == 200 and b"HyP" in body


# ------------------------------------------------------------------------------------------ pages


def test_start_page_links_thumbnails_of_listed_ids(setup):
    server, db = setup["server"], setup["db"]
    assert server.url.startswith("http://127.0.0.1:")
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    page = body.decode()
    assert "<script" not in page and 'enctype="multipart/form-data"' in page
    sources = re.findall(r'<img src="(/thumb\?id=[^"]+)"', page)
    assert len(sources) == serve.PICKS
    data = setup["data"]
    for src in sources[:3]:
        status, headers, thumb = request(server, "GET", src.replace("&amp;", "&"))
        assert status == 200 and headers["Content-Type"] == "image/png"
        ident = src.split("=", 1)[1].replace("%2F", "/")
        assert ident in db.queries.ids.tolist()
        original = data.query.load(data.query.ids.index(ident))
        with Image.open(io.BytesIO(thumb)) as img:
            assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(gallery.thumbnail(original)))


def test_search_by_id_ranks_with_the_stored_code(setup):
    server, db = setup["server"], setup["db"]
    status, _, body = request(server, "GET", "/api/search?id=demo%2F02003&top=7")
    assert status == 200
    answer = json.loads(body)
    (expected,) = gallery.retrieve(db, ["demo/02003"], 7)
    assert answer["query"] == {"id": "demo/02003", "name": "demo/02003", "labels": list(expected.query_labels)}
    assert [(r["id"], r["distance"], r["relevant"]) for r in answer["results"]] == [
        (h.id, h.distance, h.relevant) for h in expected.hits]
    status, _, page = request(server, "GET", "/search?id=demo%2F02003&top=7")
    assert status == 200
    shown = re.findall(r'<img src="/thumb\?id=([^"]+)"', page.decode())
    assert [s.replace("%2F", "/") for s in shown] == ["demo/02003"] + [h.id for h in expected.hits]
    assert page.decode().count('class="thumb ok"') == sum(h.relevant for h in expected.hits)
    # top is clamped, a bad top falls back to the default
    assert len(json.loads(request(server, "GET", "/api/search?id=demo%2F02003&top=100000")[2])["results"]) == 100
    assert len(json.loads(request(server, "GET", "/api/search?id=demo%2F02003&top=x")[2])["results"]) == 5


def test_upload_ranks_like_the_command_line(setup):
    server, db, hasher, data = setup["server"], setup["db"], setup["hasher"], setup["data"]
    img = data.query.load(7)
    expected = [(r["rank"], r["distance"], r["id"], tuple(r["labels"]))
                for r in search(hasher.outputs([img]), db, 6)[0]]
    body, headers = form({"image": ("query.png", png(img)), "top": "6"})
    status, _, answer = request(server, "POST", "/api/search", body, headers)
    assert status == 200 and api_results(answer) == expected
    assert json.loads(answer)["query"] == {"id": None, "name": "query.png", "labels": []}
    raw = png(img)  # the API also takes the image as the raw body
    status, _, answer = request(server, "POST", "/api/search?top=6", raw, {"Content-Length": str(len(raw))})
    assert status == 200 and api_results(answer) == expected
    status, _, page = request(server, "POST", "/search", body, headers)
    text = page.decode()
    assert status == 200 and "your image" in text and 'src="data:image/png;base64,' in text
    assert [i.replace("%2F", "/") for i in re.findall(r'<img src="/thumb\?id=([^"]+)"', text)] == [
        e[2] for e in expected]


def header_png(width: int, height: int, end: bool) -> bytes:
    """A PNG signature and header with no image data (and its end chunk when ``end``)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + (png_chunk(b"IEND", b"") if end else b"")


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def jpeg(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with almost no data behind it."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


@pytest.mark.parametrize("fields, status, message", [
    ({"image": ("notes.txt", b"this is not an image\n" * 10)}, 400, "not an image the page can read"),
    ({"image": ("empty.png", b"")}, 400, "the upload is empty"),
    ({"image": ("cut.png", png(Image.new("RGB", (64, 64), (1, 2, 3)))[:60])}, 400, "cannot be decoded"),
    # a PNG header and nothing behind it: the data is missing, not "IndexError: list index out of range"
    ({"image": ("head.png", header_png(64, 64, end=True))}, 400, "the PNG image cannot be decoded: its data is "
                                                              "missing, cut short or damaged"),
    ({"image": ("head.png", header_png(64, 64, end=False))}, 400, "the PNG image cannot be decoded: its data is "
                                                               "missing, cut short or damaged"),
    ({"image": ("cut.jpg", jpeg(Image.new("RGB", (64, 64)))[:30])}, 400, "the JPEG image cannot be decoded"),
    ({"image": ("bomb.png", bomb_png(5_000, 5_000))}, 413, "5000×5000 = 25 million pixels, more than the 0.25 "
                                                          "million this page decodes (a decompression bomb"),
    ({"image": ("huge.png", bomb_png(200_000, 200_000))}, 413, "far more pixels"),
    ({"image": ("big.png", png(Image.new("RGB", (600, 600))))}, 413, "600×600 = 0.36 million"),
    ({"top": "3"}, 400, "no file in its 'image' field"),
])
def test_bad_uploads_get_a_clear_message_and_the_server_keeps_serving(setup, fields, status, message):
    server = setup["server"]
    body, headers = form(fields)
    got, _, answer = request(server, "POST", "/api/search", body, headers)
    assert got == status and message in json.loads(answer)["error"]
    assert "Error" not in json.loads(answer)["error"]  # no library's exception name for a user to decode
    got, headers_back, page = request(server, "POST", "/search", body, headers)  # the page says it too
    assert got == status and headers_back["Content-Type"].startswith("text/html")
    assert 'class="message"' in page.decode() and message in page.decode().replace("&#x27;", "'")
    assert_still_serving(server)


def test_huge_uploads_are_refused_before_they_are_read(setup):
    server = setup["server"]
    body, headers = form({"image": ("big.bin", b"\0" * (3 * LIMIT))})
    status, _, answer = request(server, "POST", "/api/search", body, headers)
    assert status == 413 and json.loads(answer)["error"] == (
        f"the upload is {len(body):,} bytes, more than the 1,048,576 bytes (1 MiB) this page accepts; send a "
        f"smaller image")
    # a few bytes over is not rounded away ("1.0 MiB, more than the 1 MiB")
    over = b"\0" * (LIMIT + 1000)
    status, _, answer = request(server, "POST", "/api/search", over, {"Content-Length": str(len(over))})
    assert status == 413
    assert "the upload is 1,049,576 bytes, more than the 1,048,576 bytes (1 MiB)" in json.loads(answer)["error"]
    # a length far beyond anything worth reading: answered at once, the connection closed
    status, _, answer = request(server, "POST", "/api/search", b"tiny", {"Content-Length": str(10**12)})
    assert status == 413
    status, _, answer = request(server, "POST", "/api/search", b"x", {"Content-Length": "lots"})
    assert status == 411 and "Content-Length" in json.loads(answer)["error"]
    assert_still_serving(server)


def test_request_paths_never_reach_the_file_system(setup, monkeypatch):
    server, run = setup["server"], setup["run"]
    opened: list[str] = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    for path in ("/thumb?id=../../../../etc/passwd", "/thumb?id=%2Fetc%2Fpasswd", "/thumb?id=..%2F..%2Fetc%2Fpasswd",
                 f"/thumb?id={quote(str(run.codes), safe='')}", f"/thumb?id={quote(str(run.json), safe='')}",
                 "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/thumb/../../../etc/passwd",
                 "/search?id=..%2F..%2Fetc%2Fpasswd", "/api/search?id=%2Fetc%2Fpasswd", "/README.md",
                 f"/{run.codes.name}", "/thumb?id=demo%2F00000%00.png"):
        status, _, body = request(server, "GET", path)
        assert status in (400, 404), path
        assert b"root:" not in body and b"PK\x03\x04" not in body
    assert opened == []
    # a dataset image that the codes file does not list has no thumbnail either
    unlisted = setup["data"].database.ids[len(setup["db"].ids)]
    assert request(server, "GET", f"/thumb?id={quote(unlisted, safe='')}")[0] == 404
    assert_still_serving(server)


def test_unknown_pages_and_methods(setup):
    server = setup["server"]
    status, _, body = request(server, "GET", "/nope")
    assert status == 404 and b"no page" in body
    assert request(server, "POST", "/nope", b"abc", {"Content-Length": "3"})[0] == 404
    assert request(server, "GET", "/search")[0] == 400
    assert request(server, "DELETE", "/")[0] == 501
    assert_still_serving(server)


def at_once(calls) -> list[BaseException | None]:
    """Run each call in a thread of its own, all released together by a barrier; returns what
    each raised (None when it did not), in order."""
    barrier, raised = threading.Barrier(len(calls)), [None] * len(calls)

    def one(k: int) -> None:
        barrier.wait()
        try:
            calls[k]()
        except BaseException as e:  # noqa: BLE001 - reported to the caller
            raised[k] = e

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return raised


def test_concurrent_queries_get_their_own_answers(setup):
    """48 clients, half uploading, half searching by id, all sent at once (a barrier): each gets
    its own answer, the one it gets alone. The listen backlog queues them all (no reset), and the
    timeouts are generous, so a loaded machine is slower, not failing."""
    server, data = setup["server"], setup["data"]
    uploads = [form({"image": (f"q{i}.png", png(data.query.load(i)))}) for i in range(4)]
    ids = ["demo/02001", "demo/02005", "demo/02011", "demo/00003"]

    def one(k: int):
        if k % 2:
            body, headers = uploads[(k // 2) % 4]
            return request(server, "POST", "/api/search", body, headers, timeout=300)
        return request(server, "GET", f"/api/search?id={quote(ids[(k // 2) % 4], safe='')}", timeout=300)

    serial = [one(k) for k in range(8)]
    parallel: list = [None] * 48

    def store(k: int):
        parallel[k] = one(k)

    assert at_once([functools.partial(store, k) for k in range(48)]) == [None] * 48
    assert all(status == 200 for status, _, _ in serial + parallel)
    assert [api_results(b) for _, _, b in parallel] == [api_results(serial[k % 8][2]) for k in range(48)]


def test_without_images_the_page_shows_ids_and_serves_no_thumbnail(setup):
    service = serve.SearchService(setup["hasher"], setup["db"], None, top=3)
    server = serve.make_server(service)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status, _, body = request(server, "GET", "/search?id=demo%2F02003")
        assert status == 200 and b"<img" not in body and b"<code>demo/02003</code>" in body
        assert request(server, "GET", "/thumb?id=demo%2F02003")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------ command line


@pytest.mark.slow
def test_serve_command_listens_on_localhost_and_stops_on_ctrl_c(setup):
    run = setup["run"]
    proc = subprocess.Popen([sys.executable, "-m", "hyp2.search", "serve", "--checkpoint", str(run.checkpoint),
                             "--codes", str(run.codes), "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"serving the search page at http://127\.0\.0\.1:(\d+)/ \(200 images, 16 bits\)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        conn = http.client.HTTPConnection("127.0.0.1", int(match.group(1)), timeout=30)
        conn.request("GET", "/api/search?id=demo%2F02003&top=3")
        response = conn.getresponse()
        assert response.status == 200 and len(json.loads(response.read())["results"]) == 3
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out and err == ""


@pytest.mark.parametrize("args, message", [
    (["serve", "--codes", "x.npz"], "the following arguments are required: --checkpoint"),
    (["serve", "--checkpoint", "{ckpt}", "--codes", "{codes}", "--top", "0"], "--top 0: must be between 1 and 100"),
    (["serve", "--checkpoint", "{ckpt}", "--codes", "{codes}", "--port", "70000"], "--port 70000"),
    (["serve", "--checkpoint", "{ckpt}", "--codes", "{other}"], "was exported from another model"),
    (["serve", "--checkpoint", "{ckpt}", "--codes", "{codes}", "--max_upload_mb", "0"], "must be positive"),
    (["serve", "--checkpoint", "{ckpt}", "--codes", "{codes}", "--max_upload_mb", "inf"],
     "--max_upload_mb inf: must be positive and at most 1024 (MiB), a finite number"),
    (["serve", "--checkpoint", "{ckpt}", "--codes", "{codes}", "--max_upload_mb", "1e308"],
     "--max_upload_mb 1e+308: must be positive and at most 1024 (MiB)"),
    (["serve", "--checkpoint", "{ckpt}", "--codes", "{codes}", "--max_upload_mb", "nan"],
     "--max_upload_mb nan: must be positive and at most 1024"),
    (["serve", "--checkpoint", "{ckpt}", "--codes", "{codes}", "--max_upload_mb", "1025"], "at most 1024 (MiB)"),
])
def test_serve_errors_are_one_line_exit_2(setup, tmp_path_factory, capsys, args, message):
    run, other = setup["run"], shared_demo_run(tmp_path_factory, seed=5)
    argv = [a.format(ckpt=run.checkpoint, codes=run.codes, other=other.codes) for a in args]
    assert search_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err


def test_a_port_in_use_is_one_line(setup):
    taken = setup["server"].server_address[1]
    with pytest.raises(serve.UserError, match=f"--port {taken}: cannot listen there"):
        serve.make_server(setup["server"].service, "127.0.0.1", taken)
