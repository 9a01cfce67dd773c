"""Reading params: a params file or nested dict, `--set` overrides, validated into `Params`.

Every error names the dotted key (`split.factor: ...`), so a typo fails before any data is
read. A method's section may be absent (it then means the method's defaults); other tools'
top-level sections (`search`, `compare`) are declared with `declare_sections` and dropped
before validation. The schemas themselves are in `dnc.config`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dnc.config import ConfigError, Params


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted.key: leaf}; lists stay leaves."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def apply_overrides(tree: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (copy); a path through a non-section is an error.

    A method's section may be absent (it then means the defaults): setting one of its keys
    creates it from those defaults.
    """
    tree = yaml.safe_load(yaml.safe_dump(tree))  # deep copy of plain data
    optional = method_sections()
    for dotted, value in overrides.items():
        node = tree
        parts = dotted.split(".")
        for depth, part in enumerate(parts[:-1]):
            if depth == 0 and part in optional and node.get(part) is None:
                node[part] = optional[part]().model_dump(mode="json")  # absent = defaults
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"{dotted}: unknown key (no section {part!r})")
            node = node[part]
        node[parts[-1]] = value
    return tree


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """Parse CLI `--set key=value` items; values are YAML (`3`, `0.1`, `null`, `[1, 2]`)."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"{key.strip()}: --set value {raw!r} is not valid YAML") from err
    return out


def _dotted(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc if not str(part).startswith("function-"))


# Top-level sections that other tools own (e.g. the pipelines' `search` and `compare`);
# they are dropped before validation. Owners declare them with `declare_sections`.
_DECLARED_SECTIONS: set[str] = set()


def declare_sections(*names: str) -> None:
    """Declare top-level params sections that the caller owns and dnc does not validate."""
    _DECLARED_SECTIONS.update(names)


def declared_sections() -> frozenset[str]:
    """Top-level sections declared by other tools (not training params)."""
    return frozenset(_DECLARED_SECTIONS)


def method_sections() -> dict[str, type[BaseModel]]:
    """Section name -> config model of every registered method that has a section."""
    from dnc.methods import get_method, list_methods  # lazily: methods import this module

    models = {name: get_method(name).config for name in list_methods()}
    return {name: model for name, model in models.items() if model is not None}


def _validate(model: type[BaseModel], tree: Any, prefix: str = "") -> Any:
    """`model.model_validate(tree)`; the first error names its dotted key."""
    try:
        return model.model_validate(tree)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(p for p in (prefix, _dotted(first["loc"])) if p) or "params"
        kind = first["type"]
        message = {"missing": "missing key", "extra_forbidden": "unknown key"}.get(
            kind, first["msg"]
        )
        more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
        raise ConfigError(f"{key}: {message}{more}") from None


def params_from_dict(tree: Any, extra_sections: Iterable[str] = ()) -> Params:
    """Validate a nested dict; the first error names its dotted key.

    `extra_sections` (and `declared_sections()`) are dropped unvalidated. The selected
    method's section is validated by its model (absent = its defaults); other methods'
    sections are accepted and dropped; any other unknown top-level key fails.
    """
    if not isinstance(tree, dict):
        raise ConfigError("params: expected a mapping of sections")
    foreign = declared_sections() | set(extra_sections)
    optional = method_sections()
    core = {k: v for k, v in tree.items() if k not in foreign and k not in optional}
    params = _validate(Params, {k: v for k, v in core.items() if k in Params.model_fields})
    unknown = [k for k in core if k not in Params.model_fields]
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key")
    from dnc.methods import get_method

    try:
        method = get_method(params.method)
    except ValueError as err:
        raise ConfigError(f"method: {err}") from None
    if method.config is None:
        return params
    section = _validate(method.config, tree.get(method.name) or {}, method.name)
    return Params.model_validate({**core, method.name: section})


def read_tree(path: str | Path) -> dict[str, Any]:
    """A params file as a nested dict, all sections; a missing or broken file names itself."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        tree = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return tree


def load_params(
    path: str | Path,
    overrides: dict[str, Any] | None = None,
    extra_sections: Iterable[str] = (),
) -> Params:
    """Read, override and validate a params file; `extra_sections` are the caller's own
    top-level sections (not training params), skipped like `declared_sections()`."""
    tree = read_tree(path)
    return params_from_dict(apply_overrides(tree, overrides or {}), extra_sections)
