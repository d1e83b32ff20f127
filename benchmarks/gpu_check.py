"""One GPU check (issue 15): the benchmarks that matter on a GPU, one summary table.

Runs, each as its own process, on one device:

* ``decode_speed.py`` at base size (batch-1 latency of AT and the NATs, eager
  and through CUDA graphs side by side: ``--graphs auto``);
* ``aeqa_overhead.py`` at base size, bf16 on a GPU (AEQA-NAT's training and
  decoding speed next to Vanilla NAT and GLAT; the issue 15 target is training
  at >= 0.9x of GLAT);
* ``train_throughput.py`` for every architecture at base size in fp32 and bf16, and
  with ``--compiled`` in bf16 eager and compiled side by side (``--compile both``:
  ``training.compile``, issue 27; Inductor compiles for minutes, so it is a step of its
  own, off by default: the GPU tier's time budget has no room for it);
* ``sync_check.py``: one training step of every architecture under
  ``torch.cuda.set_sync_debug_mode("error")``.

It then prints one Markdown summary with the device and the versions. It needs
only torch and this repository (no Snakemake), and takes about 2-3 minutes on
one H100-class GPU (at most 5); ``--compiled`` adds up to 15 (not measured yet).

``--quick`` (or ``AEQA_GPU_CHECK_QUICK=1``) is a self-check at toy sizes that
also runs on a CPU in a minute or two. It tells you that the pieces work, not
how fast they are.

    benchmarks/gpu_check.sh [--quick] [--device cuda|cpu] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def plan(device: str, quick: bool, compiled: bool = False) -> list[tuple[str, list[str], int]]:
    """(name, arguments, timeout in seconds) of every step."""
    gpu = device.startswith("cuda")
    if quick:
        tiny = ["--vocab", "300"]
        return [
            # the optimised decode too: CUDA graphs on a GPU; on a CPU traced only (aot_eager), as a self-check
            ("decode_speed", ["decode_speed.py", "--size", "demo", "--sentences", "2", "--rounds", "1", *tiny,
                              "--graphs", "auto", *([] if gpu else ["--compile-backend", "aot_eager"])], 300),
            ("aeqa_overhead", ["aeqa_overhead.py", "--size", "demo", "--sentences", "4", "--steps", "1", "--rounds", "1",
                               "--decode-sentences", "2", "--amp", "bf16" if gpu else "none", *tiny], 300),
            ("train_throughput", ["train_throughput.py", "--arch", "all", "--sizes", "demo", "--amp", "fp32,bf16",
                                  "--sentences", "4", "--rounds", "1", "--repeat", "1", *tiny], 300),
            ("sync_check", ["sync_check.py", "--sentences", "4", *tiny], 300),
        ]
    steps = [
        ("decode_speed", ["decode_speed.py", "--size", "base", "--sentences", "30", "--rounds", "3",
                          "--graphs", "auto"], 240),
        ("aeqa_overhead", ["aeqa_overhead.py", "--size", "base", "--amp", "bf16" if gpu else "none",
                           "--sentences", "256", "--steps", "20", "--rounds", "5", "--decode-sentences", "30"], 120),
        ("train_throughput", ["train_throughput.py", "--arch", "all", "--sizes", "base", "--amp", "fp32,bf16",
                              "--sentences", "256", "--rounds", "2", "--repeat", "2"], 180),
        ("sync_check", ["sync_check.py", "--size", "demo"], 90),
    ]
    if compiled:
        steps.append(("train_compiled", ["train_throughput.py", "--arch", "all", "--sizes", "base", "--amp",
                                         "bf16" if gpu else "fp32", "--sentences", "256", "--rounds", "2",
                                         "--repeat", "2", "--compile", "both"], 900))
    return steps


def run_step(args: list[str], device: str, timeout: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.time()
    try:
        done = subprocess.run([sys.executable, *args, "--device", device], cwd=HERE, capture_output=True,
                              text=True, timeout=timeout, env=env)
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        code, out, err = "timeout", exc.stdout or "", f"no result within {timeout} s"
        out = out.decode() if isinstance(out, bytes) else out
    rows = []
    for line in out.splitlines():
        if line.startswith("{"):
            rows.append(json.loads(line))
    return {"code": code, "seconds": round(time.time() - started, 1), "rows": rows[1:], "info": rows[:1],
            "stdout": out, "stderr": err if isinstance(err, str) else ""}


def versions(device: str) -> str:
    parts = [f"torch {torch.__version__}"]
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        parts.insert(0, f"{props.name} ({props.total_memory / 2**30:.0f} GiB)")
        parts.append(f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        parts.insert(0, f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} cores, "
                        f"{torch.get_num_threads()} torch threads)")
    parts.append(f"Python {platform.python_version()}")
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    if commit:
        parts.append(f"commit {commit}")
    return " · ".join(parts)


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return lines


def summary(results: dict, device: str, quick: bool) -> list[str]:
    out = [f"# gpu_check{' --quick (toy sizes: not a measurement)' if quick else ''}: {versions(device)}",
           f"device {device}, {time.strftime('%Y-%m-%d %H:%M')}", ""]
    res = results.get("train_throughput")
    if res and res["rows"]:
        by_arch: dict[str, dict] = {}
        for row in res["rows"]:
            if "arch" in row and "config" in row:
                amp = row["config"].split("/")[1]
                entry = by_arch.setdefault(row["arch"], {})
                entry[amp] = row.get("tokens_per_s", row.get("error"))
                entry[f"{amp} TFLOP/s"] = row.get("tflops_per_s")
                if row.get("mfu_bf16_peak") is not None:
                    entry[f"{amp} MFU"] = f"{100 * row['mfu_bf16_peak']:.1f}%"
            elif "speedup" in row:
                by_arch.setdefault(row["arch"], {})["speedup"] = row["speedup"]
        tokens = next((r["target_tokens_per_batch"] for r in res["rows"] if "target_tokens_per_batch" in r), "?")
        out += [f"## Training target tokens/s (train_throughput, {tokens} target tokens per batch)", "",
                "TFLOP/s: the step's matrix-product FLOPs (forward + backward, counted by torch's FlopCounterMode) "
                "per second; MFU: their share of the device's dense bf16 peak (blank for an unknown device).", ""]
        out += table(["arch", "fp32 tok/s", "bf16 tok/s", "bf16 / fp32", "fp32 TFLOP/s", "bf16 TFLOP/s", "bf16 MFU"],
                     [[a, v.get("fp32"), v.get("bf16"), v.get("speedup"), v.get("fp32 TFLOP/s"),
                       v.get("bf16 TFLOP/s"), v.get("bf16 MFU")] for a, v in by_arch.items()]) + [""]
    res = results.get("train_compiled")
    if res and res["rows"]:
        by_arch = {}
        for row in res["rows"]:
            if "config" in row and "arch" in row:
                way = "compiled" if row["config"].endswith("+compile") else "eager"
                by_arch.setdefault(row["arch"], {})[way] = row.get("tokens_per_s", row.get("error"))
                if "compile_s" in row:
                    by_arch[row["arch"]]["compile_s"] = row["compile_s"]
            elif "+compile / " in str(row.get("ratio", "")):
                by_arch.setdefault(row["arch"], {})["ratio"] = row["speedup"]
        out += ["## Compiled training step (train_throughput --compile both: training.compile, inductor)", ""]
        out += table(["arch", "eager tok/s", "compiled tok/s", "compiled / eager", "compile s"],
                     [[a, v.get("eager"), v.get("compiled"), v.get("ratio"), v.get("compile_s")]
                      for a, v in by_arch.items()]) + [""]
    res = results.get("aeqa_overhead")
    if res and res["rows"]:
        out += ["## AEQA-NAT overhead (aeqa_overhead, side by side)", ""]
        out += table(["model", "training tokens/s", "decoding ms/sentence"],
                     [[r["model"], r["train_tokens_per_s"], r.get("decode_ms_per_sentence")]
                      for r in res["rows"] if "model" in r]) + [""]
        ratios = []
        for r in res["rows"]:
            if "ratio" in r:
                target = ""
                if r["ratio"] == "aeqa_nat/glat":
                    target = ">= 0.9 (issue 15): " + ("met" if r["training_throughput"] >= 0.9 else "NOT met")
                ratios.append([r["ratio"], r["training_throughput"], r.get("decoding_speed"), target])
        out += table(["ratio", "training", "decoding", "target"], ratios) + [""]
    res = results.get("decode_speed")
    if res and res["rows"]:
        graphs = next((r.get("graphs") for r in res["info"]), "none")
        out += [f"## Batch-1 decoding (decode_speed{', eager and optimised: ' + graphs if graphs != 'none' else ''})",
                ""]
        if graphs != "none":
            out += table(["model", "ms/sentence", "speedup over AT", "optimised ms/sentence",
                          "optimised speedup over AT", "optimised / eager", "hypotheses differing"],
                         [[r["model"], r["ms_per_sentence"], r["speedup_over_AT"], r.get("ms_per_sentence_optimised"),
                           r.get("speedup_over_AT_optimised"), r.get("optimised_over_eager"),
                           r.get("hypotheses_differing")] for r in res["rows"]]) + [""]
        else:
            out += table(["model", "ms/sentence", "speedup over AT"],
                         [[r["model"], r["ms_per_sentence"], r["speedup_over_AT"]] for r in res["rows"]]) + [""]
    res = results.get("sync_check")
    if res and res["rows"]:
        out += ["## Host syncs in one training step (sync_check)", ""]
        out += table(["model", "sync-free", "expected", "first sync"],
                     [[r["model"], "yes" if r["sync_free"] else "NO", "yes" if r["expected_sync_free"] else "no (known)",
                       r.get("first_sync", "")] for r in res["rows"]]) + [""]
    out += ["## Steps", ""]
    out += table(["step", "seconds", "exit"], [[name, r["seconds"], r["code"]] for name, r in results.items()])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", default=os.environ.get("AEQA_GPU_CHECK_QUICK") == "1",
                   help="toy sizes: a self-check that also runs on a CPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default=None, help="also write each step's output and the summary to this folder")
    p.add_argument("--compiled", action="store_true",
                   help="also time the compiled training step against the eager one (minutes of compiling)")
    args = p.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA GPU; use --device cpu --quick for the self-check",
              file=sys.stderr)
        return 2
    if args.device == "cpu" and not args.quick:
        print("note: the full check on a CPU takes a long time; --quick is the CPU self-check", file=sys.stderr)
    results = {}
    for name, step_args, timeout in plan(args.device, args.quick, args.compiled):
        print(f"gpu_check: {name} ...", file=sys.stderr, flush=True)
        results[name] = run_step(step_args, args.device, timeout)
        if results[name]["code"] != 0:
            print(f"gpu_check: {name} exited {results[name]['code']}:\n{results[name]['stderr'][-2000:]}",
                  file=sys.stderr)
    lines = summary(results, args.device, args.quick)
    print("\n".join(lines))
    if args.out:
        folder = Path(args.out)
        folder.mkdir(parents=True, exist_ok=True)
        for name, res in results.items():
            (folder / f"{name}.txt").write_text(res["stdout"], encoding="utf-8")
        (folder / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0 if all(r["code"] == 0 for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
