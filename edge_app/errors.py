"""Exceptions raised by FractureEdge, each with a message a user can act on.

Front ends (CLI, Kivy app, Gradio page) map :class:`FractureEdgeError` to a user message in one
place each; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class FractureEdgeError(Exception):
    """Base class of every error FractureEdge raises on purpose."""


class MissingDependencyError(FractureEdgeError, ImportError):
    """An optional library is not installed; the message names the extra that provides it."""


class ImageReadError(FractureEdgeError, ValueError):
    """An input file could not be turned into a radiograph."""


class ImageNotFoundError(ImageReadError, FileNotFoundError):
    """The path does not exist (also a :class:`FileNotFoundError`, for callers that catch that)."""


class EmptyFileError(ImageReadError):
    """The file has zero bytes."""


class NotARegularFileError(ImageReadError):
    """The path is a FIFO, a device, a socket, or a link to one: reading it could block forever
    or never end, so it is refused before it is opened."""


class NotAnImageError(ImageReadError):
    """The file is neither a supported image, a DICOM file nor a NIfTI volume."""


class CorruptImageError(ImageReadError):
    """The file claims to be an image but cannot be decoded, even tolerantly."""


class ImageTooLargeError(ImageReadError):
    """The image has more pixels than allowed (a guard against decompression bombs)."""


class ImageShapeError(ImageReadError):
    """The image's width and height are implausible for a radiograph (e.g. 1 × 1,000,000 pixels);
    refused from the header, before decoding."""


class EmptyImageError(ImageReadError):
    """The image holds no content (blank, constant, or with most of it missing): a front end
    must give it no verdict."""


class UnsupportedPhotometricError(ImageReadError):
    """A DICOM file uses a photometric interpretation FractureEdge does not support."""


class MissingDecoderError(ImageReadError, MissingDependencyError):
    """A DICOM file uses a compressed transfer syntax with no installed decoder."""


class InvalidVolumeError(ImageReadError):
    """A CT/MRI volume has an unusable shape or non-finite values."""


class ModelCardError(FractureEdgeError, ValueError):
    """A model card is missing a field or holds an invalid value."""


class DatasetError(FractureEdgeError, ValueError):
    """A data set folder or manifest is missing or malformed."""


class LogitsFileError(FractureEdgeError, ValueError):
    """A per-image logits CSV (file, split, label, one column per model) is malformed."""


class UsageError(FractureEdgeError, ValueError):
    """A flag, config, plan or input path the user gave cannot be used as given."""


class InputPathError(UsageError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class LabelsFileError(FractureEdgeError, ValueError):
    """A labels CSV (file, fracture 1/0/empty[, boxes]) is malformed or names missing files."""


class SiteCalibrationError(FractureEdgeError, ValueError):
    """A site's labelled films cannot calibrate a bundle (too few, unusable, or a bad --out)."""
