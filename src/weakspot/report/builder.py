"""The report builder: a list of sections, each ``context -> SectionOutput``.

A section renders an HTML fragment (escaped by the section), a JSON-serialisable
summary (``summary.json["sections"][section.id]``) and optional Markdown. The
builder stitches them into one self-contained HTML file (figures are embedded as
``data:`` URIs; the same PNGs are written under ``figures/`` for the Markdown).
Every section is listed in ONE registry, :data:`SECTION_REGISTRY` (id, title,
``'module:function'``, order), resolved lazily when the report is built, so
``write_report()`` from Python renders every section the CLI does without any
side-effect import. :func:`register_section` adds a section at run time (plugins);
``sections=`` of :func:`write_report` replaces the list; see docs/report.md.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from weakspot.evaluate.store import atomic_write_bytes

__all__ = [
    "Section",
    "SectionOutput",
    "SectionEntry",
    "SECTION_REGISTRY",
    "ReportContext",
    "register_section",
    "registered_sections",
    "write_report",
    "esc",
    "SUMMARY_SCHEMA_VERSION",
]

SUMMARY_SCHEMA_VERSION = 1


def esc(value: Any) -> str:
    """HTML-escape anything (class names, paths and labels come from user files)."""
    return html.escape("" if value is None else str(value), quote=True)


@dataclass
class SectionOutput:
    """What a section renders: an HTML fragment, its summary dict and optional Markdown."""

    html: str
    summary: dict = field(default_factory=dict)
    markdown: str = ""


@dataclass
class Section:
    """A report section. ``render(ctx)`` returns a :class:`SectionOutput` or ``None`` to skip."""

    id: str
    title: str
    render: Callable[[ReportContext], SectionOutput | None]
    order: int = 100


@dataclass(frozen=True)
class SectionEntry:
    """One line of the section registry: a section whose render function lives at ``target``
    (``'package.module:function'``), imported only when the report is built."""

    id: str
    title: str
    target: str
    order: int = 100

    def section(self) -> Section:
        return Section(self.id, self.title, _LazyRender(self.target), self.order)


class _LazyRender:
    """Imports ``module:function`` on first call (no import side effects are needed)."""

    def __init__(self, target: str):
        self.target = target
        self._fn: Callable[[Any], Any] | None = None

    def __call__(self, ctx):
        if self._fn is None:
            import importlib

            mod, _, fn = self.target.partition(":")
            self._fn = getattr(importlib.import_module(mod), fn)
        return self._fn(ctx)

    def __repr__(self) -> str:
        return f"<render {self.target}>"


#: THE section registry: every section of the report, whoever renders it. ``write_report`` from
#: Python and ``weakspot report`` build the same page from this list; a section renders ``None``
#: when its data is absent (no fix run, no perception results).
SECTION_REGISTRY: tuple[SectionEntry, ...] = (
    SectionEntry("what_broke", "What broke", "weakspot.report.sections:render_what_broke", 5),
    SectionEntry("overview", "Overview and findings", "weakspot.report.sections:render_overview", 10),
    SectionEntry(
        "accuracy", "Accuracy against the physical parameter", "weakspot.report.sections:render_accuracy", 20
    ),
    SectionEntry("heatmap", "Classes × degradations", "weakspot.report.sections:render_heatmap", 30),
    SectionEntry("classes", "Most and least affected classes", "weakspot.report.sections:render_classes", 40),
    SectionEntry("examples", "Examples: clean vs degraded", "weakspot.report.sections:render_examples", 50),
    SectionEntry("confusion", "Confusions", "weakspot.report.sections:render_confusion", 60),
    SectionEntry("breaking", "Breaking points", "weakspot.report.sections:render_breaking", 70),
    SectionEntry(
        "envelope", "Camera operating envelope", "weakspot.analysis.report_section_envelope:render", 72
    ),
    SectionEntry(
        "adaptive", "Adaptive breaking points (bisection)", "weakspot.report.sections:render_adaptive", 75
    ),
    SectionEntry(
        "perception",
        "Perception: image quality and saliency",
        "weakspot.quality.report_section:render_perception",
        78,
    ),
    SectionEntry("fix", "Fix: before / after", "weakspot.robustify.report_section:render_fix", 95),
)

_REGISTERED: list[Section] = []


def register_section(section: Section) -> Section:
    """Add a section to every report built from now on in this process (replaces one with the same
    id). For a section of weakspot itself, add a :class:`SectionEntry` to :data:`SECTION_REGISTRY`
    instead: it then appears without anything having to be imported first."""
    global _REGISTERED
    _REGISTERED = [s for s in _REGISTERED if s.id != section.id] + [section]
    return section


def registered_sections() -> list[Section]:
    """The sections of :data:`SECTION_REGISTRY` plus those added with :func:`register_section`,
    in ``order``."""
    ids = {s.id for s in _REGISTERED}
    return sorted(
        [e.section() for e in SECTION_REGISTRY if e.id not in ids] + _REGISTERED, key=lambda s: s.order
    )


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60] or "fig"


@dataclass
class ReportContext:
    """Everything a section may use: the loaded run, the :class:`~weakspot.analysis.Analysis`,
    the output folder, and helpers to embed figures and tables."""

    analysis: Any
    out_dir: Path
    options: dict = field(default_factory=dict)
    _fig_names: set = field(default_factory=set, repr=False)

    @property
    def run(self):
        return self.analysis.run

    def figure(self, fig, name: str, alt: str, *, width: int | None = None) -> tuple[str, str]:
        """Save a matplotlib figure as ``figures/<name>.png`` and return ``(html_img, md_img)``.
        The HTML ``<img>`` embeds the PNG as a data URI (the report is one file)."""
        import matplotlib.pyplot as plt

        base = _slug(name)
        n, i = base, 1
        while n in self._fig_names:
            i += 1
            n = f"{base}-{i}"
        self._fig_names.add(n)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", facecolor="white")
        plt.close(fig)
        data = buf.getvalue()
        rel = f"figures/{n}.png"
        atomic_write_bytes(self.out_dir / rel, data)
        return self.image(data, alt, width=width), f"![{alt}]({rel})"

    def image(self, png: bytes, alt: str, *, width: int | None = None, cls: str = "fig") -> str:
        """An ``<img>`` with the PNG embedded as a data URI."""
        w = f' width="{int(width)}"' if width else ""
        b64 = base64.b64encode(png).decode("ascii")
        return f'<img class="{cls}" alt="{esc(alt)}"{w} src="data:image/png;base64,{b64}">'

    @staticmethod
    def table(
        df: pd.DataFrame,
        columns: dict[str, str],
        formats: Mapping[str, Callable[[Any], str]] | None = None,
        *,
        cls: str = "",
    ) -> tuple[str, str]:
        """An escaped HTML table and a Markdown table of ``df[columns]`` (``{column: header}``)."""
        formats = formats or {}

        def fmt(col, v):
            if col in formats:
                return formats[col](v)
            if isinstance(v, (float, np.floating)):
                return "—" if math.isnan(v) else f"{v:.3g}"
            return str(v)

        head = "".join(f"<th>{esc(h)}</th>" for h in columns.values())
        body = []
        md = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
        for _, r in df.iterrows():
            cells = [fmt(c, r[c]) for c in columns]
            body.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in cells) + "</tr>")
            md.append("| " + " | ".join(_md_cell(x) for x in cells) + " |")
        html_t = (
            f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
        )
        return html_t, "\n".join(md)


def _md_cell(text: str) -> str:
    """A Markdown table cell: ``|`` escaped, and markup in names escaped (Markdown renders raw HTML)."""
    return html.escape(str(text), quote=False).replace("|", "\\|")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return _jsonable(obj.to_dict(orient="records"))
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        f = float(obj)
        return None if math.isnan(f) or math.isinf(f) else f
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if obj is pd.NA or obj is pd.NaT:
        return None
    return obj


def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    baseline: str | Path | None = None,
    sections: Sequence[Section] | None = None,
    analysis: Any = None,
    n_boot: int = 1000,
    max_examples: int = 8,
    min_per_class: int | None = None,
) -> Path:
    """Write ``report.html``, ``summary.json``, ``report.md`` and ``figures/`` for a run.

    Args:
        run_dir: a finished run (``weakspot run CONFIG --out RUN_DIR``).
        out_dir: where to write (default ``RUN_DIR/report``).
        baseline: a run to normalise corruption errors by (non-ImageNet models).
        sections: the sections to render (default :func:`registered_sections`).
        analysis: a precomputed :class:`~weakspot.analysis.Analysis` (else computed here).
        max_examples: number of clean-vs-degraded example pairs.
        min_per_class: fewest images a class needs for per-class rankings, intervals and findings
            (default :data:`weakspot.analysis.paired.MIN_IMAGES_FOR_CLAIM`; ignored when
            ``analysis`` is given, which carries its own).

    Returns the path of the HTML file.
    """
    from weakspot.analysis import MIN_IMAGES_FOR_CLAIM, analyze, load_run

    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    for stale in (out / "figures").glob("*.png"):  # figures of an earlier report in the same folder
        stale.unlink()
    mpc = MIN_IMAGES_FOR_CLAIM if min_per_class is None else min_per_class
    a = (
        analysis
        if analysis is not None
        else analyze(run, baseline=baseline, n_boot=n_boot, min_per_class=mpc)
    )
    ctx = ReportContext(analysis=a, out_dir=out, options={"max_examples": max_examples})
    secs = list(sections) if sections is not None else registered_sections()
    rendered = []
    for s in secs:
        res = s.render(ctx)
        if res is not None:
            rendered.append((s, res))
    title = f"weakspot report — {_run_title(run)}"
    summary = {
        "schema_version": SUMMARY_SCHEMA_VERSION,
        "generated_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "weakspot_version": _version(),
        "run": _run_info(run),
        "findings": _jsonable(
            a.findings[
                [
                    c
                    for c in ("kind", "degradation", "class_name", "class", "condition_id", "metric", "text")
                    if c in a.findings
                ]
            ]
        ),
        "min_per_class": int(getattr(a, "min_per_class", MIN_IMAGES_FOR_CLAIM)),
        "sections": {s.id: _jsonable(r.summary) for s, r in rendered},
    }
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False).encode())
    md = [f"# {title}", ""] + [f"## {s.title}\n\n{r.markdown}\n" for s, r in rendered if r.markdown]
    atomic_write_bytes(out / "report.md", "\n".join(md).encode())
    page = _page(title, [(s, r) for s, r in rendered], summary["run"])
    atomic_write_bytes(out / "report.html", page.encode())
    return out / "report.html"


def _version() -> str:
    try:
        from weakspot import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "unknown"


def _config_name(m: dict) -> str:
    for v in (
        (m.get("config") or {}).get("name") if isinstance(m.get("config"), dict) else None,
        m.get("name"),
    ):
        if isinstance(v, str) and v.strip():
            return v.strip()
    return ""


def _run_title(run) -> str:
    """The config's ``name`` (with the model), else ``'<model> on <run dir>'``."""
    m = run.manifest or {}
    model = _model_name(m)
    name = _config_name(m)
    if name:
        return f"{name} ({model})" if model else name
    return f"{model} on {run.root.name}" if model else str(run.root.name)


