"""COMET (Unbabel/wmt22-comet-da) and BLEURT-20, strictly offline.

Each one is computed only when (a) its Python package can be imported
(unbabel-comet is pinned in the default environment; bleurt-pytorch is
optional) and (b) its checkpoint is on local disk — either the
path given in the config (``evaluate.comet_model`` /
``evaluate.bleurt_checkpoint``) or a copy already in the Hugging Face cache.
Nothing is downloaded: ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set
before the packages are imported, because compute nodes usually have no
internet and a silent multi-GB download is never wanted in a metrics job.

When a metric cannot be computed the result is
``{"score": None, "status": "not available: <why and what to set>"}`` and the
evaluation carries on. Scores are reported x100 (the paper's Table 5 scale);
``system_score`` keeps the raw mean.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import os
from pathlib import Path
from typing import Sequence

from tqdm import tqdm

log = logging.getLogger(__name__)

COMET_REPO = "Unbabel/wmt22-comet-da"
BLEURT_REPO = "lucadiliello/BLEURT-20"


def _set_offline() -> None:
    # Forced, not setdefault: a job that was told to stay offline must not
    # start a download because a user's shell exported HF_HUB_OFFLINE=0.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache directory, resolved as huggingface_hub does."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def _cached_snapshots(repo_id: str) -> list[Path]:
    """Snapshot directories of ``repo_id`` in the HF cache, newest first."""
    root = hf_hub_cache() / ("models--" + repo_id.replace("/", "--")) / "snapshots"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir()),
                  key=lambda p: p.stat().st_mtime, reverse=True)


def _import(module: str):
    """Import ``module`` lazily; ``(module, None)`` or ``(None, reason)``."""
    _set_offline()
    try:
        return importlib.import_module(module), None
    except Exception as err:  # ImportError, or a broken install raising anything
        return None, f"{type(err).__name__}: {err}"


def _find(module: str):
    """Whether ``module`` is installed, without importing it: ``(True, None)`` or
    ``(None, reason)``. For the not-available path, where importing unbabel-comet
    (seconds and about 0.5 GB, for torch-lightning and transformers) would buy nothing."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError) as err:
        return None, f"{type(err).__name__}: {err}"
    return (True, None) if found else (None, f"no module named {module!r}")


def _not_available(reason: str) -> dict:
    return {"score": None, "status": f"not available: {reason}"}


# ------------------------------------------------------------------ COMET --

def resolve_comet_checkpoint(setting: str | None) -> tuple[Path | None, str]:
    """Find the COMET ``model.ckpt`` for a config value.

    ``setting`` may be a ``.ckpt`` file, a model directory (holding
    ``checkpoints/model.ckpt`` as the HF repo does), a HF repo id to look up
    in the local cache, or ``None`` (look up Unbabel/wmt22-comet-da in the
    cache). Returns ``(path, "")`` or ``(None, reason)``.
    """
    repo = COMET_REPO
    if setting:
        path = Path(str(setting)).expanduser()
        if path.is_file():
            return path, ""
        if path.is_dir():
            for cand in (path / "checkpoints" / "model.ckpt", path / "model.ckpt"):
                if cand.is_file():
                    return cand, ""
            return None, (f"no checkpoints/model.ckpt under {path} "
                          f"(set evaluate.comet_model to the {COMET_REPO} directory or its model.ckpt)")
        if "/" in str(setting) and not str(setting).startswith((".", "/", "~")):
            repo = str(setting)  # a repo id: look in the cache below
        else:
            return None, f"evaluate.comet_model={setting} does not exist"
    for snap in _cached_snapshots(repo):
        cand = snap / "checkpoints" / "model.ckpt"
        if cand.is_file():
            return cand, ""
    return None, (f"no local checkpoint for {repo} (set evaluate.comet_model to its "
                  f"directory, or put it in the Hugging Face cache {hf_hub_cache()})")


def check_checkpoint_setting(key: str, setting: str | None) -> str | None:
    """Start-up check of ``evaluate.comet_model`` / ``evaluate.bleurt_checkpoint``.

    ``None`` (no setting), a Hugging Face repo id (``org/name``, looked up in the
    HF cache when the metric runs; a missing one leaves the cell empty with the
    reason) or a usable local checkpoint pass. A local path (absolute, ``./``,
    ``~``, or any existing path) that holds no checkpoint is a config error,
    reported before any job runs rather than as an empty cell at the very end.
    """
    if not setting:
        return None
    text = str(setting)
    path = Path(text).expanduser()
    if "/" in text and not text.startswith((".", "/", "~")) and not path.exists():
        return None  # a repo id
    resolve = {"comet_model": resolve_comet_checkpoint, "bleurt_checkpoint": resolve_bleurt_checkpoint}[key]
    found, why = resolve(text)
    if found is not None:
        return None
    if path.exists():  # the resolver says which file is missing and what to point at
        return f"evaluate.{key}: {why}; or set it to null to leave the metric out"
    where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
    return (f"evaluate.{key}: {text} does not exist{where}; set it to a local checkpoint (or a Hugging "
            f"Face repo id in the HF cache), or to null to leave the metric out")


