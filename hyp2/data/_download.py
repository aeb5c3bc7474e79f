"""Resumable, verified downloads and safe tar extraction (standard library only: urllib, tarfile).

Used for the PASCAL VOC archives (Everingham et al., "The PASCAL Visual Object Classes (VOC)
Challenge", IJCV 2010), which HyP² (Xu et al., ACM MM 2022) evaluates on.

Guarantees:

* A download goes to ``<file>.part``; only a complete transfer whose MD5 matches is renamed to
  ``<file>``. A failed MD5 deletes the ``.part``, so nothing a later run would take for complete is
  left behind. An interrupted transfer keeps its ``.part`` and resumes with an HTTP ``Range``
  request (within the same call, up to ``attempts`` times, and on the next run); a server that
  answers ``200`` instead of ``206`` makes it start over.
* Extraction validates every member before writing anything: absolute paths, ``..`` components,
  symbolic and hard links, devices and FIFOs are refused. Files are written by this module (never
  by ``tarfile.extractall``), into a staging folder that is renamed into place only when every
  archive is extracted, so an interrupted extraction never looks like a complete tree.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import shutil
import socket
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath
from typing import Sequence

from tqdm import tqdm

from ..errors import UserError

CHUNK = 1 << 20
USER_AGENT = "hyp2-dataset-downloader/1 (+urllib)"


class _Interrupted(Exception):
    """A transfer that stopped midway; the ``.part`` file is kept for resuming."""


def md5sum(path: str | os.PathLike, progress: bool = False) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5()
    size = os.path.getsize(path)
    with open(path, "rb") as f, tqdm(total=size, unit="B", unit_scale=True, desc=f"md5 {Path(path).name}",
                                     disable=not progress, leave=False) as bar:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
            bar.update(len(block))
    return h.hexdigest()


def fetch(url: str, dest: str | os.PathLike, md5: str | None = None, *, timeout: float = 60.0,
          attempts: int = 3, hint: str = "", progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` (resuming ``dest.part`` if present) and verify its MD5.

    Args:
        url: http(s):// or file:// URL.
        dest: final path; written only once complete and verified.
        md5: expected hex digest, or ``None`` to skip the check.
        timeout: seconds a connection or a read may stall before the attempt counts as interrupted.
        attempts: transfers tried (each resuming the previous one) before giving up.
        hint: appended to network error messages (e.g. how to choose a mirror).
        progress: show a tqdm bar (bytes).

    Returns:
        ``dest`` as a Path.

    Raises:
        UserError: HTTP error, unreachable host, transfer still incomplete after ``attempts``, or an
            MD5 mismatch (the ``.part`` is then deleted).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
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
    if md5 is not None:
        found = md5sum(part, progress=progress)
        if found.lower() != md5.lower():
            part.unlink()
            raise UserError(f"MD5 mismatch for {dest.name} downloaded from {url}: expected {md5.lower()}, found "
                            f"{found}; the file was deleted, run again to download it anew{hint}")
    with open(part, "rb+") as f:  # make the data durable before the name says "complete"
        os.fsync(f.fileno())
    os.replace(part, dest)
    return dest


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
        received = 0
        with open(part, mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=desc, disable=not progress, leave=False) as bar:
            while True:
                try:
                    block = response.read(CHUNK)
                except (TimeoutError, ConnectionError, http.client.HTTPException, OSError) as e:
                    raise _Interrupted(f"{type(e).__name__} after {offset + received} bytes") from None
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
        if total is not None and offset + received < total:
            raise _Interrupted(f"connection closed after {offset + received} of {total} bytes")


def _content_range_start(value: str | None) -> int | None:
    m = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(m.group(1)) if m else None


def check_md5(path: Path, md5: str, how_to_fix: str) -> None:
    """Verify a file the user placed (or an earlier run downloaded); never deletes it."""
    found = md5sum(path, progress=True)
    if found.lower() != md5.lower():
        raise UserError(f"MD5 mismatch for {path}: expected {md5.lower()}, found {found}; {how_to_fix}")


# ----------------------------------------------------------------------------------- extraction


def _unsafe_reason(member: tarfile.TarInfo, dest_real: str) -> str | None:
    name = member.name
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or os.path.isabs(name):
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "contains '..'"
    if member.issym() or member.islnk():
        return f"is a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname!r})"
    if member.isdev() or member.isfifo():
        return "is a device or FIFO"
    if not (member.isfile() or member.isdir()):
        return "is neither a regular file nor a folder"
    target = os.path.realpath(os.path.join(dest_real, name))
    if target != dest_real and not target.startswith(dest_real + os.sep):
        return "would be written outside the data folder"
    return None


def safe_members(tar: tarfile.TarFile, archive: Path, dest: Path) -> list[tarfile.TarInfo]:
    """All members of ``tar`` after checking that each one lands inside ``dest``.

    Raises:
        UserError: naming the archive, the member and why it is refused.
    """
    dest_real = os.path.realpath(dest)
    members = tar.getmembers()
    for m in members:
        reason = _unsafe_reason(m, dest_real)
        if reason:
            raise UserError(f"refusing to extract {archive}: member {m.name!r} {reason}; the archive is unsafe or "
                            f"corrupt, delete it and download it again")
    return members


def extract_tar(archive: Path, dest: Path, progress: bool = True) -> None:
    """Extract ``archive`` into ``dest`` (created if needed), after :func:`safe_members` accepts it.

    Regular files and folders only; permissions, owners and times from the archive are ignored.
    """
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = safe_members(tar, archive, dest)
            total = sum(m.size for m in members if m.isfile())
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"extract {archive.name}",
                      disable=not progress, leave=False) as bar:
                for m in members:
                    target = dest / m.name
                    if m.isdir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    src = tar.extractfile(m)
                    if src is None:  # cannot happen for a regular file; be explicit rather than write nothing
                        raise UserError(f"cannot read member {m.name!r} of {archive}")
                    with src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out, CHUNK)
                    bar.update(m.size)
    except (tarfile.TarError, EOFError) as e:
        raise UserError(f"cannot extract {archive}: {e}; the archive is damaged, delete it and download it again") \
            from None


def extract_into_place(archives: Sequence[Path], root: Path, tree: str, progress: bool = True) -> Path:
    """Extract ``archives`` together and publish ``root/tree`` only when all are complete.

    Each archive is extracted into the staging folder ``root/.extract-<name>.tmp`` (removed first if
    an earlier run was interrupted); then the folder ``tree`` (a relative POSIX path such as
    ``VOCdevkit/VOC2007``) is renamed into place in one step and the staging folder deleted.

    Raises:
        UserError: an unsafe member, a damaged archive, or archives that do not contain ``tree``.
    """
    root = Path(root)
    final = root / tree
    staging = root / f".extract-{PurePosixPath(tree).name}.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    try:
        for archive in archives:
            extract_tar(Path(archive), staging, progress)
        built = staging / tree
        if not built.is_dir():
            names = ", ".join(Path(a).name for a in archives)
            raise UserError(f"the archives {names} do not contain the folder {tree}; are they the right files?")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(built, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final

