"""``python -m hyp2.search serve``: a local search page for a trained model and its exported codes.

A user uploads an image (or clicks one of the dataset's images) and sees its nearest database
images by Hamming distance, with thumbnails, distances and labels: retrieval as HyP² Loss defines
it (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval", ACM
MM 2022, Sec. 4.1; codes are the signs of the network's outputs, ranking ties in database order).
An uploaded image is encoded by the checkpoint's model (:func:`hyp2.load_hasher`); a clicked image
ranks with the code stored for it in the codes file, exactly what the run evaluated.

Built on the standard library's :mod:`http.server` (a threading server): the page is a form and
server-made HTML with no script, so a web framework would add a dependency and nothing else.
What keeps it safe to run:

* it listens on 127.0.0.1 unless ``--host`` says otherwise;
* no part of a request ever reaches the file system: pages and thumbnails are made in memory,
  and a thumbnail is served only for an id the codes file lists (a dict lookup, never a path);
* an upload larger than ``--max_upload_mb`` is refused before it is read into memory; an image
  is decoded only after its header says it has at most ``MAX_PIXELS`` pixels (a decompression
  bomb is refused), from a short list of formats; a bad upload gets a clear message and the
  server keeps serving;
* memory has a ceiling: upload bodies and decoded pixels in flight each have a budget, and an
  upload waits for its share (503 after ``BUDGET_WAIT_S``); see :mod:`hyp2.uploads`;
* requests run in threads; the model encodes one upload at a time (a lock), ranking and
  thumbnails run concurrently; the listen backlog (``LISTEN_BACKLOG``) queues a burst of clients;
* every request gets an answer: an unexpected failure is a 500 with one line, never an empty
  reply, and a client that hangs up early costs one log line (``--verbose``), never a traceback.
"""
from __future__ import annotations

import logging
import argparse
import functools
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ._plugins import add_plugin_flag
from .codes import CodeDatabase, check_same_model, load_codes
from .errors import ArgumentParser, UserError, reason, resolve_device
from .index import CodeIndex
from .gallery import ImageSource, Retrieval, codes_by_id, encode_image, thumbnail
from .metrics import pack_codes
from .serve_pages import MAX_TOP, Query, home_page, results_json, results_page
from .uploads import (BUDGET_WAIT_S, MAX_PIXELS, MAX_UPLOAD_LIMIT_MB, MAX_UPLOAD_MB, PIXEL_WEIGHT, PIXELS_IN_FLIGHT,
                      UPLOADS_IN_FLIGHT, BadRequest, Budget, decode_cost, decode_upload, form_field,
                      memory_ceiling, multipart_file, return_freed_memory)

log = logging.getLogger("hyp2")

__all__ = ["BadRequest", "LISTEN_BACKLOG", "MAX_PIXELS", "MAX_TOP", "MAX_UPLOAD_MB", "PICKS", "Query", "SearchServer",
           "SearchService", "decode_upload", "home_page", "make_server", "multipart_file", "results_json",
           "results_page", "serve_main"]

#: images on the start page to click
PICKS = 24
#: connections the operating system queues while the server is busy (Linux caps it at
#: net.core.somaxconn); http.server's 5 reset the 7th of many simultaneous clients
LISTEN_BACKLOG = 128
#: bytes of a refused upload read and dropped so that the browser sees the answer
_DRAIN_LIMIT = 256 << 20
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                                       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"}


# ----------------------------------------------------------------------------------------------
# What the page does


