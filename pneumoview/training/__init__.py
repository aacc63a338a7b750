"""Training pipelines for PneumoView's three model families (classifier, detector, segmenter).

``pneumoview train classifier|detector|segmenter|ensemble`` (:mod:`pneumoview.training.cli`) reads an RSNA-layout or
ImageFolder-layout dataset (:mod:`~pneumoview.training.datasets`), splits it by patient
(:mod:`~pneumoview.training.splits`), trains with a recipe (:mod:`~pneumoview.training.recipes`) in the shared loop
(:mod:`~pneumoview.training.loop`), and writes shipped weights plus a manifest entry
(:mod:`~pneumoview.training.checkpoint`). Research use only — not for diagnosis.

Importing this package is cheap: torch is imported only by the modules that train.
"""
