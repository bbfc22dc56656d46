"""Saliency that keeps its raw strength, a faithfulness check, and map comparisons.

Quick use::

    from weakspot.models import bundled
    from weakspot.explain import grad_cam, occlusion, deletion_insertion, random_maps

    model = bundled("efficientnet_lite0")
    sal = grad_cam(model, images)  # sal.maps (B, 224, 224), raw logit units
    deg = grad_cam(model, degraded, targets=sal.targets)  # same class → comparable maps
    f = deletion_insertion(model, images, sal.maps, sal.targets)  # f.deletion_auc, f.insertion_auc
"""

from weakspot.explain._net import as_net, find_target_layer, model_view
from weakspot.explain.compare import (
    centroid,
    centroid_shift,
    cosine_distance,
    pearson,
    spearman,
    topk_overlap,
)
from weakspot.explain.faithfulness import Faithfulness, deletion_insertion, random_maps
from weakspot.explain.saliency import Saliency, grad_cam, normalize_maps, occlusion

__all__ = [
    "Saliency",
    "grad_cam",
    "occlusion",
    "normalize_maps",
    "model_view",
    "as_net",
    "find_target_layer",
    "Faithfulness",
    "deletion_insertion",
    "random_maps",
    "centroid",
    "centroid_shift",
    "cosine_distance",
    "topk_overlap",
    "pearson",
    "spearman",
]
