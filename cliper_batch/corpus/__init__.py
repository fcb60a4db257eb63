"""The corpus: what to annotate (listing a directory, glob or manifest) and which of it this run does (incremental runs, the retry policy)."""
