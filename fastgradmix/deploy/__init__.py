"""Deployment: a trained run as a model folder, and answers from one.

- model_folder.py: the folder's format (model.json, bank.bin, program files), written and read back checked;
- model_schema.py: model.json's fields, ranges and limits, checked in one order (cpp/model_schema.cpp's twin);
- calibration.py: the open-set threshold, by leave-one-out over the training images;
- aoti.py: torch's AOTInductor entry points, with a clear error on torch < 2.6;
- program.py: compiling the model into a .pt2 package (checked against the eager model) and loading it;
- exporter.py: the export itself (bank, calibration, programs, staging folder, atomic publish);
- image_inputs.py: image files in, model inputs out (the rules the native predictor shares);
- printable.py: paths escaped in text lines, so one image is one line;
- predictor.py: a loaded model folder answering a class or "unknown" per image.
"""
