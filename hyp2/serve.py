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
* requests run in threads; the model encodes one upload at a time (a lock), ranking and
  thumbnails run concurrently.
"""
from __future__ import annotations

import argparse
import functools
import io
import json
import socket
import threading
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, quote, urlsplit

import numpy as np
from PIL import Image

from ._plugins import add_plugin_flag
from .codes import CodeDatabase, load_codes
from .errors import ArgumentParser, UserError, reason, resolve_device
from .index import CodeIndex
from .gallery import ImageSource, Retrieval, codes_by_id, encode_image, rank_packed, thumbnail
from .htmlpage import data_uri, esc, hit_caption, page, thumb
from .metrics import pack_codes

#: largest upload accepted by default, in MiB (``--max_upload_mb``)
MAX_UPLOAD_MB = 20
#: largest image decoded, in pixels: 40 megapixels is 120 MB of RGB, above any phone camera's
#: 12–24 MP default, far below what a decompression bomb declares
MAX_PIXELS = 40_000_000
#: formats an upload may be in (each decoder PIL ships; no vector or container formats)
UPLOAD_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
#: most results a page may ask for
MAX_TOP = 100
#: images on the start page to click
PICKS = 24
#: bytes of a refused upload read and dropped so that the browser sees the answer
_DRAIN_LIMIT = 256 << 20
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
                                       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"}


class BadRequest(Exception):
    """A request the page answers with ``status`` and a one-line ``message`` for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def decode_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An uploaded file as an RGB image, checked before it is decoded.

    Raises:
        BadRequest: 400 for an empty file or one that is not a readable JPEG/PNG/GIF/BMP/WebP,
            413 for an image of more than ``max_pixels`` pixels (a decompression bomb).
    """
    if not data:
        raise BadRequest(400, "the upload is empty; choose an image file")
    try:
        img = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
    except Image.DecompressionBombError:
        raise BadRequest(413, _too_many_pixels("far more", max_pixels)) from None
    except Image.UnidentifiedImageError:
        raise BadRequest(400, "this file is not an image the page can read; upload a JPEG, PNG, GIF, BMP or WebP "
                              "image") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for foreign data
        raise BadRequest(400, f"this file is not an image the page can read ({reason(e)}); upload a JPEG, PNG, "
                              f"GIF, BMP or WebP image") from None
    width, height = img.size
    if width * height > max_pixels:
        raise BadRequest(413, _too_many_pixels(f"{width}×{height} = {width * height / 1e6:g} million", max_pixels))
    try:
        # verify() checks the file's structure and checksums (PNG's CRCs) without decoding, which
        # catches a cut-off PNG even though hyp2.data lets PIL decode truncated images (the
        # datasets' few truncated JPEGs); a truncated JPEG still decodes, its missing rows grey.
        img.verify()
        img = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
        img.load()
        return img.convert("RGB")
    except Exception as e:  # noqa: BLE001 - truncated or corrupt data
        raise BadRequest(400, f"the image cannot be decoded ({reason(e)}); it may be truncated: upload it "
                              f"again or another file") from None


def _too_many_pixels(what: str, max_pixels: int) -> str:
    return (f"the image declares {what} pixels, more than the {max_pixels / 1e6:g} million this page decodes "
            f"(a decompression bomb, or a huge image: scale it down first)")


def multipart_file(body: bytes, content_type: str, field: str = "image") -> tuple[bytes, str]:
    """``(file bytes, file name)`` of the form field ``field`` of a ``multipart/form-data`` body.

    Raises:
        BadRequest: 400 when the body is not multipart or has no such field.
    """
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary") if header.get_content_type() == "multipart/form-data" else None
    if not isinstance(boundary, str) or not boundary:
        raise BadRequest(400, "send the image as a form upload (multipart/form-data) or as the raw request body")
    for part in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if part.startswith(b"--"):
            break
        head, sep, data = part.partition(b"\r\n\r\n")
        if not sep:
            continue
        disposition = Message()
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition["content-disposition"] = value.strip()
        if disposition.get_param("name", header="content-disposition") == field:
            filename = disposition.get_param("filename", header="content-disposition") or "upload"
            return data.removesuffix(b"\r\n"), str(filename)
    raise BadRequest(400, f"the upload has no file in its '{field}' field; choose an image and send it again")


# ----------------------------------------------------------------------------------------------
# What the page does


@dataclass(frozen=True)
class Query:
    """What was searched: an id of the codes file, or an uploaded file's name (and thumbnail)."""

    id: str | None
    name: str
    labels: tuple[str, ...] = ()
    preview: Image.Image | None = None


