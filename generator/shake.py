"""Leave out of a notebook the lib definitions that nothing in it can reach.

A lib module serves several notebooks; one notebook often uses a few of its functions. The
assembler inlines whole modules, then this pass drops each top-level function, class or constant
that no code of the notebook can reach: not named (transitively) by the recipe, by the generated
cells, or by any statement that is kept. The rules are conservative; a definition stays when

- a kept statement names it anywhere (body, decorator, default argument, annotation, base class,
  f-string), or a string constant equal to its name appears in kept code (``globals()[...]``,
  ``getattr``, ``__all__``);
- it is decorated with a lib function (a registry such as ``@register_explorer_encoder("x")``:
  decorating registers it, so every registered choice stays selectable by parameter), or it is a
  class with a metaclass or class keywords, or a subclass of a lib class with ``__init_subclass__``;
- it is not a plain definition: imports, expressions, ``if``/``try``/``for`` blocks, augmented
  assignments and assignments to attributes or items always stay, and so does an assignment whose
  value calls a lib function;
- its cell holds IPython magics (the cell is left as it is).

The module's section in the notebook names what was left out and where it lives.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class _Statement:
    module: int  # index of the module in the assembly order
    cell: int  # index of the code cell in the module's cells
    node: ast.stmt
    defines: list = field(default_factory=list)  # names a droppable definition binds
    refs: set = field(default_factory=set)  # names (and identifier strings) it mentions
    droppable: bool = False


def _parse(source: str):
    from generator.assemble import _parse as parse

    return parse(source)


def referenced_names(tree: ast.AST) -> set:
    """Every name a piece of code mentions, and every string constant that looks like an identifier."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _IDENTIFIER.match(node.value):
            names.add(node.value)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names.update(node.names)
    return names


def _assigned_names(node: ast.stmt) -> list | None:
    """The names a plain ``NAME = value`` / ``NAME: type = value`` / ``A, B = value`` binds; None otherwise."""
    if isinstance(node, ast.Assign):
        targets = node.targets
    elif isinstance(node, ast.AnnAssign) and node.value is not None:
        targets = [node.target]
    else:
        return None
    names = []
    for target in targets:
        elements = target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target]
        for element in elements:
            if not isinstance(element, ast.Name):
                return None
            names.append(element.id)
    return names


def _statements(modules: list) -> list:
    """Every top-level statement of the modules' code cells; magics cells count as one kept block."""
    from generator.assemble import _python_source

    out = []
    for m_index, module in enumerate(modules):
        for c_index, cell in enumerate(module.cells):
            if cell.kind != "code":
                continue
            python = _python_source(cell.source)
            tree = _parse(python)
            if python.rstrip("\n") != cell.source.rstrip("\n"):  # magics: keep the cell whole
                out.append(_Statement(m_index, c_index, tree, refs=referenced_names(tree)))
                continue
            for node in tree.body:
                out.append(_Statement(m_index, c_index, node, refs=referenced_names(node)))
    return out


def _classes_that_see_subclasses(nodes: list) -> set:
    """Lib classes whose subclasses run code when defined (``__init_subclass__``), and their subclasses."""
    classes = {n.name: n for n in nodes if isinstance(n, ast.ClassDef)}
    found = {
        name
        for name, node in classes.items()
        if any(isinstance(item, ast.FunctionDef) and item.name == "__init_subclass__" for item in node.body)
    }
    grown = True
    while grown:
        more = {name for name, node in classes.items() if any(referenced_names(b) & found for b in node.bases)}
        grown = bool(more - found)
        found |= more
    return found


def unreachable_definitions(modules: list, root_sources: list, statements: list | None = None) -> list:
    """The top-level definitions (``_Statement``) of the modules that nothing reachable from ``root_sources`` names."""
    statements = _statements(modules) if statements is None else statements
    lib_defined = set()
    for statement in statements:
        node = statement.node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            lib_defined.add(node.name)
        else:
            lib_defined.update(_assigned_names(node) or [])
    registering_classes = _classes_that_see_subclasses([s.node for s in statements])
    for statement in statements:
        node = statement.node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            decorated_by_lib = any(referenced_names(d) & lib_defined for d in node.decorator_list)
            seen_by_base = isinstance(node, ast.ClassDef) and (
                bool(node.keywords) or any(referenced_names(b) & registering_classes for b in node.bases)
            )
            statement.defines, statement.droppable = [node.name], not (decorated_by_lib or seen_by_base)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and _assigned_names(node) is not None:
            calls_lib = any(
                isinstance(n, ast.Call) and referenced_names(n.func) & lib_defined for n in ast.walk(node.value)
            )
            statement.defines, statement.droppable = _assigned_names(node), not calls_lib

    definers = {}
    for statement in statements:
        for name in statement.defines:
            definers.setdefault(name, []).append(statement)
    kept_ids = set()
    pending = []
    from generator.assemble import _python_source

    for source in root_sources:
        pending.extend(referenced_names(_parse(_python_source(source))))
    for statement in statements:
        if not statement.droppable:
            kept_ids.add(id(statement))
            pending.extend(statement.refs)
    seen = set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        for statement in definers.get(name, []):
            if id(statement) not in kept_ids:
                kept_ids.add(id(statement))
                pending.extend(statement.refs)
    return [s for s in statements if s.droppable and id(s) not in kept_ids]


