"""Training: the step (objective + mixed view), the loop, compilation, timing, and the --split all sweep."""
