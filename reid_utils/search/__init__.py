"""Find a person in any folder of images: by photo, by description, or both.

::

    from reid_utils.search import search
    result = search("runs/apr/best.pt", gallery="my_photos/", query=["me_1.jpg", "me_2.jpg"],
                    where="upcolour=red,backpack=yes", top_k=10, out_dir="search_out")
    result["table"]                  # the rows of search_out/results.csv
    IPython.display.HTML(result["html"])  # the page of search_out/results.html, inline

The command line is ``python -m reid_utils search --checkpoint CK --gallery DIR [--query IMG ...]
[--where "upcolour=red"] [--top-k K] [--out OUT]``.

============  =====================================================================
module        what it holds
============  =====================================================================
``core``      :func:`search`, :func:`query_images`, :func:`results_table`
``gallery``   :func:`list_images`, :func:`extract_images`, the gallery feature cache
``ranking``   :func:`parse_where`, :func:`rank`: how each kind of search ranks
``report``    ``results.csv`` and the self-contained ``results.html``
============  =====================================================================
"""
from .core import query_images, results_table, search
from .gallery import extract_images, gallery_features, list_images
from .ranking import description_probability, parse_where, predicted_match, query_embedding, rank
from .report import results_html, write_results

__all__ = [
    "description_probability",
    "extract_images",
    "gallery_features",
    "list_images",
    "parse_where",
    "predicted_match",
    "query_embedding",
    "query_images",
    "rank",
    "results_html",
    "results_table",
    "search",
    "write_results",
]
