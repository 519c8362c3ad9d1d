"""Parameter validation: the spec mini-language, the generated check cell, and ``audiolens run``."""

from __future__ import annotations

import json
import os

import pytest

from generator import assemble as asm
from generator import cli
from generator.parameter_check import ParameterError, audiolens_check_parameters

SCHEMA = {
    "n": {"default": 2, "spec": "[int 1..]"},
    "rate": {"default": 0.5, "spec": "[0..1]"},
    "mode": {"default": "fast", "spec": "[fast|slow]"},
    "resume": {"default": True, "spec": "[True|False|force]"},
    "models": {"default": ["a"], "spec": "[each str]"},
    "layers": {"default": None, "spec": "[each int 0..]"},
    "folder": {"default": None, "spec": "[path]"},
    "cap": {"default": None, "spec": "[int 1..]"},
    "name": {"default": "x", "spec": ""},
    "flag": {"default": False, "spec": ""},
    "sweep": {"default": [1, 2], "spec": "[optional each int 1..]"},
}


@pytest.mark.parametrize(
    "values",
    [
        {"n": 5, "rate": 1, "mode": "slow", "resume": "force", "models": ["b", "c"], "layers": [0, 3]},
        {"resume": False, "layers": 2, "models": "single-id", "cap": None, "folder": None, "flag": True},
        {"rate": 0.0, "name": "anything", "cap": 1},
        {"sweep": None},
        {"sweep": [3]},
    ],
)
def test_valid_values_pass(values, tmp_path):
    assert audiolens_check_parameters(dict(values), SCHEMA) == []


@pytest.mark.parametrize(
    "values, message",
    [
        ({"n": 0}, "n: 0 is below the smallest allowed value 1"),
        ({"n": -3}, "n: -3 is below the smallest allowed value 1"),
        ({"n": 2.5}, "n: 2.5 is not a whole number"),
        ({"n": "ten"}, "n: 'ten' is not a whole number (the default is 2)"),
        ({"n": True}, "n: True is not a whole number"),
        ({"rate": 1.5}, "rate: 1.5 is above the largest allowed value 1"),
        ({"mode": "fsat"}, "mode: 'fsat' is not one of fast, slow; did you mean 'fast'?"),
        ({"resume": "yes"}, "resume: 'yes' is not one of True, False, force"),
        ({"models": "[a/b]"}, "looks like a list but does not parse"),
        ({"models": ["a", 3]}, "models: 3 is not a string (in ['a', 3])"),
        ({"layers": [0, -1]}, "layers: -1 is below the smallest allowed value 0 (in [0, -1])"),
        ({"folder": "/no/such/place"}, "'/no/such/place' does not exist"),
        ({"cap": 0}, "cap: 0 is below the smallest allowed value 1"),
        ({"flag": "yes"}, "flag: 'yes' is not True or False"),
        ({"name": 3}, "name: 3 is not a string"),
        ({"sweep": [0]}, "sweep: 0 is below the smallest allowed value 1"),
        ({"models": None}, "models: None is not a string"),
    ],
)
def test_invalid_values_are_named_with_the_problem(values, message):
    with pytest.raises(ParameterError) as error:
        audiolens_check_parameters(dict(values), SCHEMA, notebook="toy")
    assert message in str(error.value) and "invalid parameters for toy" in str(error.value)


def test_every_problem_is_listed_at_once():
    with pytest.raises(ParameterError) as error:
        audiolens_check_parameters({"n": 0, "mode": "x", "rate": 2}, SCHEMA)
    assert str(error.value).count("\n  ") == 3


def test_renamed_parameters_map_with_a_deprecation_message(capsys):
    namespace = {"threads": 2, "n": 2}
    messages = audiolens_check_parameters(
        namespace, {"cpu_threads": {"default": None, "spec": "[int 1..]"}}, {"threads": "cpu_threads"}
    )
    assert namespace == {"cpu_threads": 2, "n": 2}
    assert "DeprecationWarning: parameter 'threads' is now 'cpu_threads'" in messages[0] in capsys.readouterr().out
    with pytest.raises(ParameterError, match="renamed cpu_threads"):
        audiolens_check_parameters(
            {"threads": 2, "cpu_threads": 4},
            {"cpu_threads": {"default": None, "spec": "[int 1..]"}},
            {"threads": "cpu_threads"},
        )
    with pytest.raises(ParameterError, match="below the smallest"):  # the old name is checked under the new rule
        audiolens_check_parameters(
            {"threads": 0}, {"cpu_threads": {"default": None, "spec": "[int 1..]"}}, {"threads": "cpu_threads"}
        )


