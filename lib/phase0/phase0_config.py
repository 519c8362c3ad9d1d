# %% [markdown]
# # Phase 0 run config: one YAML file for the notebook's parameters and the gate's thresholds
#
# `configs/phase0.yaml` holds every parameter of the `phase0_latent_structure` notebook (same
# names) and, under `gate:`, the PASS/FAIL thresholds (`lib.phase0.phase0_metrics`). Given as
# `config_path`, the file sets every parameter it names that was **not** given explicitly
# (a parameter still at its default); a parameter given with `-p NAME VALUE` wins over the
# file. An older thresholds-only file (threshold keys at the top level) still works.
# The run writes the resolved file (`phase0_config.yaml` in its output folder): passing it as
# `config_path` repeats the run.

# %%
import difflib
from pathlib import Path

import yaml

from lib.core.atomic_io import atomic_write_text
from lib.phase0.phase0_metrics import PHASE0_DEFAULT_CONFIG, phase0_read_yaml

PHASE0_NOT_IN_CONFIG = ("output_dir", "config_path")


def read_phase0_run_config(path, parameter_names) -> tuple:
    """``(parameters, gate)`` from a YAML file; unknown keys are errors naming the closest known key."""
    path = Path(path).expanduser()
    loaded = phase0_read_yaml(path)
    gate = dict(loaded.pop("gate", None) or {})
    parameters = {}
    known = sorted(set(parameter_names) - set(PHASE0_NOT_IN_CONFIG)) + ["gate"] + sorted(PHASE0_DEFAULT_CONFIG)
    for key, value in loaded.items():
        if key in PHASE0_DEFAULT_CONFIG:
            gate[key] = value  # thresholds-only files keep working
        elif key in parameter_names and key not in PHASE0_NOT_IN_CONFIG:
            parameters[key] = value
        else:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{path}: unknown Phase 0 setting {key!r}{hint}")
    return parameters, gate


def apply_phase0_run_config(namespace: dict, defaults: dict, path) -> tuple:
    """Set the file's parameters in ``namespace`` where they are still at their ``defaults``.

    Returns ``(gate thresholds from the file, {parameter: "config file" | "parameter"})``.
    """
    if path is None:
        return {}, {}
    parameters, gate = read_phase0_run_config(path, list(defaults))
    sources = {}
    for key, value in parameters.items():
        if namespace.get(key) == defaults[key]:
            namespace[key] = value
            sources[key] = "config file"
        else:
            sources[key] = "parameter (over the config file)"
    return gate, sources


def write_phase0_run_config(path, parameters: dict, gate: dict) -> Path:
    """The resolved parameters and thresholds as YAML; pass the file as ``config_path`` to repeat the run."""
    body = {k: v for k, v in parameters.items() if k not in PHASE0_NOT_IN_CONFIG}
    header = "# Phase 0 settings used for this run: notebook parameters, then the gate thresholds.\n"
    header += "# Repeat it with -p config_path <this file>.\n"
    return atomic_write_text(path, header + yaml.safe_dump({**body, "gate": dict(gate)}, sort_keys=False))
