"""The compiled training step (issue 27 item 1, ``training.compile``) against the eager
reference, on CPU: the same losses and gradients for every architecture, batches padded
to ``pad_to_multiple`` give the same losses and gradients as unpadded ones, and a compiled
run that is interrupted and resumed ends bit-identical to one that ran straight.

Backends: inductor's C++ compile takes about 20-40 s per model on a CPU, so the
per-architecture and the resume tests use ``aot_eager``. It is the same capture (Dynamo's
graphs, their graph breaks and recompiles, AOTAutograd's forward and backward, the
module compiled in place under the trainer), run with eager kernels; what it does not
check is inductor's code generation, which one test does for one architecture, with
dropout on (``fallback_random``: the compiled step draws torch's own random numbers).

Tolerances (float32; measured differences are far below them): aot_eager runs eager's
kernels, so losses and gradients agree to rtol 1e-5 / atol 1e-6; inductor fuses and
reorders reductions, rtol 1e-4 / atol 1e-5; padding changes the width of the attention
and of the reductions over masked positions, rtol 1e-4 / atol 1e-5.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from torch._dynamo.utils import counters

from aeqa_model.data.batching import Batch, bucketed_width, collate
from aeqa_model.models import ARCHS, model_class
from aeqa_model.models.base import LossTerm, total_loss
from aeqa_model.models.hostsync import force_sync_free
from aeqa_model.models.transformer import TransformerConfig
from aeqa_model.train.runtime import compile_training_step, compile_wanted
from aeqa_model.train.trainer import Trainer
from tests.conftest import make_pairs
from tests.test_trainer import SIZES, SPEC, assert_resume_is_bit_identical

# Dropout off where losses are compared across batch shapes: a dropout mask of another
# shape is another random draw, whatever the model does with padding.
NO_DROPOUT = TransformerConfig(embed_dim=32, ffn_dim=64, heads=4, encoder_layers=1, decoder_layers=1, dropout=0.0)
WITH_DROPOUT = TransformerConfig(**{**NO_DROPOUT.__dict__, "dropout": 0.1})
# An update inside every glancing/annealing schedule's first phase: glancing is on.
UPDATE = 3
LOOSE = {"rtol": 1e-4, "atol": 1e-5}
TIGHT = {"rtol": 1e-5, "atol": 1e-6}


def _batch(dictionary, n: int, seed: int, pad_to_multiple: int = 1) -> Batch:
    pairs = make_pairs(n, seed)
    return collate(list(range(n)), [np.array(p[0]) for p in pairs], [np.array(p[1]) for p in pairs], dictionary,
                   pad_to_multiple=pad_to_multiple)


def _model(arch, dictionary, cfg=NO_DROPOUT):
    torch.manual_seed(0)
    return model_class(arch)(dictionary, cfg, {"max_updates": 100}).train()


def _losses_and_grads(step, model, batch, seed: int = 11):
    """The named loss values and every parameter's gradient after one backward of the
    total loss (``step`` returns the (value, weight) pairs of the model's forward)."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    terms = {name: LossTerm(value, weight) for name, (value, weight) in step(batch, UPDATE).items()}
    total_loss(terms).backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return {name: term.value.detach() for name, term in terms.items()}, grads


def assert_same(got, want, tolerance):
    (got_losses, got_grads), (want_losses, want_grads) = got, want
    assert got_losses.keys() == want_losses.keys()
    for name in want_losses:
        torch.testing.assert_close(got_losses[name], want_losses[name], **tolerance, msg=f"loss {name}")
    assert got_grads.keys() == want_grads.keys()
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], **tolerance, msg=f"gradient of {name}")


@pytest.fixture
def position_keyed_rand(monkeypatch):
    """``torch.rand`` whose value at index (row, column) does not depend on the tensor's
    width: the glancing and masking draws (GLAT, CMLM, DAT, the AEQA models) then pick
    the same positions in a padded batch as in the unpadded one, so the padding test
    compares losses, not two random draws."""
    generator = torch.Generator().manual_seed(5)
    tables = {1: torch.rand(4096, generator=generator), 2: torch.rand(64, 256, generator=generator)}

    def rand(*size, device=None, dtype=None, **_):
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else size
        block = tables[len(shape)][tuple(slice(n) for n in shape)]
        return block.to(device=device, dtype=dtype or block.dtype)

    monkeypatch.setattr(torch, "rand", rand)


def test_compile_setting_auto_is_eager_on_cpu():
    assert not compile_wanted("auto", torch.device("cpu"))
    assert compile_wanted("auto", torch.device("cuda"))
    assert compile_wanted(True, torch.device("cpu")) and not compile_wanted(False, torch.device("cuda"))


def test_bucketed_widths():
    assert [bucketed_width(w, 8) for w in (0, 1, 8, 9, 17)] == [0, 8, 8, 16, 24]
    assert [bucketed_width(w, 1) for w in (0, 5)] == [0, 5]


def test_padded_batch_keeps_its_contents_and_lengths(dictionary):
    plain, padded = _batch(dictionary, 6, 0), _batch(dictionary, 6, 0, pad_to_multiple=16)
    assert padded.src.size(1) == 16 and padded.target.size(1) == 16
    assert padded.prev_output.size(1) == padded.target_eos.size(1) == 17  # T + 1, as the models read them
    for name in ("src", "target", "prev_output", "target_eos"):
        a, b = getattr(plain, name), getattr(padded, name)
        assert torch.equal(b[:, :a.size(1)], a) and bool(b[:, a.size(1):].eq(dictionary.pad).all()), name
    assert torch.equal(plain.src_lengths, padded.src_lengths) and plain.ntokens == padded.ntokens


