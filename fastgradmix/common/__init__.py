"""Shared utilities that every stage may use, and that import nothing else of fastgradmix.

- errors.py: ``UserError``, a mistake the user can fix (one line, exit code 2);
- cli.py: the one-line argparse parser and ``run_cli`` around every command-line tool;
- files.py: the one atomic writer (temporary file, fsync, rename; one permission policy);
- schema.py: the strict JSON reader and the schema checker for every file the tools read back;
- device.py: ``--device {auto,cpu,cuda}``; stats.py: mean ± std; sampling.py: random derangements;
- tensorboard.py: the optional TensorBoard writer (``--tensorboard`` of train and evaluate).
"""
