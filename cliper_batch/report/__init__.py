"""The offline HTML report of an annotation output: ``python -m cliper_batch.report OUTPUT --out report.html``.

Modules, one job each: ``data`` (lazy Polars queries over the output and the
run records), ``charts`` (Altair specs rendered to inline SVG by vl-convert),
``thumbs`` (face thumbnails decoded with PyAV), ``html`` (the Jinja2 page),
``palette`` (class colours, shared with ``cliper_batch.report.overlay``), ``build``
(puts them together: :func:`cliper_batch.report.build.build_report`),
``__main__`` (the command line). Nothing is imported here, so the overlay can
use ``data`` and ``palette`` without loading the charting libraries.
"""
