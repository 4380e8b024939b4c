"""dlib, OpenCV and dlib's weight files: found, or one line naming the extra that brings them.

Anonymizing (detect, align, replace faces) and the face-space metrics (``faces``, ``fd_face``)
use the same detectors and networks; both get them from here. Nothing is downloaded: dlib's HOG
detector is compiled into ``dlib-bin``; its CNN detector, landmark predictors and 128-d
face-recognition ResNet are the files of ``face-recognition-models``; all come with
``pip install 'facegan[anonymize]'``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from facegan.errors import FaceganError

EXTRA = "pip install 'facegan[anonymize]'"


def require(module: str, purpose: str = "anonymizing"):
    """Import one of the anonymize extra's modules, or stop with a one-line error naming the extra."""
    try:
        return __import__(module)
    except ImportError:
        raise FaceganError(f"{purpose} needs {module}, part of the anonymize extra: {EXTRA}") from None


def model_file(name: str, purpose: str = "anonymizing") -> str:
    """The path of one of face-recognition-models' weight files, found without importing the package
    (its ``__init__`` imports pkg_resources, which recent setuptools no longer ships)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceganError(f"{purpose} needs face-recognition-models (dlib's weights), part of the anonymize extra: {EXTRA}")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise FaceganError(f"face-recognition-models is installed without {name}: reinstall it ({EXTRA})")
    return str(path)
