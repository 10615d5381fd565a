"""Type aliases for the package's annotations (private: users annotate with numpy.typing).

``FloatArray`` is what the compute paths take and return (float32 or float64, per call);
``Array`` any ndarray (labels, masks, argmax indices); ``ArrayLike`` what public functions accept
and convert (lists, other dtypes, views).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, SupportsIndex, Union

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]
FloatArray = npt.NDArray[np.floating[Any]]
IntArray = npt.NDArray[np.integer[Any]]
ArrayLike = npt.ArrayLike
DTypeLike = npt.DTypeLike
# A compute dtype (float32 or float64) as a dtype or as a scalar type (np.float64).
FloatDType = Union["np.dtype[np.floating[Any]]", "type[np.floating[Any]]"]
Shape = tuple[int, ...]
# A window's stride or pad: one int for both directions, or an (h, w) pair (_validate.as_pair).
IntPair = Union[SupportsIndex, Sequence[SupportsIndex]]
# The parameter and gradient dictionaries of DLfS's networks: "W1" -> array.
ParamDict = dict[str, npt.NDArray[Any]]
PathLike = Union[str, "os.PathLike[str]"]

__all__ = [
    "Array",
    "ArrayLike",
    "DTypeLike",
    "FloatArray",
    "FloatDType",
    "IntArray",
    "IntPair",
    "ParamDict",
    "PathLike",
    "Shape",
]
