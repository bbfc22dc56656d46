import numpy as np
import pytest

from weakspot.errors import DataError
from weakspot.evaluate.store import ResultsStore


def _rows(idx, top1):
    n = len(idx)
    return {
        "image_index": idx,
        "top1": top1,
        "top1_prob": [0.5] * n,
        "top5": [[t] for t in top1],
        "top5_prob": [[0.5]] * n,
        "label": [0] * n,
        "p_label": [0.5] * n,
        "clean_top1": [0] * n,
        "p_clean_top1": [0.5] * n,
        "correct1": [t == 0 for t in top1],
        "correct5": [True] * n,
    }


def _store(tmp_path):
    s = ResultsStore(tmp_path / "run")
    s.write_classes(["a", "b"])
    s.write_images(
        {
            "image_index": [0, 1, 2],
            "image_id": list("xyz"),
            "path": list("xyz"),
            "label": [0, 0, 1],
            "height": [8] * 3,
            "width": [8] * 3,
        }
    )
    s.write_conditions(
        {
            "condition_id": ["clean"],
            "degradation": ["clean"],
            "family": ["clean"],
            "params_json": ["{}"],
            "severity": [None],
            "axis": [None],
            "axis_value": [None],
            "axis_unit": [None],
        }
    )
    s.write_manifest({"seed": 0})
    return s


def test_units_are_replaced_not_duplicated(tmp_path):
    s = _store(tmp_path)
    s.write_unit("clean", 0, _rows([0, 1], [0, 1]), probs=np.array([[0.9, 0.1], [0.2, 0.8]]))
    s.write_unit("clean", 0, _rows([0, 1], [0, 1]), probs=np.array([[0.9, 0.1], [0.2, 0.8]]))
    s.write_unit("clean", 1, _rows([2], [1]), probs=np.array([[0.3, 0.7]]))
    df = s.predictions()
    assert list(df.image_index) == [0, 1, 2]
    assert s.done_units() == {("clean", 0), ("clean", 1)}
    p = s.probs("clean")
    assert p.shape == (3, 2) and abs(p[2, 1] - 0.7) < 1e-3
    assert float(s.sql("select count(*) n from predictions").n[0]) == 3
    assert not list((tmp_path / "run").rglob("*.tmp"))


def test_bad_condition_id_and_missing_run(tmp_path):
    s = _store(tmp_path)
    with pytest.raises(ValueError):
        s.write_unit("../evil", 0, _rows([0], [0]))
    with pytest.raises(DataError, match="not a complete weakspot run"):
        ResultsStore(tmp_path / "nothing").images()
    with pytest.raises(DataError, match="store_probs"):
        s.probs("clean")
