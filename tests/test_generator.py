"""The generator: dependency order, rejected import forms, clashes, cycles, determinism, check."""

from __future__ import annotations

import json
import shutil
import textwrap

import nbformat
import pytest

from generator import assemble as asm

RECIPE_HEAD = (
    '# %% [markdown]\n# # Toy notebook\n#\n# A test recipe.\n\n# %% tags=["parameters"]\n'
    'output_dir = "out"  # where results go\nn = 3  # how many\n\n'
)


def write(folder, name, text):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def toy(tmp_path):
    """A lib with a dependency chain recipe -> alpha -> beta -> gamma and gamma <- delta."""
    lib, recipes = tmp_path / "lib", tmp_path / "recipes"
    write(lib, "fam/gamma.py", "# %% [markdown]\n# # Gamma\n\n# %%\nGAMMA = 1\n\n\ndef gamma_fn():\n    return GAMMA\n")
    write(
        lib,
        "fam/beta.py",
        "# %% [markdown]\n# # Beta\n\n# %%\nfrom lib.fam.gamma import gamma_fn\n\n\ndef beta_fn():\n"
        "    return gamma_fn() + 1\n",
    )
    write(
        lib,
        "fam/delta.py",
        "# %% [markdown]\n# # Delta\n\n# %%\nfrom lib.fam.gamma import GAMMA\n\nDELTA = GAMMA * 10\n",
    )
    write(
        lib,
        "fam/alpha.py",
        "# %% [markdown]\n# # Alpha\n\n# %%\nimport math\n\nfrom lib.fam.beta import beta_fn\n"
        "from lib.fam.delta import DELTA\n\n\ndef alpha_fn():\n    return beta_fn() + DELTA + math.floor(0.5)\n",
    )
    write(
        recipes,
        "toy.py",
        RECIPE_HEAD + "# %%\nfrom lib.fam.alpha import alpha_fn\n\nresult = alpha_fn() * n\nprint(result)\n",
    )
    return lib, recipes


def code_of(nb):
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code")


def test_modules_are_inlined_in_dependency_order(toy, tmp_path, monkeypatch):
    lib, recipes = toy
    monkeypatch.chdir(tmp_path)  # the notebook's run record goes to output_dir "out" under the cwd
    monkeypatch.delenv("AUDIOLENS_RUN_ID", raising=False)
    nb = asm.assemble("toy", recipes_dir=recipes, lib_dir=lib, extra="digits")
    assert nb.metadata["audiolens"]["lib_modules"] == [
        "lib/fam/gamma.py",
        "lib/fam/beta.py",
        "lib/fam/delta.py",
        "lib/fam/alpha.py",
    ]
    code = code_of(nb)
    assert "from lib" not in code and "import lib" not in code
    # each module once, dependencies before users, recipe last
    positions = [
        code.index(marker)
        for marker in ("GAMMA = 1", "def beta_fn", "DELTA = GAMMA", "def alpha_fn", "result = alpha_fn()")
    ]
    assert positions == sorted(positions)
    assert code.count("GAMMA = 1") == 1
    # the inlined notebook actually runs: execute all code cells but the setup cell
    namespace = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "setup" not in cell.metadata.get("tags", []):
            exec(cell.source, namespace)
    assert namespace["result"] == (1 + 1 + 10) * 3
    run = json.loads((tmp_path / "out" / "results.json").read_text())["run"]
    assert (
        run["status"] == "complete" and run["notebook"] == "toy" and run["parameters"] == {"output_dir": "out", "n": 3}
    )


