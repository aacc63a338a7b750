"""The desktop viewer (PySide6 + pyqtgraph). The only package that imports Qt.

Importing this package itself is cheap and Qt-free; ``viewmodel`` and ``session`` are Qt-free too.
Start the viewer with :func:`pneumoview.gui.app.main`.
"""