class SearchService:
    """The model, the codes and the images behind the page; safe to call from many threads.

    Args:
        hasher: encodes uploads (:class:`hyp2.hasher.Hasher`; its digest matches the codes').
        db: the codes file. images: where thumbnails come from, or None (no thumbnails).
        top: results shown by default. max_upload: bytes. max_pixels: see :func:`decode_upload`.
    """

    def __init__(self, hasher, db: CodeDatabase, images: ImageSource | None, *, top: int = 10,
                 max_upload: int = MAX_UPLOAD_MB << 20, max_pixels: int = MAX_PIXELS, source: str = ""):
        self.hasher, self.db, self.images = hasher, db, images
        self.top, self.max_upload, self.max_pixels, self.source = top, max_upload, max_pixels, source
        self._codes = codes_by_id(db)
        self.index = CodeIndex.from_database(db)
        self.index.search(db.codes[:1], 1)  # builds a faiss index now, not in the first requests at once
        self._encode_lock = threading.Lock()
        self.thumbnail = functools.lru_cache(maxsize=4096)(self._thumbnail)
        ids = (db.queries.ids if db.queries is not None else db.ids).tolist()
        step = max(1, len(ids) // PICKS)
        self.picks = ids[::step][:PICKS]

    def by_id(self, ident: str, top: int) -> tuple[Query, Retrieval]:
        """Rank with the code the codes file stores for ``ident``; 404 when it lists no such id."""
        entry = self._codes.get(ident)
        if entry is None:
            raise BadRequest(404, f"no image {ident!r} in the codes file; pick one on the start page")
        code, labels = entry
        hits = rank_packed(self.db, code[None, :], top, labels[None, :], index=self.index)[0]
        names = tuple(self.db.classes[c] for c in np.flatnonzero(labels))
        return Query(ident, ident, names), Retrieval(ident, names, hits)

    def by_upload(self, data: bytes, name: str, top: int) -> tuple[Query, Retrieval]:
        """Encode an uploaded image with the model and rank the database for its code."""
        img = decode_upload(data, self.max_pixels)
        with self._encode_lock:  # one forward pass at a time bounds memory; torch uses all cores
            outputs = self.hasher.outputs([img])
        hits = rank_packed(self.db, pack_codes(outputs), top, index=self.index)[0]
        return Query(None, name, (), thumbnail(img)), Retrieval(name, (), hits)

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
# Pages


def _thumb_src(service: SearchService, ident: str) -> str | None:
    return f"/thumb?id={quote(ident, safe='')}" if service.images is not None and ident in service.images else None


def _item(service: SearchService, ident: str, caption: str, labels: Sequence[str], kind: str, top: int) -> str:
    href = f"/search?id={quote(ident, safe='')}&top={top}"
    return thumb(_thumb_src(service, ident), caption, labels, kind, href=href, alt=ident)


def _form(service: SearchService, top: int) -> str:
    return ("<form class=\"upload\" method=\"post\" action=\"/search\" enctype=\"multipart/form-data\">"
            "<label>Image: <input type=\"file\" name=\"image\" accept=\"image/*\" required></label>"
            f"<label>results: <input type=\"number\" name=\"top\" min=\"1\" max=\"{MAX_TOP}\" value=\"{top}\" "
            f"style=\"width:4.5em\"></label><button type=\"submit\">Search</button>"
            f"<span class=\"muted\">JPEG, PNG, GIF, BMP or WebP, up to {service.max_upload / 2**20:.0f} MiB"
            f"</span></form>")


def _header(service: SearchService) -> str:
    meta, db = service.db.meta, service.db
    facts = [f"{meta.get('dataset', '?')}", f"{db.num_bits} bits", f"{len(db.ids)} database images",
             f"model {meta.get('backbone', '?')}, loss {meta.get('loss', '?')}"]
    if isinstance(meta.get("map"), (int, float)):
        facts.append(f"mAP {meta['map']:.4f} when exported")
    return (f"<h1><a href=\"/\" style=\"color:inherit;text-decoration:none\">HyP² image search</a></h1>"
            f"<p class=\"muted\">{esc(' · '.join(facts))}. {esc(service.source)}</p>")


def home_page(service: SearchService, message: str | None = None, top: int | None = None) -> str:
    """The start page: the upload form, and images of the dataset to click."""
    top = top or service.top
    picks = "".join(_item(service, i, "", _labels(service, i), "query", top) for i in service.picks)
    body = [_header(service), _message(message), _form(service, top),
            "<h2>Or pick an image</h2>",
            "<p class=\"muted\">Queries of the dataset; a click ranks the database with the code the run "
            "stored for it.</p>", f"<div class=\"gallery-row\">{picks}</div>"]
    return page("HyP² image search", "\n".join(body))


def _labels(service: SearchService, ident: str) -> tuple[str, ...]:
    labels = service._codes[ident][1]
    return tuple(service.db.classes[c] for c in np.flatnonzero(labels))


def _message(message: str | None) -> str:
    return f"<p class=\"message\" role=\"alert\">{esc(message)}</p>" if message else ""


def results_page(service: SearchService, query: Query, retrieval: Retrieval, top: int) -> str:
    """The query and its top images in rank order; relevance frames when the query's labels are
    known (an image of the dataset), neutral frames for an upload."""
    if query.preview is not None:
        shown = thumb(data_uri(query.preview), "your image", (), "query", alt=query.name)
    else:
        shown = _item(service, query.id or "", "query", query.labels, "query", top)
    hits = "".join(_item(service, h.id, hit_caption(r + 1, h.distance, h.relevant), h.labels,
                         "hit" if h.relevant is None else ("ok" if h.relevant else "bad"), top)
                   for r, h in enumerate(retrieval.hits))
    legend = ("green ✓: shares a label with the query, red ✗: shares none; " if query.id is not None else "")
    body = [_header(service), _form(service, top),
            f"<h2>Query: <code>{esc(query.name)}</code></h2><div class=\"gallery-row\">{shown}</div>",
            f"<h2>Top {len(retrieval.hits)} by Hamming distance</h2>",
            f"<p class=\"muted\">{legend}d: Hamming distance; a click searches with that image. "
            f"<a href=\"/\">Start page</a></p>", f"<div class=\"gallery-row\">{hits}</div>"]
    return page(f"Search: {query.name}", "\n".join(body))


def results_json(service: SearchService, query: Query, retrieval: Retrieval) -> dict[str, Any]:
    """The API's answer: the query and its results (rank, distance, id, labels, relevant)."""
    return {"query": {"id": query.id, "name": query.name, "labels": list(query.labels)},
            "num_bits": service.db.num_bits,
            "results": [{"rank": r + 1, "distance": h.distance, "id": h.id, "labels": list(h.labels),
                         "relevant": h.relevant} for r, h in enumerate(retrieval.hits)]}


# ----------------------------------------------------------------------------------------------
# HTTP


class _Handler(BaseHTTPRequestHandler):
    """Routes: ``GET /``, ``GET /search?id=ID``, ``POST /search`` (form upload), ``GET /thumb?id=ID``,
    ``GET /api/search?id=ID`` and ``POST /api/search`` (form upload or raw image body) -> JSON."""

    server_version = "hyp2-search"
    timeout = 60  # a stalled client does not hold a thread forever
    server: "SearchServer"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        url = urlsplit(self.path)
        params = parse_qs(url.query)
        service = self.server.service
        api = url.path == "/api/search"
        try:
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
        except BadRequest as e:
            self._error(api, e)

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        url = urlsplit(self.path)
        service = self.server.service
        api = url.path == "/api/search"
        try:
            if url.path not in ("/search", "/api/search"):
                self._drain()
                raise BadRequest(404, f"nothing to post to at {url.path!r}; upload on the start page")
            body = self._body()
            ctype = self.headers.get("Content-Type", "")
            top = service.top_of(parse_qs(url.query).get("top"))
            if ctype.startswith("multipart/form-data"):
                data, name = multipart_file(body, ctype)
                top = service.top_of(_form_field(body, ctype, "top") or parse_qs(url.query).get("top"))
            elif api:
                data, name = body, "upload"
            else:
                raise BadRequest(400, "send the image with the page's form (multipart/form-data)")
            self._answer(api, *service.by_upload(data, name, top), top)
        except BadRequest as e:
            self._error(api, e)

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

    def _body(self) -> bytes:
        length, limit = self._length(), self.server.service.max_upload
        if length > limit:
            self._drain(length)
            raise BadRequest(413, f"the upload is {length / 2**20:.1f} MiB, more than the {limit / 2**20:.0f} MiB "
                                  f"this page accepts; send a smaller image")
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
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)

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
        if api:
            self._json(error.status, {"error": str(error)})
        else:
            self._html(error.status, home_page(self.server.service, str(error)))

    def _html(self, status: int, text: str) -> None:
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8", {"Cache-Control": "no-store"})

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json", {"Cache-Control": "no-store"})

    def _send(self, status: int, data: bytes, ctype: str, extra: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**_HEADERS, **extra, "Content-Type": ctype, "Content-Length": str(len(data))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        if self.server.verbose:
            super().log_message(format, *args)


def _form_field(body: bytes, ctype: str, field: str) -> list[str] | None:
    try:
        value, _ = multipart_file(body, ctype, field)
    except BadRequest:
        return None
    return [value.decode("utf-8", "replace").strip()]


class SearchServer(ThreadingHTTPServer):
    """The page's HTTP server: one thread per request, threads end with the server."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: SearchService, verbose: bool = False):
        self.service, self.verbose = service, verbose
        if ":" in address[0]:  # an IPv6 address such as ::1
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


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
    p.add_argument("--max_upload_mb", type=float, default=MAX_UPLOAD_MB, help="largest upload accepted, in MiB")
    p.add_argument("--verbose", action="store_true", help="log every request on stderr")
    add_plugin_flag(p)
    return p


def open_service(args: argparse.Namespace) -> SearchService:
    """Load the model, the codes (refused when another model exported them) and the images."""
    from .hasher import load_hasher
    from .search import check_same_model

    if not 1 <= args.top <= MAX_TOP:
        raise UserError(f"--top {args.top}: must be between 1 and {MAX_TOP}")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be between 0 and 65535")
    if not args.max_upload_mb > 0:
        raise UserError(f"--max_upload_mb {args.max_upload_mb}: must be positive")
    hasher = load_hasher(args.checkpoint, resolve_device(args.device))
    db = load_codes(args.codes)
    check_same_model(hasher, db, args.codes)
    try:
        images = ImageSource.for_codes(db, args.data_root)
        source = f"Images: {images.where}."
    except UserError as e:
        images, source = None, "No thumbnails: the dataset's images were not found."
        print(f"note: no thumbnails: {e}; pass --data_root DIR to say where the images are", flush=True)
    return SearchService(hasher, db, images, top=args.top, max_upload=int(args.max_upload_mb * 2**20),
                         source=source)


def serve_main(argv: Sequence[str]) -> None:
    """``python -m hyp2.search serve ...``: serve until Ctrl-C; :class:`UserError` on bad input."""
    args = build_parser().parse_args(argv)
    service = open_service(args)
    server = make_server(service, args.host, args.port, args.verbose)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}: anyone who can reach this machine can use the page", flush=True)
    print(f"serving the search page at {server.url} ({len(service.db.ids)} images, {service.db.num_bits} bits); "
          f"Ctrl-C stops it", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
