"""Safe extraction of the dataset archives: tar (PASCAL VOC) and ZIP (MS-COCO), standard library only.

The archives are those of PASCAL VOC (Everingham et al., IJCV 2010), on which HyP² (Xu et al.,
ACM MM 2022) evaluates, and of MS-COCO 2014 (Lin et al., ECCV 2014), the image set of the HashNet
protocol (Cao et al., ICCV 2017).

Guarantees:

* Every member is validated before anything is written: absolute paths, ``..`` components, paths
  that would land outside the destination (also through a link already on disk), symbolic and
  hard links, devices and FIFOs, and encrypted ZIP members are refused, naming the archive and
  the member.
* Files are written by this module (never by ``extractall``): regular files and folders only,
  without the archive's permissions, owners or times.
* ZIP members are checked against their CRC-32 while they are written (:mod:`zipfile` raises at
  the end of a member whose bytes do not match), so a damaged archive stops the extraction.
* Everything goes to a staging folder that is renamed into place only when every archive is
  extracted, so an interrupted or failed extraction never looks like a complete tree.
* A tar archive cut short (a partial download used with ``--no_md5``) is refused before anything is
  written: :mod:`tarfile` takes a file that ends at a member's header for the archive's end, so the
  end-of-archive marker is checked; a member whose data is cut short stops the extraction.
* A damaged archive, one that is not an archive at all, a member that cannot be written (a name
  that is both a file and a folder, a name too long for the file system, a full disk), a folder
  that cannot be written (a read-only data root) each stop with one line naming the archive, the
  member or folder, the reason and the fix.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Sequence


from ..errors import UserError, reason
from ..io import require_free_space
from ._download import CHUNK, disk_advice
from ..progress import bar

#: errors that say where the archive is written, not what it holds: a full disk, a read-only folder
_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
#: how much of a member's name a message quotes (a hostile name can be very long)
_NAME_CHARS = 80


def _short(name: str) -> str:
    return repr(name if len(name) <= _NAME_CHARS else name[:_NAME_CHARS - 1] + "…")


def _path_problem(name: str, dest_real: str) -> str | None:
    """Why a member called ``name`` may not be written below ``dest_real``, or ``None``."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or os.path.isabs(name):
        return "has an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "contains '..'"
    target = os.path.realpath(os.path.join(dest_real, name))
    if target != dest_real and not target.startswith(dest_real + os.sep):
        return "would be written outside the data folder"
    return None


def _tar_problem(member: tarfile.TarInfo, dest_real: str) -> str | None:
    if member.issym() or member.islnk():
        return f"is a {'symbolic' if member.issym() else 'hard'} link (to {member.linkname!r})"
    if member.isdev() or member.isfifo():
        return "is a device or FIFO"
    if not (member.isfile() or member.isdir()):
        return "is neither a regular file nor a folder"
    return _path_problem(member.name, dest_real)


def _zip_problem(info: zipfile.ZipInfo, dest_real: str) -> str | None:
    mode = info.external_attr >> 16  # Unix mode bits, when the archiver recorded them
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "is a device, FIFO or socket"
    if info.flag_bits & 0x1:
        return "is encrypted"
    return _path_problem(info.filename, dest_real)


def _refuse(archive: Path, name: str, problem: str) -> UserError:
    return UserError(f"refusing to extract {archive}: member {_short(name)} {problem}; the archive is unsafe or "
                     f"corrupt, delete it and download it again")


def _checked(archive: Path, dest: Path, members: list, name: Callable, problem: Callable) -> list:
    dest_real = os.path.realpath(dest)
    for m in members:
        why = problem(m, dest_real)
        if why:
            raise _refuse(archive, name(m), why)
    return members


def safe_members(tar: tarfile.TarFile, archive: Path, dest: Path) -> list[tarfile.TarInfo]:
    """All members of ``tar`` after checking that each one lands inside ``dest``.

    Raises:
        UserError: naming the archive, the member and why it is refused.
    """
    return _checked(archive, dest, tar.getmembers(), lambda m: m.name, _tar_problem)


def _tar_end_problem(tar: tarfile.TarFile) -> str | None:
    """Why an archive whose member list was read is cut short, or None. :mod:`tarfile` ends the list
    quietly where the file ends at (or inside) a header, as if the archive ended there; a complete
    archive has its end-of-archive marker, a zero block, right after the last member's data."""
    tar.fileobj.seek(tar.offset)
    if tar.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        return f"it stops after {len(tar.getmembers())} members, at byte {tar.offset:,}, without the end-of-archive " \
               f"marker"
    return None


def complete_tar_members(tar: tarfile.TarFile, archive: Path, dest: Path) -> list[tarfile.TarInfo]:
    """:func:`safe_members`, after checking that the archive is not cut short (a partial download under
    ``--no_md5``): a partial archive is never extracted in part.

    Raises:
        UserError: naming the archive and where it stops, or an unsafe member.
    """
    members = safe_members(tar, archive, dest)
    problem = _tar_end_problem(tar)
    if problem:
        raise UserError(f"cannot extract {archive}: the archive is truncated ({problem}); nothing was extracted, "
                        f"delete it and download it again")
    return members


