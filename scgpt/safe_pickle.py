"""Read downloaded pickles without running them.

``pickle.load`` (and ``pandas.read_pickle``) call whatever the file names: a pickle from the
internet can run any command. The files this project downloads as pickles hold plain data
(GEARS' ``gene2go_all.pkl``: a dict gene -> set of GO ids; its split files: a dict of lists;
scvi-tools' ``pbmc_metadata.pickle``: a dict of numpy arrays and pandas frames), so they are
read with an unpickler that builds only an allow-list of data types and refuses anything
else, naming the file and the refused name. Nothing from the file is imported or called
unless it is on the list.

This module lives in ``scgpt`` (the bottom of the dependency graph) so that the harness and
the baselines share it.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

__all__ = ["NUMPY_GLOBALS", "PANDAS_GLOBALS", "PLAIN_GLOBALS", "UnsafePickleError", "load_pickle"]

#: Containers and scalars of the standard library (what a protocol-0/1 pickle names).
PLAIN_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "list"),
        ("builtins", "dict"),
        ("builtins", "tuple"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("builtins", "slice"),
        ("builtins", "range"),
        ("collections", "OrderedDict"),
    }
)
#: numpy arrays, dtypes and scalars (numpy 1 and 2 module paths).
NUMPY_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        *((core, "_reconstruct") for core in ("numpy.core.multiarray", "numpy._core.multiarray")),
        *((core, "scalar") for core in ("numpy.core.multiarray", "numpy._core.multiarray")),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)
#: pandas frames, series and indexes (and the internals their ``__reduce__`` names).
PANDAS_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("pandas.core.frame", "DataFrame"),
        ("pandas.core.series", "Series"),
        ("pandas.core.indexes.base", "Index"),
        ("pandas.core.indexes.base", "_new_Index"),
        ("pandas.core.indexes.range", "RangeIndex"),
        ("pandas.core.indexes.numeric", "Int64Index"),
        ("pandas.core.indexes.numeric", "Float64Index"),
        ("pandas.core.indexes.multi", "MultiIndex"),
        ("pandas.core.internals.managers", "BlockManager"),
        ("pandas.core.internals.managers", "SingleBlockManager"),
        ("pandas.core.internals.blocks", "new_block"),
        ("pandas.core.internals.blocks", "Block"),
        ("pandas._libs.internals", "_unpickle_block"),
        ("pandas.core.arrays.categorical", "Categorical"),
        ("pandas.core.dtypes.dtypes", "CategoricalDtype"),
        ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
    }
)

# Python 2 pickles name the builtins module differently.
_RENAMED_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A pickle names something outside the allow-list; nothing of it was run."""


class _AllowListUnpickler(pickle.Unpickler):
    def __init__(self, fh: io.BufferedIOBase, *, allowed: frozenset[tuple[str, str]], path: Path):
        super().__init__(fh)
        self._allowed = allowed
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        module = _RENAMED_MODULES.get(module, module)
        if module.startswith("pandas"):
            # pandas moves internals between releases; its own compatibility table maps an old
            # location to the current one, which is what the allow-list names.
            module, name = _pandas_location(module, name)
        if (module, name) not in self._allowed:
            raise UnsafePickleError(
                f"{self._path}: the pickle asks for {module}.{name}, which is not a plain data "
                "type; refused without running it (a downloaded pickle could run any command). "
                "If the file is genuine, convert it to a safe format (json, csv, h5ad) and use that"
            )
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self._path}: the pickle uses persistent ids; refused")


def _pandas_location(module: str, name: str) -> tuple[str, str]:
    try:
        from pandas.compat.pickle_compat import _class_locations_map
    except ImportError:  # pragma: no cover - every supported pandas has it
        return module, name
    return _class_locations_map.get((module, name), (module, name))


def load_pickle(
    path: str | os.PathLike[str],
    *,
    numpy: bool = False,
    pandas: bool = False,
) -> Any:
    """Unpickle a downloaded file, building plain data types only.

    Parameters
    ----------
    path
        The pickle.
    numpy
        Also allow numpy arrays, dtypes and scalars.
    pandas
        Also allow pandas DataFrames, Series and indexes (implies ``numpy``).

    Returns
    -------
    The unpickled object.

    Raises
    ------
    UnsafePickleError
        If the pickle names any other class or function (the message names the file and it).
    ValueError
        If the file is not a complete pickle (naming the file).
    """
    path = Path(path)
    allowed = PLAIN_GLOBALS
    if numpy or pandas:
        allowed = allowed | NUMPY_GLOBALS
    if pandas:
        allowed = allowed | PANDAS_GLOBALS
    with open(path, "rb") as fh:
        try:
            return _AllowListUnpickler(fh, allowed=allowed, path=path).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as err:
            raise ValueError(
                f"{path}: not a readable pickle ({type(err).__name__}: {err})"
            ) from None
