"""Validate a notebook's parameters before any work starts.

This module is standard-library only: the generator copies the source of
``audiolens_check_parameters`` (and its helpers, everything below the marker line) into every
notebook's parameter-check cell, and ``audiolens run`` calls the same function before it
starts a kernel. A schema entry, built by ``generator.params`` from the recipe's parameters
cell, is ``{"default": value, "spec": "[...]" or "", "type": "int" | "float" | ...}``.

Spec mini-language (the optional ``[...]`` at the start of a parameter's comment):
``[a|b|c]`` choices; ``[1..]``, ``[0..1]``, ``[..10]`` numeric ranges (``int``/``float`` may
come first: ``[int 1..]``); ``[path]`` an existing file or folder; ``[each a|b]`` /
``[each 1..]`` the same rule for every item of a list; ``[list|dict]`` one of several types
(then the rule). ``None`` is accepted wherever the default is ``None``, and elsewhere when the
spec starts with ``optional`` (``[optional list]``, ``[optional each 1..]``,
``[optional float 0.1..]``: None then means "skip" or "all", as the comment says). A choices
spec decides alone: ``[True|False|force]`` accepts the string
``"force"`` although the default is a bool.

The run record: ``audiolens_start_run`` (called by the check cell after the parameters pass, and
by ``audiolens run`` before the kernel starts) begins a fresh ``results.json`` in the output
folder holding only ``{"run": {id, notebook, status "running", started, parameters}}``; an
earlier run's file is kept as ``results.previous.json``. ``lib.core.outputs.update_results``
adds sections only to the file of the current run (``$AUDIOLENS_RUN_ID``).
``audiolens_finish_run`` sets the status (``complete`` or ``failed at cell N: ...``).
"""

# --- copied into notebooks from here on ---
import datetime as _datetime
import difflib as _difflib
import json as _json
import os as _os
import secrets as _secrets
import socket as _socket


class ParameterError(ValueError):
    """One or more parameters are invalid; the message lists each with the fix."""


def _param_spec_parts(spec):
    text = (spec or "").strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    if text == "optional" or text.startswith("optional "):
        text = text[len("optional") :].strip()
    each = text.startswith("each ")
    if each:
        text = text[5:].strip()
    kind = None
    head, _, rest = text.partition(" ")
    if "|" in head and all(k in _PARAM_UNION_KINDS for k in head.split("|")):  # a union of types: [list|dict]
        return each, head, rest.strip()
    for word in ("int", "float", "str", "bool", "list", "dict", "path"):
        if text == word or text.startswith(word + " "):
            kind, text = word, text[len(word) :].strip()
            break
    return each, kind, text


_PARAM_UNION_KINDS = ("int", "float", "str", "bool", "list", "dict")
_PARAM_KIND_WORDS = {"int": "a whole number", "float": "a number", "str": "a string", "bool": "True or False"}
_PARAM_KIND_WORDS.update(list="a list", dict="a dict")


def _param_check_one(name, value, default, spec):
    """The problem with one value (a string), or None when it is fine."""
    if value is None and (default is None or (spec or "").lstrip("[ ").startswith("optional")):
        return None
    each, kind, rule = _param_spec_parts(spec)
    choices_only = bool(rule) and ".." not in rule
    if kind is None and default is not None and not each and not choices_only:
        kind = type(default).__name__
    if kind == "tuple":
        kind = "list"
    shape = "list" if each else kind
    if shape and "|" in shape and "str" not in shape.split("|"):  # [list|dict]: a string that looks like one
        shape = next((k for k in shape.split("|") if k in ("list", "dict")), shape)
    if isinstance(value, str) and shape in ("list", "dict") and value.strip()[:1] in "[{(":
        return (
            f"{value!r} looks like a {shape} but does not parse as one (the shell may have stripped "
            f'its quotes); quote each item: -p {name} \'["a", "b"]\''
        )
    if not each:
        return _param_check_value(value, default, kind, rule)
    for item in list(value) if isinstance(value, (list, tuple)) else [value]:  # a single item is fine too
        problem = _param_check_value(item, None, kind, rule)
        if problem:
            return f"{problem} (in {value!r})"
    return None


def _param_check_value(value, default, kind, rule):
    """The problem of ``value`` against a type ``kind`` and a rule (range or choices), or None."""
    hint = f" (the default is {default!r})" if default is not None else ""
    if kind and "|" in kind:  # one of several types, then the rule
        kinds = kind.split("|")
        typed = [k for k in kinds if _param_check_value(value, None, k, "") is None]
        if not typed:
            return f"{value!r} is not {' or '.join(_PARAM_KIND_WORDS.get(k, k) for k in kinds)}{hint}"
        problems = [_param_check_value(value, default, k, rule) for k in typed]
        return None if None in problems else problems[0]
    if kind == "int" and (not isinstance(value, int) or isinstance(value, bool)):
        return f"{value!r} is not a whole number{hint}"
    if kind == "float" and (not isinstance(value, (int, float)) or isinstance(value, bool)):
        return f"{value!r} is not a number{hint}"
    if kind == "bool" and not isinstance(value, bool):
        return f"{value!r} is not True or False"
    if kind == "str" and not isinstance(value, str):
        return f"{value!r} is not a string{hint}"
    if kind == "list" and not isinstance(value, (list, tuple)):
        return f"{value!r} is not a list{hint}"
    if kind == "dict" and not isinstance(value, dict):
        return f"{value!r} is not a dict{hint}"
    if kind == "path":
        if not isinstance(value, (str, _os.PathLike)):
            return f"{value!r} is not a path"
        if not _os.path.exists(_os.path.expanduser(str(value))):
            return f"{str(value)!r} does not exist; give an existing file or folder (or None)"
        return None
    if not rule:
        return None
    return _param_check_rule(value, rule, kind)


