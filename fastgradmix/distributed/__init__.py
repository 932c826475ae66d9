"""torchrun: collectives that degrade to one process, the process group and the DDP wrapper, and the one
line each rank prints when another rank is lost (peers.py)."""
