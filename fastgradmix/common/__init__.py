"""Shared utilities every stage may use: user errors, atomic files, the CLI parser, small statistics."""
