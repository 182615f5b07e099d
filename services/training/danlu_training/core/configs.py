"""Built-in training configs: tested starting points to list, copy, edit and submit.

XTuner's ``list-cfg``/``copy-cfg`` as ``danlu configs ls [-p PATTERN]`` and ``danlu configs
copy NAME DIR``. Each config is a commented YAML file shipped inside the package
(``danlu_training/configs/NAME.yaml``); its leading comment block is its description. Model and
dataset names in them are registry names the user pushes (each file says what to push).
Every shipped file is parsed here and resolved by a test, so a broken config never ships.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
from dataclasses import dataclass
from importlib import resources

from danlu.training.v1.training_job_pb2 import TrainingJobSpec
from danlu_kit.errors import NotFound
from danlu_training.core.spec import parse_spec_yaml

# The resource-name collection of configs (`trainingConfigs/{config}`).
COLLECTION = "trainingConfigs"


@dataclass(frozen=True)
class BuiltinConfig:
    name: str  # e.g. "internlm2_1_8b_qlora_alpaca_e3" (the file name without .yaml)
    description: str  # the YAML's leading comment block, without the "# "
    yaml_text: str  # the file as shipped, comments included: what `configs copy` writes
    spec: TrainingJobSpec  # the same, parsed (a fresh copy each call: safe to modify)

    @property
    def summary(self) -> str:
        """The description's first paragraph on one line, for listings."""
        return " ".join(self.description.split("\n\n", 1)[0].split())

    @property
    def resource_name(self) -> str:
        return f"{COLLECTION}/{self.name}"


def _leading_comment(text: str) -> str:
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            if stripped or lines:
                break
            continue
        body = stripped[1:]
        lines.append(body[1:] if body.startswith(" ") else body)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


@functools.cache
def _load() -> dict[str, tuple[str, str, bytes]]:
    """name -> (description, yaml text, serialised spec), read once from the package."""
    found: dict[str, tuple[str, str, bytes]] = {}
    folder = resources.files("danlu_training") / "configs"
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        name = entry.name[: -len(".yaml")]
        text = entry.read_text(encoding="utf-8")
        spec = parse_spec_yaml(text, source=entry.name)
        found[name] = (_leading_comment(text), text, spec.SerializeToString(deterministic=True))
    return found


def _config(name: str) -> BuiltinConfig:
    description, text, blob = _load()[name]
    return BuiltinConfig(name, description, text, TrainingJobSpec.FromString(blob))


def list_configs(pattern: str = "") -> list[BuiltinConfig]:
    """Configs whose name matches ``pattern``, sorted by name.

    ``pattern`` is a case-insensitive substring (``internlm2``, as ``xtuner list-cfg -p``) or,
    when it holds ``*``, ``?`` or ``[``, a glob over the whole name (``*_qlora_*``). Empty: all.
    """
    needle = pattern.strip().lower()
    is_glob = any(ch in needle for ch in "*?[")
    names = [
        n
        for n in _load()
        if not needle
        or (fnmatch.fnmatchcase(n.lower(), needle) if is_glob else needle in n.lower())
    ]
    return [_config(n) for n in names]


def get_config(name: str) -> BuiltinConfig:
    """The config called ``name`` (``trainingConfigs/NAME`` and ``NAME.yaml`` work too).

    Raises NotFound(CONFIG_NOT_FOUND) suggesting the closest names.
    """
    key = name.strip()
    key = key.removeprefix(f"{COLLECTION}/").removesuffix(".yaml")
    configs = _load()
    if key in configs:
        return _config(key)
    close = difflib.get_close_matches(key.lower(), list(configs), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise NotFound(
        message=f"no built-in training config {name!r}{hint} (`danlu configs ls` lists them)",
        reason="CONFIG_NOT_FOUND",
        metadata={"config": key, **({"suggestions": ",".join(close)} if close else {})},
    )