def test_notebook_layout(toy):
    lib, recipes = toy
    nb = asm.assemble("toy", recipes_dir=recipes, lib_dir=lib, extra="digits")
    kinds = [(c.cell_type, c.metadata.get("tags", [])) for c in nb.cells]
    first = nb.cells[0].source
    assert kinds[0][0] == "markdown" and first.startswith("# Toy notebook")
    # the first cell names every source file and says how to change the notebook
    for source in ("generator/recipes/toy.py", "lib/fam/gamma.py", "lib/fam/alpha.py", "audiolens build"):
        assert source in first
    assert kinds[1] == ("code", ["setup"]) and nb.cells[2].source.startswith("## Run")
    assert kinds[3] == ("code", ["parameters"]) and kinds[4] == ("code", ["parameter-check"])
    lib_cells = [c for c in nb.cells if c.cell_type == "code" and "lib" in c.metadata.get("tags", [])]
    assert lib_cells and all(c.metadata["jupyter"]["source_hidden"] for c in lib_cells)
    # every library code cell names its module in its Colab form title
    assert all(c.source.startswith("# @title lib/fam/") for c in lib_cells)
    headings = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("#### ")]
    assert headings == [
        "#### Gamma (`lib/fam/gamma.py`)",
        "#### Beta (`lib/fam/beta.py`)",
        "#### Delta (`lib/fam/delta.py`)",
        "#### Alpha (`lib/fam/alpha.py`)",
    ]
    # a dropped import leaves a comment naming the module and the symbols
    assert "# inlined above: alpha_fn (lib/fam/alpha.py)" in nb.cells[-2].source
    # the last cell marks the run complete in results.json
    assert kinds[-1] == ("code", ["run-record"]) and "audiolens_finish_run" in nb.cells[-1].source
    setup = nb.cells[1].source
    assert "'scikit-learn>=1.3'" in setup and "'transformers>=5.0,<6'" in setup  # pinned from pyproject
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")


def test_assembly_is_deterministic(toy):
    lib, recipes = toy
    first = asm.notebook_text(asm.assemble("toy", recipes_dir=recipes, lib_dir=lib))
    second = asm.notebook_text(asm.assemble("toy", recipes_dir=recipes, lib_dir=lib))
    assert first == second
    nbformat.validate(nbformat.reads(first, as_version=4))


TREE_MODULE = """\
# %% [markdown]
# # Tree

# %%
import math

_REGISTRY = {}
UNUSED_CONST = 7
SCALE = 2


def register(name):
    def wrap(fn):
        _REGISTRY[name] = fn
        return fn

    return wrap


@register("double")
def double(x):
    return x * SCALE


def by_name(name, x):
    return _REGISTRY[name](x)


def _helper_default():
    return 1


def used(x, step=_helper_default()):
    return x + step


class Base:
    pass


class Child(Base):
    kind: str = "child"


class Plugin:
    registered = []

    def __init_subclass__(cls):
        Plugin.registered.append(cls.__name__)


class UnnamedPlugin(Plugin):
    pass


def via_string():
    return globals()["hidden_target"]()


def hidden_target():
    return 3


# a comment that belongs to the dead function
def dead(x):
    return math.sqrt(x) + UNUSED_CONST


DEAD_TABLE = {"a": dead}
WITH_SIDE_EFFECT = register("side")(lambda x: x)

# %% [markdown]
# ## A section with dead code only

# %%
def dead_section_fn():
    return 0
"""


def test_unreachable_definitions_are_left_out_and_named(tmp_path, monkeypatch):
    lib, recipes = tmp_path / "lib", tmp_path / "recipes"
    write(lib, "fam/tree.py", TREE_MODULE)
    write(
        recipes,
        "toy.py",
        RECIPE_HEAD + "# %%\nfrom lib.fam.tree import by_name, used, Child, via_string\n\n"
        'result = by_name("double", 2) + used(1) + via_string() + by_name("side", 1) + len(Child.kind)\n',
    )
    monkeypatch.chdir(tmp_path)
    nb = asm.assemble("toy", recipes_dir=recipes, lib_dir=lib)
    code = code_of(nb)
    # reachable through the recipe, a registry decorator, a default argument, a base class, a string
    kept_names = ("def double", "def _helper_default", "class Base", "def hidden_target", "SCALE = 2")
    for kept in kept_names + ("class UnnamedPlugin(Plugin)",):  # defining a subclass runs Plugin's code
        assert kept in code, kept
    assert "WITH_SIDE_EFFECT = register" in code  # its value calls a lib function: it stays
    for gone in ("def dead", "DEAD_TABLE", "UNUSED_CONST", "a comment that belongs"):
        assert gone not in code, gone
    assert not any("A section with dead code only" in c.source for c in nb.cells)  # its heading went with it
    heading = next(c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("#### Tree"))
    assert "`UNUSED_CONST`, `dead`, `DEAD_TABLE`, `dead_section_fn`" in heading and "`lib/fam/tree.py`" in heading
    namespace = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "setup" not in cell.metadata.get("tags", []):
            exec(cell.source, namespace)
    assert namespace["result"] == 4 + 2 + 3 + 1 + 5