def _param_check_rule(value, rule, kind):
    if ".." in rule and "|" not in rule:
        low, _, high = rule.partition("..")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number"
        if kind == "int" and not isinstance(value, int):
            return f"{value!r} is not a whole number"
        if low.strip() and value < float(low):
            return f"{value!r} is below the smallest allowed value {low.strip()}"
        if high.strip() and value > float(high):
            return f"{value!r} is above the largest allowed value {high.strip()}"
        return None
    choices = [c.strip() for c in rule.split("|")]
    if str(value) not in choices:
        close = _difflib.get_close_matches(str(value), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"{value!r} is not one of {', '.join(choices)}{hint}"
    return None


def audiolens_check_parameters(namespace, schema, renamed=None, notebook="this notebook"):
    """Check ``namespace`` (a notebook's globals, or a dict of values) against ``schema``.

    Old parameter names in ``renamed`` are moved to their new names with a deprecation
    message. Returns the list of messages printed; raises ``ParameterError`` listing every
    invalid value, with the fix.
    """
    messages, problems = [], []
    for old, new in (renamed or {}).items():
        if old in namespace:
            value = namespace.pop(old)
            if new in namespace and namespace[new] != schema.get(new, {}).get("default") and namespace[new] != value:
                problems.append(f"{old} (renamed {new}) and {new} are both given with different values; keep {new}")
                continue
            namespace[new] = value
            messages.append(
                f"DeprecationWarning: parameter {old!r} is now {new!r}; {old!r} still works in this "
                "release, but update your scripts (-p " + new + " ...)"
            )
    for name, entry in schema.items():
        if name not in namespace:
            continue
        problem = _param_check_one(name, namespace[name], entry.get("default"), entry.get("spec", ""))
        if problem:
            problems.append(f"{name}: {problem}")
    for message in messages:
        print(message)
    if problems:
        raise ParameterError(
            f"invalid parameters for {notebook}:\n  "
            + "\n  ".join(problems)
            + "\nFix them in the parameters cell or with -p NAME VALUE, then run again."
        )
    return messages


def audiolens_new_run_id():
    """A unique run id: start time to the second plus 6 random hex digits."""
    return _datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + _secrets.token_hex(3)


def _audiolens_results_file(output_dir, name="results.json"):
    return _os.path.join(_os.path.expanduser(str(output_dir)), name)


def _audiolens_load_json(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = _json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _audiolens_save_json(path, data):
    temporary = f"{path}.{_os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(_json.dumps(data, indent=2, default=str) + "\n")
        handle.flush()
        _os.fsync(handle.fileno())
    _os.replace(temporary, path)


def audiolens_start_run(output_dir, notebook, parameters, run_id=None, export=True):
    """Begin this run's ``results.json`` in ``output_dir``; return ``{"id", "output_dir"}``.

    The run id is ``run_id``, else the one ``audiolens run`` chose (``$AUDIOLENS_CLI_RUN_ID``),
    else a new one; it is exported as ``$AUDIOLENS_RUN_ID`` for ``update_results`` (unless
    ``export`` is False: the CLI process records runs it does not belong to). A file of
    the same run is kept (the CLI wrote it before the kernel started); a file of another run
    is renamed ``results.previous.json``, so no section of an earlier run survives in this one.
    """
    run_id = run_id or _os.environ.get("AUDIOLENS_CLI_RUN_ID") or audiolens_new_run_id()
    if export:
        _os.environ["AUDIOLENS_RUN_ID"] = run_id
    _os.makedirs(_os.path.expanduser(str(output_dir)), exist_ok=True)
    path = _audiolens_results_file(output_dir)
    current = _audiolens_load_json(path) if _os.path.exists(path) else None
    run = dict(
        id=run_id,
        notebook=notebook,
        status="running",
        started=_datetime.datetime.now().isoformat(timespec="seconds"),
        parameters={key: value for key, value in parameters.items() if not key.startswith("_")},
        pid=_os.getpid(),
        host=_socket.gethostname(),
    )
    if current is not None and (current.get("run") or {}).get("id") == run_id:
        current["run"] = dict(current["run"], parameters=run["parameters"])
        _audiolens_save_json(path, current)
        return {"id": run_id, "output_dir": str(output_dir)}
    if _os.path.exists(path):
        previous = (current or {}).get("run") or {}
        _os.replace(path, _audiolens_results_file(output_dir, "results.previous.json"))
        run["previous_run"] = previous.get("id", "unknown")
        print(
            f"{path} held the results of an earlier run ({previous.get('id', 'no run id')}); "
            "this run starts it afresh (the old file is now results.previous.json)"
        )
    _audiolens_save_json(path, {"run": run})
    return {"id": run_id, "output_dir": str(output_dir)}


def audiolens_finish_run(output_dir, run_id, status="complete", **details):
    """Record ``status`` (and ``details``) in the run block of this run's ``results.json``.

    Returns False and changes nothing when the file belongs to another run.
    """
    path = _audiolens_results_file(output_dir)
    current = _audiolens_load_json(path)
    if current is None:
        current = {"run": {"id": run_id}}
    if (current.get("run") or {}).get("id") != run_id:
        return False
    current["run"] = dict(
        current["run"], status=status, finished=_datetime.datetime.now().isoformat(timespec="seconds"), **details
    )
    _audiolens_save_json(path, current)
    return True
