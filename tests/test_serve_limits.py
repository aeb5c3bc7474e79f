"""The search server under pressure: its memory ceiling with many large uploads at once, the
budgets that enforce it (uploads wait, then 503), a burst of clients queued by the listen backlog,
and failures inside a request (a client that hangs up, a model that gives NaN, an unexpected
exception) that must end in an answer and one log line, never an empty reply or a traceback."""
from __future__ import annotations

import http.client
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import torch
from demo_run import shared_demo_run
from PIL import Image
from test_serve import api_results, assert_still_serving, at_once, form, png, request

from hyp2 import serve
from hyp2.codes import load_codes
from hyp2.data import DataOptions, build_dataset
from hyp2.hasher import load_hasher
from hyp2.uploads import UPLOADS_IN_FLIGHT, BadRequest, Budget, memory_ceiling

ROOT = Path(__file__).resolve().parents[1]
MiB = 1 << 20


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return shared_demo_run(tmp_path_factory)


@pytest.fixture
def start(run):
    """``start(**service_options) -> server``: a server of the demo run on 127.0.0.1 (no
    thumbnails), serving in a thread until the test ends."""
    servers = []

    def make(hasher=None, verbose=False, **options):
        service = serve.SearchService(hasher or load_hasher(run.checkpoint), load_codes(run.codes), None,
                                      **{"top": 3, **options})
        server = serve.make_server(service, verbose=verbose)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


# ------------------------------------------------------------------------------------------ memory

_CHILD = """
import sys
from hyp2 import serve
from hyp2.codes import load_codes
from hyp2.hasher import load_hasher
ckpt, codes, pixels, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
service = serve.SearchService(load_hasher(ckpt), load_codes(codes), None, top=3, max_upload=1 << 20,
                              max_pixels=pixels, pixel_budget=budget)
server = serve.make_server(service)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def _status_bytes(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc peak-memory reset")
def test_many_large_uploads_at_once_stay_under_the_memory_ceiling(run):
    """16 uploads of 2000 × 2000 pixels sent at once to a server that decodes at most 8 million
    pixels at a time: its peak resident memory rises by less than the stated ceiling (without the
    budget they all decode at once: about 500 MB), and the memory is given back afterwards."""
    side, clients = 2000, 16
    pixels, budget = side * side, 2 * side * side
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(run.checkpoint), str(run.codes), str(pixels),
                              str(budget)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        small = form({"image": ("small.png", png(Image.new("RGB", (64, 64), (9, 99, 199))))})
        big = form({"image": ("big.png", png(Image.new("RGB", (side, side), (200, 30, 60))))})
        assert len(big[0]) < MiB  # a few kilobytes: the pixels, not the bytes, are what costs

        def post(body_headers) -> tuple[int, bytes]:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            try:
                conn.request("POST", "/api/search", *body_headers)
                response = conn.getresponse()
                return response.status, response.read()
            finally:
                conn.close()

        for _ in range(3):  # the model's first forward passes, the allocator's pools
            assert post(small)[0] == 200
        idle = _status_bytes(child.pid, "VmRSS")
        Path(f"/proc/{child.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
        barrier, answers = threading.Barrier(clients), []

        def one():
            barrier.wait()
            answers.append(post(big))

        threads = [threading.Thread(target=one) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        peak = _status_bytes(child.pid, "VmHWM") - idle
        after = _status_bytes(child.pid, "VmRSS") - idle
    finally:
        child.kill()
        child.wait()
    assert [status for status, _ in answers] == [200] * clients
    assert len({body for _, body in answers}) == 1  # one image, one answer
    ceiling = memory_ceiling(UPLOADS_IN_FLIGHT * MiB, budget)
    # the ceiling plus what each open connection costs (a thread's stack, buffers): 1 MiB is generous
    print(f"peak {peak / MiB:.0f} MiB, ceiling {ceiling / MiB:.0f} MiB, after {after / MiB:.0f} MiB")
    assert peak <= ceiling + clients * MiB, (peak / MiB, ceiling / MiB)
    assert after <= 32 * MiB, after / MiB  # the decoded images went back to the system


# ------------------------------------------------------------------------------------------ budgets


def test_budget_serves_in_order_and_refuses_after_its_wait():
    budget = Budget(10, "pixels")
    with budget.hold(7, wait=0):
        assert budget.used == 7
        with pytest.raises(BadRequest, match="busy with other uploads .* at most 10 pixels") as refused:
            budget.hold(4, wait=0.05)
        assert refused.value.status == 503
        with budget.hold(3, wait=0):
            assert budget.used == 10
    assert budget.used == 0
    with pytest.raises(ValueError, match=r"amount must be in \[0, 10\], got 11"):
        budget.hold(11, wait=1)

    # a large request first in line is not overtaken by a small one that would fit
    order = []
    held = budget.hold(6, wait=0)

    def take(amount: int, name: str):
        with budget.hold(amount, wait=60):
            order.append(name)

    def in_line(n: int) -> bool:
        deadline = time.monotonic() + 60
        while len(budget._queue) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(budget._queue) == n

    big, small = threading.Thread(target=take, args=(8, "big")), threading.Thread(target=take, args=(2, "small"))
    big.start()
    assert in_line(1)
    small.start()
    assert in_line(2)
    assert order == []  # 6 + 2 would fit, but the big one came first
    with held:
        pass
    big.join(60)
    small.join(60)
    assert order == ["big", "small"] and budget.used == 0


@pytest.mark.slow
@pytest.mark.parametrize("budget", ["pixels", "bodies"])
def test_an_upload_waits_for_its_budget_then_gets_503(start, budget):
    server = start(budget_wait=0.2)
    service = server.service
    data = build_dataset("demo", DataOptions(image_size=32))
    body, headers = form({"image": ("q.png", png(data.query.load(3)))})
    full = getattr(service, budget)
    with full.hold(full.capacity, wait=0):
        status, got_headers, answer = request(server, "POST", "/api/search", body, headers)
        assert status == 503 and got_headers["Retry-After"] == "30"
        assert "the server is busy with other uploads" in json.loads(answer)["error"]
        status, _, page = request(server, "POST", "/search", body, headers)
        assert status == 503 and b'class="message"' in page and b"busy with other uploads" in page
        assert_still_serving(server)  # pages and searches by id need no budget
    assert full.used == 0
    assert request(server, "POST", "/api/search", body, headers)[0] == 200


# ------------------------------------------------------------------------------------------ many clients


def test_a_burst_of_clients_is_queued_not_reset(run, start):
    """64 clients connect while the server is not yet accepting: the listen backlog queues all of
    them (http.server's default of 5 drops the 7th onwards), and each gets its own answer."""
    hasher, db = load_hasher(run.checkpoint), load_codes(run.codes)
    service = serve.SearchService(hasher, db, None, top=3)
    server = serve.make_server(service)
    ids = db.queries.ids.tolist()[:8]
    expected = {i: api_results(json.dumps(serve.results_json(service, *service.by_id(i, 3))).encode())
                for i in ids}
    clients = 64
    conns = [http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60) for _ in range(clients)]
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    try:
        assert at_once([conn.connect for conn in conns]) == [None] * clients  # the kernel completes each handshake
        for k, conn in enumerate(conns):
            conn.request("GET", f"/api/search?id={quote(ids[k % 8], safe='')}&top=3")
        serving.start()
        got = []
        for conn in conns:
            response = conn.getresponse()
            got.append((response.status, api_results(response.read())))
    finally:
        for conn in conns:
            conn.close()
        if serving.is_alive():
            server.shutdown()
        server.server_close()
    assert got == [(200, expected[ids[k % 8]]) for k in range(clients)]


