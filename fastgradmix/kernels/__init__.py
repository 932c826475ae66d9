"""Triton kernels for the GradMix operations, importable as ``fastgradmix.kernels``.

Each module holds one operation with the same name and signature as its twin in
``fastgradmix.gradmix.reference``; kernels know only tensors.
"""
