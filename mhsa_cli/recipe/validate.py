"""Where a recipe is checked: YAML with lines, stage types, validation, hashes.

:func:`load_recipe_text` parses YAML and records each key's line;
:func:`validate_recipe` applies ``--set`` overrides (:func:`_apply_set`) and
checks the whole recipe against each stage type's config dataclass
(:data:`STAGE_TYPES`), resolving ``from``/``compare`` to earlier stages; it
returns a :class:`Plan` of :class:`Stage` objects, each with the hash that
resume compares (:func:`_hash_stages`). Nothing runs here.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml

from .. import config as C
from .. import yamlsafe
from ..errors import MhsaError, closest
from ..hashing import file_sha256  # noqa: F401  (recipe.run imports it from here)
from ..tasks import hf_datasets


@dataclass
class StageType:
    """How a stage type maps onto its command: config class and wiring (its call: stages.RUN)."""

    config: type
    input_field: str | None  # config field that receives the `from` stage's folder
    accepts: tuple[str, ...]  # output kinds accepted as input
    output: Callable[[dict[str, Any]], str]  # resolved settings -> output kind
    measures: bool = False  # its outputs are measurements: redone when the machine or torch build changes


STAGE_TYPES: dict[str, StageType] = {
    "train": StageType(C.TrainConfig, None, (), lambda s: "float"),
    "prune": StageType(C.PruneConfig, "checkpoint", ("float",), lambda s: "sweep" if s.get("sweep") else "float"),
    "quantize": StageType(C.QuantizeConfig, "checkpoint", ("float",), lambda s: "int8"),
    "distill": StageType(C.DistillConfig, "teacher", ("float",), lambda s: "float"),
    "export": StageType(C.ExportConfig, "checkpoint", ("float",), lambda s: "export"),
    "bench": StageType(C.BenchConfig, None, ("float", "int8"), lambda s: "bench", measures=True),
    "import": StageType(C.ImportConfig, None, (), lambda s: "float"),
    "finetune": StageType(C.TrainConfig, "init", ("float",), lambda s: "float"),  # train --init <from>
}
RUNNER_KEYS = ("out", "force")  # set by the runner, not by the recipe
# settings whose value names an earlier stage (resolved to its folder and hashed as an input)
STAGE_REFS: dict[str, tuple[str, ...]] = {"prune": ("kd_teacher",)}
STAGE_META_KEYS = ("name", "type", "from", "compare")
TOP_KEYS = ("name", "description", "defaults", "stages")
STAGE_FILE = "stage.json"
RECIPE_FILE = "recipe.json"
# Recipe runs go under runs/ (gitignored), never into the committed reference results/NAME/.
RUNS_ROOT = Path("runs") / "recipes"


def default_out(name: str) -> Path:
    """Where ``mhsa run`` writes a recipe named ``name`` without ``--out``: runs/recipes/NAME/."""
    return RUNS_ROOT / name


# ------------------------------------------------------------------ YAML with lines

def _construct(node: yaml.Node, lines: dict[tuple, int], source: str, path: tuple = ()) -> Any:
    """Build Python objects from a composed YAML node, recording each path's line.

    Aliases are expanded here; :mod:`mhsa_cli.yamlsafe` bounded their expanded size and depth.
    """
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        _MERGER.flatten_mapping(node)  # `<<: *base` merge keys
        out: dict[str, Any] = {}
        for k, v in node.value:
            key = str(yamlsafe.construct(k))
            if key in out:
                raise MhsaError(f"{yamlsafe.where(source, k.start_mark.line + 1, k.start_mark.column + 1)}: "
                                f"duplicate key '{key}'")
            out[key] = _construct(v, lines, source, path + (key,))
            lines[path + (key,)] = k.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, lines, source, path + (i,)) for i, v in enumerate(node.value)]
    return yamlsafe.construct(node)


_MERGER = yamlsafe.BudgetLoader("")


def load_recipe_text(text: str | bytes, source: str) -> tuple[dict[str, Any], dict[tuple, int]]:
    """Parse recipe YAML once, within :mod:`mhsa_cli.yamlsafe`'s budgets; returns (data, path -> line).

    Raises:
        MhsaError: ``source:line:column: ...`` for non-UTF-8 bytes, malformed YAML, a budget
            exceeded, a non-standard tag or a duplicate key; an empty recipe or one that is
            not a mapping.
    """
    if isinstance(text, bytes):
        text = yamlsafe.decode(text, source)
    node = yamlsafe.compose(text, source)
    if node is None:
        raise MhsaError(f"{source}: the recipe is empty")
    lines: dict[tuple, int] = {}
    try:
        data = _construct(node, lines, source)
    except yaml.YAMLError as exc:  # a merge key on a non-mapping
        raise MhsaError(yamlsafe._yaml_error(exc, text, source)) from None
    if not isinstance(data, dict):
        raise MhsaError(f"{source}: a recipe is a mapping with 'name' and 'stages'")
    return data, lines


# ------------------------------------------------------------------ validation

@dataclass
class Stage:
    """One validated stage of a plan."""

    name: str
    type: str
    inputs: list[str]  # stage names this one reads
    settings: dict[str, Any]  # resolved config (incl. out)
    config: Any  # the config dataclass instance
    output_kind: str
    hash: str = ""
    status: str = "pending"  # pending | run | skip
    reason: str = ""  # why it runs (set by mark_plan), e.g. "settings or inputs changed"
    environment: dict[str, Any] | None = None  # measuring stages: the environment measured in
    seconds: float = 0.0
    result: Any = None


@dataclass
class Plan:
    name: str
    source: str
    out: Path
    stages: list[Stage]
    resolved: dict[str, Any]


def _apply_set(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Apply ``--set a.b.c=value``: first part may be a stage name, 'defaults' or a top key."""
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        stages = {s.get("name"): s for s in data.get("stages", []) if isinstance(s, dict)}
        if parts[0] in stages:
            target: Any = stages[parts[0]]
            parts = parts[1:]
        elif parts[0] == "stages" and len(parts) > 1 and parts[1] in stages:
            target, parts = stages[parts[1]], parts[2:]
        else:
            target = data
        if not parts:
            raise MhsaError(f"--set {dotted}: name a key inside the stage, e.g. {dotted}.epochs=3")
        if target is data and parts[0] not in TOP_KEYS:
            raise MhsaError(f"--set {dotted}: no stage or top-level key '{parts[0]}'"
                            f"{closest(parts[0], list(stages) + list(TOP_KEYS))}")
        for p in parts[:-1]:
            if not isinstance(target.get(p, {}), dict):
                raise MhsaError(f"--set {dotted}: '{p}' is not a mapping")
            target = target.setdefault(p, {})
        target[parts[-1]] = value


