"""Figures (matplotlib ``Figure`` objects, no pyplot state): training curves (:mod:`.history`),
dataset overviews (:mod:`.dataset`), results (:mod:`.figures`) and activation maps
(:mod:`.activation`)."""
from .activation import activation_maps, plot_activation_maps
from .dataset import plot_attribute_examples, plot_dataset_overview
from .figures import (
    plot_attribute_accuracy,
    plot_attribute_boxes,
    plot_cmc,
    plot_confusion_matrices,
    plot_images,
    plot_retrieval_grid,
    plot_tsne,
    save_figure,
)
from .history import plot_history

__all__ = [
    "activation_maps",
    "plot_activation_maps",
    "plot_attribute_accuracy",
    "plot_attribute_boxes",
    "plot_attribute_examples",
    "plot_cmc",
    "plot_confusion_matrices",
    "plot_dataset_overview",
    "plot_history",
    "plot_images",
    "plot_retrieval_grid",
    "plot_tsne",
    "save_figure",
]
