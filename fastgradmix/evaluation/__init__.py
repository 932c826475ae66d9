"""Evaluation of trained runs (``python -m fastgradmix.evaluate``, and the summary training writes).

From the command line inwards:
- options.py: the options, checked into a frozen EvalConfig;
- orchestrate.py: a run or sweep folder end to end (compute everything, then write); compare.py: --compare;
- one_run.py: the tasks of one run; plan.py: which tasks apply; out_sets.py: the OOD out-sets;
- bank_scorer.py: Algorithm 1 against the run's bank; osr_tasks.py (osr, closed, ood), corruption_task.py,
  linear_task.py, diversity_task.py: the tasks; aggregate.py: a sweep's mean ± std;
- results_file.py, figures.py, report.py, summary.py: results.json, plots/*.png, report.md, the printout;
  tensorboard_log.py: --tensorboard, the numbers and figures into the run's TensorBoard events;
- topk_similarity.py, metrics.py, features.py, linear_probe.py, diversity_measures.py, plots.py, corruptions/: the
  computations the tasks are built from.
"""
