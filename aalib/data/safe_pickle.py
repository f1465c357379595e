"""A restricted unpickler for the CIFAR python archives.

The CIFAR "python version" files (https://www.cs.toronto.edu/~kriz/cifar.html) are Python 2
``cPickle`` dumps of dicts holding numpy arrays and lists. ``pickle.load`` on an untrusted file
runs arbitrary code (https://docs.python.org/3/library/pickle.html#restricting-globals), so
:func:`load_restricted` resolves only the globals such a file needs, the recipe from the Python
documentation's "Restricting Globals" section.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["ALLOWED_GLOBALS", "UnsafePickleError", "load_restricted"]

# (module, name) -> (module to import, name). Python 2 files say "numpy.core.multiarray" and
# "__builtin__"; numpy 2 moved numpy.core to numpy._core (importing the old path warns).
ALLOWED_GLOBALS: dict[tuple[str, str], tuple[str, str]] = {
    ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
    # numpy arrays pickled with protocol 5 (numpy >= 1.16 on Python >= 3.8)
    ("numpy.core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"): ("numpy", "ndarray"),
    ("numpy", "dtype"): ("numpy", "dtype"),
    # Python 3 writes bytes as _codecs.encode(str, "latin1") under protocol 2
    ("_codecs", "encode"): ("_codecs", "encode"),
    **{
        (module, name): ("builtins", name)
        for module in ("builtins", "__builtin__")
        for name in ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float", "bool")
    },
}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside :data:`ALLOWED_GLOBALS`."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        target = ALLOWED_GLOBALS.get((module, name))
        if target is None:
            allowed = sorted({f"{m}.{n}" for m, n in ALLOWED_GLOBALS})
            raise UnsafePickleError(
                f"refusing to load global '{module}.{name}' from a pickle: only the globals a CIFAR "
                f"archive needs are allowed ({', '.join(allowed)})"
            )
        try:
            return getattr(importlib.import_module(target[0]), target[1])
        except ImportError:  # numpy < 2 has only numpy.core
            return getattr(importlib.import_module(target[0].replace("numpy._core", "numpy.core")), target[1])


def load_restricted(file: BinaryIO | str | Path, *, encoding: str = "latin1") -> Any:
    """Unpickle ``file`` allowing only numpy-array reconstruction and builtin containers.

    ``encoding="latin1"`` reads Python 2 ``str`` (dict keys and the array bytes) as text, the
    setting numpy documents for Python 2 pickles of arrays. Raises :class:`UnsafePickleError`
    for any other global.
    """
    if isinstance(file, (str, Path)):
        with open(file, "rb") as handle:
            return _RestrictedUnpickler(handle, encoding=encoding).load()
    return _RestrictedUnpickler(file, encoding=encoding).load()

