"""One convention for the stages' entry points (issue 17, item 5).

Every stage's command line is ``aeqa_model/<stage>/cli.py`` with a ``main(argv=None)``,
is registered as an ``aeqa-*`` command under ``[project.scripts]``, and every rule
runs it the same way: ``exec {params.python:q} -m aeqa_model.<stage>.cli ...`` (or
``{params.launcher:q}``, torchrun where a rule may use several GPUs). No rule runs a
file of ``scripts/`` (those are the commands the README names) and no entry point
edits ``sys.path``.
"""
from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
RULE_FILES = sorted((ROOT / "workflow/rules").glob("*.smk"))
#: What a rule's shell line starts with; group 1 is the stage's package.
CONVENTION = re.compile(r"exec \{params\.(?:python|launcher):q\} -m aeqa_model\.(\w+)\.cli ")
#: The stages of the brief; a new stage adds its name here and its command to pyproject.toml.
STAGES = {"download", "prepare", "bpe", "binarize", "pretrain_sqs", "train", "decode", "distill", "evaluate",
          "paper"}


def _string_constants() -> dict[str, str]:
    """Module-level ``NAME = "..."`` strings of the rule files (TRAIN_SHELL)."""
    found = {}
    for path in RULE_FILES:
        for match in re.finditer(r"^([A-Z_]+) = (\((?:\n    .*)+\n\))", path.read_text(), re.MULTILINE):
            try:
                found[match.group(1)] = ast.literal_eval(match.group(2))
            except (ValueError, SyntaxError):
                pass
    return found


def rule_shells() -> list[tuple[str, str]]:
    """(where, command) for every ``shell:`` of the rule files: the adjacent string
    literals under it joined, or the constant it names."""
    constants = _string_constants()
    shells = []
    for path in RULE_FILES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "shell:":
                continue
            indent = len(line) - len(line.lstrip())
            body = []
            for nxt in lines[i + 1:]:
                if not nxt.strip() or len(nxt) - len(nxt.lstrip()) <= indent:
                    break
                body.append(nxt.strip())
            text = " ".join(body).rstrip(",")
            where = f"{path.relative_to(ROOT)}:{i + 1}"
            command = constants[text] if text in constants else ast.literal_eval(f"({text})")
            assert isinstance(command, str), f"{where}: shell is not a string: {text}"
            shells.append((where, command))
    return shells


def project_scripts() -> dict[str, str]:
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["project"]["scripts"]


SHELLS = rule_shells()
SCRIPTS = project_scripts()


def test_every_rule_runs_a_stage_cli_module_the_same_way():
    assert len(SHELLS) >= 15, SHELLS  # every shell: of the rule files was read
    wrong = [f"{where}: {cmd}" for where, cmd in SHELLS if not CONVENTION.match(cmd)]
    assert not wrong, "shell lines that do not exec `{params.python:q} -m aeqa_model.<stage>.cli`:\n  " + \
        "\n  ".join(wrong)
    used = {CONVENTION.match(cmd).group(1) for _, cmd in SHELLS}
    assert used == STAGES, f"stages run by the rules {sorted(used)} != {sorted(STAGES)}"
    assert not any("scripts" in cmd for _, cmd in SHELLS)


def test_the_checker_rejects_the_old_conventions():
    for old in ("exec {params.python:q} {params.scripts:q}/bpe.py apply --codes {input.codes:q}",
                "exec {params.python:q} -m aeqa_model.data.indexed --dict {params.dictionary:q}",
                "exec {params.launcher:q} -m aeqa_model.sqs_pretrain --stage encoder",
                "{params.python:q} -m aeqa_model.bpe.cli apply --codes {input.codes:q}"):
        assert not (CONVENTION.match(old) and CONVENTION.match(old).group(1) in STAGES), old


def test_every_stage_is_a_console_script_of_its_cli_module():
    targets = {}
    for name, target in SCRIPTS.items():
        module, _, func = target.partition(":")
        assert name.startswith("aeqa-") and func == "main", f"{name} = {target!r}: want aeqa-<stage> = '...cli:main'"
        match = re.fullmatch(r"aeqa_model\.(\w+)\.cli", module)
        assert match, f"{name} = {target!r}: not aeqa_model.<stage>.cli"
        targets[match.group(1)] = name
        assert (ROOT / "aeqa_model" / match.group(1) / "cli.py").is_file(), target
    assert set(targets) == STAGES, f"[project.scripts] covers {sorted(targets)}, the stages are {sorted(STAGES)}"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_imports_and_answers_help(name):
    module_name = SCRIPTS[name].partition(":")[0]
    module = importlib.import_module(module_name)
    assert callable(getattr(module, "main", None)), f"{module_name} has no main()"
    source = Path(module.__file__).read_text(encoding="utf-8")
    assert "sys.path" not in source, f"{module_name} edits sys.path"
    assert re.search(r'^if __name__ == "__main__":\n    sys\.exit\(main\(\)\)', source, re.MULTILINE), \
        f"{module_name} does not run main() under -m"
    proc = subprocess.run([sys.executable, "-m", module_name, "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def test_scripts_holds_only_the_commands_the_readme_names():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in sorted((ROOT / "scripts").iterdir()):
        assert f"scripts/{path.name}" in readme, f"scripts/{path.name} is not a command the README names"


def test_every_stage_exits_through_the_one_exit_code_map():
    """One exit-code map for all CLIs (aeqa_model/io.py, docs/cluster.md): bad input is
    EXIT_BAD_INPUT (2) in every stage, 1 means the run failed (diverged, disk full); no
    module returns a bare code of its own."""
    from aeqa_model import io

    assert (io.EXIT_OK, io.EXIT_FAILED, io.EXIT_BAD_INPUT, io.EXIT_RERUN) == (0, 1, 2, 75)
    bare = []
    for path in sorted((ROOT / "aeqa_model").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.fullmatch(r"\s*return [1-9]\d*\s*(#.*)?", line):
                bare.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not bare, "exit codes not from aeqa_model.io's map:\n  " + "\n  ".join(bare)
