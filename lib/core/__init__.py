"""The shared core: audio I/O, data sets, features, speech models (codecs in codec_models), runtime, atomic writes,
outputs, the per-clip vector cache, a ring buffer for live streams and accuracy intervals.

Every notebook uses it. Core modules import only other core modules.
"""
