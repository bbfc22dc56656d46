"""Copy foolbox's 20 ImageNet photos into the standard ImageNet layout, <out>/<WordNet ID>/<file>,
and into class-name folders, <out>-names/<class name>/<file> (the label is in the file name,
imagenet_XX_LABEL.jpg). Then both give clean top-1 0.85 with the bundled EfficientNet-Lite0:

    python examples/make_wordnet_folders.py /tmp/imagenet-wn
    weakspot check examples/foolbox_wordnet.yaml
    weakspot run examples/foolbox_wordnet.yaml --out runs/foolbox-wn
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

from weakspot.data.labels import imagenet_wordnet_ids
from weakspot.models import imagenet_class_names


def main(out: str = "/tmp/imagenet-wn") -> None:
    src = Path(list(importlib.util.find_spec("foolbox").submodule_search_locations)[0]) / "data"
    wnids, names = imagenet_wordnet_ids(), imagenet_class_names()
    pat = re.compile(r"^imagenet_\d+_(\d+)\.jpg$")
    n = 0
    for f in sorted(src.iterdir()):
        m = pat.match(f.name)
        if not m:
            continue
        y = int(m.group(1))
        for root, folder in ((Path(out), wnids[y]), (Path(out + "-names"), names[y].replace("/", "_"))):
            (root / folder).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / folder / f.name)
        n += 1
    print(f"{n} photos -> {out}/<WordNet ID>/ and {out}-names/<class name>/")


if __name__ == "__main__":
    main(*sys.argv[1:2])
