"""fastgradmix: GradMix (SupCon + SimCLR with LayerCAM-guided mixing) for open-set recognition.

``fastgradmix.GradMix`` is the augmentation as a drop-in for any training loop (gradmix/mixer.py). It is
imported on first use, so ``import fastgradmix`` stays light (no torch import until then).
"""

__version__ = "0.1.0"

__all__ = ["GradMix", "__version__"]


def __getattr__(name: str):
    if name == "GradMix":
        from fastgradmix.gradmix.mixer import GradMix

        return GradMix
    raise AttributeError(f"module 'fastgradmix' has no attribute {name!r}")