def _line(lines: dict[tuple, int], *path: Any) -> str:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return f"line {lines[path[:n]]}"
    return "line ?"


def validate_recipe(path: str | Path, overrides: dict[str, Any] | None = None,
                    out: str | Path | None = None) -> Plan:
    """Parse and validate a whole recipe before anything runs.

    Raises:
        MhsaError: malformed YAML, unknown keys (closest valid key named), wrong types,
            out-of-range values, unknown/later/missing ``from``, a stage that cannot take
            its input's kind; each with the YAML line.
    """
    path = Path(path)
    if not path.is_file():
        raise MhsaError(f"recipe {path} not found")
    data, lines = load_recipe_text(_read_bytes(path), str(path))
    data = copy.deepcopy(data)
    _apply_set(data, overrides or {})
    src = str(path)
    for key in data:
        if key not in TOP_KEYS:
            raise MhsaError(f"{src}, {_line(lines, key)}: unknown top-level key '{key}'{closest(key, TOP_KEYS)}")
    name = str(data.get("name") or path.stem)
    stages_raw = data.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise MhsaError(f"{src}, {_line(lines, 'stages')}: 'stages' must be a non-empty list of stages")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise MhsaError(f"{src}, {_line(lines, 'defaults')}: 'defaults' must be a mapping")
    root = Path(out) if out else default_out(name)
    stages: list[Stage] = []
    for i, raw in enumerate(stages_raw):
        stages.append(_validate_stage(i, raw, defaults, {s.name: s for s in stages}, root, src, lines))
    _check_default_keys(defaults, src, lines)
    resolved = {"name": name, "defaults": defaults,
                "stages": [{"name": s.name, "type": s.type, **({"inputs": s.inputs} if s.inputs else {}),
                            **{k: v for k, v in s.settings.items() if k not in RUNNER_KEYS}} for s in stages]}
    plan = Plan(name, src, root, stages, resolved)
    _hash_stages(plan)
    return plan