def test_a_module_nothing_reaches_is_not_carried_and_import_comments_name_only_what_is(tmp_path, monkeypatch):
    lib, recipes = tmp_path / "lib", tmp_path / "recipes"
    write(
        lib,
        "fam/helpers.py",
        "# %% [markdown]\n# # Helpers\n\n# %%\nimport os\n\n\ndef unused_helper():\n    return os.sep\n",
    )
    write(
        lib,
        "fam/tools.py",
        "# %% [markdown]\n# # Tools\n\n# %%\ndef kept_tool():\n    return 1\n\n\ndef dropped_tool():\n    return 2\n",
    )
    write(
        lib,
        "fam/main.py",
        "# %% [markdown]\n# # Main\n\n# %%\nfrom lib.fam.helpers import unused_helper\n"
        "from lib.fam.tools import dropped_tool, kept_tool\n\n\ndef entry():\n    return kept_tool()\n\n\n"
        "def other():\n    return unused_helper() + str(dropped_tool())\n\n\n"
        "# %%\nfrom lib.fam.tools import dropped_tool  # a cell with only an import of what is left out\n",
    )
    write(recipes, "toy.py", RECIPE_HEAD + "# %%\nfrom lib.fam.main import entry\n\nresult = entry()\n")
    monkeypatch.chdir(tmp_path)
    nb = asm.assemble("toy", recipes_dir=recipes, lib_dir=lib)
    code = code_of(nb)
    # helpers: every definition unreachable, only its import left: no section, not listed, not a source
    assert nb.metadata["audiolens"]["lib_modules"] == ["lib/fam/tools.py", "lib/fam/main.py"]
    assert "lib/fam/helpers.py" not in nb.cells[0].source and "Helpers" not in "".join(c.source for c in nb.cells)
    assert "# inlined above: kept_tool (lib/fam/tools.py)" in code  # dropped_tool is not carried
    assert "unused_helper" not in code and "dropped_tool" not in code.replace("`dropped_tool`", "")
    titled = [c.source for c in nb.cells if c.cell_type == "code" and c.source.startswith("# @title lib/")]
    assert all(len(source.splitlines()) > 1 for source in titled)  # no cell left with its title alone
    namespace = {}
    for cell in nb.cells:
        if cell.cell_type == "code" and "setup" not in cell.metadata.get("tags", []):
            exec(cell.source, namespace)
    assert namespace["result"] == 1


def test_cells_with_magics_are_kept_whole(tmp_path):
    lib, recipes = tmp_path / "lib", tmp_path / "recipes"
    write(
        lib,
        "fam/tree.py",
        "# %% [markdown]\n# # Tree\n\n# %%\ndef kept_fn():\n    return 1\n\n\ndef dead_fn():\n    return 2\n\n"
        "# %%\n%load_ext autoreload\n\n\ndef dead_in_magics_cell():\n    return 3\n",
    )
    write(recipes, "toy.py", RECIPE_HEAD + "# %%\nfrom lib.fam.tree import kept_fn\n\nprint(kept_fn())\n")
    code = code_of(asm.assemble("toy", recipes_dir=recipes, lib_dir=lib))
    assert "def kept_fn" in code and "def dead_fn" not in code
    assert "%load_ext autoreload" in code and "def dead_in_magics_cell" in code


