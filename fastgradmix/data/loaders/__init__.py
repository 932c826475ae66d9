"""Input pipelines: the loader seam, DALI, torch DataLoader workers, device-resident, and sharding."""
