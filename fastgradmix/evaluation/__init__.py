"""Evaluation: scoring (Algorithm 1), metrics, the evaluation tasks, the report and its figures."""
