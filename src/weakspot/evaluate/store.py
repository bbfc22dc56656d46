"""The results store of a run: Parquet files plus a JSON manifest, written atomically.

Layout of ``RUN_DIR`` (schema version 2)::

    manifest.json            config, versions, seed, data/weights hashes, skipped inputs
    classes.json             ["tench", "goldfish", …]   class names, index = class id
    images.parquet           image_index:int32  image_id:str  path:str  label:int32 (-1 = unlabelled)
                             height:int32  width:int32
    conditions.parquet       condition_id:str  degradation:str  family:str  params_json:str
                             severity:int32 (null)  axis:str (null)  axis_value:float64 (null)
                             axis_unit:str (null)
    predictions/<condition_id>/shard-00000.parquet
                             image_index:int32  top1:int32  top1_prob:float32
                             top5:list<int32>  top5_prob:list<float32>
                             label:int32  p_label:float32 (NaN if unlabelled)
                             clean_top1:int32  p_clean_top1:float32
                             correct1:bool  correct5:bool  (false if unlabelled)
    probs/<condition_id>/shard-00000.npy   optional float32 (rows, K), same row order
                             (float16 in schema version 1 runs; still read)
    checksums/<condition_id>/shard-00000.json
                             {"rows": n, "parquet": {"bytes", "sha256"}, "probs": {…} | null}

A *unit* of work is one ``(condition_id, shard)``; its Parquet file appears
only when the unit is complete (write to a temporary name, fsync, rename), so a
run killed at any moment leaves whole units or nothing, and redoing a unit
replaces its file: no duplicate rows. The clean condition has id ``"clean"``.

Each unit's row count and the size and SHA-256 of its files are recorded in its
checksum file, written after the probabilities and before the Parquet file. A
unit counts as done only when its files match that record (:meth:`ResultsStore.check_unit`):
a truncated, emptied or altered file is *damaged*. ``weakspot run`` recomputes
damaged units; every read (:meth:`~ResultsStore.predictions`, :meth:`~ResultsStore.probs`,
:meth:`~ResultsStore.sql`) raises a :class:`~weakspot.errors.DataError` naming the
file and the repairing command. Units of schema-1 runs (no checksum file) are
checked by reading their Parquet footer and ``.npy`` header.

Files are created with the permissions of the process umask (``0644`` under ``022``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from weakspot.errors import DataError

SCHEMA_VERSION = (
    3  # 2: float32 probabilities, per-unit checksum files; 3: whole-batch keyed randomness (new draws)
)
CLEAN = "clean"
_ID_RE = re.compile(r"^[A-Za-z0-9._=,+-]+$")

IMAGES_SCHEMA = pa.schema(
    [
        ("image_index", pa.int32()),
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("label", pa.int32()),
        ("height", pa.int32()),
        ("width", pa.int32()),
    ]
)
CONDITIONS_SCHEMA = pa.schema(
    [
        ("condition_id", pa.string()),
        ("degradation", pa.string()),
        ("family", pa.string()),
        ("params_json", pa.string()),
        ("severity", pa.int32()),
        ("axis", pa.string()),
        ("axis_value", pa.float64()),
        ("axis_unit", pa.string()),
    ]
)
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("image_index", pa.int32()),
        ("top1", pa.int32()),
        ("top1_prob", pa.float32()),
        ("top5", pa.list_(pa.int32())),
        ("top5_prob", pa.list_(pa.float32())),
        ("label", pa.int32()),
        ("p_label", pa.float32()),
        ("clean_top1", pa.int32()),
        ("p_clean_top1", pa.float32()),
        ("correct1", pa.bool_()),
        ("correct5", pa.bool_()),
    ]
)

__all__ = [
    "CLEAN",
    "SCHEMA_VERSION",
    "IMAGES_SCHEMA",
    "CONDITIONS_SCHEMA",
    "PREDICTIONS_SCHEMA",
    "ResultsStore",
    "atomic_write_bytes",
    "atomic_write_json",
    "check_condition_id",
    "file_sha256",
    "repair_hint",
]


def check_condition_id(condition_id: str) -> str:
    """Condition ids are file names: letters, digits and ``. _ = , + -`` only."""
    if not _ID_RE.match(condition_id) or condition_id in (".", ".."):
        raise ValueError(f"condition id {condition_id!r} must match {_ID_RE.pattern}")
    return condition_id


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The file gets the permissions an ordinary ``open(path, "w")`` would (``0666 & ~umask``;
    ``mkstemp`` alone would leave ``0600``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=False, default=str).encode())


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def repair_hint(root: Path) -> str:
    """The command that recomputes the damaged units of the run in ``root``."""
    return f"run 'weakspot run CONFIG --out {root}' with the run's config to recompute it"


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


class ResultsStore:
    """Read and write one run directory (see the module docstring for the layout)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        # (condition_id, shard) -> the (size, mtime_ns) of its files when last found intact
        self._checked: dict[tuple[str, int, bool], tuple] = {}

    # ------------------------------------------------------------------ paths
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def unit_path(self, condition_id: str, shard: int) -> Path:
        return self.root / "predictions" / check_condition_id(condition_id) / f"shard-{shard:05d}.parquet"

    def probs_path(self, condition_id: str, shard: int) -> Path:
        return self.root / "probs" / check_condition_id(condition_id) / f"shard-{shard:05d}.npy"

    def checksum_path(self, condition_id: str, shard: int) -> Path:
        return self.root / "checksums" / check_condition_id(condition_id) / f"shard-{shard:05d}.json"

    # ----------------------------------------------------------------- writing
    def write_manifest(self, manifest: dict[str, Any]) -> None:
        manifest = {"schema_version": SCHEMA_VERSION, **manifest}
        atomic_write_json(self.manifest_path, manifest)

    def write_classes(self, names: list[str]) -> None:
        atomic_write_json(self.root / "classes.json", list(map(str, names)))

    def write_images(self, rows: dict[str, list] | pa.Table) -> None:
        table = rows if isinstance(rows, pa.Table) else pa.table(rows, schema=IMAGES_SCHEMA)
        atomic_write_bytes(self.root / "images.parquet", _table_bytes(table.cast(IMAGES_SCHEMA)))

    def write_conditions(self, rows: dict[str, list] | pa.Table) -> None:
        table = rows if isinstance(rows, pa.Table) else pa.table(rows, schema=CONDITIONS_SCHEMA)
        for cid in table.column("condition_id").to_pylist():
            check_condition_id(cid)
        atomic_write_bytes(self.root / "conditions.parquet", _table_bytes(table.cast(CONDITIONS_SCHEMA)))

    def write_unit(
        self,
        condition_id: str,
        shard: int,
        rows: dict[str, Any] | pa.Table,
        probs: np.ndarray | None = None,
    ) -> None:
        """Write one finished unit: ``probs`` ``(rows, K)`` (float32) first, then the checksum
        record, the Parquet file last (its presence marks the unit done)."""
        table = rows if isinstance(rows, pa.Table) else pa.table(rows, schema=PREDICTIONS_SCHEMA)
        table = table.cast(PREDICTIONS_SCHEMA)
        record: dict[str, Any] = {"rows": table.num_rows, "probs": None}
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float32)
            if probs.shape[0] != table.num_rows:
                raise ValueError(f"probs has {probs.shape[0]} rows, predictions {table.num_rows}")
            import io

            buf = io.BytesIO()
            np.save(buf, probs, allow_pickle=False)
            data = buf.getvalue()
            record["probs"] = {
                "bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "shape": list(probs.shape),
                "dtype": "float32",
            }
            atomic_write_bytes(self.probs_path(condition_id, shard), data)
        else:
            self.probs_path(condition_id, shard).unlink(missing_ok=True)
        data = _table_bytes(table)
        record["parquet"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        atomic_write_json(self.checksum_path(condition_id, shard), record)
        atomic_write_bytes(self.unit_path(condition_id, shard), data)
        self._checked.pop((condition_id, shard, True), None)
        self._checked.pop((condition_id, shard, False), None)

    # ----------------------------------------------------------------- reading
    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def _require(self, path: Path) -> Path:
        if not path.exists():
            raise DataError(
                f"{self.root} is not a complete weakspot run: {path.name} is missing; "
                "run 'weakspot run CONFIG --out DIR' first"
            )
        return path

    def _damaged(self, path: Path, exc: BaseException) -> DataError:
        return DataError(
            f"{path} is damaged ({type(exc).__name__}: {str(exc)[:120]}); "
            f"delete {self.root} and run 'weakspot run CONFIG --out {self.root}' again"
        )

    def _json(self, path: Path):
        try:
            return json.loads(self._require(path).read_text())
        except ValueError as exc:
            raise self._damaged(path, exc) from None

    def _parquet(self, path: Path):
        try:
            return pq.read_table(self._require(path)).to_pandas()
        except (pa.ArrowException, OSError) as exc:
            if isinstance(exc, FileNotFoundError):
                raise
            raise self._damaged(path, exc) from None

    def manifest(self) -> dict[str, Any]:
        return self._json(self.manifest_path)

    def classes(self) -> list[str]:
        return self._json(self.root / "classes.json")

    def images(self):
        """Images as a pandas DataFrame (one row per image_index)."""
        return self._parquet(self.root / "images.parquet")

    def conditions(self):
        """Conditions as a pandas DataFrame, including ``clean``."""
        return self._parquet(self.root / "conditions.parquet")

    def done_units(self) -> set[tuple[str, int]]:
        """``(condition_id, shard)`` of every finished unit."""
        out = set()
        base = self.root / "predictions"
        if base.is_dir():
            for p in base.glob("*/shard-*.parquet"):
                out.add((p.parent.name, int(p.stem.split("-")[1])))
        return out

    def has_unit(self, condition_id: str, shard: int) -> bool:
        return self.unit_path(condition_id, shard).is_file()

    # --------------------------------------------------------------- integrity
    def _stamp(self, condition_id: str, shard: int) -> tuple[tuple[int, int] | None, ...]:
        out: list[tuple[int, int] | None] = []
        for p in (
            self.unit_path(condition_id, shard),
            self.probs_path(condition_id, shard),
            self.checksum_path(condition_id, shard),
        ):
            try:
                st = p.stat()
                out.append((st.st_size, st.st_mtime_ns))
            except OSError:
                out.append(None)
        return tuple(out)

    def check_unit(self, condition_id: str, shard: int, probs: bool = True) -> str | None:
        """Why the finished unit ``(condition_id, shard)`` cannot be trusted, or ``None`` if its
        files match their checksum record (size, SHA-256). ``probs=False`` checks the Parquet
        file only. Hashes are computed once per file version (size and modification time)
        and store object."""
        stamp = self._stamp(condition_id, shard)
        key = (condition_id, shard, probs)
        if self._checked.get(key) == stamp or (
            not probs and self._checked.get((condition_id, shard, True)) == stamp
        ):
            return None
        reason = self._check_unit(condition_id, shard, probs)
        if reason is None:
            self._checked[key] = stamp
        return reason

    def _check_unit(self, condition_id: str, shard: int, with_probs: bool) -> str | None:
        path = self.unit_path(condition_id, shard)
        ppath = self.probs_path(condition_id, shard)
        size = path.stat().st_size
        if size == 0:
            return "empty parquet"
        cpath = self.checksum_path(condition_id, shard)
        if not cpath.is_file():  # a schema-1 unit: read the footer and the .npy header
            try:
                rows = pq.read_metadata(path).num_rows
            except Exception:  # any pyarrow error means the file is unusable
                return "unreadable parquet (no checksum record)"
            if with_probs and ppath.is_file():
                try:
                    shape = np.load(ppath, mmap_mode="r", allow_pickle=False).shape
                except Exception:
                    return "unreadable probabilities (.npy)"
                if shape[0] != rows:
                    return f"probabilities have {shape[0]} rows, predictions {rows}"
            return None
        try:
            rec = json.loads(cpath.read_text())
            want = rec["parquet"]
        except (OSError, ValueError, KeyError, TypeError):
            return "unreadable checksum record"
        if size < want["bytes"]:
            return "truncated parquet"
        if size != want["bytes"] or file_sha256(path) != want["sha256"]:
            return "parquet does not match its checksum"
        if with_probs and rec.get("probs"):
            want = rec["probs"]
            if not ppath.is_file():
                return "probabilities (.npy) missing"
            psize = ppath.stat().st_size
            if psize == 0:
                return "empty probabilities (.npy)"
            if psize < want["bytes"]:
                return "truncated probabilities (.npy)"
            if psize != want["bytes"] or file_sha256(ppath) != want["sha256"]:
                return "probabilities (.npy) do not match their checksum"
        return None

    def damaged_units(self) -> dict[tuple[str, int], str]:
        """Every finished unit whose files are damaged, with the reason."""
        out = {}
        for cid, shard in sorted(self.done_units()):
            reason = self.check_unit(cid, shard)
            if reason:
                out[(cid, shard)] = reason
        return out

    def verify(self, condition_ids: Iterable[str] | None = None, probs: bool = False) -> None:
        """Raise :class:`DataError` naming the first damaged unit file (of ``condition_ids``,
        default all; ``probs``: their probability files too) and the command that recomputes it."""
        wanted = None if condition_ids is None else set(condition_ids)
        for cid, shard in sorted(self.done_units()):
            if wanted is not None and cid not in wanted:
                continue
            reason = self.check_unit(cid, shard, probs)
            if reason:
                path = (
                    self.probs_path(cid, shard) if "probabilities" in reason else self.unit_path(cid, shard)
                )
                raise DataError(f"{path} is damaged ({reason}); {repair_hint(self.root)}")

    def predictions(self, condition_ids: Iterable[str] | None = None):
        """All finished predictions as one pandas DataFrame with a ``condition_id`` column,
        sorted by (condition_id, image_index)."""
        import pandas as pd

        base = self._require(self.root / "predictions")
        wanted = None if condition_ids is None else set(condition_ids)
        self.verify(wanted)
        frames = []
        for cdir in sorted(p for p in base.iterdir() if p.is_dir()):
            if wanted is not None and cdir.name not in wanted:
                continue
            for f in sorted(cdir.glob("shard-*.parquet")):
                df = pq.read_table(f).to_pandas()
                df.insert(0, "condition_id", cdir.name)
                frames.append(df)
        if not frames:
            empty = PREDICTIONS_SCHEMA.empty_table().to_pandas()
            empty.insert(0, "condition_id", pd.Series(dtype=str))
            return empty
        df = pd.concat(frames, ignore_index=True)
        return df.sort_values(["condition_id", "image_index"], kind="stable").reset_index(drop=True)

    def has_probs(self, condition_id: str = CLEAN) -> bool:
        d = self.root / "probs" / check_condition_id(condition_id)
        return d.is_dir() and any(d.glob("shard-*.npy"))

    def probs(self, condition_id: str) -> np.ndarray:
        """Full probability matrix ``(N_images, K)`` float32 for one condition; rows of
        images not (yet) evaluated are NaN. Raises :class:`DataError` if not stored."""
        if not self.has_probs(condition_id):
            raise DataError(
                f"full probabilities were not stored for condition '{condition_id}' in {self.root}; "
                "set 'store_probs: true' in the run config"
            )
        self.verify([condition_id], probs=True)
        n = len(self.images())
        k = len(self.classes())
        out = np.full((n, k), np.nan, dtype=np.float32)
        pdir = self.root / "predictions" / condition_id
        for f in sorted((self.root / "probs" / condition_id).glob("shard-*.npy")):
            if not (pdir / f"{f.stem}.parquet").is_file():  # unit killed between its two writes: not done
                continue
            rows = pq.read_table(pdir / f"{f.stem}.parquet", columns=["image_index"]).column(0).to_numpy()
            out[rows] = np.load(f, allow_pickle=False).astype(np.float32)
        return out

    def sql(self, query: str):
        """Run DuckDB SQL over the store; tables ``predictions``, ``images``, ``conditions``.

        Example: ``store.sql("select condition_id, avg(correct1::int) from predictions group by 1")``
        returns a pandas DataFrame.
        """
        import duckdb

        self.verify()
        con = duckdb.connect()
        pred_glob = str(self.root / "predictions" / "*" / "shard-*.parquet")
        con.execute(
            "create view predictions as select regexp_extract(filename, '.*/predictions/([^/]+)/', 1) "
            f"as condition_id, * exclude (filename) from read_parquet('{pred_glob}', filename=true)"
        )
        con.execute(f"create view images as select * from read_parquet('{self.root / 'images.parquet'}')")
        con.execute(
            f"create view conditions as select * from read_parquet('{self.root / 'conditions.parquet'}')"
        )
        return con.execute(query).df()
