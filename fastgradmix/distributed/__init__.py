"""torchrun: collectives that degrade to one process, the process group and the DDP wrapper."""
