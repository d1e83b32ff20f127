"""Two CPU processes with DDP (gloo) produce the gradients of one process on the joined batch."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from aeqa_model.data.batching import ParallelCorpus
from aeqa_model.data.dictionary import Dictionary
from aeqa_model.models.base import total_loss
from aeqa_model.train.trainer import Trainer

MODEL = {"arch": "vanilla_nat", "size": "t"}
SIZES = {"t": {"embed_dim": 32, "ffn_dim": 64, "heads": 4, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.0}}
SPEC = {"max_updates": 1, "max_tokens": 200, "lr": 1e-3, "warmup_updates": 1, "label_smoothing": 0.1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_ddp(corpus_dir, out_dir, attempts: int = 3, compiled: bool = False) -> None:
    """The two ranks, on a port that was free a moment ago. Another process on the
    machine (a parallel test run) may take it before rank 0's store listens on it:
    rank 0 then fails with EADDRINUSE at once, and this tries a new port."""
    for attempt in range(attempts):
        try:
            mp.spawn(_worker, args=(2, _free_port(), str(corpus_dir), str(out_dir), compiled), nprocs=2, join=True)
            return
        except mp.ProcessRaisedException as err:
            if "EADDRINUSE" not in str(err) or attempt == attempts - 1:
                raise


def _equal_token_halves(corpus: ParallelCorpus):
    """Two groups of 4 sentences with equal target-token and sentence counts."""
    by_len: dict[int, list[int]] = {}
    for i in range(len(corpus)):
        by_len.setdefault(int(corpus.tgt.sizes[i]), []).append(i)
    pairs = [ids[:2] for ids in by_len.values() if len(ids) >= 2][:4]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _worker(rank, world, port, corpus_dir, out_dir, compiled=False):
    """One rank's gradients of its half; ``compiled``: the model compiled in place
    (training.compile, aot_eager) before DDP wraps it, its batch padded as the trainer pads."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    d = Dictionary.load(f"{corpus_dir}/dict.txt")
    corpus = ParallelCorpus(f"{corpus_dir}/train.src", f"{corpus_dir}/train.tgt", d)
    Trainer.COMPILE_BACKEND = "aot_eager"
    trainer = Trainer(MODEL, dict(SPEC, compile=compiled), d, corpus, None, f"{out_dir}/rank{rank}", seed=3,
                      device="cpu", sizes=SIZES, log=lambda *_: None)
    assert trainer.ddp is not None and trainer.ddp.module is trainer.model
    assert trainer.compiled == compiled and (trainer.model._compiled_call_impl is not None) == compiled
    halves = _equal_token_halves(corpus)
    batch = corpus.batch(halves[rank], trainer.pad_to_multiple)
    total_loss(trainer._forward(batch, 0)).backward()
    if rank == 0:
        torch.save({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None},
                   f"{out_dir}/ddp_grads.pt")
    torch.distributed.destroy_process_group()


def single_process_gradients(corpus_dir, tmp_path) -> dict:
    """The eager gradients of one process on the two halves joined."""
    d = Dictionary.load(corpus_dir / "dict.txt")
    corpus = ParallelCorpus(corpus_dir / "train.src", corpus_dir / "train.tgt", d)
    single = Trainer(MODEL, SPEC, d, corpus, None, tmp_path / "single", seed=3, device="cpu", sizes=SIZES,
                     log=lambda *_: None)
    first, second = _equal_token_halves(corpus)
    total_loss(single.model.losses(corpus.batch(first + second), 0)).backward()
    return {n: p.grad for n, p in single.model.named_parameters() if p.grad is not None}


@pytest.mark.timeout(180)
def test_ddp_gradients_equal_single_process_on_joined_batch(corpus_dir, tmp_path):
    _spawn_ddp(corpus_dir, tmp_path)
    ddp = torch.load(tmp_path / "ddp_grads.pt")
    grads = single_process_gradients(corpus_dir, tmp_path)
    assert set(grads) == set(ddp)
    for name, grad in grads.items():
        torch.testing.assert_close(ddp[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _skip_worker(rank, world, port, corpus_dir, out_dir):
    """Three updates under DDP; the loss of rank 1 alone is NaN on update 2."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    d = Dictionary.load(f"{corpus_dir}/dict.txt")
    corpus = ParallelCorpus(f"{corpus_dir}/train.src", f"{corpus_dir}/train.tgt", d)
    spec = dict(SPEC, max_updates=3, validate_every=100, save_every=100, tensorboard=False)
    trainer = Trainer(MODEL, spec, d, corpus, None, f"{out_dir}/run", seed=3, device="cpu", sizes=SIZES,
                      log=lambda *_: None)
    forward = trainer._forward

    def nan_on_rank_1(batch, update):
        terms = forward(batch, update)
        if rank == 1 and update == 1:
            terms = {k: type(t)(t.value * float("nan"), t.weight) for k, t in terms.items()}
        return terms

    trainer._forward = nan_on_rank_1
    assert trainer.train() == 0
    torch.save({"skipped": trainer.state.skipped, "weights": trainer.model.state_dict()}, f"{out_dir}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.timeout(180)
def test_ddp_processes_skip_a_nonfinite_update_together(corpus_dir, tmp_path):
    """A NaN loss on one process only: every process skips that update (the decision is
    all-reduced), so the replicas stay equal and finite."""
    mp.spawn(_skip_worker, args=(2, _free_port(), str(corpus_dir), str(tmp_path)), nprocs=2, join=True)
    first, second = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert first["skipped"] == second["skipped"] == 1
    for name, value in first["weights"].items():
        assert torch.isfinite(value).all(), name
        assert torch.equal(value, second["weights"][name]), name
