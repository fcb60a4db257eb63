"""The job's shell: the ``cliper`` command and its annotate command line, the checks run before Ray starts (``preflight``) and the job's own Ray runtime (``ray_runtime``)."""
