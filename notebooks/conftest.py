"""nbval collection for notebooks/: the student versions of the assignments are not run (their stubs raise
NotImplementedError by design); their reference solutions in assignments/solutions/ are. (Checkpoint folders
such as .ipynb_checkpoints are skipped by pytest's default ``norecursedirs``.)"""

collect_ignore_glob = ["assignments/[0-9]*.ipynb"]
