"""Deployment: the model folder, threshold calibration, image preprocessing, AOTInductor programs."""
