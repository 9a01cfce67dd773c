"""`python -m pipelines preset NAME`: write a recipe from `presets/` into params.yaml.

A preset is a YAML mapping of dotted keys to values (`train.epochs: 300`), the same
namespace as `--set` and `dvc exp run -S`; a mapping value replaces the key's whole value
(`compare.configs: {...}` replaces every configuration). The result is validated before
params.yaml is touched; comments and key order are kept. Then `dvc repro` (or `dvc exp run`)
runs the recipe, and `git diff params.yaml` / `git checkout params.yaml` show or undo it.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import yaml

from dnc.config import ConfigError
from dnc.config_loading import apply_overrides, params_from_dict, parse_set
from dnc.io import write_text
from pipelines.common.params import add_params_options
from pipelines.dvc.matrix import SECTION, parse_comparison, read_tree


def find_preset(name: str, presets_dir: Path = Path("presets")) -> Path:
    """`name` as a file, else `presets_dir/<name>.yaml`."""
    for path in (Path(name), Path(presets_dir) / f"{name}.yaml"):
        if path.is_file():
            return path
    known = ", ".join(sorted(p.stem for p in Path(presets_dir).glob("*.yaml"))) or "none"
    raise ConfigError(
        f"preset {name!r}: not a file nor {presets_dir}/{name}.yaml (known: {known})"
    )


def load_preset(path: Path) -> dict[str, Any]:
    """The preset's {dotted.key: value} mapping."""
    try:
        preset = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(preset, dict) or not preset:
        raise ConfigError(f"{path}: expected a mapping of dotted.key: value")
    return preset


def check_tree(tree: dict[str, Any]) -> None:
    """The whole params tree is valid: training sections and, if present, `compare`."""
    params_from_dict(tree)  # drops the sections the pipelines declared
    if SECTION in tree:
        parse_comparison(tree)


def _set_dotted(node: Any, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value


def _represent_null(representer: Any, _data: None) -> Any:
    return representer.represent_scalar("tag:yaml.org,2002:null", "null")  # not ""


def _styled(value: Any) -> Any:
    """Containers as ruamel nodes: innermost ones in flow style (`[0, 1]`, `{a: 1}`)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        node: Any = CommentedMap((k, _styled(v)) for k, v in value.items())
    elif isinstance(value, list):
        node = CommentedSeq(_styled(v) for v in value)
    else:
        return value
    children = value.values() if isinstance(value, dict) else value
    if not any(isinstance(v, (dict, list)) for v in children):
        node.fa.set_flow_style()
    return node


def render(params_path: Path, overrides: dict[str, Any]) -> str:
    """params.yaml with `overrides` applied; ruamel (a DVC dependency) keeps the comments."""
    text = Path(params_path).read_text()
    try:
        from ruamel.yaml import YAML
    except ImportError:  # no DVC installed: plain YAML, comments lost
        return yaml.safe_dump(apply_overrides(yaml.safe_load(text), overrides), sort_keys=False)
    rt = YAML()
    rt.width = 99
    rt.representer.add_representer(type(None), _represent_null)
    doc = rt.load(text)
    for dotted, value in overrides.items():
        _set_dotted(doc, dotted, _styled(value))
    buf = io.StringIO()
    rt.dump(doc, buf)
    return buf.getvalue()


def apply_preset(params_path: Path, overrides: dict[str, Any]) -> list[str]:
    """Write `overrides` into the params file after validating the result; returns the
    dotted keys whose value changed."""
    tree = read_tree(params_path)
    new = apply_overrides(tree, overrides)  # unknown sections fail here, naming the key
    check_tree(new)
    changed = [k for k in overrides if _get(tree, k) != _get(new, k)]
    write_text(render(params_path, overrides), Path(params_path))
    return changed


def _get(tree: dict[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _run(args: argparse.Namespace) -> int:
    path = find_preset(args.name, Path(args.presets_dir))
    overrides = {**load_preset(path), **parse_set(args.set)}
    changed = apply_preset(Path(args.params), overrides)
    print(f"{args.params}: {len(changed)} keys set from {path}: {', '.join(changed) or '-'}")
    print("next: dvc repro   (or: dvc exp run -n NAME; undo: git checkout params.yaml)")
    return 0


def add(p: argparse.ArgumentParser) -> None:
    """`python -m pipelines preset`."""
    p.add_argument("name", help="preset name (presets/<name>.yaml) or a preset file")
    add_params_options(p, params_help="params file to update", set_help="extra override")
    p.add_argument("--presets-dir", default="presets", help="folder of preset files")
    p.set_defaults(func=_run)