def _read_bytes(path: Path) -> bytes:
    """The recipe's bytes, refusing a file over the size budget without reading it all."""
    with open(path, "rb") as f:
        data = f.read(yamlsafe.MAX_BYTES + 1)
    return data  # yamlsafe.decode refuses more than MAX_BYTES


def _check_default_keys(defaults: dict[str, Any], src: str, lines: dict[tuple, int]) -> None:
    valid = {f.name for t in STAGE_TYPES.values() for f in dataclasses.fields(t.config)} - set(RUNNER_KEYS)
    for key in defaults:
        if key not in valid:
            raise MhsaError(f"{src}, {_line(lines, 'defaults', key)}: unknown key '{key}' in defaults{closest(key, valid)}")


def _validate_stage(i: int, raw: Any, defaults: dict[str, Any], earlier: dict[str, Stage],
                    root: Path, src: str, lines: dict[tuple, int]) -> Stage:
    at = lambda *p: f"{src}, {_line(lines, 'stages', i, *p)}"  # noqa: E731
    if not isinstance(raw, dict):
        raise MhsaError(f"{at()}: each stage is a mapping with 'name' and 'type'")
    name, kind = raw.get("name"), raw.get("type")
    if not name or not isinstance(name, str) or "/" in name or name.startswith("."):
        raise MhsaError(f"{at()}: stage {i + 1} needs a 'name' (a plain folder name)")
    if name in earlier:
        raise MhsaError(f"{at('name')}: duplicate stage name '{name}'")
    if kind not in STAGE_TYPES:
        raise MhsaError(f"{at('type')}: stage '{name}': unknown stage type '{kind}'"
                        f"{closest(str(kind), STAGE_TYPES)}; choose from: {', '.join(STAGE_TYPES)}")
    st = STAGE_TYPES[kind]
    fields = {f.name for f in dataclasses.fields(st.config) if f.metadata.get("recipe", True)}
    own = {k: v for k, v in raw.items() if k not in STAGE_META_KEYS}
    for key in own:
        if key in RUNNER_KEYS:
            raise MhsaError(f"{at(key)}: stage '{name}': '{key}' is set by the recipe runner "
                            f"(outputs go to <results>/{name}/)")
        if key not in fields or key == st.input_field or (kind == "bench" and key == "checkpoints"):
            raise MhsaError(f"{at(key)}: stage '{name}' ({kind}): unknown key '{key}'"
                            f"{closest(key, fields | {'from', 'compare'})}")
    inputs = _stage_inputs(name, kind, raw, st, earlier, at)
    values = {k: v for k, v in defaults.items() if k in fields and k not in RUNNER_KEYS}
    values.update(own)
    values["out"] = str(root / name)
    values["force"] = True
    if st.input_field:
        values[st.input_field] = str(root / inputs[0])
    for key in STAGE_REFS.get(kind, ()):
        if own.get(key):
            ref = _stage_ref(name, own[key], earlier, at(key), key)
            inputs.append(ref)
            values[key] = str(root / ref)
    if kind == "bench":
        values["checkpoints"] = [str(root / s) for s in inputs]
        if "baseline" in own:
            if own["baseline"] not in inputs:
                raise MhsaError(f"{at('baseline')}: stage '{name}': baseline '{own['baseline']}' "
                                f"is not in compare: {', '.join(inputs)}")
            values["baseline"] = str(root / own["baseline"])
    try:
        cfg = C.build_config(st.config, values)
    except MhsaError as exc:
        raise MhsaError(f"{at(exc.key) if exc.key in own else at()}: stage '{name}' ({kind}): {exc}") from None
    if kind == "import" and not (cfg.path and Path(cfg.path).is_dir()):
        raise MhsaError(f"{at('path')}: stage '{name}': model folder '{cfg.path}' not found "
                        f"(give it with --set {name}.path=FOLDER)")
    if kind in ("train", "finetune", "import", "prune") and _data_path(cfg):
        raise MhsaError(f"{at('data')}: stage '{name}': data file {_data_path(cfg)} not found "
                        f"(give it with --set {name}.data=FILE)")
    settings = C.to_dict(cfg)
    return Stage(name, kind, inputs, settings, cfg, st.output(settings))