def test_name_defined_in_two_modules_is_rejected(toy):
    lib, recipes = toy
    write(
        lib,
        "fam/delta.py",
        "# %% [markdown]\n# # Delta\n\n# %%\nfrom lib.fam.gamma import GAMMA\n\nDELTA = GAMMA\n\n\n"
        "def beta_fn():\n    return 0\n",
    )
    with pytest.raises(asm.AssemblyError, match=r"'beta_fn' is defined in both lib/fam/beta.py and lib/fam/delta.py"):
        asm.assemble("toy", recipes_dir=recipes, lib_dir=lib)


def test_recipe_redefining_a_lib_name_is_rejected(toy):
    lib, recipes = toy
    write(
        recipes, "toy.py", RECIPE_HEAD + "# %%\nfrom lib.fam.alpha import alpha_fn\n\n\ndef gamma_fn():\n    return 2\n"
    )
    with pytest.raises(asm.AssemblyError, match="redefines 'gamma_fn'"):
        asm.assemble("toy", recipes_dir=recipes, lib_dir=lib)


def test_import_cycle_is_rejected(toy):
    lib, recipes = toy
    write(
        lib,
        "fam/gamma.py",
        "# %% [markdown]\n# # Gamma\n\n# %%\nfrom lib.fam.alpha import alpha_fn\n\nGAMMA = 1\n\n\n"
        "def gamma_fn():\n    return GAMMA\n",
    )
    with pytest.raises(
        asm.AssemblyError,
        match=r"import cycle between lib modules: lib\.fam\.alpha -> lib\.fam\.beta -> "
        r"lib\.fam\.gamma -> lib\.fam\.alpha",
    ):
        asm.assemble("toy", recipes_dir=recipes, lib_dir=lib)


@pytest.mark.parametrize(
    "statement, message",
    [
        ("import lib.gamma", "cannot be inlined"),
        ("from lib import gamma", "cannot be inlined"),
        ("from lib.fam.gamma import *", "import \\*' cannot be inlined"),
        ("from lib.fam.gamma import gamma_fn as g", "as g' from lib cannot be inlined"),
        ("from .gamma import gamma_fn", "relative imports"),
        ("def f():\n    from lib.fam.gamma import gamma_fn\n    return gamma_fn()", "must be at the top level"),
        ("try:\n    from lib.fam.gamma import gamma_fn\nexcept ImportError:\n    pass", "must be at the top level"),
        ("from generator.assemble import build", "cannot be inlined"),
    ],
)
def test_import_forms_that_cannot_be_inlined(toy, statement, message):
    lib, recipes = toy
    write(recipes, "toy.py", RECIPE_HEAD + "# %%\n" + statement + "\n")
    with pytest.raises(asm.AssemblyError, match=message) as info:
        asm.assemble("toy", recipes_dir=recipes, lib_dir=lib)
    assert "toy.py: cell" in str(info.value)  # says where


def test_missing_module_and_missing_parameters_cell(toy):
    lib, recipes = toy
    write(recipes, "toy.py", RECIPE_HEAD + "# %%\nfrom lib.fam.nosuch import thing\n")
    with pytest.raises(asm.AssemblyError, match="imports lib.fam.nosuch, but .*nosuch.py does not exist"):
        asm.assemble("toy", recipes_dir=recipes, lib_dir=lib)
    write(recipes, "toy.py", "# %% [markdown]\n# # T\n\n# %%\nx = 1\n")
    with pytest.raises(asm.AssemblyError, match="tagged parameters"):
        asm.assemble("toy", recipes_dir=recipes, lib_dir=lib)


def test_magics_do_not_break_parsing(toy):
    lib, recipes = toy
    write(
        recipes,
        "toy.py",
        RECIPE_HEAD + "# %%\n%matplotlib inline\nfrom lib.fam.gamma import gamma_fn\n!echo hi\nvalue = gamma_fn()\n",
    )
    nb = asm.assemble("toy", recipes_dir=recipes, lib_dir=lib)
    last = nb.cells[-2].source
    assert "%matplotlib inline" in last and "!echo hi" in last and "from lib" not in last


