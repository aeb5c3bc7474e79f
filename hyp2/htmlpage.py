"""Web pages without a web framework: the report's ``index.html`` and the pieces the search page
shares with it (style, escaping, tables, thumbnails as data URIs).

``index.html`` is one file that opens offline from the report's folder: its figures are the
PNG files beside it (linked to their PDFs), the gallery's thumbnails are embedded as ``data:``
URIs, the style sheet is inline, and there is no script at all, so nothing is fetched from the
network. Everything a run wrote comes from its JSON (docs/run-json.md); every text is escaped.
The numbers it sets beside ours are the HyP² results of Xu et al., "HyP² Loss: Beyond Hypersphere
Metric Space for Multi-label Image Retrieval", ACM MM 2022 (§4, :mod:`hyp2.paper`).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Iterable, Sequence

from PIL import Image

from .gallery import IRRELEVANT_MARK, RELEVANT_MARK, Gallery, Retrieval, encode_image

# One style sheet for both pages; sized for a laptop (about 1,280 px) and still readable narrower.
CSS = """
:root { --ok: #1a9641; --bad: #d7191c; --ink: #222; --muted: #666; --line: #ddd; --bg: #fafafa; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 1rem 1.25rem 3rem; color: var(--ink);
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
h1 { font-size: 1.6rem; margin: .5rem 0 .25rem; } h2 { font-size: 1.3rem; margin-top: 2rem;
  border-bottom: 1px solid var(--line); padding-bottom: .2rem; } h3 { font-size: 1.05rem; }
nav a { margin-right: .9rem; } .muted { color: var(--muted); } code { font-size: .9em; }
.scroll { overflow-x: auto; } table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .88rem; }
th, td { border: 1px solid var(--line); padding: .25rem .5rem; text-align: left; vertical-align: top; }
th { background: var(--bg); } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
figure.plot { margin: 1rem 0 2rem; } figure.plot img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { font-size: .88rem; color: var(--muted); }
.gallery-row { display: flex; flex-wrap: wrap; gap: .4rem; align-items: flex-start; margin: .3rem 0 .8rem; }
.run-name { flex: 0 0 100%; font-size: .85rem; font-weight: 600; }
.thumb { margin: 0; width: 104px; font-size: .72rem; line-height: 1.25; overflow-wrap: anywhere; }
.thumb img { display: block; width: 104px; height: 104px; object-fit: contain; background: #eee;
             border: 4px solid var(--muted); }
.thumb.ok img { border-color: var(--ok); } .thumb.bad img { border-color: var(--bad); }
.thumb.query img { border-color: var(--ink); } .ok .mark { color: var(--ok); } .bad .mark { color: var(--bad); }
.thumb a { color: inherit; text-decoration: none; }
details { margin: .4rem 0; } summary { cursor: pointer; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .5rem 1rem; margin: 1rem 0; background: #fff; }
form.upload { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center; padding: .8rem 1rem;
              background: var(--bg); border: 1px solid var(--line); border-radius: 6px; }
.message { padding: .6rem 1rem; border-left: 4px solid var(--bad); background: #fdecea; }
"""


def esc(value: Any) -> str:
    """``value`` as text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def page(title: str, body: str) -> str:
    """A whole HTML document: UTF-8, a viewport for narrow screens, the inline style sheet and an
    empty icon (so that a browser asks no server for ``/favicon.ico``)."""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{esc(title)}</title>\n<link rel=\"icon\" href=\"data:,\">\n<style>{CSS}</style>\n"
            f"</head>\n<body>\n{body}\n</body>\n</html>\n")


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]], numeric: Sequence[int] = ()) -> str:
    """An escaped table in a horizontally scrolling box; columns in ``numeric`` align right;
    ``headers=None``: a key–value table without a header row."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers or ())
    body = "".join("<tr>" + "".join(f"<td class=\"num\">{esc(c)}</td>" if i in numeric else f"<td>{esc(c)}</td>"
                                    for i, c in enumerate(row)) + "</tr>\n" for row in rows)
    thead = f"<thead><tr>{head}</tr></thead>\n" if headers else ""
    return f"<div class=\"scroll\"><table>{thead}<tbody>\n{body}</tbody></table></div>"


def data_uri(img: Image.Image) -> str:
    """A thumbnail as a ``data:`` URI (PNG or JPEG, see :func:`hyp2.gallery.encode_image`)."""
    mime, data = encode_image(img)
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumb(src: str | None, caption: str, labels: Sequence[str], kind: str, href: str | None = None,
          alt: str = "") -> str:
    """One framed thumbnail with a caption: ``kind`` is ``query``, ``ok`` (relevant), ``bad`` or
    ``hit`` (relevance unknown). Without ``src`` (no image to show) the ``alt`` text stands in."""
    image = (f"<img src=\"{esc(src)}\" alt=\"{esc(alt)}\" title=\"{esc(alt)}\">" if src is not None
             else f"<code>{esc(alt)}</code>")
    if href is not None:
        image = f"<a href=\"{esc(href)}\">{image}</a>"
    first = f"{caption}<br>" if caption else ""
    return (f"<figure class=\"thumb {kind}\">{image}<figcaption>{first}"
            f"<span class=\"muted\">{esc(', '.join(labels) or 'no label')}</span></figcaption></figure>")


def hit_caption(rank: int, distance: int, relevant: bool | None) -> str:
    """``#rank · d distance`` with the relevance mark (none when the query's labels are unknown)."""
    mark = "" if relevant is None else f" <span class=\"mark\">{RELEVANT_MARK if relevant else IRRELEVANT_MARK}</span>"
    return f"#{rank} · d {distance}{mark}"


