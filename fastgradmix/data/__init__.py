"""Datasets, OSR protocols and their class splits, and the two-view augmentation."""
