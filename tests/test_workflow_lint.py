"""`snakemake --lint` on the workflow (issue 17 item 4): no lint but the one the
project answers on purpose. The rules declare no `conda:` environment: every job
runs the Python that runs Snakemake (docs/cluster.md, "Software"), so a per-rule
environment would be built and never entered; the linter's "Specify a conda
environment or container for each rule" is therefore expected, and only it."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_CONDA = "Specify a conda environment or container for each rule."


def test_lint_reports_only_the_deliberate_missing_conda_envs(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--configfile", "config/smoke.yaml",
                           "--config", f"results_dir={tmp_path}"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert "Lints for" in output or proc.returncode == 0, output[-3000:]
    lints = re.findall(r"^Lints for (.*?):\n((?:    .*\n|\n)*)", output, re.M)
    found = [(where, title) for where, body in lints for title in re.findall(r"^    \* (.*?):?$", body, re.M)]
    unexpected = [f"{where}: {title}" for where, title in found if title.rstrip(":") != NO_CONDA]
    assert not unexpected, "\n".join(unexpected)
    assert all(where.startswith("rule ") for where, _ in found), found