@pytest.mark.parametrize("sync_free", [False, True], ids=["cpu-form", "gpu-form"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_padding_does_not_change_losses_or_gradients(arch, sync_free, dictionary, position_keyed_rand):
    """Every model masks padding and takes lengths from the masks (CTC's upsampled length
    and DAT's graph size from the source mask, the length target from target_lengths), so
    wider padding changes nothing but float rounding. Both forms of models/hostsync.py:
    a GPU runs the sync-free one."""
    model = _model(arch, dictionary)
    plain, padded = _batch(dictionary, 7, 1), _batch(dictionary, 7, 1, pad_to_multiple=16)
    assert padded.src.size(1) > plain.src.size(1) and padded.target.size(1) > plain.target.size(1)
    twin = copy.deepcopy(model)  # the SQS's usage and codebook reset change the model
    with force_sync_free(sync_free):
        assert_same(_losses_and_grads(twin, twin, padded), _losses_and_grads(model, model, plain), LOOSE)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_compiled_step_gives_the_eager_losses_and_gradients(arch, dictionary):
    """The trainer's compiled forward (aot_eager) against the eager one, with dropout on,
    on three padded batches of different sizes (the second one recompiles with the batch
    size dynamic, the third one reuses its graphs). In the sync-free form (models/hostsync.py), the one a GPU compiles."""
    torch._dynamo.reset()
    counters.clear()
    eager = _model(arch, dictionary, WITH_DROPOUT)
    compiled = copy.deepcopy(eager)
    compile_training_step(compiled, backend="aot_eager")
    graphs = []
    with force_sync_free(True):
        for n, seed in ((6, 0), (9, 1), (5, 2)):
            batch = _batch(dictionary, n, seed, pad_to_multiple=8)
            assert_same(_losses_and_grads(compiled, compiled, batch), _losses_and_grads(eager.forward, eager, batch),
                        TIGHT)
            graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] >= 1  # compiled, not run eagerly
    assert graphs[2] == graphs[1]  # batch size dynamic after one recompile: the third batch compiles nothing
    assert compiled._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(eager.state_dict())  # no _orig_mod. prefixes


@pytest.mark.timeout(300)
def test_inductor_compiled_step_with_dropout(dictionary):
    """Inductor's generated code for one NAT, dropout on: the same losses and gradients
    as eager within inductor's tolerance (and the same dropout masks: fallback_random)."""
    torch._dynamo.reset()
    eager = _model("vanilla_nat", dictionary, WITH_DROPOUT)
    compiled = copy.deepcopy(eager)
    compile_training_step(compiled)
    batch = _batch(dictionary, 6, 0, pad_to_multiple=8)
    assert_same(_losses_and_grads(compiled, compiled, batch), _losses_and_grads(eager.forward, eager, batch), LOOSE)


# ------------------------------------------------------------ the trainer --
COMPILED = dict(SPEC, compile=True, pad_to_multiple=8)
GLAT = {"arch": "glat", "size": "t"}  # two passes with the same dropout masks: the RNG's hardest case


def _trainer(train_valid, dictionary, out, spec=COMPILED, model=GLAT):
    train, valid = train_valid
    return Trainer(model, spec, dictionary, train, valid, out, seed=7, device="cpu", sizes=SIZES, log=lambda *_: None)


def test_the_default_trains_eager_and_unpadded_on_cpu(train_valid, dictionary, tmp_path):
    trainer = _trainer(train_valid, dictionary, tmp_path / "run", SPEC)
    assert not trainer.compiled and trainer.pad_to_multiple == 1
    assert trainer.model._compiled_call_impl is None


def test_compiled_run_resumes_bit_identically(train_valid, dictionary, tmp_path, monkeypatch):
    monkeypatch.setattr(Trainer, "COMPILE_BACKEND", "aot_eager")
    torch._dynamo.reset()
    interrupted = assert_resume_is_bit_identical(lambda out: _trainer(train_valid, dictionary, out), tmp_path,
                                                 COMPILED["max_updates"])
    assert interrupted.compiled and interrupted.pad_to_multiple == 8
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoint_last.pt", weights_only=False)
    assert not [key for key in checkpoint["model"]["state_dict"] if "_orig_mod" in key]


@pytest.mark.timeout(240)
def test_compiled_model_under_ddp_gives_the_gradients_of_one_process(corpus_dir, tmp_path):
    """Two CPU processes (gloo), each with the model compiled in place and wrapped by DDP:
    the all-reduced gradients of the two padded halves are the eager gradients of one
    process on the joined batch (tests/test_ddp.py, compiled)."""
    from tests import test_ddp

    test_ddp._spawn_ddp(corpus_dir, tmp_path, compiled=True)
    ddp = torch.load(tmp_path / "ddp_grads.pt")
    grads = test_ddp.single_process_gradients(corpus_dir, tmp_path)
    assert set(grads) == set(ddp)
    for name, grad in grads.items():
        torch.testing.assert_close(ddp[name], grad, **LOOSE, msg=name)
