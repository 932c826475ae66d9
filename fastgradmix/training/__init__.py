"""Training (``python -m fastgradmix.train``), from the run down to one step.

- loop.py: the run read top to bottom (setup, epochs, checkpoints, the final evaluation); run_files.py:
  the run folder (resume, last.pt, epoch snapshots, metrics.jsonl); step_log.py: what is read back and
  when; schedule.py: the learning rate; results.py: results.json and the printed table;
- step.py: one update, straight-line: an objective (objectives/: the loss) and a mixed-view strategy
  (mixed_views/: none, Mixup/CutMix, CAM-guided GradMix), each chosen from a small registry;
- compile.py: ``--compile`` in regions split at the CAM layers; timing.py: step timing without host syncs;
- sweep.py: ``--split all``, every class split in turn, then mean ± std;
- tensorboard_log.py: ``--tensorboard``, the run's numbers, a grid of mixed views per epoch, the result.
"""