# ----------------------------------------------------------------------------- the real notebooks
def test_committed_notebooks_are_fresh_and_self_contained():
    assert asm.check() == []


def test_every_recipe_has_the_standard_parameters():
    for name in asm.available_recipes():
        params = {p for p, _default, _comment in asm.parameters_of(name)}
        assert {"output_dir", "seed", "data_path"} <= params, f"{name} lacks standard parameters: {params}"


def test_check_catches_stale_notebook_and_lib_import(tmp_path):
    out = tmp_path / "notebooks"
    shutil.copytree(asm.NOTEBOOKS_DIR, out)
    assert asm.check(out) == []
    name = asm.available_recipes()[0]
    path = out / f"{name}.ipynb"
    data = json.loads(path.read_text())
    data["cells"][-1]["source"] = "print('edited by hand')\n"
    path.write_text(json.dumps(data, sort_keys=True, indent=1) + "\n")
    problems = asm.check(out)
    assert any("differs from a fresh build" in p and name in p for p in problems)
    # a leftover lib import (behind a magic, inside a function) is caught by parsing the cells
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("%time x = 1\ndef f():\n    from lib.core.audio import load_audio\n"))
    nbformat.write(nb, path)
    problems = asm.check(out)
    assert any("from lib.core.audio import" in p for p in problems)
    (out / "orphan.ipynb").write_text(path.read_text())
    assert any("orphan.ipynb: no recipe" in p for p in asm.check(out))


def test_audiolens_run_setup_keeps_finished_bars_and_leaves_out_transient_ones(monkeypatch, capsys):
    """Under `audiolens run` (AUDIOLENS_TEXT_PROGRESS) the saved notebook gets text bars that show where each
    ended; inner-loop bars (leave=False) would erase themselves into empty output boxes, so they are left out."""
    import io

    import tqdm.auto

    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.auto.tqdm)  # restored after the test
    monkeypatch.setattr(tqdm.auto, "trange", tqdm.auto.trange)
    monkeypatch.setenv("AUDIOLENS_TEXT_PROGRESS", "1")
    exec(compile(asm.setup_cell_source("digits"), "<setup cell>", "exec"), {"__name__": "__main__"})
    assert "All requirements are installed." in capsys.readouterr().out
    text = io.StringIO()
    assert list(tqdm.auto.tqdm(range(3), desc="outer", file=text)) == [0, 1, 2]
    assert "outer: 100%" in text.getvalue() and "3/3" in text.getvalue()
    inner = io.StringIO()
    assert list(tqdm.auto.tqdm(range(3), desc="inner", leave=False, file=inner)) == [0, 1, 2]
    assert list(tqdm.auto.trange(2, desc="inner", leave=False, file=inner)) == [0, 1]
    assert inner.getvalue() == ""


def test_a_cell_title_names_what_the_cell_defines():
    assert asm._cell_summary("def load(x):\n    return x\n\n\nclass Spec:\n    pass\n") == "load, Spec"
    assert asm._cell_summary("import os\n\nLIMIT = 3\n") == "imports and constants"
    registry = "TABLE = {'a': 1}\nfor _key in ('b', 'c'):\n    TABLE[_key] = 2\nOTHER: int = 4\n"
    assert asm._cell_summary(registry) == "TABLE, OTHER"  # a table a loop fills: named, not "code"
    assert asm._cell_summary("for _i in range(3):\n    print(_i)\n") == "code"
    assert asm._cell_summary("MODES = ('a',)\n\n\ndef _helper():\n    return MODES\n") == "code"  # private helpers
    many = "".join(f"def f{i}():\n    pass\n\n\n" for i in range(6))
    assert asm._cell_summary(many) == "f0, f1, f2, f3 and 2 more"
