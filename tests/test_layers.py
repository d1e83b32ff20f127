"""The package's layers, read from the source (ast; nothing is imported).

    base (io, provenance, device) < data < models < decode < train

Each layer imports only from the layers below it, so the models can be built,
loaded and decoded without the trainer (as fairseq's generate.py loads models
through checkpoint_utils without its trainer). metrics and paper sit beside
the stack: metrics reads data's tokenizer, paper renders what metrics wrote.
cluster.py (the workflow's per-job resources) reads the registries; config.py (the
workflow's config: loading and start-up checks) reads them, metrics' checkpoint
check and cluster; layout.py (where a run's files live) reads config.py.

One module has a layer of its own: train/settings.py, the training settings'
declarations (defaults, schema, resumable keys, update_freq), layer train_settings.
It imports only base, so the trainer, cluster (runtimes from update_freq) and config
(the training schema, the averaging check) all read it without cluster or config
being allowed the rest of the train layer (the trainer, torch). metrics/settings.py,
the evaluate settings' declarations, is likewise layer evaluate_settings: decode's
speed protocol, the metrics and config read it. paper/grid_file.py, which reads a paper
grid file with its layout resolved, is layer paper_grid_file (base only): the config
merges the grid through it and the paper package checks grids through it.

Each pipeline stage's command line is ``aeqa_model/<stage>/cli.py``
(tests/test_entry_points.py). Those of train, decode and paper live in their
packages; pretrain_sqs and distill are stages of the train layer; the command
lines of the data stages (download, prepare, bpe, binarize) form the layer
data_cli, above data, and evaluate's the layer metrics_cli, above metrics: they
parse flags and call the logic below them, and nothing imports them.

Counted as imports: every ``import`` and ``from ... import`` anywhere in a file
(inside functions too), and the registries' lazy ``"aeqa_model.x.y:Name"``
strings. A new top-level module or subpackage has to be given a layer here.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "aeqa_model"

# top-level module or subpackage of aeqa_model (or one module, "package.module") -> its layer
LAYER_OF = {
    "__init__": "base", "io": "base", "declared": "base", "provenance": "base", "device": "base", "gpu_slots": "base",
    "data": "data",
    "models": "models",
    "decode": "decode",
    "train": "train", "pretrain_sqs": "train", "distill": "train",
    "download": "data_cli", "prepare": "data_cli", "bpe": "data_cli", "binarize": "data_cli",
    "metrics": "metrics",
    "evaluate": "metrics_cli",
    "paper": "paper",
    "cluster": "cluster",
    "config": "config", "config_facts": "config", "layout": "config",
    "train.settings": "train_settings",
    "metrics.settings": "evaluate_settings",
    "paper.grid_file": "paper_grid_file",
}

# layer -> the other layers it may import
MAY_IMPORT = {
    "base": set(),
    "data": {"base"},
    "models": {"base", "data"},
    "decode": {"base", "data", "models", "evaluate_settings"},
    "train_settings": {"base"},
    "evaluate_settings": {"base"},
    "train": {"base", "data", "models", "decode", "train_settings", "evaluate_settings"},
    "data_cli": {"base", "data"},
    "metrics": {"base", "data", "evaluate_settings"},
    "metrics_cli": {"base", "data", "metrics"},
    "paper_grid_file": {"base"},
    "paper": {"base", "metrics", "paper_grid_file"},
    "cluster": {"base", "data", "models", "decode", "train_settings", "evaluate_settings"},
    "config": {"base", "data", "models", "decode", "metrics", "cluster", "train_settings", "evaluate_settings",
               "paper_grid_file"},
}

STACK = ("base", "data", "models", "decode", "train")
REGISTRY_ENTRY = re.compile(r"aeqa_model(\.\w+)+:\w+")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str | None:
    parts = module.split(".")
    own = LAYER_OF.get(".".join(parts[1:3])) if len(parts) > 2 else None
    return own or LAYER_OF.get(parts[1] if len(parts) > 1 else "__init__")


def imports(module: str, path: Path, known: set[str], registries: bool = True) -> list[tuple[int, str]]:
    """(line, imported aeqa_model module) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in known else target))
        elif registries and isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and REGISTRY_ENTRY.fullmatch(node.value):
            found.append((node.lineno, node.value.split(":")[0]))
    return [(line, name) for line, name in found if name == "aeqa_model" or name.startswith("aeqa_model.")]


def test_the_allowed_imports_form_the_stack():
    for lower, upper in zip(STACK, STACK[1:]):
        assert MAY_IMPORT[upper] >= MAY_IMPORT[lower] | {lower}
        assert upper not in MAY_IMPORT[lower]
    for name, allowed in MAY_IMPORT.items():
        assert name not in allowed
        assert all(name not in MAY_IMPORT[other] for other in allowed), f"{name} and a layer it imports import each other"


def test_every_module_has_a_layer():
    unplaced = [name for name in sources() if layer(name) is None]
    assert not unplaced, f"give these a layer in tests/test_layers.py (LAYER_OF): {unplaced}"


def test_no_import_runs_up_or_across_the_layers():
    modules = sources()
    wrong = []
    for name, path in modules.items():
        mine = layer(name)
        for line, target in imports(name, path, set(modules)):
            theirs = layer(target)
            if theirs is None:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {target} (no such module)")
            elif theirs != mine and theirs not in MAY_IMPORT[mine]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {mine} imports {target} ({theirs})")
    assert not wrong, "imports against the layer order:\n  " + "\n  ".join(wrong)


def test_no_import_cycle():
    """No module reaches itself through imports (the registries' lazy strings aside:
    a strategy module imports the decode package, which names it only as a string)."""
    modules = sources()
    graph = {name: sorted({t for _, t in imports(name, path, set(modules), registries=False)
                           if t in modules and t != name})
             for name, path in modules.items()}
    state: dict[str, str] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(trail[trail.index(nxt):] + [node, nxt]) if nxt in trail
                              else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, trail + [node])
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])
    assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_the_checker_sees_an_upward_import(tmp_path):
    """The parser resolves absolute, relative and ``from package import module`` forms."""
    pkg = tmp_path / "aeqa_model" / "models"
    pkg.mkdir(parents=True)
    (pkg / "x.py").write_text("from ..decode import generate\nfrom aeqa_model import train\n"
                              "def f():\n    import aeqa_model.train.trainer\n", encoding="utf-8")
    found = imports("aeqa_model.models.x", pkg / "x.py", {"aeqa_model.train"})
    assert found == [(1, "aeqa_model.decode"), (2, "aeqa_model.train"), (4, "aeqa_model.train.trainer")]
    assert [layer(t) for _, t in found] == ["decode", "train", "train"]