def test_every_recipe_declares_a_spec_per_parameter_of_this_area():
    for name in ("audiomae_training",):
        schema = asm.parameter_schema(name)
        assert all(entry["spec"] for entry in schema.values()), name
        for key, entry in schema.items():  # every default satisfies its own spec
            audiolens_check_parameters({key: entry["default"]}, {key: entry})


def test_cli_maps_relative_paths_from_the_callers_folder(tmp_path, monkeypatch):
    (tmp_path / "clips").mkdir()
    monkeypatch.chdir(tmp_path)
    values = cli.check_run_parameters("audiomae_training", [("data_path", "clips")])
    assert values == {"data_path": str(tmp_path / "clips")}  # the kernel runs in the repository root


@pytest.mark.notebook
def test_the_generated_check_cell_stops_a_notebook_before_any_work(tmp_path):
    """Papermill alone (no CLI check): the notebook's own check cell fails first, naming the parameter."""
    import papermill as pm

    out = tmp_path / "run"
    with pytest.raises(pm.PapermillExecutionError) as error:
        cli.execute_notebook(
            "audiomae_training", {"max_train_clips": 0, "pretrain_epochs": "ten"}, out, build_first=False
        )
    assert error.value.ename == "ParameterError"
    assert "max_train_clips: 0 is below the smallest allowed value 1" in error.value.evalue
    assert "pretrain_epochs: 'ten' is not a whole number" in error.value.evalue
    run = json.loads((out / "results.json").read_text())
    assert set(run) == {"run"} and run["run"]["status"].startswith("failed at cell")
    assert not (out / "cache").exists() and not (out / "checkpoints").exists()  # nothing ran
    assert sorted(os.listdir(out)) == sorted(
        [".audiolens-run.lock", ".audiomae_training.input.ipynb", "audiomae_training.ipynb", "results.json"]
    )


def test_type_unions_accept_each_type_and_name_the_rest():
    schema = {
        "layers": {"default": None, "spec": "[list|dict]"},
        "cache": {"default": "~/x", "spec": "[optional str]"},
        "cap": {"default": 10.0, "spec": "[optional float 0.1..]"},
        "width": {"default": 3, "spec": "[int|float 1..]"},
    }
    for values in ({"layers": [0, "conv"]}, {"layers": {"m": [1]}}, {"width": 2.5}, {"width": 4}, {"cap": None}):
        assert audiolens_check_parameters(dict(values), schema) == []
    for values, message in (
        ({"layers": 3}, "layers: 3 is not a list or a dict"),
        ({"layers": "[0, 1"}, "looks like a list but does not parse"),
        ({"cache": 5}, "cache: 5 is not a string (the default is '~/x')"),
        ({"width": 0.5}, "width: 0.5 is below the smallest allowed value 1"),
        ({"width": "wide"}, "width: 'wide' is not a whole number or a number (the default is 3)"),
        ({"cap": 0.01}, "cap: 0.01 is below the smallest allowed value 0.1"),
        ({"cap": "ten"}, "cap: 'ten' is not a number"),
    ):
        with pytest.raises(ParameterError) as error:
            audiolens_check_parameters(dict(values), schema)
        assert message in str(error.value)
    assert not cli._bad_list_value("[not a list", "[not a list", schema["cache"])  # a string may start with [
    assert cli._bad_list_value("[0, 1", "[0, 1", schema["layers"])


@pytest.mark.parametrize("name", asm.available_recipes())
def test_a_parameter_whose_help_offers_none_accepts_none(name):
    """`audiolens list` shows each parameter's comment: where it says what None does, None must pass the check."""
    offered = {key for key, item in asm.parameter_schema(name).items() if "None" in (item.get("help") or "")}
    for key in sorted(offered):
        assert cli.check_run_parameters(name, [(key, "None")]) == {key: None}, key
