"""audiolens library modules.

Every module here is also a Jupytext percent-script that the generator inlines into the
self-contained notebooks in ``notebooks/``. See CLAUDE.md for the conventions.
"""
