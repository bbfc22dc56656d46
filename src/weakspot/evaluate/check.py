"""Preflight: is this run config worth running? (``weakspot check CONFIG``)

Before hours of sweeping, :func:`preflight` loads the model and the data of a config and
reports what a run would silently get wrong: the label mapping (folder → index → class
name, images per class), clean top-1 on a seeded sample with a warning when it is near
chance (the usual cause: labels that do not match the model's classes), classes with too
few images for per-class claims, duplicate files, and an estimate of the sweep's duration
on this machine. ``weakspot run`` prints the cheap warnings (:func:`data_warnings`) and
the near-chance one (:class:`ChanceWatch`) too.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from weakspot.errors import DataError, WeakspotError

__all__ = [
    "CheckReport",
    "preflight",
    "print_check",
    "describe_preprocess",
    "data_warnings",
    "duplicate_groups",
    "chance_level",
    "near_chance_warning",
    "print_warnings",
    "ChanceWatch",
    "MIN_PER_CLASS",
]

MIN_PER_CLASS = 5  # per-class claims need at least this many images of the class


# ----------------------------------------------------------------------------- the cheap checks
def duplicate_groups(digests: Sequence[str], image_ids: Sequence[str]) -> list[list[str]]:
    """Image ids grouped by identical content hash (only groups of two or more), largest first."""
    by: dict[str, list[str]] = {}
    for d, i in zip(digests, image_ids, strict=True):
        if d:
            by.setdefault(d, []).append(str(i))
    groups = [g for g in by.values() if len(g) > 1]
    return sorted(groups, key=lambda g: (-len(g), g[0]))


def chance_level(labels: Sequence[int]) -> float | None:
    """Top-1 of guessing uniformly among the classes present in the labels: ``1/K``
    (K = distinct labels ≥ 0); ``None`` without labels."""
    k = len({int(x) for x in labels if int(x) >= 0})
    return 1.0 / k if k else None


def near_chance_warning(n_correct: int, n_labelled: int, chance: float | None, where: str = "") -> str | None:
    """A warning when clean top-1 is at most ``min(2·chance, (1 + chance)/2)`` (the second
    bound keeps two-class sets from warning at 0.8); ``None`` otherwise."""
    if chance is None or n_labelled <= 0:
        return None
    acc = n_correct / n_labelled
    if acc > min(2 * chance, (1 + chance) / 2):
        return None
    return (
        f"clean top-1 is {acc:.2f} ({n_correct}/{n_labelled}{where}), near chance (1/{round(1 / chance)} = "
        f"{chance:.3f}): the labels probably do not match the model's classes; check the label mapping "
        "('weakspot check CONFIG'), data 'labels' and 'class_map', and the model's class_names"
    )


def data_warnings(
    labels: Sequence[int],
    class_names: Sequence[str],
    digests: Sequence[str],
    image_ids: Sequence[str],
    label_map: dict | None = None,
    min_per_class: int = MIN_PER_CLASS,
) -> list[str]:
    """The warnings that need no forward pass: label-map remarks, classes with fewer than
    ``min_per_class`` images, and duplicate files (same content hash)."""
    out = list((label_map or {}).get("warnings", []))
    counts = Counter(int(x) for x in labels if int(x) >= 0)
    few = sorted((n, c) for c, n in counts.items() if n < min_per_class)
    if few:
        n, c = few[0]
        name = class_names[c] if 0 <= c < len(class_names) else str(c)
        out.append(
            f"{len(few)} of {len(counts)} classes have fewer than {min_per_class} images (e.g. {c} "
            f"'{name}': {n}); per-class claims need >= {min_per_class} images per class; add images "
            "or read only the overall results"
        )
    dups = duplicate_groups(digests, image_ids)
    if dups:
        extra = sum(len(g) - 1 for g in dups)
        out.append(
            f"{len(dups)} groups of identical files ({extra} extra copies, e.g. "
            f"{' = '.join(dups[0][:3])}): each copy counts again; remove the duplicates"
        )
    return out


def print_warnings(warnings: Sequence[str], console) -> None:
    """Print warnings as ``warning: …`` lines (nothing without a console)."""
    if console is None:
        return
    from rich.markup import escape

    for w in warnings:
        console.print(f"[bold yellow]warning:[/] {escape(w)}")


class ChanceWatch:
    """Collects the clean rows of a run and prints the near-chance warning once, as soon
    as ``min_images`` labelled images (or all of them) have a clean prediction."""

    def __init__(self, labels_all: Sequence[int] | np.ndarray, console=None, min_images: int = 32):
        labels = np.asarray(labels_all, dtype=np.int64)
        self.chance = chance_level(labels.tolist())
        self.need = min(min_images, int((labels >= 0).sum()))
        self.console, self.n, self.correct, self.done = console, 0, 0, self.need == 0
        self.warning: str | None = None

    def add(self, rows: dict[str, list]) -> None:
        if self.done:
            return
        lab = np.asarray(rows.get("label", []), dtype=np.int64)
        self.n += int((lab >= 0).sum())
        self.correct += (
            int(np.asarray(rows.get("correct1", []), dtype=bool)[lab >= 0].sum()) if len(lab) else 0
        )
        if self.n >= self.need:
            self.done = True
            self.warning = near_chance_warning(
                self.correct, self.n, self.chance, " on the first clean images"
            )
            if self.warning:
                print_warnings([self.warning], self.console)


# ----------------------------------------------------------------------------- the report
@dataclass
class CheckReport:
    """What :func:`preflight` found. ``warnings`` is empty when all is well.

    Attributes:
        model: name, source (format), num_classes, input_size (H, W px), preprocess.
        data: kind, root, images, labelled images.
        label_map: the run manifest's ``data.label_map`` (``None`` for non-folder kinds).
        class_counts: ``[{index, class_name, n_images}]`` of the labelled classes, fewest first.
        min_per_class: images per class that per-class claims need.
        sample_ids, sample_top1, sample_labelled: the seeded clean sample and its top-1.
        chance: top-1 of uniform guessing among the classes present.
        duplicates: groups of image ids with identical file content.
        n_conditions: degraded conditions in the sweep (the clean one is extra).
        eta_s: estimated seconds for the whole sweep on this machine (serial, this process's
            threads), from ``timing`` (seconds per image: decode, forward; degradation per
            condition).
    """

    model: dict[str, Any]
    data: dict[str, Any]
    label_map: dict | None
    class_counts: list[dict[str, Any]]
    min_per_class: int
    sample_ids: list[str]
    sample_top1: float | None
    sample_labelled: int
    chance: float | None
    duplicates: list[list[str]]
    n_conditions: int
    eta_s: float | None
    timing: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.warnings

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _load(ds, i: int) -> tuple[torch.Tensor | None, float]:
    t0 = time.perf_counter()
    try:
        img = ds.load(i)
    except (WeakspotError, OSError):  # an undecodable file is skipped, as a run does
        img = None
    return img, time.perf_counter() - t0


def preflight(
    config,
    *,
    sample: int = 64,
    min_per_class: int = MIN_PER_CLASS,
    eta: bool = True,
    eta_images: int = 2,
    batch_size: int = 16,
) -> CheckReport:
    """Check a run config before running it.

    Args:
        config: a :class:`~weakspot.evaluate.config.RunConfig`, a mapping or a config path.
        sample: labelled images (seeded by the config's seed) whose clean top-1 is measured.
        min_per_class: images per class below which per-class claims are flagged.
        eta: time the forward pass and the degradations to estimate the sweep's duration.
        eta_images: images each degradation is timed on (one condition per distinct
            degradation; the others of that degradation are assumed to cost the same).
        batch_size: forward batch size of the sample.

    Returns:
        :class:`CheckReport`.

    Raises:
        ConfigError / DataError / ModelLoadError: a bad config, unmatched or ambiguous
        folders, a model that cannot be loaded.
    """
    from weakspot.data import subset_indices
    from weakspot.data.labels import dataset_labels, manifest_label_map
    from weakspot.evaluate.conditions import degrade_images
    from weakspot.evaluate.config import as_run_config, expand_conditions
    from weakspot.evaluate.engine import load_run_model, open_run_data

    cfg = as_run_config(config)
    conditions, _ = expand_conditions(cfg.conditions, skip_unknown=cfg.skip_unknown)
    model = load_run_model(cfg)
    ds = open_run_data(cfg)
    labels, maps = dataset_labels(ds, model.class_names, model.name)
    label_map = manifest_label_map(maps)
    k = model.num_classes
    names = list(model.class_names)
    warnings: list[str] = []

    in_range = [lab if -1 <= lab < k else None for lab in labels]
    n_out = sum(x is None for x in in_range)
    n_labels = sum(x >= 0 for x in labels)
    if n_labels and n_out > n_labels // 2:  # what setup_run refuses too
        raise DataError(
            f"{n_out} of {n_labels} labels are out of range for {model.name} ({k} classes): "
            "the data set does not belong to this model; check 'data' and 'model' in the config"
        )
    if n_out:
        warnings.append(
            f"{n_out} of {len(labels)} images have labels beyond {model.name}'s {k} classes: a run skips them"
        )
    usable = [i for i, x in enumerate(in_range) if x is not None]
    lab_usable = [labels[i] for i in usable]
    digests = [hashlib.sha1(ds.raw_bytes(i)).hexdigest() for i in usable]
    ids = [ds.image_ids[i] for i in usable]
    warnings += data_warnings(lab_usable, names, digests, ids, label_map, min_per_class)
    counts = Counter(x for x in lab_usable if x >= 0)
    class_counts = [
        {"index": c, "class_name": names[c], "n_images": n}
        for c, n in sorted(counts.items(), key=lambda t: (t[1], t[0]))
    ]

    # clean top-1 on a seeded sample of labelled images (any images if none is labelled)
    labelled = [i for i in usable if labels[i] >= 0]
    pool = labelled or usable
    pick = (
        [pool[j] for j in subset_indices([labels[i] for i in pool], limit=sample, seed=cfg.seed)]
        if pool
        else []
    )
    imgs, got, t_decode = [], [], 0.0
    for i in pick:
        img, dt = _load(ds, i)
        t_decode += dt
        if img is not None:
            imgs.append(img)
            got.append(i)
    t_fwd, top1 = 0.0, []
    if imgs:
        model.predict_proba(imgs[:1])  # warm-up (first-call allocations), not timed
    with torch.inference_mode():
        for s in range(0, len(imgs), batch_size):
            t0 = time.perf_counter()
            p = model.predict_proba(imgs[s : s + batch_size])
            t_fwd += time.perf_counter() - t0
            top1 += p.argmax(1).tolist()
    lab_s = [labels[i] for i in got]
    n_lab = sum(x >= 0 for x in lab_s)
    n_ok = sum(int(t == y) for t, y in zip(top1, lab_s, strict=True) if y >= 0)
    chance = chance_level(lab_usable)
    acc = n_ok / n_lab if n_lab else None
    w = near_chance_warning(n_ok, n_lab, chance, " on the clean sample")
    if w:
        warnings.append(w)

    # ETA: decode once per image, a forward per image and condition, each degradation
    timing: dict[str, Any] = {}
    eta_s = None
    if eta and imgs:
        per_decode = t_decode / len(pick)
        per_fwd = t_fwd / len(imgs)
        per_cond: dict[str, float] = {}
        timed: dict[tuple, float] = {}
        few = imgs[: max(1, eta_images)]
        few_ids = [ds.image_ids[i] for i in got[: len(few)]]
        for c in conditions:
            sig = tuple(st.name for st in c.steps)
            if sig not in timed:
                group = [x for x in conditions if tuple(st.name for st in x.steps) == sig]
                rep = group[len(group) // 2]
                built = rep.build()
                try:  # a warm-up call (first-call set-up is amortised in a run), then timed
                    degrade_images(rep, few[:1], few_ids[:1], cfg.seed, built)
                    t0 = time.perf_counter()
                    degrade_images(rep, few, few_ids, cfg.seed, built)
                    timed[sig] = (time.perf_counter() - t0) / len(few)
                except WeakspotError:  # a failing degradation is the run's business (it skips)
                    timed[sig] = 0.0
            per_cond[c.condition_id] = timed[sig]
        n_img = len(usable)
        eta_s = n_img * (per_decode + (1 + len(conditions)) * per_fwd + sum(per_cond.values()))
        timing = {
            "decode_s_per_image": per_decode,
            "forward_s_per_image": per_fwd,
            "degrade_s_per_image": per_cond,
            "threads": torch.get_num_threads(),
            "images": n_img,
            "conditions": len(conditions) + 1,
        }

    pre = model.preprocess_config.to_dict()
    return CheckReport(
        model={
            "name": model.name,
            "source": model.source,
            "num_classes": k,
            "input_size": list(model.input_size),
            "preprocess": pre,
            "weights_path": model.weights_path,
        },
        data={
            "kind": ds.kind,
            "root": ds.root,
            "n_images": len(ds),
            "n_usable": len(usable),
            "n_labelled": sum(x >= 0 for x in lab_usable),
        },
        label_map=label_map,
        class_counts=class_counts,
        min_per_class=min_per_class,
        sample_ids=[ds.image_ids[i] for i in got],
        sample_top1=acc,
        sample_labelled=n_lab,
        chance=chance,
        duplicates=duplicate_groups(digests, ids),
        n_conditions=len(conditions),
        eta_s=eta_s,
        timing=timing,
        warnings=warnings,
    )


# ----------------------------------------------------------------------------- printing
def _duration(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def describe_preprocess(pre: dict[str, Any]) -> str:
    """One line for a :class:`~weakspot.models.preprocess.Preprocess` dict."""
    h, w = pre["size"]
    how = pre.get("interpolation", "bilinear")
    if pre.get("resize_px"):
        geo = f"shorter side to {pre['resize_px']} px ({how}), centre crop {h}×{w}"
    else:
        geo = f"resize to {h}×{w} ({how})"
    fmt = lambda v: "(" + ", ".join(f"{x:.3g}" for x in v) + ")"  # noqa: E731
    return (
        f"{geo}, {pre.get('channels', 3)} channel(s), (x − mean)/std with mean {fmt(pre['mean'])}, "
        f"std {fmt(pre['std'])} (x in [0, 1])"
    )


def print_check(report: CheckReport, console, max_rows: int = 40) -> None:
    """Print a :class:`CheckReport` (model, label mapping, sample accuracy, counts,
    duplicates, ETA, warnings) on a rich console."""
    from rich.markup import escape
    from rich.table import Table

    m, d = report.model, report.data
    console.print(
        f"[bold]model[/] {escape(m['name'])} ({m['source']}), {m['num_classes']} classes, input "
        f"{m['input_size'][0]}×{m['input_size'][1]} px"
    )
    console.print(f"[bold]preprocessing[/] {escape(describe_preprocess(m['preprocess']))}")
    console.print(
        f"[bold]data[/] {escape(d['kind'])} {escape(d['root'])}: {d['n_images']} images, "
        f"{d['n_usable']} usable, {d['n_labelled']} labelled"
    )
    lm = report.label_map
    if lm is not None:
        t = Table(title=f"label mapping ({lm['mode']})", title_justify="left")
        for col in ("folder", "index", "class name", "by", "images"):
            t.add_column(col, justify="right" if col in ("index", "images") else "left")
        rows = lm["folders"]
        for e in rows[:max_rows]:
            t.add_row(
                escape(e["folder"]),
                str(e["index"]),
                escape(e["class_name"]),
                e["how"],
                str(e.get("n_images", "")),
            )
        console.print(t)
        if len(rows) > max_rows:
            console.print(f"  … {len(rows) - max_rows} more folders (all in --json)")
    elif report.class_counts:
        t = Table(title="images per class (fewest first)", title_justify="left")
        for col in ("index", "class name", "images"):
            t.add_column(col)
        for e in report.class_counts[:max_rows]:
            t.add_row(str(e["index"]), escape(e["class_name"]), str(e["n_images"]))
        console.print(t)
    if report.class_counts:
        n = [e["n_images"] for e in report.class_counts]
        few = sum(x < report.min_per_class for x in n)
        console.print(
            f"[bold]per class[/] {len(n)} classes, {min(n)}–{max(n)} images each; {few} below the "
            f"{report.min_per_class} that per-class claims need"
        )
    if report.sample_top1 is not None:
        ch = f"; chance {report.chance:.3f}" if report.chance else ""
        console.print(
            f"[bold]clean top-1[/] {report.sample_top1:.2f} on a seeded sample of "
            f"{report.sample_labelled} labelled images{ch}"
        )
    else:
        console.print("[bold]clean top-1[/] – (no labelled images: the clean prediction is the reference)")
    if report.duplicates:
        console.print(f"[bold]duplicates[/] {len(report.duplicates)} groups of identical files:")
        for g in report.duplicates[:5]:
            console.print("  " + escape(" = ".join(g)))
    else:
        console.print("[bold]duplicates[/] none (content hash)")
    if report.eta_s is not None:
        tm = report.timing
        deg = sum(tm["degrade_s_per_image"].values())
        console.print(
            f"[bold]ETA[/] {_duration(report.eta_s)} for {tm['images']} images × {tm['conditions']} "
            f"conditions on this machine ({tm['threads']} torch thread(s), one process): decode "
            f"{tm['decode_s_per_image'] * 1e3:.0f} ms + forward {tm['forward_s_per_image'] * 1e3:.0f} ms "
            f"per image and condition + degradations {deg * 1e3:.0f} ms per image for all conditions"
        )
    print_warnings(report.warnings, console)
    n_warn = len(report.warnings)
    console.print("[green]ok[/]" if report.ok else f"{n_warn} warning{'' if n_warn == 1 else 's'}")
