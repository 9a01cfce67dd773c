"""DVC side: the stage entry points dvc.yaml calls, the compare matrix, the report and its
plots, presets and the run lock."""
