"""The FractureEdge runtime that runs on the device.

Everything importable from here needs numpy and pillow only; pydicom and nibabel are imported
lazily when a DICOM or NIfTI file is opened. torch and tensorflow are never imported.
"""
