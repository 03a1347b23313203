"""Compression: pruning, torch → ONNX → TFLite export, CAM output and the bundle writer."""