def _earlier(name: str, ref: Any, earlier: dict[str, Stage], where: str, label: str = "") -> str:
    """``ref`` if it names an earlier stage (not ``name`` itself); ``label`` names the setting in errors."""
    if ref == name:
        raise MhsaError(f"{where}: stage '{name}' refers to itself (cycle)")
    if not isinstance(ref, str) or ref not in earlier:
        raise MhsaError(f"{where}: stage '{name}': {label}'{ref}' is not an earlier stage"
                        f"{closest(str(ref), earlier)} (stages run in order; no forward references)")
    return ref


def _stage_ref(name: str, ref: Any, earlier: dict[str, Stage], where: str, key: str) -> str:
    """An earlier stage named by a setting (``kd_teacher: teacher``) that makes a float checkpoint."""
    ref = _earlier(name, ref, earlier, where, f"{key} ")
    if earlier[ref].output_kind != "float":
        raise MhsaError(f"{where}: stage '{name}': {key} '{ref}' makes no float checkpoint")
    return ref


def _data_path(cfg: Any) -> str | None:
    """The data file a train, import or prune stage reads, if it names one that does not exist."""
    path = cfg.task_kwargs().get("path") if hasattr(cfg, "task_kwargs") else cfg.data
    if hf_datasets.is_ref(path):  # hf: data sets are checked (and hashed) by _data_files
        return None
    return path if path and not Path(path).is_file() else None


def _stage_inputs(name: str, kind: str, raw: dict[str, Any], st: StageType,
                  earlier: dict[str, Stage], at: Callable[..., str]) -> list[str]:
    """Resolve ``from`` / ``compare`` to earlier stages and check their output kinds."""
    if kind == "bench":
        refs = raw.get("compare")
        if not isinstance(refs, list) or not refs:
            raise MhsaError(f"{at()}: stage '{name}' (bench): 'compare' must list earlier stages")
        key = "compare"
    elif st.input_field:
        if "from" not in raw:
            raise MhsaError(f"{at()}: stage '{name}' ({kind}): missing 'from' (the stage whose output it takes)")
        refs, key = [raw["from"]], "from"
    else:
        if "from" in raw:
            raise MhsaError(f"{at('from')}: stage '{name}' ({kind}) takes no 'from'")
        return []
    for ref in refs:
        got = earlier[_earlier(name, ref, earlier, at(key))].output_kind
        if got not in st.accepts:
            hint = {("prune", "int8"): "; prune before quantizing",
                    ("export", "int8"): "; export its float parent (the export makes ORT's own int8)",
                    ("bench", "export"): "; bench the checkpoint with runtime: [torch, onnxruntime]",
                    }.get((kind, got), "")
            raise MhsaError(f"{at(key)}: stage '{name}' ({kind}) cannot take '{ref}': it makes "
                            f"{'a ' + got + ' checkpoint' if got in ('float', 'int8') else got + ' results'}{hint}")
    return list(refs)


def _data_files(value: Any) -> dict[str, str]:
    """Every setting that names a regular file (a data file, a test file, ...) -> hash of its contents;
    an ``hf:`` data set -> hash of its folder or cached copy (:func:`.hf_datasets.content_sha256`,
    which refuses a data set that is not there)."""
    if isinstance(value, dict):
        return {k: v for item in value.values() for k, v in _data_files(item).items()}
    if isinstance(value, (list, tuple)):
        return {k: v for item in value for k, v in _data_files(item).items()}
    if hf_datasets.is_ref(value):
        return {value: hf_datasets.content_sha256(value)}
    if isinstance(value, str) and value and Path(value).is_file():
        return {value: file_sha256(Path(value))}
    return {}


def _hash_stages(plan: Plan) -> None:
    """Stage hash = sha256(type, settings without runner keys, contents of the files they
    name, mhsa's version, input hashes). A changed data file or a new mhsa version
    therefore reruns the stage (and its dependants) even when the settings are equal."""
    from .. import __version__

    by_name: dict[str, Stage] = {}
    for s in plan.stages:
        payload = {"type": s.type, "settings": {k: v for k, v in s.settings.items() if k not in RUNNER_KEYS},
                   "inputs": [by_name[i].hash for i in s.inputs], "mhsa": __version__}
        # input paths are implied by stage names; don't let the results root change hashes
        for k in ("checkpoint", "teacher", "checkpoints", "baseline", *(("init",) if s.type == "finetune" else ()),
                  *STAGE_REFS.get(s.type, ())):
            payload["settings"].pop(k, None)
        payload["files"] = _data_files(payload["settings"])
        s.hash = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        by_name[s.name] = s
