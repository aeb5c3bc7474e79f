"""What an upload to the search page (:mod:`hyp2.serve`) may cost, and the checks before it is decoded.

Memory is bounded by two budgets, each a FIFO of requests that wait their turn:

* **upload bytes in flight**: a request body is read only once its declared length fits in the
  budget (``UPLOADS_IN_FLIGHT`` × the upload limit); the body and the file cut out of it are
  held at most twice, so bodies take at most ``2 × body budget`` bytes;
* **decoded pixels in flight**: an image is decoded only once the pixels its header declares fit
  in the budget (``PIXELS_IN_FLIGHT``, at least one image of ``MAX_PIXELS``), and they are given
  back as soon as the image is reduced to the model's input and a thumbnail. A decoded pixel
  costs at most ``DECODE_BYTES_PER_PIXEL`` bytes while it is held: Pillow stores 4 bytes a pixel,
  and the RGB image lives beside one copy (a mode conversion, the thumbnail's), 8 bytes measured
  for every format and mode, with a margin. A WebP pixel counts twice (``PIXEL_WEIGHT``): libwebp
  decodes into canvases of its own first (16 bytes measured).

A request that waits longer than ``BUDGET_WAIT_S`` for either budget gets 503 ("busy, try again").
So the uploads' share of the server's memory is at most :func:`memory_ceiling` bytes above what
the idle server holds, plus one forward pass of the model (one upload is encoded at a time) and a
thread's stack and socket for each open connection.
"""
from __future__ import annotations

import collections
import ctypes
import io
import threading
import time
from email.message import Message

from PIL import Image

#: largest upload accepted by default, in MiB (``--max_upload_mb``), and the most it may be set to
MAX_UPLOAD_MB = 20
MAX_UPLOAD_LIMIT_MB = 1024
#: largest image decoded, in pixels: 40 megapixels is 120 MB of RGB, above any phone camera's
#: 12–24 MP default, far below what a decompression bomb declares
MAX_PIXELS = 40_000_000
#: decoded pixels held at once by all uploads together (two of the largest images)
PIXELS_IN_FLIGHT = 2 * MAX_PIXELS
#: most bytes one decoded pixel costs while its upload holds it (8 measured, WebP aside: see above)
DECODE_BYTES_PER_PIXEL = 10
#: how many pixels of the budget one pixel of a format takes, where not 1
PIXEL_WEIGHT = {"WEBP": 2}
#: upload bodies of the largest size that may be held at once
UPLOADS_IN_FLIGHT = 4
#: longest a request waits for its share of a budget before it is answered 503
BUDGET_WAIT_S = 60.0
#: formats an upload may be in (each decoder PIL ships; no vector or container formats)
UPLOAD_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
# the first bytes of the formats above that are unmistakable: a file that starts like one of them
# but does not open is a cut-off image, not a foreign file
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"))
# glibc's mallopt() parameter that fixes the size from which allocations are mmap()ed
_M_MMAP_THRESHOLD = -3