# ------------------------------------------------------------------------------------------ failures


def nan_hasher(run):
    hasher = load_hasher(run.checkpoint)
    with torch.no_grad():
        next(hasher.model.parameters()).fill_(float("nan"))
    return hasher


def test_an_upload_the_model_cannot_encode_gets_500_and_the_server_keeps_serving(run, start, capsys):
    server = start(hasher=nan_hasher(run))
    body, headers = form({"image": ("q.png", png(Image.new("RGB", (40, 30), (90, 20, 200))))})
    status, _, answer = request(server, "POST", "/api/search", body, headers)
    message = json.loads(answer)["error"]
    assert status == 500 and message.startswith("the model cannot encode this image: the model of ")
    assert "gives NaN outputs for finite input; the checkpoint is broken" in message
    status, headers_back, page = request(server, "POST", "/search", body, headers)
    assert status == 500 and headers_back["Content-Type"].startswith("text/html")
    assert b'class="message"' in page and b"the model cannot encode this image" in page
    assert request(server, "GET", "/api/search?id=demo%2F02003")[0] == 200  # stored codes still rank
    assert_still_serving(server)
    assert "Traceback" not in capsys.readouterr().err


def test_an_unexpected_failure_is_a_500_with_one_line_not_an_empty_reply(start, capsys, monkeypatch):
    server = start()

    def broken(*args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(server.service, "by_id", broken)
    status, _, answer = request(server, "GET", "/api/search?id=demo%2F02003")
    assert status == 500
    assert json.loads(answer)["error"] == ("the server failed on this request (RuntimeError: boom); the server keeps "
                                          "serving, try again or another image")
    status, _, page = request(server, "GET", "/search?id=demo%2F02003")
    assert status == 500 and b"the server failed on this request (RuntimeError: boom)" in page
    assert_still_serving(server)
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 2  # one line per failed request, always
    assert "error: GET /api/search?id=demo%2F02003: RuntimeError: boom" in err


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_a_client_that_hangs_up_early_costs_one_line_at_most(run, start, capsys, monkeypatch, verbose):
    """The client sends an upload and resets the connection before the answer: writing it fails,
    which is one line of the log with --verbose, nothing without, never a traceback."""
    server = start(verbose=verbose)
    service = server.service
    entered, go, done = threading.Event(), threading.Event(), threading.Event()
    real_upload, real_handle = service.by_upload, serve._Handler.handle

    def slow_upload(*args):
        entered.set()
        assert go.wait(60)
        return real_upload(*args)

    def handle(self):
        try:
            real_handle(self)
        finally:
            done.set()

    monkeypatch.setattr(service, "by_upload", slow_upload)
    monkeypatch.setattr(serve._Handler, "handle", handle)
    body, headers = form({"image": ("q.png", png(Image.new("RGB", (40, 30), (90, 20, 200))))})
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(server.server_address[:2], timeout=60) as client:
        client.sendall(f"POST /api/search HTTP/1.1\r\nHost: x\r\n{head}\r\n".encode() + body)
        assert entered.wait(60)  # the server has read the upload and is encoding it
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
    go.set()
    assert done.wait(60)
    server.shutdown()  # the request's thread has finished writing its log line
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    if verbose:  # the request's access line, and one line saying the answer found nobody
        assert len(lines) == 2 and '"POST /api/search HTTP/1.1"' in lines[0], lines
        assert "POST /api/search: the client is gone (" in lines[1], lines
    else:
        assert lines == []
