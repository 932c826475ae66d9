"""The GradMix augmentation (DESIGN.md section 2, steps 2-8), one concept per module.

- capture.py: ``CamCapture``, forward hooks keeping the CAM layers' activations (and gradients);
- augment.py: ``gradmix_view``, from CAM activations and gradients to the mixed view and its weights;
- ops.py: ``resolve_ops``, the Triton kernels on CUDA or the PyTorch reference for the three heavy ops;
- reference.py: those ops in batched PyTorch; checks.py: the argument checks both implementations share.
- mixer.py: ``GradMix``, the drop-in for anyone's training loop (capture, CAM gradient, view), exported as
  ``fastgradmix.GradMix``.

The training step reaches this package through fastgradmix/training/mixed_views/cam_guided.py.
"""
