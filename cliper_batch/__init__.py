"""cliper-batch: facial-expression timelines for large video corpora.

Data flow (one module per step; a module imports only those before it):

    listing  ->  probe / sampling  ->  decode  ->  crops  ->  faces  ->  video_annotation  ->  model  ->  writer
    (URIs)       (segment plan)       (frames)   (model     (detect,    (one video, start      (CLIPER    (Parquet)
                                                  input)     track)      to end)               scores)

``types`` and ``rows`` are the contracts between steps. ``pipeline`` runs
``video_annotation`` and ``model`` in Ray actors (staged: decode actors ->
scoring actors; fused: one actor per GPU) and drives the writer; ``query``
reads the Parquet output back with Polars.
"""

__version__ = "0.1.0"
