"""Retrieval galleries: a query image beside the database images its code retrieves.

A retrieval system is judged by what it returns. For a seeded choice of queries (and any query
ids a user names) a gallery shows each query and its top-k database images in rank order, framed
green when the image shares at least one label with the query — the relevance rule of Xu et al.,
"HyP² Loss: Beyond Hypersphere Metric Space for Multi-label Image Retrieval", ACM MM 2022 (§4.1)
— and red when not, with its Hamming distance and labels. Several runs of one dataset (HyP² and a
baseline, 12 and 48 bits) show the same queries, one row per run.

The codes are the ones the run evaluated: the ``{run}_codes.npz`` that ``--test --plots`` (or
``--export_codes``) writes and the run JSON names in ``test.codes`` (:mod:`hyp2.codes`); nothing
is re-encoded. Ranking is :class:`hyp2.index.CodeIndex`'s (exact, ties in database order). Images
come from the run's dataset rebuilt offline (:class:`ImageSource`); when they cannot be found the
gallery is skipped with a one-line note.
"""
from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image

from .codes import CodeDatabase, load_codes
from .errors import UserError, reason
from .index import CodeIndex, Hit
from .runfile import MissingData, from_test, note, run_labels, run_name

#: queries drawn at random (seeded) when the user names none
GALLERY_QUERIES = 4
#: database images shown per query
GALLERY_TOP = 8
#: longest side of a thumbnail, in pixels
THUMB = 128
#: frame colours (ColorBrewer's diverging green and red) and the marks that say the same in text
RELEVANT_COLOUR, IRRELEVANT_COLOUR, QUERY_COLOUR = "#1a9641", "#d7191c", "#404040"
RELEVANT_MARK, IRRELEVANT_MARK = "✓", "✗"


# --------------------------------------------------------------------------------------------
# Images of the ids a codes file lists


class ImageSource:
    """The images of the ids a codes file lists, read through the dataset's own item loaders.

    Only ids listed in the codes file are known; an id is looked up in a dict, never turned into a
    path, so no caller-supplied text reaches the file system.
    """

    def __init__(self, loaders: dict[str, Callable[[], Image.Image]], where: str):
        self._loaders = loaders
        self.where = where

    @classmethod
    def for_codes(cls, db: CodeDatabase, data_root: str | Path | None = None) -> "ImageSource":
        """Rebuild the codes' dataset offline (``meta``: dataset, data_root, image_size, and the
        seed and split file that fixed its split) and map each listed id to its split's loader.
        ``data_root`` overrides the recorded folder. The whole dataset is rebuilt (not the run's
        ``--subset``): every listed id is in it whatever split a subset cut it from.

        Raises:
            UserError: the codes do not say their dataset, or it cannot be rebuilt (files missing).
        """
        from .data import DataOptions, load_dataset

        meta = db.meta
        name = meta.get("dataset")
        if not isinstance(name, str):
            raise UserError("the codes file does not name its dataset; re-export it with --test --export_codes")
        root = Path(data_root if data_root is not None else meta.get("data_root") or "data")
        split_file = meta.get("split_file")
        options = DataOptions(root=root, image_size=int(meta.get("image_size") or 224), download=False,
                              seed=int(meta.get("seed") or 0), split_file=Path(split_file) if split_file else None)
        try:
            data = load_dataset(name, options, progress=False)
        except (UserError, ValueError, OSError) as e:
            text = str(e) if isinstance(e, UserError) else reason(e)
            raise UserError(f"the {name} images under {root} cannot be read ({text})") from None
        listed = set(db.ids.tolist()) | (set(db.queries.ids.tolist()) if db.queries is not None else set())
        loaders: dict[str, Callable[[], Image.Image]] = {}
        for split in (data.database, data.query, data.train):
            for i, ident in enumerate(split.ids):
                if ident in listed and ident not in loaders:
                    loaders[ident] = _Item(split.load, i)
        return cls(loaders, f"{name} under {root}")

    def __contains__(self, ident: object) -> bool:
        return ident in self._loaders

    def __len__(self) -> int:
        return len(self._loaders)

    def load(self, ident: str) -> Image.Image:
        """Image ``ident`` in RGB; :class:`UserError` when it is unknown or cannot be read."""
        loader = self._loaders.get(ident)
        if loader is None:
            raise UserError(f"image {ident!r} is not in the dataset ({self.where}); the codes file and the data "
                            f"differ (another --subset or data folder?)")
        try:
            return loader().convert("RGB")
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - loaders fail in many ways (missing file, bad data)
            raise UserError(f"cannot read image {ident} ({reason(e)})") from None


