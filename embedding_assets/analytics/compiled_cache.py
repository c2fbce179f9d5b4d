"""Keep umap-learn's compiled code on disk between runs.

umap-learn and pynndescent compile their numba functions at first use in every new process and keep
none of them (upstream lmcinnes/umap#1257 proposed `cache=True` and was closed): every `emb run`
spent 14 of the 16.5 s of a 1,000-image map (and placing new images on it) compiling, 91 of 108 s
at 6,000 images. Numba's own disk cache (what `cache=True` turns on: keyed by the source file and
numba's version, written atomically) is switched on here for the modules of the functions UMAP
calls from Python; the distance functions they call are compiled into theirs. Only the first run on
a machine compiles (`benchmarks/projection_compile.py` measures both). Where no cache folder is
writable numba compiles as before.
"""

from __future__ import annotations

import functools
import importlib
import warnings

MODULES = (
    "umap.umap_",
    "umap.utils",
    "umap.layouts",
    "pynndescent.pynndescent_",
    "pynndescent.utils",
    "pynndescent.rp_trees",
)


@functools.cache
def keep_umap_compiled() -> int:
    """Turn on numba's disk cache for the compiled functions of MODULES; how many."""
    from numba.core.dispatcher import Dispatcher
    from numba.core.errors import NumbaWarning

    # a few of pynndescent's functions hold pointers numba cannot keep: they compile as before
    warnings.filterwarnings("ignore", "Cannot cache compiled function", NumbaWarning)
    kept = 0
    for name in MODULES:
        for obj in vars(importlib.import_module(name)).values():
            if isinstance(obj, Dispatcher):
                try:
                    obj.enable_caching()
                except RuntimeError:  # no writable cache folder: it compiles as numba does
                    continue
                kept += 1
    return kept
