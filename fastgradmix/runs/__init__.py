"""A run folder and everything that reads one back (training's --resume, evaluate, export).

- config.py: the typed configuration (one dataclass; per-protocol presets; the argparse front end);
- checkpoint.py: last.pt and epoch_XXX.pt, written atomically, loaded without running code;
- folder.py: a finished run (config.json + last.pt) or a sweep's split<k>/ runs, with one-line errors;
- rebuild.py: the run's data and model from its config, exactly as training built them;
- config_schema.py / results_schema.py: what a config.json / results.json read back must hold;
- lock.py: the exclusive lock a tool holds on a run folder while it writes there.
"""
