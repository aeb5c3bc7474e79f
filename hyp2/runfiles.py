"""A run's files in ``--result_dir``, the lock that makes a run own its name, and ``--overwrite``'s
retirement of an earlier run.

Files of run ``{run}`` (:attr:`hyp2.config.Config.run_name`), every name exact:

* ``{run}.ckpt`` — the best model (:mod:`hyp2.checkpoint`); ``{run}.next.ckpt`` — a new best
  written but not yet committed (:mod:`hyp2.checkpointer`);
* ``{run}_last.ckpt`` — the resumable state after the last finished epoch (``--resume``);
* ``{run}.json`` — the results (docs/run-json.md); ``{run}.txt`` — the log; ``{run}.yaml`` — the
  resolved configuration; ``{run}.tb/`` — TensorBoard scalars (``--tensorboard``);
* what ``--test`` adds: ``{run}_codes.npz`` (+ ``.faissbin``), ``{run}_sample.npz`` and the figures
  ``{run}_{topn,pr,convergence,tsne,gallery}.{png,pdf}``;
* ``{run}.lock`` — held (``fcntl.flock``) by the process using the run's name, released by the
  operating system when that process ends, however it ends. It is never deleted or moved: deleting
  a lock file another process is about to open would let two runs hold "the" lock.

Nothing here matches files by a pattern that another run's names could fit: every operation
lists this run's names exactly.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .errors import UserError, reason

#: files of a run, by suffix after the run name (the lock is not among them)
RUN_SUFFIXES = (".ckpt", ".next.ckpt", "_last.ckpt", ".json", ".txt", ".yaml", "_codes.npz", "_codes.faissbin",
                "_sample.npz")
#: the figures --test --plots draws beside the run (hyp2.plots.plot_run)
FIGURES = tuple(f"_{name}.{fmt}" for name in ("topn", "pr", "convergence", "tsne", "gallery") for fmt in ("png", "pdf"))
#: folders of a run
RUN_FOLDERS = (".tb",)


@dataclass(frozen=True)
class RunFiles:
    """Paths of one run's files."""

    result_dir: Path
    run: str

    def path(self, suffix: str) -> Path:
        return self.result_dir / f"{self.run}{suffix}"

    @property
    def checkpoint(self) -> Path:
        return self.path(".ckpt")

    @property
    def pending(self) -> Path:
        """A new best checkpoint, written before the resumable state that commits it."""
        return self.path(".next.ckpt")

    @property
    def last(self) -> Path:
        return self.path("_last.ckpt")

    @property
    def json(self) -> Path:
        return self.path(".json")

    @property
    def log(self) -> Path:
        return self.path(".txt")

    @property
    def yaml(self) -> Path:
        return self.path(".yaml")

    @property
    def tensorboard(self) -> Path:
        return self.path(".tb")

    @property
    def lock(self) -> Path:
        return self.path(".lock")

    @property
    def retired(self) -> Path:
        """The folder ``--overwrite`` moves the earlier run's files into (:meth:`retire`)."""
        return self.path(".retired")

    def owned(self) -> list[Path]:
        """Every file and folder of this run that exists (the lock excluded), by exact name."""
        names = [self.path(s) for s in RUN_SUFFIXES + FIGURES + RUN_FOLDERS]
        return [p for p in names if p.exists() or p.is_symlink()]

    def remove_stale_temps(self) -> list[Path]:
        """Delete the temporary files a killed writer of THIS run left (``.{file}.XXXX.tmp`` of its
        own file names exactly; another run's names never match). Call it holding the run lock."""
        removed = []
        for suffix in RUN_SUFFIXES + FIGURES:
            name = f"{self.run}{suffix}"
            for tmp in self.result_dir.glob(f".{glob.escape(name)}.*.tmp"):
                middle = tmp.name[len(name) + 2:-len(".tmp")]
                if "." not in middle:  # mkstemp's random part has no dot
                    tmp.unlink(missing_ok=True)
                    removed.append(tmp)
        return removed

    # ------------------------------------------------------------------ --overwrite

    def retire(self) -> list[str]:
        """Move every file of this run into :attr:`retired` (``--overwrite``), before a fresh run
        writes anything; returns the names moved. Call it holding the run lock.

        A kill during the moves, or before the fresh run commits its first epoch, leaves the earlier
        run in :attr:`retired`; the next start puts it back (:meth:`restore_retired`), so a kill at
        any moment leaves the earlier run whole, or the fresh one once it has committed
        (:class:`hyp2.checkpointer.Checkpointer` decides which).
        """
        # The resumable state first: a committed state in place then always belongs to the fresh run.
        owned = sorted((p for p in self.owned() if p != self.retired), key=lambda p: p != self.last)
        if not owned:
            return []
        try:
            self.retired.mkdir()
            for p in owned:
                os.rename(p, self.retired / p.name)
        except OSError as e:
            self.restore_retired()
            raise UserError(f"--overwrite: cannot move the earlier run's files into {self.retired} "
                            f"({e.strerror or reason(e)}); check the permissions of {self.result_dir}") from None
        return [p.name for p in owned]

    def restore_retired(self) -> list[str]:
        """Undo a retirement whose fresh run never committed: each retired file replaces the file of
        its name that the fresh run wrote meanwhile (its log, its configuration), then the empty
        folder goes. Returns the names moved back."""
        if not self.retired.is_dir():
            return []
        back = []
        for p in sorted(self.retired.iterdir()):
            target = self.result_dir / p.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.rename(p, target)
            back.append(p.name)
        self.retired.rmdir()
        return back

    def drop_retired(self) -> None:
        """Delete :attr:`retired` (exactly that folder): the fresh run has committed its state."""
        if self.retired.is_dir():
            shutil.rmtree(self.retired)


