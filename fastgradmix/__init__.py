"""fastgradmix: GradMix (SupCon + SimCLR with LayerCAM-guided mixing) for open-set recognition."""

__version__ = "0.1.0"