class SearchService:
    """The model, the codes and the images behind the page; safe to call from many threads.

    Args:
        hasher: encodes uploads (:class:`hyp2.hasher.Hasher`; its digest matches the codes').
        db: the codes file. images: where thumbnails come from, or None (no thumbnails).
        top: results shown by default. max_upload: bytes. max_pixels: see :func:`decode_upload`.
        pixel_budget: decoded pixels held at once by all uploads, raised to what the largest image
            takes (``max_pixels``, twice that for WebP: ``PIXEL_WEIGHT``).
        uploads_in_flight: upload bodies of ``max_upload`` bytes held at once.
        budget_wait: seconds a request waits for its share of a budget before a 503.
    """

    def __init__(self, hasher, db: CodeDatabase, images: ImageSource | None, *, top: int = 10,
                 max_upload: int = MAX_UPLOAD_MB << 20, max_pixels: int = MAX_PIXELS,
                 pixel_budget: int = PIXELS_IN_FLIGHT, uploads_in_flight: int = UPLOADS_IN_FLIGHT,
                 budget_wait: float = BUDGET_WAIT_S, source: str = ""):
        self.hasher, self.db, self.images = hasher, db, images
        self.top, self.max_upload, self.max_pixels, self.source = top, max_upload, max_pixels, source
        # at least the largest image of the heaviest format fits, or it would wait forever
        heaviest = max_pixels * max(PIXEL_WEIGHT.values(), default=1)
        self.pixels = Budget(max(pixel_budget, heaviest), "decoded pixels")
        self.bodies = Budget(uploads_in_flight * max_upload, "bytes of uploads")
        self.budget_wait = budget_wait
        self._codes = codes_by_id(db)
        self.index = CodeIndex.from_database(db)
        self.index.search(db.codes[:1], 1)  # builds a faiss index now, not in the first requests at once
        self._encode_lock = threading.Lock()
        self.thumbnail = functools.lru_cache(maxsize=4096)(self._thumbnail)
        ids = (db.queries.ids if db.queries is not None else db.ids).tolist()
        step = max(1, len(ids) // PICKS)
        self.picks = ids[::step][:PICKS]

    @property
    def memory_ceiling(self) -> int:
        """Most bytes the uploads in flight hold at once (:func:`hyp2.uploads.memory_ceiling`)."""
        return memory_ceiling(self.bodies.capacity, self.pixels.capacity)

    def by_id(self, ident: str, top: int) -> tuple[Query, Retrieval]:
        """Rank with the code the codes file stores for ``ident``; 404 when it lists no such id."""
        entry = self._codes.get(ident)
        if entry is None:
            raise BadRequest(404, f"no image {ident!r} in the codes file; pick one on the start page")
        code, labels = entry
        hits = self.index.hits(code[None, :], top, labels[None, :])[0]
        names = tuple(self.db.classes[c] for c in np.flatnonzero(labels))
        return Query(ident, ident, names), Retrieval(ident, names, hits)

    def by_upload(self, data: bytes, name: str, top: int) -> tuple[Query, Retrieval]:
        """Encode an uploaded image with the model and rank the database for its code.

        Raises:
            BadRequest: 400/413 for a bad upload (:func:`decode_upload`), 503 when the pixel
                budget stays full, 500 when the model cannot encode the image.
        """
        with self.pixels.hold(decode_cost(data, self.max_pixels), self.budget_wait):
            img = decode_upload(data, self.max_pixels)
            x, preview = self.hasher.preprocess([img]), thumbnail(img)
            del img  # the decoded pixels are given back with the budget; (1, 3, S, S) remains
        try:
            with self._encode_lock:  # one forward pass at a time bounds memory; torch uses all cores
                outputs = self.hasher.forward(x)
        except UserError as e:
            raise BadRequest(500, f"the model cannot encode this image: {e}") from None
        hits = self.index.hits(pack_codes(outputs), top)[0]
        return Query(None, name, (), preview), Retrieval(name, (), hits)

    def _thumbnail(self, ident: str) -> tuple[str, bytes] | None:
        if self.images is None or ident not in self.images:
            return None
        return encode_image(thumbnail(self.images.load(ident)))

    def top_of(self, values: Sequence[str] | None) -> int:
        """``?top=K`` clamped to 1 … :data:`MAX_TOP`; the server's default when absent or bad."""
        try:
            return min(MAX_TOP, max(1, int(values[0]))) if values else self.top
        except ValueError:
            return self.top


# ----------------------------------------------------------------------------------------------
# HTTP


class _Handler(BaseHTTPRequestHandler):
    """Routes: ``GET /``, ``GET /search?id=ID``, ``POST /search`` (form upload), ``GET /thumb?id=ID``,
    ``GET /api/search?id=ID`` and ``POST /api/search`` (form upload or raw image body) -> JSON."""

    server_version = "hyp2-search"
    timeout = 60  # a stalled client does not hold a thread forever
    server: "SearchServer"
    _replied = False

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        self._respond(self._get)

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        self._respond(self._post)

    def _respond(self, route) -> None:
        """Run ``route`` and make sure the client gets an answer: its own, a refusal, or a 500."""
        api = urlsplit(self.path).path == "/api/search"
        try:
            try:
                route(api)
            except BadRequest as e:
                self._error(api, e)
            except (ConnectionError, TimeoutError):
                raise
            except Exception as e:  # noqa: BLE001 - one request's failure must not end in an empty reply
                self.log_line(f"error: {self.command} {self.path[:200]}: {reason(e)}", always=True)
                if self._replied:  # the answer was cut off half-way: the connection cannot be reused
                    self.close_connection = True
                else:
                    self._error(api, BadRequest(500, f"the server failed on this request ({reason(e)}); the "
                                                     f"server keeps serving, try again or another image"))
        except (ConnectionError, TimeoutError) as e:  # the client hung up or stalled: nobody to answer
            self.close_connection = True
            self.log_line(f"{self.command} {self.path[:200]}: the client is gone ({reason(e)})")

    def _get(self, api: bool) -> None:
        url = urlsplit(self.path)
        params = parse_qs(url.query)
        service = self.server.service
        if url.path == "/":
            self._html(200, home_page(service, top=service.top_of(params.get("top"))))
        elif url.path == "/thumb":
            self._thumb(params)
        elif url.path in ("/search", "/api/search"):
            ident = (params.get("id") or [""])[0]
            if not ident:
                raise BadRequest(400, "say which image: /search?id=ID, or upload one on the start page")
            top = service.top_of(params.get("top"))
            self._answer(api, *service.by_id(ident, top), top)
        else:
            raise BadRequest(404, f"no page {url.path!r} here; the search page is at /")

    def _post(self, api: bool) -> None:
        url = urlsplit(self.path)
        service = self.server.service
        if url.path not in ("/search", "/api/search"):
            self._drain()
            raise BadRequest(404, f"nothing to post to at {url.path!r}; upload on the start page")
        length, limit = self._length(), service.max_upload
        if length > limit:
            self._drain(length)
            raise BadRequest(413, f"the upload is {length:,} bytes, more than the {limit:,} bytes "
                                  f"({limit / 2**20:g} MiB) this page accepts; send a smaller image")
        try:
            share = service.bodies.hold(length, service.budget_wait)  # the body is read once it fits
        except BadRequest:
            self._drain(length)
            raise
        with share:
            body = self._body(length)
            ctype = self.headers.get("Content-Type", "")
            top = service.top_of(parse_qs(url.query).get("top"))
            if ctype.startswith("multipart/form-data"):
                data, name = multipart_file(body, ctype)
                top = service.top_of(form_field(body, ctype, "top") or parse_qs(url.query).get("top"))
            elif api:
                data, name = body, "upload"
            else:
                raise BadRequest(400, "send the image with the page's form (multipart/form-data)")
            del body  # the file cut out of it is all that is needed now
            found = service.by_upload(data, name, top)
        self._answer(api, *found, top)

    # ------------------------------------------------------------------ bodies
    def _length(self) -> int:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise BadRequest(411, "the upload does not say its length (Content-Length); send it from the page's "
                                  "form") from None
        if length < 0:
            raise BadRequest(400, "negative Content-Length")
        return length

    def _body(self, length: int) -> bytes:
        data = self.rfile.read(length)
        if len(data) < length:
            raise BadRequest(400, "the upload was cut short; send it again")
        return data

    def _drain(self, length: int | None = None) -> None:
        """Read and drop a refused body (up to a limit), so the browser is reading when we answer."""
        try:
            left = self._length() if length is None else length
        except BadRequest:
            left = 0
        if left > _DRAIN_LIMIT:
            self.close_connection = True
            return
        length = left
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    # ------------------------------------------------------------------ answers
    def _thumb(self, params: dict[str, list[str]]) -> None:
        ident = (params.get("id") or [""])[0]
        try:
            found = self.server.service.thumbnail(ident)
        except UserError as e:
            raise BadRequest(404, f"image {ident!r} cannot be read ({e})") from None
        if found is None:
            raise BadRequest(404, "no such image: thumbnails exist only for the ids the codes file lists")
        mime, data = found
        self._send(200, data, mime, {"Cache-Control": "private, max-age=3600"})

    def _answer(self, api: bool, query: Query, retrieval: Retrieval, top: int) -> None:
        service = self.server.service
        if api:
            self._json(200, results_json(service, query, retrieval))
        else:
            self._html(200, results_page(service, query, retrieval, top))

    def _error(self, api: bool, error: BadRequest) -> None:
        extra = {"Retry-After": "30"} if error.status == 503 else {}
        if api:
            self._json(error.status, {"error": str(error)}, extra)
        else:
            self._html(error.status, home_page(self.server.service, str(error)), extra)

    def _html(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8",
                   {"Cache-Control": "no-store", **(extra or {})})

    def _json(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json",
                   {"Cache-Control": "no-store", **(extra or {})})

    def _send(self, status: int, data: bytes, ctype: str, extra: dict[str, str]) -> None:
        self._replied = True
        self.send_response(status)
        for key, value in {**_HEADERS, **extra, "Content-Type": ctype, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        if self.server.verbose:
            super().log_message(format, *args)

    def log_line(self, text: str, always: bool = False) -> None:
        """One line on stderr, in http.server's format: always, or with ``--verbose`` only."""
        if always or self.server.verbose:
            super().log_message("%s", text)


class SearchServer(ThreadingHTTPServer):
    """The page's HTTP server: one thread per request, threads end with the server."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], service: SearchService, verbose: bool = False):
        self.service, self.verbose = service, verbose
        if ":" in address[0]:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        return_freed_memory()  # decoded images go back to the system when freed (glibc)
        super().serve_forever(poll_interval)

    def handle_error(self, request, client_address) -> None:
        """One line, never a traceback, for a failure outside a route (a client gone mid-request)."""
        error = sys.exc_info()[1]
        if self.verbose or not isinstance(error, (ConnectionError, TimeoutError)):
            log.warning(f"{client_address[0]} - - request failed: {reason(error) if error else 'unknown error'}")


def make_server(service: SearchService, host: str = "127.0.0.1", port: int = 0, verbose: bool = False) -> SearchServer:
    """A :class:`SearchServer` listening on ``host:port`` (port 0: any free one; see ``.url``).

    Raises:
        UserError: the address cannot be used (port taken, unknown host).
    """
    try:
        return SearchServer((host, port), service, verbose)
    except OSError as e:
        raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror or reason(e)}); pass "
                        f"another --port, or --port 0 for any free one") from None


# ----------------------------------------------------------------------------------------------
# Command line


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m hyp2.search serve",
                       description="Serve a local search page: upload an image, or click one of the dataset's, "
                                   "and see its nearest database images by Hamming distance with thumbnails, "
                                   "distances and labels. Guide: docs/search.md.",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="the run's best checkpoint, result/{run}.ckpt")
    p.add_argument("--codes", type=Path, required=True, help="the exported codes, result/{run}_codes.npz")
    p.add_argument("--data_root", type=Path, default=None,
                   help="where the dataset's images are (default: the folder recorded in the codes file)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; anything but 127.0.0.1 lets other machines use the page")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (0: any free port)")
    p.add_argument("--top", type=int, default=10, help="results shown per query (the page can ask for up to 100)")
    p.add_argument("--device", default="cpu", help="where the model encodes uploads, e.g. cpu or cuda:0")
    p.add_argument("--max_upload_mb", type=float, default=MAX_UPLOAD_MB,
                   help=f"largest upload accepted, in MiB (at most {MAX_UPLOAD_LIMIT_MB})")
    p.add_argument("--verbose", action="store_true", help="log every request on stderr")
    add_plugin_flag(p)
    return p


def open_service(args: argparse.Namespace) -> SearchService:
    """Load the model, the codes (refused when another model exported them) and the images."""
    from .hasher import load_hasher

    if not 1 <= args.top <= MAX_TOP:
        raise UserError(f"--top {args.top}: must be between 1 and {MAX_TOP}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be between 0 and 65535")
    if not 0 < args.max_upload_mb <= MAX_UPLOAD_LIMIT_MB:  # also refuses nan and inf
        raise UserError(f"--max_upload_mb {args.max_upload_mb:g}: must be positive and at most "
                        f"{MAX_UPLOAD_LIMIT_MB} (MiB), a finite number; pass e.g. --max_upload_mb {MAX_UPLOAD_MB}")
    hasher = load_hasher(args.checkpoint, resolve_device(args.device))
    db = load_codes(args.codes)
    check_same_model(hasher, db, args.codes)
    try:
        images = ImageSource.for_codes(db, args.data_root)
        source = f"Images: {images.where}."
    except UserError as e:
        images, source = None, "No thumbnails: the dataset's images were not found."
        log.info(f"note: no thumbnails: {e}; pass --data_root DIR to say where the images are")
    return SearchService(hasher, db, images, top=args.top, max_upload=int(args.max_upload_mb * 2**20),
                         max_pixels=MAX_PIXELS, pixel_budget=PIXELS_IN_FLIGHT, source=source)


def serve_main(argv: Sequence[str]) -> None:
    """``python -m hyp2.search serve ...``: serve until Ctrl-C; :class:`UserError` on bad input."""
    args = build_parser().parse_args(argv)
    service = open_service(args)
    server = make_server(service, args.host, args.port, args.verbose)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.info(f"note: listening on {args.host}: anyone who can reach this machine can use the page")
    log.info(f"serving the search page at {server.url} ({len(service.db.ids)} images, {service.db.num_bits} bits); "
             f"Ctrl-C stops it")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("stopped")
    finally:
        server.server_close()
