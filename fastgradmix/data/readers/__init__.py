"""Dataset readers: each on-disk format in its own module, plus the decoded-image cache."""