def prepare_result_dir(path: Path) -> Path:
    """Create ``--result_dir`` if needed and check that it is a writable folder (one line if not)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--result_dir {path} is a file, not a folder; pass a folder for checkpoints and results")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--result_dir {path}: cannot create it ({e.strerror or reason(e)}); pass a folder you can "
                        f"write to") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"--result_dir {path} is not writable (read-only file system or permissions); pass a "
                        f"folder you can write to")
    return path


class RunLock:
    """Exclusive ownership of a run's name in its result folder while the process lives.

    ``with RunLock(files):`` takes an ``fcntl.flock`` on ``{run}.lock`` without waiting; if another
    live process holds it, :class:`UserError` names that process's PID. The operating system
    releases the lock when the process exits or is killed, so a SIGKILL leaves no stale lock. On
    systems without ``fcntl`` (Windows) there is no lock.
    """

    def __init__(self, files: RunFiles):
        self.files = files
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        path = self.files.lock
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot create the run lock {path} ({e.strerror or reason(e)}); pass a --result_dir "
                            f"you can write to") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"run {self.files.run} is in use by another process (PID {holder}, lock {path}); "
                            f"wait for it to end, or pass another --result_dir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock; the file stays (see the module docstring)
            self._fd = None


@contextlib.contextmanager
def owned_run(result_dir: Path, run: str, *, save: bool = True, first: bool = True,
              agree=lambda ok: ok) -> Iterator[RunFiles]:
    """Hold the run's name in ``result_dir`` for the block (see :class:`RunLock`).

    The first process of the job (``first``) creates the folder, takes the lock and removes this
    run's own stale temporary files; ``agree(ok) ->
    bool`` tells every process whether that worked (under torchrun: all ranks agree, so no rank
    waits forever). With ``save=False`` nothing is locked or touched.
    """
    files = RunFiles(Path(result_dir), run)
    if not save:
        yield files
        return
    lock, error = RunLock(files), None
    if first:
        try:
            prepare_result_dir(files.result_dir)
            lock.__enter__()
            files.remove_stale_temps()  # left by a killed writer of this run; we own the name now
        except UserError as e:
            lock.__exit__(None, None, None)  # a no-op unless the lock was taken before the failure
            error = e
    if not agree(error is None) or error is not None:
        raise error or UserError(f"run {run}: the first process could not take {files.lock}")
    try:
        yield files
    finally:
        lock.__exit__(None, None, None)
