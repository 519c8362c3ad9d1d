"""audiolens library: one package per notebook family, with the shared core beside them.

- ``lib.core``: audio I/O, data sets, features, speech models, runtime, outputs, caches.
- ``lib.digits``, ``lib.mae``, ``lib.explorer``, ``lib.neurons``, ``lib.layers``, ``lib.phase0``:
  the modules of one notebook family each.

A family imports the core and its own modules, and another family only through the modules
that family lists in ``PUBLIC_MODULES``. Every module is also a Jupytext percent-script that
the generator inlines into the self-contained notebooks in ``notebooks/``. See CLAUDE.md.
"""