@dataclass(frozen=True)
class _Item:
    load: Callable[[int], Image.Image]
    index: int

    def __call__(self) -> Image.Image:
        return self.load(self.index)


def thumbnail(img: Image.Image, side: int = THUMB) -> Image.Image:
    """``img`` fitted into a ``side``×``side`` box, aspect kept: large images shrink (Lanczos),
    small ones grow by a whole factor with nearest-neighbour pixels so they stay crisp."""
    w, h = img.size
    if max(w, h) > side:
        out = img.copy()
        out.thumbnail((side, side), Image.LANCZOS)
        return out
    factor = max(1, side // max(w, h, 1))
    return img.resize((w * factor, h * factor), Image.NEAREST) if factor > 1 else img.copy()


def encode_image(img: Image.Image) -> tuple[str, bytes]:
    """``(mime type, bytes)`` of a thumbnail: PNG for small or blocky images, JPEG for photos."""
    buffer = io.BytesIO()
    if max(img.size) <= 64 or len(img.getcolors(4096) or ()) > 0:
        img.save(buffer, format="PNG", optimize=True)
        return "image/png", buffer.getvalue()
    img.convert("RGB").save(buffer, format="JPEG", quality=85)
    return "image/jpeg", buffer.getvalue()


# --------------------------------------------------------------------------------------------
# Ranking


@dataclass(frozen=True)
class Retrieval:
    """A query's top database items (rank order, ties in database order)."""

    query: str
    query_labels: tuple[str, ...]
    hits: tuple[Hit, ...]


def codes_by_id(db: CodeDatabase) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """id -> (packed code (B,) uint8, labels (C,) 0/1) of every item the codes file lists; an id
    in both splits keeps its query entry."""
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    splits = ([db.queries] if db.queries is not None else []) + [db]
    for split in splits:
        for i, ident in enumerate(split.ids.tolist()):
            found.setdefault(ident, (split.codes[i], split.labels[i]))
    return found


def retrieve(db: CodeDatabase, query_ids: Sequence[str], top: int) -> list[Retrieval]:
    """Rank ``db`` for each id's stored code (a query id, else a database id) by Hamming distance.

    Args:
        db: the codes file. query_ids: ids it lists. top: items per query (at most N).
    Returns one :class:`Retrieval` per id, in order. Raises ``KeyError`` for an id it lacks.
    """
    if not query_ids:
        return []
    codes = codes_by_id(db)
    packed = np.stack([codes[q][0] for q in query_ids])
    labels = np.stack([codes[q][1] for q in query_ids])
    hits = CodeIndex.from_database(db).hits(packed, top, labels)
    return [Retrieval(q, tuple(db.classes[c] for c in np.flatnonzero(labels[r])), hits[r])
            for r, q in enumerate(query_ids)]


def choose_queries(candidates: Sequence[str], count: int, seed: int, named: Sequence[str] = ()) -> list[str]:
    """The named ids, then ``count`` others drawn from ``candidates`` with ``seed`` (in their
    candidates' order); an id is never repeated."""
    chosen = list(dict.fromkeys(named))
    rest = [c for c in candidates if c not in set(chosen)]
    take = min(count, len(rest))
    if take:
        picks = np.sort(np.random.default_rng(seed).choice(len(rest), size=take, replace=False))
        chosen += [rest[i] for i in picks]
    return chosen


# --------------------------------------------------------------------------------------------
# Galleries of runs


@dataclass
class Gallery:
    """The retrievals of one dataset's runs for the same queries, and the thumbnails they show.

    ``rows[q]`` holds ``(run label, Retrieval)`` for query ``queries[q]``, one per run.
    ``thumbs`` maps every id shown to its thumbnail.
    """

    dataset: str
    queries: list[str]
    rows: list[list[tuple[str, Retrieval]]]
    thumbs: dict[str, Image.Image] = field(default_factory=dict)
    top: int = GALLERY_TOP


def codes_path(run: dict) -> Path:
    """The codes file a run JSON names (``test.codes``, relative to the JSON's folder)."""
    name = from_test(run, "codes", "write it with --test --plots (or --export_codes)")
    return Path(run.get("_path", ".")).parent / name


@dataclass
class _RunCodes:
    label: str
    run: dict
    db: CodeDatabase
    images: ImageSource

    def __post_init__(self):
        self.known = set(codes_by_id(self.db))


def _open_run(run: dict, label: str, data_root, sources: dict, notes) -> _RunCodes | None:
    """The run's codes and images, or None with a note saying why its gallery is skipped."""
    try:
        path = codes_path(run)
        db = load_codes(path)
    except (MissingData, UserError) as e:
        note(notes, f"{run_name(run)}: gallery skipped ({e})")
        return None
    tested = (run.get("test") or {}).get("model_digest")
    if tested and db.meta.get("model_digest") not in (None, tested):
        note(notes, f"{run_name(run)}: gallery skipped ({path} holds the codes of another model than the one "
                    f"the run tested; rerun --test --plots)")
        return None
    key = (db.meta.get("dataset"), str(data_root or db.meta.get("data_root")), db.meta.get("seed"),
           db.meta.get("split_file"))
    if key not in sources:  # one dataset rebuild (or one failure) serves every run on it
        try:
            sources[key] = ImageSource.for_codes(db, data_root)
        except UserError as e:
            sources[key] = e
    if isinstance(sources[key], UserError):
        note(notes, f"{run_name(run)}: gallery skipped ({sources[key]}; pass --data_root DIR to say where the "
                    f"images are)")
        return None
    return _RunCodes(label, run, db, sources[key])


def _query_ids(db: CodeDatabase) -> list[str]:
    return (db.queries.ids if db.queries is not None else db.ids).tolist()


def build_galleries(runs: Sequence[dict], *, queries: int = GALLERY_QUERIES, top: int = GALLERY_TOP,
                    seed: int = 0, named: Sequence[str] = (), data_root: str | Path | None = None,
                    notes: list[str] | None = None) -> list[Gallery]:
    """One :class:`Gallery` per dataset among ``runs`` (run JSONs from :func:`hyp2.runfile.load_run`).

    Each shows ``named`` ids (those its codes list) and ``queries`` more drawn with ``seed`` from
    the query ids every run of the dataset shares, each with its ``top`` items per run. A run
    without a codes file or images is left out with a line in ``notes``.

    Raises:
        UserError: a named id that no run's codes file lists.
    """
    labels, sources = run_labels(runs), {}
    opened = [r for r in (_open_run(run, label, data_root, sources, notes) for run, label in zip(runs, labels)) if r]
    unknown = [q for q in named if not any(q in r.known for r in opened)]
    if unknown and opened:
        examples = ", ".join(_query_ids(opened[0].db)[:3])
        raise UserError(f"--query {unknown[0]}: no run's codes file lists this id; query ids look like {examples}")
    galleries = []
    for dataset in dict.fromkeys(r.run["dataset"] for r in opened):
        group = [r for r in opened if r.run["dataset"] == dataset]
        gallery = _gallery(dataset, group, queries, top, seed, named, notes)
        if gallery is not None:
            galleries.append(gallery)
    return galleries


def _gallery(dataset: str, group: list[_RunCodes], count: int, top: int, seed: int, named: Sequence[str],
             notes) -> Gallery | None:
    common = set.intersection(*(set(_query_ids(r.db)) for r in group))
    candidates = [q for q in _query_ids(group[0].db) if q in common]
    mine = [q for q in named if all(q in r.known for r in group)]
    chosen = choose_queries(candidates, count, seed, mine)
    if not chosen:
        note(notes, f"gallery of {dataset} skipped: its runs share no query")
        return None
    rows: list[list[tuple[str, Retrieval]]] = [[] for _ in chosen]
    thumbs: dict[str, Image.Image] = {}
    for r in group:
        found = retrieve(r.db, chosen, top)
        try:
            images = {i: thumbnail(r.images.load(i)) for i in _shown(found) if i not in thumbs}
        except UserError as e:
            note(notes, f"{run_name(r.run)}: gallery skipped ({e}; pass --data_root DIR)")
            continue
        thumbs.update(images)
        for q, retrieval in enumerate(found):
            rows[q].append((r.label, retrieval))
    if not rows[0]:
        return None
    return Gallery(dataset, chosen, rows, thumbs, top)


def _shown(found: Sequence[Retrieval]) -> list[str]:
    return list(dict.fromkeys([f.query for f in found] + [h.id for f in found for h in f.hits]))


# --------------------------------------------------------------------------------------------
# The figure


def _frame(ax, colour: str, width: float) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(width)


def _short(labels: Sequence[str], width: int = 22) -> str:
    text = ", ".join(labels) or "no label"
    return "\n".join(textwrap.wrap(text, width, max_lines=3, placeholder=" …"))


def plot_gallery(gallery: Gallery) -> Figure:
    """The gallery as a figure: per query, one row per run — the query (dark frame), then its top
    items in rank order framed green (shares a label, ✓) or red (shares none, ✗), each titled with
    rank and Hamming distance and captioned with its labels."""
    runs = len(gallery.rows[0])
    nrows, ncols = len(gallery.queries) * runs, gallery.top + 1
    fig = Figure(figsize=(1.05 * ncols + 0.6, 1.55 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for q, rows in enumerate(gallery.rows):
        for r, (label, retrieval) in enumerate(rows):
            line = axes[q * runs + r]
            _cell(line[0], gallery.thumbs[retrieval.query], f"query {q + 1}", retrieval.query_labels,
                  QUERY_COLOUR)
            line[0].set_ylabel("\n".join(textwrap.wrap(label, 22)), fontsize=6.5)
            for rank in range(gallery.top):
                ax = line[rank + 1]
                if rank >= len(retrieval.hits):
                    ax.set_axis_off()
                    continue
                hit = retrieval.hits[rank]
                mark, colour = ((RELEVANT_MARK, RELEVANT_COLOUR) if hit.relevant
                                else (IRRELEVANT_MARK, IRRELEVANT_COLOUR))
                _cell(ax, gallery.thumbs[hit.id], f"#{rank + 1} · d {hit.distance} {mark}", hit.labels, colour)
    fig.suptitle(f"Retrievals on {gallery.dataset}: query, then the top {gallery.top} by Hamming distance "
                 f"(green {RELEVANT_MARK}: shares a label with the query; red {IRRELEVANT_MARK}: shares none)",
                 fontsize=8)
    return fig


def _cell(ax, img: Image.Image, title: str, labels: Sequence[str], colour: str) -> None:
    ax.imshow(np.asarray(img), interpolation="nearest")
    _frame(ax, colour, 3.0)
    ax.set_title(title, fontsize=6.5, color=colour, pad=2)
    ax.set_xlabel(_short(labels), fontsize=5.5, labelpad=2)


def gallery_stem(galleries: Sequence[Gallery], gallery: Gallery, prefix: str = "") -> str:
    """File stem of a gallery figure: ``{prefix}gallery``, or ``{prefix}gallery_{dataset}`` when
    several datasets each have one."""
    return f"{prefix}gallery" if len(galleries) == 1 else f"{prefix}gallery_{gallery.dataset}"
