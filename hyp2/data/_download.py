"""Resumable, verified downloads (standard library only: urllib, hashlib).

Used for the PASCAL VOC archives (Everingham et al., "The PASCAL Visual Object Classes (VOC)
Challenge", IJCV 2010) and the MS-COCO 2014 archives (Lin et al., "Microsoft COCO: Common Objects
in Context", ECCV 2014), and for the list files HyP² (Xu et al., ACM MM 2022) and DeepHash-pytorch
publish in their repositories (:mod:`hyp2.data._pinned`).

Guarantees:

* A download goes to ``<file>.part``; only a complete transfer whose digests match is renamed to
  ``<file>``. A failed check deletes the ``.part``, so nothing a later run would take for complete
  is left behind. An interrupted transfer keeps its ``.part`` and resumes with an HTTP ``Range``
  request (within the same call, up to ``attempts`` times, and on the next run); a server that
  answers ``200`` instead of ``206`` makes it start over.
* Space: when the size is known (an expected ``size``, or the server's ``Content-Length``) the free
  space is checked before anything is written; a write that fails anyway (a full disk, a
  read-only folder) stops with one line naming the file, the reason and the fix, and keeps what
  was downloaded for the next run.
* Digests (:func:`file_digests`): ``md5``, ``sha256``, ``size`` and ``git_blob`` -- the id git
  gives a file's content, SHA-1 of ``b"blob <size>\\0" + content``, which a repository shows for
  every file and so lets us verify a file whose other hashes nobody published.

Archives are extracted by :mod:`hyp2.data._extract`.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping


from ..errors import UserError, reason
from ..io import make_folder, require_free_space
from ..progress import bar

CHUNK = 1 << 20
USER_AGENT = "hyp2-dataset-downloader/1 (+urllib)"


class _Interrupted(Exception):
    """A transfer that stopped midway; the ``.part`` file is kept for resuming."""


DIGESTS = ("md5", "sha256", "git_blob", "size")


def file_digests(path: str | os.PathLike, kinds=DIGESTS, progress: bool = False) -> dict[str, str | int]:
    """The requested digests of a file in one pass (1 MiB reads): hex strings, and ``size`` in bytes.

    ``git_blob`` is git's object id of the content: SHA-1 of ``b"blob <size>\\0"`` followed by it.
    """
    unknown = set(kinds) - set(DIGESTS)
    if unknown:
        raise ValueError(f"unknown digest(s) {sorted(unknown)}; known: {', '.join(DIGESTS)}")
    size = os.path.getsize(path)
    hashes = {k: hashlib.new(k) for k in ("md5", "sha256") if k in kinds}
    if "git_blob" in kinds:
        hashes["git_blob"] = hashlib.sha1(b"blob %d\0" % size)
    if not hashes:  # a size check alone (COCO's 13 GB archives) must not read the file
        return {"size": size} if "size" in kinds else {}
    with open(path, "rb") as f, bar(total=size, unit="B", unit_scale=True, desc=f"verify {Path(path).name}",
                                     enabled=progress) as shown:
        for block in iter(lambda: f.read(CHUNK), b""):
            for h in hashes.values():
                h.update(block)
            shown.update(len(block))
    out: dict[str, str | int] = {k: h.hexdigest() for k, h in hashes.items()}
    if "size" in kinds:  # from the file system: no read is needed for it
        out["size"] = size
    return out


def git_blob(path: str | os.PathLike) -> str:
    """The git blob id of a file (what ``git hash-object`` prints)."""
    return str(file_digests(path, ("git_blob",))["git_blob"])


def digest_mismatch(path: str | os.PathLike, expected: Mapping[str, str | int],
                    progress: bool = False) -> str | None:
    """``None`` when ``path`` has every digest in ``expected``; else "<kind>: expected X, found Y"."""
    if not expected:
        return None
    if "size" in expected and os.path.getsize(path) != int(expected["size"]):  # cheap: before hashing
        return f"size: expected {int(expected['size'])} bytes, found {os.path.getsize(path)}"
    found = file_digests(path, tuple(expected), progress=progress)
    for kind in DIGESTS:
        if kind in expected and str(found[kind]).lower() != str(expected[kind]).lower():
            return f"{kind}: expected {str(expected[kind]).lower()}, found {found[kind]}"
    return None


def md5sum(path: str | os.PathLike, progress: bool = False) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    return str(file_digests(path, ("md5",), progress)["md5"])


def fetch(url: str, dest: str | os.PathLike, md5: str | None = None, *, digests: Mapping[str, str | int] | None = None,
          timeout: float = 60.0, attempts: int = 3, hint: str = "", progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part`` if present) and verify it.

    Args:
        url: http(s):// or file:// URL.
        dest: final path; written only once complete and verified.
        md5: expected hex MD5, or ``None``; shorthand for ``digests={"md5": md5}``.
        digests: expected digests (:data:`DIGESTS`: ``md5``, ``sha256``, ``git_blob``, ``size``);
            every one given must match.
        timeout: seconds a connection or a read may stall before the attempt counts as interrupted.
        attempts: transfers tried (each resuming the previous one) before giving up.
        hint: appended to network error messages (e.g. how to choose a mirror).
        progress: show a tqdm bar (bytes).

    Returns:
        ``dest`` as a Path.

    Raises:
        UserError: HTTP error, unreachable host, transfer still incomplete after ``attempts``, or a
            digest mismatch (the ``.part`` is then deleted).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    dest = Path(dest)
    make_folder(dest.parent, f"cannot create the folder {dest.parent} for a download",
                lambda e: disk_advice(e, dest.parent.parent))
    part = dest.with_name(dest.name + ".part")
    if digests and "size" in digests:  # known before asking: check now, whatever the server will say
        _require_space(part, int(digests["size"]) - (part.stat().st_size if part.exists() else 0), url)
    last: _Interrupted | None = None
    for _ in range(attempts):
        try:
            _transfer(url, part, timeout, hint, progress, desc=dest.name)
            break
        except _Interrupted as e:
            last = e
    else:
        have = part.stat().st_size if part.exists() else 0
        raise UserError(f"download of {url} was interrupted ({last}) {attempts} times; {have} bytes are kept in "
                        f"{part} and the next run resumes from there{hint}")
    expected = dict(digests or {})
    if md5 is not None:
        expected["md5"] = md5
    problem = digest_mismatch(part, expected, progress=progress)
    if problem:
        part.unlink()
        kind, _, detail = problem.partition(": ")
        name = {"md5": "MD5", "sha256": "SHA-256", "git_blob": "git blob id", "size": "size"}[kind]
        raise UserError(f"{name} mismatch for {dest.name} downloaded from {url}: {detail}; the file was deleted, "
                        f"run again to download it anew{hint}")
    try:
        with open(part, "rb+") as f:  # make the data durable before the name says "complete"
            os.fsync(f.fileno())
        os.replace(part, dest)
    except OSError as e:
        raise write_failure(part, e) from None
    return dest


def disk_advice(e: OSError, folder: Path) -> str:
    """How to fix a failed write into ``folder``, from its ``errno``."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free some space in {folder}, or pass another --data_root"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{folder} is not writable: make it writable, or pass another --data_root"
    return f"check the free space and permissions of {folder}"


