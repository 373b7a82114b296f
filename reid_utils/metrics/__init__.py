"""Pure metrics and ranking: arrays in, numbers out, no models and no files.

* :mod:`.scores`: :func:`evaluate_reid` (CMC, mAP, mINP under the Market and the course
  protocols), :func:`attribute_metrics` (accuracy per group, label-based mA, instance F1);
* :mod:`.retrieval`: distances, ranking, thresholds, junk flags, attribute queries;
* :mod:`.rerank`: k-reciprocal re-ranking (Zhong et al. 2017), chunked and sparse;
* :mod:`.reference`: slow, obviously correct references the tests and benchmarks compare with.
"""
from .rerank import re_ranking, rerank_distance
from .retrieval import compute_distance, normalize, parse_attribute_query, rank_gallery
from .scores import PROTOCOLS, attribute_metrics, evaluate_reid, majority_baseline, random_ranking_map

__all__ = [
    "PROTOCOLS",
    "attribute_metrics",
    "compute_distance",
    "evaluate_reid",
    "majority_baseline",
    "normalize",
    "parse_attribute_query",
    "rank_gallery",
    "random_ranking_map",
    "re_ranking",
    "rerank_distance",
]