# --------------------------------------------------------------------------------------------
# The report page


def _gallery_row(label: str, retrieval: Retrieval, q: int, uris: dict[str, str]) -> str:
    cells = [thumb(uris[retrieval.query], f"query {q + 1}", retrieval.query_labels, "query", alt=retrieval.query)]
    cells += [thumb(uris[h.id], hit_caption(r + 1, h.distance, h.relevant), h.labels, "ok" if h.relevant else "bad",
                    alt=h.id) for r, h in enumerate(retrieval.hits)]
    return f"<div class=\"gallery-row\"><div class=\"run-name\">{esc(label)}</div>{''.join(cells)}</div>"


def gallery_section(gallery: Gallery, figure: Path | None) -> str:
    """A gallery as HTML: per query, one row per run of framed thumbnails (embedded)."""
    uris = {ident: data_uri(img) for ident, img in gallery.thumbs.items()}
    parts = [f"<h3>{esc(gallery.dataset)}</h3>"]
    if figure is not None:
        parts.append(f"<p class=\"muted\">The same as a figure: <a href=\"{esc(figure.name)}\">{esc(figure.name)}</a>"
                     f"{_pdf_link(figure)}.</p>")
    for q, rows in enumerate(gallery.rows):
        parts.append(f"<div class=\"card\"><h4>Query {q + 1}: <code>{esc(gallery.queries[q])}</code></h4>")
        parts += [_gallery_row(label, retrieval, q, uris) for label, retrieval in rows]
        parts.append("</div>")
    return "\n".join(parts)


def _pdf_link(png: Path) -> str:
    pdf = png.with_suffix(".pdf")
    return f" (<a href=\"{esc(pdf.name)}\">PDF</a>)" if pdf.is_file() else ""


def figure_section(title: str, files: Sequence[Path], caption: str) -> str:
    """A figure (its PNG, relative to the page) with its caption and a link to its PDF."""
    png = next((f for f in files if f.suffix == ".png"), None)
    links = ", ".join(f"<a href=\"{esc(f.name)}\">{esc(f.suffix[1:].upper())}</a>" for f in files)
    image = (f"<a href=\"{esc(png.name)}\"><img src=\"{esc(png.name)}\" alt=\"{esc(title)}\"></a>"
             if png is not None else "")
    return (f"<figure class=\"plot\"><h3>{esc(title)}</h3>{image}"
            f"<figcaption>{esc(caption)} Files: {links}.</figcaption></figure>")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    return "—" if value is None else str(value)