def write_failure(part: Path, e: OSError) -> UserError:
    """One line for a download that could not be written: the file, the reason, the fix, and what is kept."""
    kept = part.stat().st_size if part.is_file() else 0
    resume = f"; the {kept:,} bytes downloaded are kept in {part} and the next run resumes from there" if kept else ""
    return UserError(f"cannot write the download {part} ({e.strerror or reason(e)}); "
                     f"{disk_advice(e, part.parent)}{resume}")


def _require_space(part: Path, nbytes: int, url: str) -> None:
    require_free_space(part.parent, nbytes, f"not enough space to download {url}: it needs {{need}} more in "
                                            f"{part.parent}, {{free}} are free; free some space there, or pass "
                                            f"another --data_root")


def _transfer(url: str, part: Path, timeout: float, hint: str, progress: bool, desc: str) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:
            # The server cannot serve from our offset (the .part is as long as, or longer than, the
            # file): start over rather than trust it.
            part.unlink()
            raise _Interrupted("the server refused to resume (HTTP 416), starting over") from None
        raise UserError(f"cannot download {url}: HTTP {e.code} {e.reason}{hint}") from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise _Interrupted(f"no answer within {timeout:g} s") from None
        raise UserError(f"cannot download {url}: {e.reason}{hint}") from None
    except (TimeoutError, ConnectionError, http.client.HTTPException) as e:
        raise _Interrupted(f"{type(e).__name__}: {e}") from None
    with contextlib.closing(response):
        status = response.getcode()  # None for file:// URLs, which always send the whole file
        mode = "wb"
        if offset and status == 206:
            start = _content_range_start(response.headers.get("Content-Range"))
            if start == offset:
                mode = "ab"
            else:
                part.unlink()
                raise _Interrupted(f"the server resumed at byte {start}, not {offset}; starting over")
        else:
            offset = 0  # a 200 to a Range request: the whole file follows, start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        if total is not None:
            _require_space(part, total - offset, url)  # offset: the bytes kept when resuming, else 0
        try:
            received = _receive(response, part, mode, offset, total, progress, desc)
        except OSError as e:
            raise write_failure(part, e) from None
        if total is not None and offset + received < total:
            raise _Interrupted(f"connection closed after {offset + received} of {total} bytes")


def _receive(response, part: Path, mode: str, offset: int, total: int | None, progress: bool, desc: str) -> int:
    """Append (``mode`` "ab") or write the response's body to ``part``; the bytes received.

    Raises:
        _Interrupted: the transfer stopped midway.
        OSError: ``part`` cannot be written (a full disk, a read-only file system).
    """
    received = 0
    with open(part, mode) as f, bar(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=desc, enabled=progress) as shown:
        while True:
            try:
                block = response.read(CHUNK)
            except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                raise _Interrupted(f"{type(e).__name__} after {offset + received} bytes") from None
            if not block:
                break
            f.write(block)
            received += len(block)
            shown.update(len(block))
    return received


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def check_md5(path: Path, md5: str, how_to_fix: str) -> None:
    """Verify a file the user placed (or an earlier run downloaded); never deletes it."""
    found = md5sum(path, progress=True)
    if found.lower() != md5.lower():
        raise UserError(f"MD5 mismatch for {path}: expected {md5.lower()}, found {found}; {how_to_fix}")
