"""nbval collection for notebooks/: every notebook runs, the assignments' student versions included (their
checks report an unfinished exercise in one line and never raise, so Run All reaches the end) and their
instructor sources in assignments/source/ (the solutions: every check passes). (Checkpoint folders such as
.ipynb_checkpoints are skipped by pytest's default ``norecursedirs``.)"""

collect_ignore_glob: list[str] = []
