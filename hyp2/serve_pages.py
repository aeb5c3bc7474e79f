"""The search page's HTML and its API's JSON (:mod:`hyp2.serve`): made in memory from the codes
file and the ranking, every value escaped; the pages have no script."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence
from urllib.parse import quote

import numpy as np
from PIL import Image

from .gallery import Retrieval
from .htmlpage import data_uri, esc, hit_caption, page, thumb

if TYPE_CHECKING:
    from .serve import SearchService

#: most results a page may ask for
MAX_TOP = 100


@dataclass(frozen=True)
class Query:
    """What was searched: an id of the codes file, or an uploaded file's name (and thumbnail)."""

    id: str | None
    name: str
    labels: tuple[str, ...] = ()
    preview: Image.Image | None = None




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