def _model_name(m: dict) -> str:
    for path in (("model", "name"), ("config", "model", "name"), ("model",)):
        v: Any = m
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, str):
            return v
    return ""


def _run_info(run) -> dict:
    imgs = run.images
    return {
        "run_dir": str(run.root),
        "name": _config_name(run.manifest or {}),
        "model": _model_name(run.manifest or {}),
        "n_images": int(len(imgs)),
        "n_labelled": int((imgs.label >= 0).sum()),
        "n_classes": int(run.n_classes),
        "n_conditions": int(len(run.conditions)),
        "degradations": run.degradations,
        "full_probabilities": bool(run.has_probs("clean")),
        "seed": (run.manifest or {}).get("seed"),
    }


_CSS = """
:root{--ink:#1d2330;--mute:#5b6474;--line:#e3e6ec;--bg:#f6f7f9;--card:#fff;--bad:#c0392b;--good:#1e8449;--acc:#2c5fb3}
*{box-sizing:border-box}body{margin:0;font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:var(--ink);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:22px 32px}header h1{margin:0;font-size:22px;font-weight:600}
header .meta{color:#b9c2d3;font-size:13px;margin-top:4px}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);padding:8px 32px;display:flex;gap:18px;flex-wrap:wrap}
nav a{color:var(--acc);text-decoration:none;font-size:14px}main{max-width:1180px;margin:0 auto;padding:20px 32px 60px}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:20px 24px;margin:18px 0}
h2{margin:0 0 12px;font-size:19px}h3{font-size:15px;margin:18px 0 8px;color:var(--mute)}
.kpis{display:flex;gap:14px;flex-wrap:wrap;margin:6px 0 10px}.kpi{border:1px solid var(--line);border-radius:8px;padding:10px 16px;min-width:150px}
.kpi b{display:block;font-size:22px}.kpi span{color:var(--mute);font-size:12px}
ul.findings{padding-left:20px}ul.findings li{margin:5px 0}.tag{display:inline-block;font-size:11px;padding:1px 7px;border-radius:9px;background:#eef2fa;color:var(--acc);margin-right:6px;text-transform:uppercase;letter-spacing:.03em}
table{border-collapse:collapse;font-size:13px;margin:8px 0;width:100%}th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top}
th{color:var(--mute);font-weight:600;background:#fafbfc}td{font-variant-numeric:tabular-nums}
.two{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:18px}
.grid3{display:grid;grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:12px}
img.fig{max-width:100%;height:auto;border-radius:6px}.note{color:var(--mute);font-size:13px}
.examples{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
.ex{border:1px solid var(--line);border-radius:8px;padding:8px}.ex .pair{display:flex;gap:6px}.ex figure{margin:0;flex:1;text-align:center}
.ex img{width:100%;image-rendering:auto;border-radius:4px;background:#eee}.ex figcaption{font-size:12px;line-height:1.3}
.ex .deg{font-size:12px;color:var(--mute);margin-bottom:4px}.bad{color:var(--bad)}.good{color:var(--good)}
details summary{cursor:pointer;color:var(--acc);font-size:14px;margin:10px 0 4px}
table.broke td:nth-child(4),table.broke td:nth-child(5),table.broke td:nth-child(6){white-space:nowrap}
table.broke tr.sig td:nth-child(2){font-weight:600}
"""


def _page(title: str, rendered, run_info: dict) -> str:
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s, _ in rendered)
    body = "".join(
        f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{r.html}</section>' for s, r in rendered
    )
    meta = (
        f"{run_info['n_images']} images · {run_info['n_classes']} classes · {run_info['n_conditions']} conditions"
        f" · {esc(run_info['run_dir'])}"
    )
    # the tiny script only marks the page as loaded and counts the images that decoded
    # (``data-images="rendered/total"``); the browser test reads both markers
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><div class='meta'>{meta}</div></header>"
        f"<nav>{nav}</nav><main>{body}</main>"
        "<script>window.addEventListener('load',function(){var im=document.images,ok=0;"
        "for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0){ok++;}}"
        "document.body.setAttribute('data-images',ok+'/'+im.length);document.body.setAttribute('data-loaded','1');});"
        "</script></body></html>"
    )
