"""The Ray Data streaming job: decode stage -> score stage -> driver-side writer.

``run.annotate`` is the entry point; ``rows`` is the row contract between stages.
"""
