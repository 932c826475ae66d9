"""A run folder: its typed configuration, its checkpoints, and rebuilding its model, data and device."""
