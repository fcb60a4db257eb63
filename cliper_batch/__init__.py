"""cliper-batch: facial-expression timelines for large video corpora.

Data flow (one module per step):

    listing  ->  probe / sampling  ->  decode  ->  crops  ->  model (score)  ->  writer
    (URIs)       (segment plan)        (frames)    (model input)  (CLIPER)         (Parquet)

``pipeline`` wires these steps into a Ray Data streaming job; ``query``
reads the Parquet output back with Polars.
"""

__version__ = "0.1.0"
