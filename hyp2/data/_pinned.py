"""List files published in third-party repositories, pinned to a commit: found, or fetched and verified.

The image lists that fix a protocol's split are not ours: HyP²'s authors ship the Flickr-25k split
and the NUS-WIDE lists with their code (Xu et al., "HyP² Loss: Beyond Hypersphere Metric Space for
Multi-label Image Retrieval", ACM MM 2022, github.com/JerryXu0129/HyP2-Loss), and DeepHash-pytorch
(github.com/swuxyj/DeepHash-pytorch) ships the MS-COCO lists of HashNet (Cao et al., ICCV 2017).
Each :class:`PinnedFile` names one such file at a fixed commit with its git blob id (and SHA-256
where it is known).

:func:`ensure_pinned` gives a dataset folder its lists:

* files already there are identified by their git blob id: the pinned file, or the user's own;
* missing files are fetched over HTTPS from the repository's raw-file host
  (:func:`hyp2.data._download.fetch`: resumable, written under ``.part`` and renamed only once
  every digest matches; a mismatch deletes the download), and a line on stderr says what was
  fetched, from which third-party repository and commit, and how it was verified;
* missing files are never mixed with files of the user's own (that would pair lists that do not
  belong together): that stops with one line, as do ``--no_download`` and a machine that cannot
  reach the host, naming the files, where to put them and their URLs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..io import human_bytes
from ._download import fetch, git_blob
from ..logs import notice


RAW_HOST = "https://raw.githubusercontent.com"


def raw_url(repo: str, commit: str, path: str) -> str:
    """The URL of ``path`` in GitHub repository ``repo`` ("owner/name") at ``commit``."""
    return f"{RAW_HOST}/{repo}/{commit}/{path}"


@dataclass(frozen=True)
class Source:
    """A third-party repository at a fixed commit, as messages and provenance name it."""

    title: str  # e.g. "the HyP² authors' repository"
    repo: str  # "owner/name" on GitHub
    commit: str  # 40 hex digits

    def describe(self) -> str:
        return f"{self.title} github.com/{self.repo} at commit {self.commit[:7]} (a third-party source)"

    def file(self, path: str, git_blob: str, sha256: str | None = None) -> "PinnedFile":
        """The file at ``path`` in the repository, kept locally under its base name."""
        return PinnedFile(path.rsplit("/", 1)[-1], raw_url(self.repo, self.commit, path), git_blob, sha256)


@dataclass(frozen=True)
class PinnedFile:
    """One file of a :class:`Source`: ``name`` in the local folder, its URL and expected digests."""

    name: str
    url: str
    git_blob: str
    sha256: str | None = None

    def digests(self) -> dict[str, str]:
        out = {"git_blob": self.git_blob}
        if self.sha256:
            out["sha256"] = self.sha256
        return out


@dataclass(frozen=True)
class Found:
    """What :func:`ensure_pinned` found: the git blob id of each file, and whether all are the pinned ones."""

    blobs: dict[str, str]
    official: bool

    def provenance(self, folder: Path, source: Source) -> str:
        """One line for a run's provenance: the files, and whether they are ``source``'s."""
        if self.official:
            names = ", ".join(str(Path(folder) / name) for name in self.blobs)
            return f"{names}: the files of {source.describe()}, verified by git blob id"
        files = ", ".join(f"{Path(folder) / name} (git blob {blob[:10]})" for name, blob in self.blobs.items())
        return f"{files}: the user's own files, not all those of {source.describe()}"


#: The official code of HyP² (Xu et al., ACM MM 2022), as the paper's footnote gives it.
HYP2_REPO = Source("the HyP² authors' repository", "JerryXu0129/HyP2-Loss", "e9c1c24c74d306d867f5d1d3505f5c791871534e")
#: DeepHash-pytorch, which ships HashNet's MS-COCO lists (Cao et al., ICCV 2017).
DEEPHASH_REPO = Source("DeepHash-pytorch", "swuxyj/DeepHash-pytorch", "ab14068ea9b33e8fe12de49d976d0c2e3f0dc129")

# Every third-party file hyp2 fetches, in one table: (group, source, path in the repository, git blob id
# of the file at the source's commit, its SHA-256 or None where none is published).
_TABLE = (
    ("flickr", HYP2_REPO, "data/flickr25k/img.txt", "e3eb7e735954d7a8d597ea9fec969ea6670ee55d",
     "259813494e297002d7528dd88b620a6382be76598f7ce830bf4991c6d1c4f910"),
    ("flickr", HYP2_REPO, "data/flickr25k/targets.txt", "96c483fc130404c10d1ec53fd8b6ffd925956466",
     "8c899f207fc0664be1a4b2010b3003b162e40e47ef63628133697cfb1fadb971"),
    ("flickr split", HYP2_REPO, "flickr.txt", "7df29b9b754e32eb7522c0d71e5a842ec5634931",
     "7258434dbcd1067033cbe2067a2d063736aec22e6dfbd11bb021a129497d1d91"),
    ("nuswide", HYP2_REPO, "data/nus_wide/train.txt", "20f16d48c5d71412ab118563ab0edb3fd8a4e975",
     "c31007d63075cc173cb368f91475e4072a76b312b7dca0d14e88b1cc23586851"),
    ("nuswide", HYP2_REPO, "data/nus_wide/test.txt", "371be57ca9dd7b0d98323cbc4dee9f1191224b5b",
     "bbdbc13c08e340068064eb4f9849f33800139816fbe0e0792d5a49953581b41f"),
    ("nuswide", HYP2_REPO, "data/nus_wide/database.txt", "1d8f3dd2214d19fe038b91f2aab68bfe3d84fd01", None),
    ("coco", DEEPHASH_REPO, "data/coco/train.txt", "2b78ffd61c5ec98234343a8a2321d1378345d1bb",
     "4708c66fa87bac20c85d470c29422c564b0a6811fc48d32a4714c23212e9500c"),
    ("coco", DEEPHASH_REPO, "data/coco/test.txt", "e326d2091ab54672f1116fd93ea2d93fd76052c6",
     "3f0e2c49e363bccbf5ed67cf8cd59cce2b04a7238417ba0c3baf876be3be90b7"),
    ("coco", DEEPHASH_REPO, "data/coco/database.txt", "aaabcac7e9768b659dd12500b969add4b0f56e91", None),
)


def pinned(group: str) -> tuple[PinnedFile, ...]:
    """The files of one group of :data:`_TABLE` ("flickr", "flickr split", "nuswide", "coco"), in order."""
    files = tuple(source.file(path, blob, sha) for g, source, path, blob, sha in _TABLE if g == group)
    if not files:
        raise ValueError(f"no pinned files for {group!r}; known: {sorted({row[0] for row in _TABLE})}")
    return files


def _say(message: str) -> None:
    notice(message)


def ensure_pinned(folder: Path, files: Sequence[PinnedFile], source: Source, what: str, *, download: bool = True,
                  alternative: str = "", progress: bool = True, timeout: float = 60.0, attempts: int = 3) -> Found:
    """Make sure ``folder`` holds every one of ``files``; return whether all are the pinned ones.

    Args:
        folder: the dataset folder (created when a file is fetched).
        files: the files the dataset needs from ``source``.
        source: the repository and commit they come from.
        what: the dataset's name in messages, e.g. "NUS-WIDE".
        download: fetch missing files; otherwise say where to put them.
        alternative: appended to the messages about missing files (e.g. how to build them instead).
        progress, timeout, attempts: passed to :func:`hyp2.data._download.fetch`.

    Returns:
        The git blob id of every file, and ``official``: ``True`` when every file is the pinned one
        (found or fetched), ``False`` when some are the user's own (then all are present).

    Raises:
        UserError: a listed name is a folder; files are missing beside files of the user's own;
            files are missing and downloads are off, the host cannot be reached, or a download does
            not match its digests (it is then deleted).
    """
    folder = Path(folder)
    present, missing = [], []
    for f in files:
        path = folder / f.name
        if path.is_dir():
            raise UserError(f"{path} is a folder; {what} expects the list file {f.name} there")
        (present if path.is_file() else missing).append(f)
    blobs = {f.name: git_blob(folder / f.name) for f in present}
    own = [f.name for f in present if blobs[f.name] != f.git_blob.lower()]
    if not missing:
        return Found({f.name: blobs[f.name] for f in files}, official=not own)
    names = ", ".join(f.name for f in missing)
    urls = " ".join(f.url for f in missing)
    if own:
        raise UserError(f"{what}: {names} missing in {folder}, beside {', '.join(own)} that are not the files of "
                        f"{source.describe()}; put your own {names} there, or delete the others to fetch the whole "
                        f"official set ({urls}){alternative}")
    if not download:
        raise UserError(f"{what}: {names} missing in {folder} and downloads are off (--no_download); put them there "
                        f"yourself, from {source.describe()}: {urls}{alternative}")
    for f in missing:
        dest = folder / f.name
        hint = f"; without internet access, put {names} into {folder} yourself (from {urls}){alternative}"
        fetch(f.url, dest, digests=f.digests(), hint=hint, progress=progress, timeout=timeout, attempts=attempts)
        how = "git blob id and SHA-256" if f.sha256 else "git blob id"
        _say(f"fetched {dest} ({human_bytes(dest.stat().st_size)}) from {source.describe()}; verified by its {how}")
    return Found({f.name: f.git_blob.lower() for f in files}, official=True)