def comet_score(srcs: Sequence[str], hyps: Sequence[str], refs: Sequence[str],
                setting: str | None = None, batch_size: int = 16,
                gpus: int | None = None, progress: bool = True) -> dict:
    """COMET system score (x100) of detokenized ``hyps`` given ``srcs`` and ``refs``.

    Returns ``{"score", "system_score", "model", "signature"}`` or the
    not-available form. ``gpus=None`` uses one GPU when torch sees one.
    """
    ckpt, why_ckpt = resolve_comet_checkpoint(setting)
    # Imported only when there is a checkpoint to run; otherwise only looked for.
    comet, why_pkg = _import("comet") if ckpt is not None else _find("comet")
    reasons = []
    if comet is None:
        reasons.append(f"package unbabel-comet not importable ({why_pkg}; it is pinned in "
                       "envs/requirements-cpu.txt: bash scripts/setup_env.sh)")
    if ckpt is None:
        reasons.append(why_ckpt)
    if reasons:
        return _not_available("; ".join(reasons))
    if gpus is None:
        gpus = _cuda_count()
    try:
        kwargs = {}
        # unbabel-comet >= 2.2 can forbid hub look-ups for the encoder itself;
        # older releases lack the argument and rely on HF_HUB_OFFLINE alone.
        if "local_files_only" in inspect.signature(comet.load_from_checkpoint).parameters:
            kwargs["local_files_only"] = True
        model = comet.load_from_checkpoint(str(ckpt), **kwargs)
        data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(srcs, hyps, refs)]
        out = model.predict(data, batch_size=batch_size, gpus=gpus, progress_bar=progress)
        system = float(out.system_score)
    except Exception as err:  # a present but unusable checkpoint: say why, keep going
        log.exception("COMET failed")
        return _not_available(
            f"loading or running COMET from {ckpt} failed ({type(err).__name__}: {err}); "
            "its encoder (xlm-roberta-large tokenizer/config) must be in the HF cache too")
    version = getattr(comet, "__version__", "unknown")
    return {"score": 100.0 * system, "system_score": system, "model": str(ckpt),
            "signature": f"COMET {COMET_REPO}, unbabel-comet {version}, x100, batch {batch_size}"}


# ----------------------------------------------------------------- BLEURT --

def resolve_bleurt_checkpoint(setting: str | None) -> tuple[Path | None, str]:
    """Find a BLEURT-20 directory for bleurt-pytorch (it holds ``config.json``).

    ``setting`` is a directory, a HF repo id looked up in the cache, or
    ``None`` (look up lucadiliello/BLEURT-20 in the cache).
    """
    repo = BLEURT_REPO
    if setting:
        path = Path(str(setting)).expanduser()
        if path.is_dir():
            if (path / "config.json").is_file():
                return path, ""
            return None, (f"{path} has no config.json (set evaluate.bleurt_checkpoint to a "
                          f"bleurt-pytorch BLEURT-20 directory, e.g. a copy of {BLEURT_REPO})")
        if "/" in str(setting) and not str(setting).startswith((".", "/", "~")):
            repo = str(setting)
        else:
            return None, f"evaluate.bleurt_checkpoint={setting} does not exist"
    for snap in _cached_snapshots(repo):
        if (snap / "config.json").is_file():
            return snap, ""
    return None, (f"no local checkpoint for {repo} (set evaluate.bleurt_checkpoint to its "
                  f"directory, or put it in the Hugging Face cache {hf_hub_cache()})")


def bleurt_score(hyps: Sequence[str], refs: Sequence[str], setting: str | None = None,
                 batch_size: int = 32, device: str | None = None, progress: bool = True) -> dict:
    """BLEURT-20 corpus score (mean of sentence scores, x100) with bleurt-pytorch."""
    ckpt, why_ckpt = resolve_bleurt_checkpoint(setting)
    bp, why_pkg = _import("bleurt_pytorch") if ckpt is not None else _find("bleurt_pytorch")
    reasons = []
    if bp is None:
        reasons.append(f"package bleurt-pytorch not importable ({why_pkg}; pip install "
                       "git+https://github.com/lucadiliello/bleurt-pytorch.git)")
    if ckpt is None:
        reasons.append(why_ckpt)
    if reasons:
        return _not_available("; ".join(reasons))
    try:
        import torch

        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        model = bp.BleurtForSequenceClassification.from_pretrained(str(ckpt)).to(device).eval()
        tokenizer = bp.BleurtTokenizer.from_pretrained(str(ckpt))
        scores: list[float] = []
        with torch.inference_mode():
            for start in tqdm(range(0, len(hyps), batch_size), desc="BLEURT", unit="batch",
                              disable=not progress):
                enc = tokenizer(list(refs[start:start + batch_size]),
                                list(hyps[start:start + batch_size]),
                                padding="longest", truncation=True, max_length=512,
                                return_tensors="pt").to(device)
                scores.extend(model(**enc).logits.flatten().float().cpu().tolist())
    except Exception as err:
        log.exception("BLEURT failed")
        return _not_available(f"loading or running BLEURT from {ckpt} failed "
                              f"({type(err).__name__}: {err})")
    system = sum(scores) / len(scores) if scores else 0.0
    return {"score": 100.0 * system, "system_score": system, "model": str(ckpt),
            "signature": f"BLEURT-20 (bleurt-pytorch), mean of sentence scores, x100, max_length 512"}


def _cuda_count() -> int:
    try:
        import torch

        return 1 if torch.cuda.is_available() else 0
    except Exception:
        return 0
