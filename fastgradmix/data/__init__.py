"""Datasets, OSR protocols and their class splits, and the two-view augmentation.

- protocols.py: the registry (``build_protocol``): a protocol name and split in, a checked OpenSetData
  (openset.py) out, assembled from the readers' output by assemble.py; splits.py ships the class lists;
- readers/: one module per on-disk format (mnist.py idx, svhn.py .mat, cifar.py pickles through
  safe_pickle.py or JPEG class folders, tinyimagenet.py, folders.py for any ImageFolder, digits.py the
  bundled default), file decoding (image_files.py) and its cache (cache.py), and where data lives (layout.py);
- fetching/: ``--download`` (download.py) and safe archive extraction (archives.py);
- loaders/: the input pipelines (pipeline.py: the loader seam and ``--loader``; dali.py; torch_workers.py;
  the device-resident loader) and the one sharding rule for every loader (sharding.py);
- augment.py: the SimCLR views as batched tensor ops (the recipe every loader follows).
"""
