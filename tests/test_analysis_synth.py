"""A synthetic but fully consistent results store, written through ResultsStore's writers.

A latent model: each image has class logits; a degradation of strength ``s``
lowers its true-class logit by ``sens[class] * s`` and raises the logit of a
confuser class ``(class + 1) % K`` by ``0.8 * sens[class] * s``. Probabilities
are the softmax, and every stored column (top-1, top-5, p_label, p_clean_top1,
correct1/5) is derived from them exactly as the evaluation engine defines them,
so tests can compare the analyses with independent computations on ``raw``.
"""

from __future__ import annotations

import json

import numpy as np

from weakspot.evaluate.store import ResultsStore

EVIL = "<script>alert(1)</script>"


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _rows(probs, labels, clean_probs):
    order = np.argsort(-probs, axis=1, kind="stable")
    top1 = order[:, 0]
    top5 = order[:, :5]
    n = len(labels)
    idx = np.arange(n)
    clean_top1 = np.argmax(clean_probs, axis=1)
    lab = labels >= 0
    p_label = np.where(lab, probs[idx, np.maximum(labels, 0)], np.nan)
    return {
        "image_index": idx.astype(np.int32).tolist(),
        "top1": top1.tolist(),
        "top1_prob": probs[idx, top1].tolist(),
        "top5": top5.tolist(),
        "top5_prob": np.take_along_axis(probs, top5, 1).tolist(),
        "label": labels.tolist(),
        "p_label": p_label.tolist(),
        "clean_top1": clean_top1.tolist(),
        "p_clean_top1": probs[idx, clean_top1].tolist(),
        "correct1": (lab & (top1 == labels)).tolist(),
        "correct5": (lab & (top5 == labels[:, None]).any(1)).tolist(),
    }


def make_store(
    root,
    *,
    n_classes=6,
    per_class=10,
    store_probs=True,
    labelled=True,
    seed=0,
    class_names=None,
    sens=None,
    imagenet_c=False,
    shards=2,
    image_ids=None,
    manifest=None,
    physical=None,
):
    """Write a run to ``root``; return ``(ResultsStore, raw)`` where ``raw`` holds
    ``labels``, ``probs`` {condition_id: (N, K)} and ``conditions`` (list of dicts)."""
    rng = np.random.default_rng(seed)
    k = n_classes
    n = k * per_class
    labels = np.repeat(np.arange(k), per_class).astype(np.int32)
    if sens is None:
        sens = np.linspace(0.3, 3.0, k)
    sens = np.asarray(sens, float)
    base = rng.normal(0, 1, (n, k))
    base[np.arange(n), labels] += 4.0
    conf = (labels + 1) % k
    names = list(class_names) if class_names else [f"class_{i}" for i in range(k)]
    if len(names) < k:
        names += [f"c{i}" for i in range(len(names), k)]
    conds = [
        {
            "condition_id": "clean",
            "degradation": "clean",
            "family": "clean",
            "params_json": "{}",
            "severity": None,
            "axis": None,
            "axis_value": None,
            "axis_unit": None,
            "s": 0.0,
        }
    ]
    # physical grid: (degradation, family, axis, unit, [(value, strength), ...])
    physical = physical or ("gaussian_blur", "blur", "sigma_px", "px", [(v, v) for v in (0.5, 1.0, 2.0, 3.0)])
    deg_name, fam, axis, unit, levels = physical
    for value, strength in levels:
        conds.append(
            {
                "condition_id": f"{deg_name}.{axis}={value}",
                "degradation": deg_name,
                "family": fam,
                "params_json": json.dumps({axis: value}),
                "severity": None,
                "axis": axis,
                "axis_value": value,
                "axis_unit": unit,
                "s": strength,
            }
        )
    for sev in range(1, 6):
        name = "imagenet_c/defocus_blur" if imagenet_c else "contrast_drop"
        conds.append(
            {
                "condition_id": f"{name.replace('/', '.')}.sev={sev}",
                "degradation": name,
                "family": "imagenet_c" if imagenet_c else "digital",
                "params_json": json.dumps({"severity": sev}),
                "severity": sev,
                "axis": None,
                "axis_value": None,
                "axis_unit": None,
                "s": 0.6 * sev,
            }
        )
    img_labels = labels if labelled else np.full(n, -1, np.int32)
    store = ResultsStore(root)
    store.write_classes(names)
    ids = list(image_ids)[:n] if image_ids is not None else [f"img{i:04d}" for i in range(n)]
    assert len(ids) == n, "need one image id per image"
    store.write_images(
        {
            "image_index": list(range(n)),
            "image_id": ids,
            "path": [f"/data/{names[lab]}/{i}.png" for i, lab in enumerate(labels)],
            "label": img_labels.tolist(),
            "height": [32] * n,
            "width": [32] * n,
        }
    )
    store.write_conditions(
        {
            c: [d[c] for d in conds]
            for c in (
                "condition_id",
                "degradation",
                "family",
                "params_json",
                "severity",
                "axis",
                "axis_value",
                "axis_unit",
            )
        }
    )
    store.write_manifest(
        manifest or {"seed": seed, "model": {"name": "synthetic"}, "data": {"name": "synthetic"}}
    )
    raw = {
        "labels": labels,
        "img_labels": img_labels,
        "probs": {},
        "conditions": conds,
        "sens": sens,
        "names": names,
    }
    clean_probs = None
    for c in conds:
        logits = base.copy()
        s = c["s"]
        logits[np.arange(n), labels] -= sens[labels] * s
        logits[np.arange(n), conf] += 0.8 * sens[labels] * s
        probs = _softmax(logits).astype(np.float16).astype(np.float32)  # what the store keeps
        if clean_probs is None:
            clean_probs = probs
        raw["probs"][c["condition_id"]] = probs
        rows = _rows(probs, img_labels, clean_probs)
        cut = np.array_split(np.arange(n), shards)
        for si, part in enumerate(cut):
            sub = {key: [v[i] for i in part] for key, v in rows.items()}
            store.write_unit(c["condition_id"], si, sub, probs=probs[part] if store_probs else None)
    return store, raw


def test_synthetic_store_reads_back(tmp_path):
    store, raw = make_store(tmp_path / "run", class_names=["a", EVIL])
    df = store.predictions()
    assert len(df) == 60 * len(raw["conditions"])
    np.testing.assert_allclose(store.probs("clean"), raw["probs"]["clean"], atol=1e-3)
    assert store.classes()[1] == EVIL
