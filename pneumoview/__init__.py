"""PneumoView: a chest X-ray viewer with pneumonia models. Research use only, not for diagnosis.

Importing this package is cheap: it pulls in neither torch nor Qt.
"""

__version__ = "0.1.0"
RESEARCH_USE_NOTICE = "Research use only — not for diagnosis"

__all__ = ["RESEARCH_USE_NOTICE", "__version__"]
