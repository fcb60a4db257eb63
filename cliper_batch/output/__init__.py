"""The output folder: committing parts, the current/history view, the lock, crash recovery, run records.

Layout under ``<output>`` (any fsspec URL)::

    timelines/<run_id>/part-NNNNN[.gK].parquet          current timeline rows
    videos/<run_id>/part-NNNNN[.gK].parquet             current manifest rows (one per video, model, config)
    history/{timelines,videos}/<run_id>/part-...        superseded rows (moved here, never deleted)
    runs/<run_id>.json                                  the run record, written last
    _staging/<token>/...                                files being written (never read)
    _lock.json                                          held by the run or compaction writing the folder
    _lock.json.takeover-<hash>                          for a moment: the claim of the driver taking over a dead lock

Modules: :mod:`.layout` (names, atomic commit of one file), :mod:`.regroup`
(scored rows -> complete per-video rows), :mod:`.writer` (parts of a run),
:mod:`.current` (moving superseded rows to ``history/``), :mod:`.lock`,
:mod:`.recovery`, :mod:`.run_record`.
"""