def safe_zip_members(zf: zipfile.ZipFile, archive: Path, dest: Path) -> list[zipfile.ZipInfo]:
    """All members of ``zf`` after checking that each one lands inside ``dest`` (see :func:`safe_members`)."""
    return _checked(archive, dest, zf.infolist(), lambda m: m.filename, _zip_problem)


@dataclass(frozen=True)
class _Format:
    """How to read one archive format: open it, list its checked members, and read a member."""

    kind: str
    open: Callable[[Path], Any]
    errors: tuple[type[BaseException], ...]  # what the library raises for a damaged archive
    members: Callable[[Any, Path, Path], list]
    is_dir: Callable[[Any], bool]
    name: Callable[[Any], str]
    size: Callable[[Any], int]
    read: Callable[[Any, Any], IO[bytes] | None]


_TAR = _Format("tar", lambda a: tarfile.open(a, "r:*"), (tarfile.TarError, EOFError), complete_tar_members,
               tarfile.TarInfo.isdir, lambda m: m.name, lambda m: m.size, lambda h, m: h.extractfile(m))
# zipfile raises BadZipFile("Bad CRC-32 for file ...") at the end of a member whose bytes do not match
_ZIP = _Format("ZIP", zipfile.ZipFile, (zipfile.BadZipFile, EOFError, NotImplementedError), safe_zip_members,
               zipfile.ZipInfo.is_dir, lambda m: m.filename, lambda m: m.file_size, lambda h, m: h.open(m))


def _write_members(fmt: _Format, handle: Any, archive: Path, dest: Path, members: list, progress: bool) -> None:
    total = sum(fmt.size(m) for m in members if not fmt.is_dir(m))
    require_free_space(dest, total, f"extracting {archive} needs {{need}} in {dest} but only "
                                    "{free} are free; free some space and run again")
    with bar(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"extract {archive.name}",
              enabled=progress) as shown:
        for m in members:
            target = dest / fmt.name(m)
            try:
                if fmt.is_dir(m):
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = fmt.read(handle, m)
                if src is None:  # cannot happen for a regular file; be explicit rather than write nothing
                    raise UserError(f"cannot read member {_short(fmt.name(m))} of {archive}")
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
            except OSError as e:
                # A name that is both a file and a folder, a name too long for the file system, a full
                # disk: not a traceback, and the staging folder is removed by the caller.
                fix = disk_advice(e, dest) if e.errno in _DISK_ERRORS else \
                    "the archive is damaged or not the expected one, delete it and download it again"
                raise UserError(f"cannot extract {archive}: writing member {_short(fmt.name(m))} failed "
                                f"({e.strerror or reason(e)}); {fix}") from None
            shown.update(fmt.size(m))


def _extract(fmt: _Format, archive: Path, dest: Path, progress: bool) -> None:
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot extract {archive}: cannot create {dest} ({e.strerror or reason(e)}); "
                        f"{disk_advice(e, dest.parent)}") from None
    try:
        handle = fmt.open(archive)
    except (*fmt.errors, OSError) as e:
        raise UserError(f"cannot extract {archive}: it is not a readable {fmt.kind} archive ({reason(e)}); it is "
                        f"damaged or another file under the archive's name, delete it and download it again") from None
    try:
        with handle:
            _write_members(fmt, handle, archive, dest, fmt.members(handle, archive, dest), progress)
    except fmt.errors as e:
        raise UserError(f"cannot extract {archive}: the archive is damaged ({reason(e)}); delete it and download it "
                        f"again") from None


def extract_tar(archive: Path, dest: Path, progress: bool = True) -> None:
    """Extract ``archive`` into ``dest`` (created if needed), after :func:`complete_tar_members` accepts it.

    Regular files and folders only; permissions, owners and times from the archive are ignored.
    """
    _extract(_TAR, Path(archive), Path(dest), progress)


def extract_zip(archive: Path, dest: Path, progress: bool = True) -> None:
    """Extract the ZIP ``archive`` into ``dest`` after :func:`safe_zip_members` accepts it, verifying every
    member's CRC-32 as it is written."""
    _extract(_ZIP, Path(archive), Path(dest), progress)


def extract_archive(archive: Path, dest: Path, progress: bool = True) -> None:
    """:func:`extract_zip` for ``*.zip``, :func:`extract_tar` for anything else."""
    archive = Path(archive)
    (extract_zip if archive.suffix.lower() == ".zip" else extract_tar)(archive, dest, progress)


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
    names = ", ".join(Path(a).name for a in archives)
    try:
        if staging.exists():
            shutil.rmtree(staging)
        for archive in archives:
            extract_archive(Path(archive), staging, progress)
        built = staging / tree
        if not built.is_dir():
            raise UserError(f"the archives {names} do not contain the folder {tree}; are they the right files?")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(built, final)
    except OSError as e:
        raise UserError(f"cannot extract {names} into {final} ({e.strerror or reason(e)}); "
                        f"{disk_advice(e, root)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