def _span(lines: list, node: ast.stmt) -> tuple:
    """1-based first and last line of a statement, with its decorators and the comment lines just above it."""
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    while first > 1 and lines[first - 2].startswith("#"):
        first -= 1
    return first, node.end_lineno or node.lineno


def _remove_lines(source: str, spans: list) -> str:
    lines = source.splitlines()
    drop = set()
    for first, last in spans:
        drop.update(range(first, last + 1))
    kept = [line for number, line in enumerate(lines, start=1) if number not in drop]
    text = "\n".join(kept)
    text = re.sub(r"\n{4,}", "\n\n\n", text)  # at most two blank lines between what is left
    return text.strip("\n")


def _without_emptied_sections(cells: list) -> list:
    """Drop the code cells left empty, and a markdown cell (not the module's first) whose code cells all went."""
    keep = [c.kind != "code" or bool(c.source.strip()) for c in cells]
    for index, cell in enumerate(cells):
        if cell.kind != "markdown" or index == 0:
            continue
        section = []
        for following in cells[index + 1 :]:
            if following.kind != "code":
                break
            section.append(following)
        if section and not any(c.source.strip() for c in section):
            keep[index] = False
    return [cell for cell, kept in zip(cells, keep) if kept]


INLINED_COMMENT = "# inlined above: "  # what the assembler leaves for a dropped `from lib... import` line
_INLINED_LINE = re.compile(r"^(\s*)" + re.escape(INLINED_COMMENT) + r"(.+) \((lib/[\w/]+\.py)\)$")


def _carried_in_comments(source: str, left_out: dict, carried: set) -> str:
    """Dropped-import comments name only what the notebook carries: names left out go, and a comment with
    none left (or naming a module not carried) goes too. ``left_out``: ``{lib/x/y.py: names}``."""
    out = []
    for line in source.splitlines():
        match = _INLINED_LINE.match(line)
        if match:
            names = [n for n in match[2].split(", ") if n not in left_out.get(match[3], ())]
            if not names or match[3] not in carried:
                continue
            line = f"{match[1]}{INLINED_COMMENT}{', '.join(names)} ({match[3]})"
        out.append(line)
    return "\n".join(out)


def shake(modules: list, root_sources: list) -> tuple:
    """Leave out unreachable top-level definitions: rewrite the modules' cells in place and return
    ``({module index: [names left out, in source order]}, {indices of modules not carried at all})``.
    A module is not carried when only its imports would remain; dropped-import comments then name only
    what is carried. Cells left empty are removed, and so is the markdown cell that introduced only them."""
    from generator.assemble import module_label

    statements = _statements(modules)
    dropped = unreachable_definitions(modules, root_sources, statements)
    dropped_ids = {id(s) for s in dropped}
    by_cell, names = {}, {}
    for statement in dropped:
        source = modules[statement.module].cells[statement.cell].source
        span = _span(source.splitlines(), statement.node)
        by_cell.setdefault((statement.module, statement.cell), []).append(span)
        names.setdefault(statement.module, []).extend(statement.defines)
    for (m_index, c_index), spans in sorted(by_cell.items()):
        cell = modules[m_index].cells[c_index]
        cell.source = _remove_lines(cell.source, spans)
    left_out = {index: list(dict.fromkeys(found)) for index, found in sorted(names.items())}
    not_carried = {
        index
        for index in left_out
        if all(
            isinstance(s.node, (ast.Import, ast.ImportFrom))
            for s in statements
            if s.module == index and id(s) not in dropped_ids
        )
    }
    by_label = {module_label(modules[i]): set(found) for i, found in left_out.items()}
    carried = {module_label(m) for i, m in enumerate(modules) if i not in not_carried}
    for module in modules:
        for cell in module.cells:
            if cell.kind == "code" and INLINED_COMMENT in cell.source:
                cell.source = _carried_in_comments(cell.source, by_label, carried)
        module.cells = _without_emptied_sections(module.cells)
    return left_out, not_carried
