"""Model running: manifest, weights, builders, preprocessing and the inference engine.

Importing this package is cheap; torch is imported by the submodules that need it.
"""