def run_section(run: dict, label: str, anchor: str) -> str:
    """One run: its summary, data provenance, configuration and evaluation history."""
    test = run.get("test") or {}
    summary = [("file", Path(run.get("_path", "")).name), ("dataset", run.get("dataset")),
               ("backbone", run.get("backbone")), ("bits", run.get("hash_bit")), ("loss", run.get("loss", "hyp2")),
               ("loss hyper-parameters", run.get("loss_hparams")), ("mAP@K, K", run.get("topk")),
               ("best during training", run.get("best"))]
    # every number --test measured, registered metrics included, under its JSON name
    summary += [(f"test: {k}", v) for k, v in test.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
    summary += [(f"data: {k}", v) for k, v in (run.get("data") or {}).items()]
    parts = [f"<section class=\"card\" id=\"{esc(anchor)}\"><h3>{esc(label)}</h3>",
             table(None, [(k, _fmt(v)) for k, v in summary if v not in (None, "", {})])]
    config = run.get("config") or {}
    parts.append(f"<details><summary>Configuration ({len(config)} settings)</summary>"
                 f"{table(('setting', 'value'), [(k, _fmt(v)) for k, v in config.items()])}</details>")
    history = run.get("history") or []
    parts.append(f"<details><summary>History ({len(history)} evaluations)</summary>{_history_table(history)}"
                 f"</details></section>")
    return "\n".join(parts)


def _history_table(history: Sequence[dict]) -> str:
    if not history:
        return "<p class=\"muted\">No evaluation during training.</p>"
    keys = list(dict.fromkeys(k for h in history for k in h if k != "components"))
    parts = list(dict.fromkeys(k for h in history for k in (h.get("components") or {})))
    rows = [[_fmt(h.get(k)) for k in keys] + [_fmt((h.get("components") or {}).get(p)) for p in parts]
            for h in history]
    return table(keys + [f"loss: {p}" for p in parts], rows, numeric=range(len(keys) + len(parts)))


def report_page(*, sources: Sequence[Path], results: tuple[Sequence[str], Sequence[Sequence[str]]],
                paper: tuple[Sequence[str], Sequence[Sequence[str]]],
                figures: Sequence[tuple[str, Sequence[Path], str]],
                galleries: Sequence[tuple[Gallery, Path | None]], runs: Sequence[tuple[dict, str]],
                notes: Sequence[str], grid: str = "") -> str:
    """The text of ``index.html``: results table beside the paper, the paper's tables with our runs
    set in (``grid``, HTML from :func:`hyp2.papergrid.grid_html`), the paper's HyP² table, figures,
    galleries, every run's record and the notes. ``results`` and ``paper`` are (headers, rows)
    as :mod:`hyp2.report` lays them out for results.md."""
    nav = ("<nav><a href=\"#results\">Results</a>" + ("<a href=\"#paper-grid\">Paper's tables</a>" if grid else "")
           + "<a href=\"#figures\">Figures</a>"
           "<a href=\"#gallery\">Gallery</a><a href=\"#runs\">Runs</a><a href=\"#notes\">Notes</a></nav>")
    body = ["<h1>HyP² reproduction report</h1>",
            f"<p class=\"muted\">Made by <code>python -m hyp2.report</code> from {len(sources)} run file(s): "
            + ", ".join(f"<code>{esc(p)}</code>" for p in sources) + ".</p>", nav,
            "<h2 id=\"results\">mAP beside the paper</h2>",
            "<p>Ours: the run's test mAP@K (Hamming ranking; relevant = at least one shared label). Paper: HyP² as "
            "reported by Xu et al., ACM MM 2022 (§4). Ours − paper is positive where we do better; — : no number. "
            "NDCG@K, WAP@K and ACG@K grade each retrieved item by the labels it shares with the query (DSRH, CVPR "
            "2015); tie-aware mAP@K is mAP's expectation over every order of tied items (He et al., CVPR 2018).</p>",
            table(*results, numeric=(3, *range(5, len(results[0]) - 1))),
            "<h3>The paper's HyP² mAP</h3>", table(*paper, numeric=(3,)), grid,
            "<h2 id=\"figures\">Figures</h2>"]
    body += [figure_section(*f) for f in figures] or ["<p>No figure: no run has the data of any (see Notes).</p>"]
    body.append("<h2 id=\"gallery\">Retrieval gallery</h2>")
    if galleries:
        body.append(f"<p>Each query, then its nearest database items by Hamming distance in rank order: framed "
                    f"green ({RELEVANT_MARK}) when the item shares a label with the query, red ({IRRELEVANT_MARK}) "
                    f"when not; d is the Hamming distance. The codes are the ones each run evaluated.</p>")
        body += [gallery_section(g, f) for g, f in galleries]
    else:
        body.append("<p>No gallery: no run has its codes and images (see Notes).</p>")
    body.append("<h2 id=\"runs\">Runs</h2>")
    body += [run_section(run, label, f"run-{i + 1}") for i, (run, label) in enumerate(runs)]
    body.append("<h2 id=\"notes\">Notes</h2>")
    body.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul>" if notes
                else "<p>None: every run had every figure's data.</p>")
    return page("HyP² reproduction report", "\n".join(body))
