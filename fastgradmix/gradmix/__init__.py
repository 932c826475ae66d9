"""The GradMix augmentation: CAM capture, boxes, partners and paste, its PyTorch reference ops and argument checks."""
