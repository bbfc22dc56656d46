"""The results store of a run: Parquet files plus a JSON manifest, written atomically.

Layout of ``RUN_DIR`` (schema version 1)::

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
    probs/<condition_id>/shard-00000.npy   optional float16 (rows, K), same row order

A *unit* of work is one ``(condition_id, shard)``; its Parquet file appears
only when the unit is complete (write to a temporary name, fsync, rename), so a
run killed at any moment leaves whole units or nothing, and redoing a unit
replaces its file: no duplicate rows. The clean condition has id ``"clean"``.
"""

from __future__ import annotations

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

SCHEMA_VERSION = 1
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
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


def _table_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


class ResultsStore:
    """Read and write one run directory (see the module docstring for the layout)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------------ paths
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    def unit_path(self, condition_id: str, shard: int) -> Path:
        return self.root / "predictions" / check_condition_id(condition_id) / f"shard-{shard:05d}.parquet"

    def probs_path(self, condition_id: str, shard: int) -> Path:
        return self.root / "probs" / check_condition_id(condition_id) / f"shard-{shard:05d}.npy"

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
        """Write one finished unit. ``probs`` (rows, K) go first, the Parquet file last."""
        table = rows if isinstance(rows, pa.Table) else pa.table(rows, schema=PREDICTIONS_SCHEMA)
        table = table.cast(PREDICTIONS_SCHEMA)
        if probs is not None:
            probs = np.asarray(probs, dtype=np.float16)
            if probs.shape[0] != table.num_rows:
                raise ValueError(f"probs has {probs.shape[0]} rows, predictions {table.num_rows}")
            import io

            buf = io.BytesIO()
            np.save(buf, probs, allow_pickle=False)
            atomic_write_bytes(self.probs_path(condition_id, shard), buf.getvalue())
        atomic_write_bytes(self.unit_path(condition_id, shard), _table_bytes(table))

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

    def manifest(self) -> dict[str, Any]:
        return json.loads(self._require(self.manifest_path).read_text())

    def classes(self) -> list[str]:
        return json.loads(self._require(self.root / "classes.json").read_text())

    def images(self):
        """Images as a pandas DataFrame (one row per image_index)."""
        return pq.read_table(self._require(self.root / "images.parquet")).to_pandas()

    def conditions(self):
        """Conditions as a pandas DataFrame, including ``clean``."""
        return pq.read_table(self._require(self.root / "conditions.parquet")).to_pandas()

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

    def predictions(self, condition_ids: Iterable[str] | None = None):
        """All finished predictions as one pandas DataFrame with a ``condition_id`` column,
        sorted by (condition_id, image_index)."""
        import pandas as pd

        base = self._require(self.root / "predictions")
        wanted = None if condition_ids is None else set(condition_ids)
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
