"""Datasets, OSR protocols and their class splits, and the two-view augmentation.

protocols.py (the registry, build_protocol) turns readers' output into an OpenSetData (openset.py) via
assemble.py. Readers, one per on-disk format: mnist.py (idx), svhn.py (.mat), cifar.py (pickles through
safe_pickle.py, or JPEG class folders), tinyimagenet.py, folders.py (class folders, ImageFolder). File
decoding and its cache: image_files.py, cache.py. Where data lives and the missing-data error: layout.py;
--download: download.py with archives.py. digits.py is the bundled default; splits.py the class lists.
"""