class BadRequest(Exception):
    """A request the page answers with ``status`` and a one-line ``message`` for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def memory_ceiling(body_bytes: int, pixels: int) -> int:
    """Most bytes the uploads in flight hold at once, given the budgets of upload bytes and of
    decoded pixels: ``2 × body_bytes + DECODE_BYTES_PER_PIXEL × pixels``. With the defaults
    (4 uploads of 20 MiB, 80 million pixels) 160 MiB + 800 MB, about 0.9 GiB."""
    return 2 * body_bytes + DECODE_BYTES_PER_PIXEL * pixels


class Budget:
    """``capacity`` units (bytes, pixels) shared by threads: :meth:`hold` waits, first come first
    served, until its amount fits, and gives it back when the block ends.

    Args:
        capacity: units available at once. what: how a refusal names the budget, e.g. "pixels".
    """

    def __init__(self, capacity: int, what: str):
        self.capacity, self.what = int(capacity), what
        self.used = 0
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()

    def hold(self, amount: int, wait: float) -> "_Share":
        """Take ``amount`` units (at most ``capacity``) now, waiting for them if need be; they are
        given back at the end of the ``with`` block the result is used in.

        Raises:
            BadRequest: 503 when they are not free within ``wait`` seconds.
        """
        if not 0 <= amount <= self.capacity:
            raise ValueError(f"Budget.hold: amount must be in [0, {self.capacity}], got {amount}")
        self._acquire(amount, wait)
        return _Share(self, amount)

    def _release(self, amount: int) -> None:
        with self._cond:
            self.used -= amount
            self._cond.notify_all()

    def _acquire(self, amount: int, wait: float) -> None:
        ticket = object()
        deadline = time.monotonic() + wait
        with self._cond:
            self._queue.append(ticket)
            # only the oldest waiter may take its share, so a large upload is not starved by small ones
            while self._queue[0] is not ticket or self.used + amount > self.capacity:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._queue.remove(ticket)
                    self._cond.notify_all()
                    raise BadRequest(503, f"the server is busy with other uploads (it holds at most "
                                          f"{self.capacity:,} {self.what} of them at once); try again in a minute")
                self._cond.wait(left)
            self._queue.popleft()
            self.used += amount
            self._cond.notify_all()  # the next in line may fit too


class _Share:
    """Units taken from a :class:`Budget`, given back when the ``with`` block ends."""

    def __init__(self, budget: Budget, amount: int):
        self.budget, self.amount = budget, amount

    def __enter__(self) -> "_Share":
        return self

    def __exit__(self, *exc) -> None:
        self.budget._release(self.amount)


def return_freed_memory() -> bool:
    """Make glibc hand large freed blocks straight back to the operating system; True when done.

    By default glibc raises its mmap threshold to the size of each large block freed (up to 32
    MiB), so after one upload the next images are decoded in heap arenas that keep their pages:
    16 uploads of 40 MP left 2.3 GiB resident. A fixed threshold of 1 MiB maps every larger block
    separately and unmaps it when freed. Other C libraries keep freed memory for reuse; the peak
    bound of :func:`memory_ceiling` holds either way.
    """
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20))
    except (OSError, AttributeError):
        return False


def decode_cost(data: bytes, max_pixels: int = MAX_PIXELS) -> int:
    """Pixels of the decode budget an upload takes: those its header declares, weighted by format
    (``PIXEL_WEIGHT``). Raises :class:`BadRequest` as :func:`image_size` does."""
    width, height, kind = image_size(data, max_pixels)
    return width * height * PIXEL_WEIGHT.get(kind, 1)


def image_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int, str]:
    """``(width, height, format)`` an upload's header declares, checked before anything is decoded.

    Raises:
        BadRequest: 400 for an empty file, one that is not a JPEG/PNG/GIF/BMP/WebP or one cut off
            within its header; 413 for more than ``max_pixels`` pixels (a decompression bomb).
    """
    if not data:
        raise BadRequest(400, "the upload is empty; choose an image file")
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as img:
            (width, height), kind = img.size, str(img.format)
    except Image.DecompressionBombError:
        raise BadRequest(413, _too_many_pixels("far more", max_pixels)) from None
    except Exception:  # noqa: BLE001 - PIL raises many types for foreign or cut-off data
        kind = next((name for sig, name in _SIGNATURES if data.startswith(sig)), None)
        if kind is not None:
            raise BadRequest(400, _cut_off(kind)) from None
        raise BadRequest(400, "this file is not an image the page can read; upload a JPEG, PNG, GIF, BMP or WebP "
                              "image") from None
    if width * height > max_pixels:
        raise BadRequest(413, _too_many_pixels(f"{width}×{height} = {width * height / 1e6:g} million", max_pixels))
    return width, height, kind


def decode_upload(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """An uploaded file as an RGB image, checked (:func:`image_size`) before it is decoded.

    Raises:
        BadRequest: 400 for an empty file, one that is not a readable JPEG/PNG/GIF/BMP/WebP or one
            whose data is cut short, 413 for an image of more than ``max_pixels`` pixels.
    """
    image_size(data, max_pixels)
    try:
        # verify() checks the file's structure and checksums (PNG's CRCs) without decoding, which
        # catches a cut-off PNG even though hyp2.data lets PIL decode truncated images (the
        # datasets' few truncated JPEGs); a truncated JPEG still decodes, its missing rows grey.
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as img:
            kind = img.format or "uploaded"
            img.verify()
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as img:
            img.load()
            return img if img.mode == "RGB" else img.convert("RGB")
    except Exception:  # noqa: BLE001 - truncated or corrupt data
        raise BadRequest(400, _cut_off(kind)) from None


def _cut_off(kind: str) -> str:
    return (f"the {kind} image cannot be decoded: its data is missing, cut short or damaged (the file may be "
            f"truncated); upload the complete file or another image")


def _too_many_pixels(what: str, max_pixels: int) -> str:
    return (f"the image declares {what} pixels, more than the {max_pixels / 1e6:g} million this page decodes "
            f"(a decompression bomb, or a huge image: scale it down first)")


def multipart_file(body: bytes, content_type: str, field: str = "image") -> tuple[bytes, str]:
    """``(file bytes, file name)`` of the form field ``field`` of a ``multipart/form-data`` body.
    Only the field's bytes are copied out of ``body``.

    Raises:
        BadRequest: 400 when the body is not multipart or has no such field.
    """
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary") if header.get_content_type() == "multipart/form-data" else None
    if not isinstance(boundary, str) or not boundary:
        raise BadRequest(400, "send the image as a form upload (multipart/form-data) or as the raw request body")
    delimiter = b"--" + boundary.encode("latin-1")
    pos = body.find(delimiter)
    while pos >= 0:
        start = pos + len(delimiter)
        if body.startswith(b"--", start):  # the closing delimiter
            break
        pos = body.find(delimiter, start)
        stop = len(body) if pos < 0 else pos
        head_end = body.find(b"\r\n\r\n", start, stop)
        if head_end < 0:
            continue
        disposition = Message()
        for line in body[start:head_end].decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition["content-disposition"] = value.strip()
        if disposition.get_param("name", header="content-disposition") == field:
            filename = disposition.get_param("filename", header="content-disposition") or "upload"
            if body.endswith(b"\r\n", head_end + 4, stop):
                stop -= 2
            return body[head_end + 4:stop], str(filename)
    raise BadRequest(400, f"the upload has no file in its '{field}' field; choose an image and send it again")


def form_field(body: bytes, ctype: str, field: str) -> list[str] | None:
    """The text of the form field ``field`` as ``parse_qs`` gives it (a one-item list), or None."""
    try:
        value, _ = multipart_file(body, ctype, field)
    except BadRequest:
        return None
    return [value.decode("utf-8", "replace").strip()]

