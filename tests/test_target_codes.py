"""H_y from the pre-aligned encoder (issue 25, reading 3; docs/method.md #26): the
sqs_target_codes stage against brute force, and the AEQA models reading its codes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aeqa_model.data.batching import ParallelCorpus, collate
from aeqa_model.data.indexed import IndexedCorpus, write_indexed
from aeqa_model.io import InputError
from aeqa_model.models import check_options
from aeqa_model.models.aeqa_dat import AEQADAT
from aeqa_model.models.aeqa_nat import AEQANAT
from aeqa_model.pretrain_sqs import cli
from aeqa_model.pretrain_sqs.target_codes import PretrainedTargetEncoder, bpe_spans, overlap_weights
from aeqa_model.train.trainer import check_target_codes
from tests.conftest import make_pairs
from tests.reliability.faultlib import write_text_corpus
from tests.test_sqs_pretrain import SPEC, argv


# ------------------------------------------------------------ the mapping --
def test_bpe_spans_rebuild_the_tokenized_sentence_brute_force():
    rng = np.random.default_rng(0)
    words = ["Haus", "größer", "ein", ".", "Ä", "x"]
    for _ in range(200):
        sentence = [words[i] for i in rng.integers(0, len(words), size=int(rng.integers(1, 8)))]
        tokens = []
        for word in sentence:   # cut each word into 1-3 pieces, marked as subword-nmt does
            cuts = sorted(set(rng.integers(1, len(word) + 1, size=int(rng.integers(0, 3))).tolist()) - {len(word)})
            pieces = [word[a:b] for a, b in zip([0] + cuts, cuts + [len(word)])]
            tokens += [p + "@@" for p in pieces[:-1]] + [pieces[-1]]
        text, spans = bpe_spans(" ".join(tokens))
        assert text == " ".join(sentence)
        assert [text[a:b] for a, b in spans] == [t.removesuffix("@@") for t in tokens]


def test_overlap_weights_average_covering_pieces_and_fall_back_to_the_nearest():
    # tokens "ab" (0-2), "c" (2-3), "d" (4-5); pieces cover 0-1, 1-3, and 6-7 (nothing over "d")
    weights, nearest = overlap_weights([(0, 2), (2, 3), (4, 5)], [(0, 1), (1, 3), (6, 7)])
    assert np.allclose(weights, [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 1]]) and nearest == 1
    empty, missing = overlap_weights([(0, 1)], [])
    assert empty.shape == (1, 0) and missing == 1


# --------------------------------------------------------------- the stage --
@pytest.fixture(scope="module")
def aligned(tmp_path_factory):
    """A tiny pre-alignment (both stages) that also wrote its aligned encoder."""
    corpus = write_text_corpus(tmp_path_factory.mktemp("corpus"), 120)
    out = tmp_path_factory.mktemp("sqs")
    assert cli.main(argv(corpus, out, "encoder")) == 0
    aligned_path = out / "K32_D8" / "aligned_encoder.pt"
    assert cli.main(argv(corpus, out, "align") + ["--aligned-encoder-out", str(aligned_path)]) == 0
    return corpus, out / "K32_D8" / "sqs.pt", aligned_path


def bpe_text(lines: list[str]) -> list[str]:
    """A BPE segmentation of ``lines``: every word of more than 3 letters cut after its third."""
    return [" ".join(w if len(w) <= 3 else f"{w[:3]}@@ {w[3:]}" for w in line.split()) for line in lines]


def test_stage_writes_one_code_per_bpe_token_equal_to_brute_force(aligned, tmp_path):
    corpus, sqs_path, aligned_path = aligned
    lines = bpe_text((corpus / "train.de").read_text(encoding="utf-8").splitlines())
    (tmp_path / "train.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "valid.bpe").write_text("\n".join(lines[:10]) + "\n", encoding="utf-8")
    out = tmp_path / "codes"
    assert cli.main(["--stage", "codes", "--sqs", str(sqs_path), "--aligned-encoder", str(aligned_path), "--train-tgt",
                              str(tmp_path / "train.bpe"), "--valid-tgt", str(tmp_path / "valid.bpe"),
                              "--out-dir", str(out), "--report", str(out / "report.json"), "--device", "cpu",
                              "--max-tokens", "64"]) == 0
    codes = IndexedCorpus(out / "train", vocab_size=32)
    assert list(codes.sizes) == [len(line.split()) for line in lines]
    report = json.loads((out / "report.json").read_text())
    assert report["splits"]["train"]["tokens"] == sum(codes.sizes) and report["splits"]["valid"]["sentences"] == 10
    assert report["encoder"] == "embedded" and 0 <= report["splits"]["train"]["same_code_neighbours"] <= 1

    # Brute force, one sentence at a time and one token at a time: the mean projected
    # state of the pieces covering the token, then the nearest code by distance.
    encoder = PretrainedTargetEncoder(aligned_path, sqs_path, torch.device("cpu"))
    book = encoder.quantizer.codebook.detach()
    for row, line in enumerate(lines[:30]):
        text, spans = bpe_spans(line)
        pieces = encoder.pieces(text)
        ids = torch.tensor([encoder.piece_ids(pieces) + [encoder.eos]])
        with torch.no_grad():
            states = encoder.projection(encoder.run(ids)[0][0].float())
        for j, (a, b) in enumerate(spans):
            cover = [k for k, (_, _, begin, end) in enumerate(pieces) if begin < b and end > a]
            assert cover, (row, j)
            h = states[cover].mean(0)
            distance = (book - h).pow(2).sum(1)
            chosen = int(codes[row][j])
            assert distance[chosen] <= distance.min() + 1e-4, (row, j)


def test_stage_refuses_a_missing_aligned_encoder_with_the_rule_named(aligned, tmp_path, capsys):
    _, sqs_path, _ = aligned
    (tmp_path / "t.bpe").write_text("a b\n", encoding="utf-8")
    code = cli.main(["--stage", "codes", "--sqs", str(sqs_path), "--aligned-encoder", str(tmp_path / "nope.pt"),
                              "--train-tgt", str(tmp_path / "t.bpe"), "--valid-tgt", str(tmp_path / "t.bpe"),
                              "--out-dir", str(tmp_path / "o"), "--report", str(tmp_path / "o" / "r.json")])
    assert code == 2 and "run the pretrain_sqs rule" in capsys.readouterr().err
    assert not (tmp_path / "o" / "r.json").exists()


# ---------------------------------------------------------- the models --
def _batch_with_codes(dictionary, k: int = 16):
    pairs = make_pairs(6, 3)
    tgt = [np.asarray(p[1]) for p in pairs]
    codes = [np.arange(len(t)) * 5 % k for t in tgt]
    return collate(list(range(6)), [np.asarray(p[0]) for p in pairs], tgt, dictionary, codes)


def test_pretrained_h_y_glances_and_aligns_to_the_stored_codes(dictionary, tiny_cfg, monkeypatch):
    model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "h_y_encoder": "pretrained", "lambda_start": 1.0,
                                           "lambda_end": 1.0, "glancing": "uniform"}).eval()
    batch = _batch_with_codes(dictionary)
    seen = []
    original = model.run_decoder
    monkeypatch.setattr(model, "run_decoder", lambda i, *a, **kw: seen.append(i.detach().clone()) or original(i, *a, **kw))
    terms = model.losses(batch, 0)
    keep = batch.target.ne(dictionary.pad)
    stored = model.sqs.codebook.detach()[batch.target_codes]
    assert torch.allclose(seen[-1][keep], stored[keep])          # reading A: glanced = the stored codes
    # Eq. 9 by hand: mean code of X against the mean stored code of Y
    enc, enc_mask = model.encode(batch.src)
    q_x = model.sqs.codebook.detach()[model.sqs.nearest(enc)]
    zx = (q_x * (~enc_mask)[..., None]).sum(1) / (~enc_mask).sum(1, keepdim=True)
    zy = (stored * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)
    assert torch.allclose(terms["sqa_xy"].value, (zx - zy).pow(2).mean(-1).mean(), atol=1e-6)
    with pytest.raises(ValueError, match="target codes"):
        model.losses(collate([0], [batch.src[0].numpy()], [batch.target[0].numpy()], dictionary), 0)


def test_pretrained_h_y_in_aeqa_dat_reads_the_stored_codes(dictionary, tiny_cfg, monkeypatch):
    model = AEQADAT(dictionary, tiny_cfg, {"codebook_size": 16, "h_y_encoder": "pretrained"})
    batch = _batch_with_codes(dictionary)
    called = []
    monkeypatch.setattr("aeqa_model.models.sqa.encode_target", lambda *a, **kw: called.append(1))
    assert torch.isfinite(sum(t.value for t in model.losses(batch, 0).values()))
    assert not called                                            # H_y never comes from the NAT's encoder


def test_config_refuses_pretrained_h_y_without_its_codebook_or_with_the_control():
    assert check_options("m", {"arch": "aeqa_nat", "size": "s", "h_y_encoder": "pretrained"}) == []
    no_sqs = check_options("m", {"arch": "aeqa_nat", "size": "s", "h_y_encoder": "pretrained", "sqs_init": "random"})
    assert len(no_sqs) == 1 and "sqs_init: pretrained" in no_sqs[0]
    control = check_options("m", {"arch": "aeqa_nat", "size": "s", "h_y_encoder": "pretrained",
                                  "quantize_input": False})
    assert len(control) == 1 and "quantize_input" in control[0]


def test_codes_must_match_the_targets_and_the_codebook(corpus_dir, dictionary, tiny_cfg, tmp_path):
    tgt = IndexedCorpus(corpus_dir / "train.tgt")
    write_indexed(tmp_path / "good", [[1] * int(n) for n in tgt.sizes])
    corpus = ParallelCorpus(corpus_dir / "train.src", corpus_dir / "train.tgt", dictionary, codes_prefix=tmp_path / "good")
    assert torch.equal(corpus.batch([0, 1]).target_codes.ne(0), corpus.batch([0, 1]).target.ne(dictionary.pad))
    write_indexed(tmp_path / "short", [[1] * max(int(n) - 1, 0) for n in tgt.sizes])
    with pytest.raises(InputError, match="sqs_target_codes"):
        ParallelCorpus(corpus_dir / "train.src", corpus_dir / "train.tgt", dictionary, codes_prefix=tmp_path / "short")
    model = AEQANAT(dictionary, tiny_cfg, {"codebook_size": 16, "h_y_encoder": "pretrained"})
    plain = ParallelCorpus(corpus_dir / "train.src", corpus_dir / "train.tgt", dictionary)
    with pytest.raises(InputError, match="--train-codes"):
        check_target_codes(model, plain, None)
    write_indexed(tmp_path / "wide", [[20] * int(n) for n in tgt.sizes])
    wide = ParallelCorpus(corpus_dir / "train.src", corpus_dir / "train.tgt", dictionary, codes_prefix=tmp_path / "wide")
    with pytest.raises(InputError, match="another K"):
        check_target_codes(model, wide, None)
    check_target_codes(model, corpus, None)


def test_aligned_encoder_holds_what_the_stage_reads(aligned):
    _, _, aligned_path = aligned
    payload = torch.load(aligned_path, weights_only=False)
    assert payload["kind"] == "embedded" and isinstance(payload["spm"], bytes)
    assert all(t.device.type == "cpu" for t in payload["state_dict"].values())
    assert Path(aligned_path).with_name("sqs.pt").exists()


def test_piece_spans_are_character_offsets_for_non_ascii_text(aligned):
    """The spans are compared with bpe_spans' character offsets: with multi-byte
    characters (ä, ß, é), byte offsets would drift after the first one."""
    _, sqs_path, aligned_path = aligned
    encoder = PretrainedTargetEncoder(aligned_path, sqs_path, torch.device("cpu"))
    text = "größer Häuser , café wort3"
    for _, piece, begin, end in encoder.pieces(text):
        surface = text[begin:end].strip()
        assert surface == piece.replace("\u2581", "").strip() or piece == "<unk>" or not surface
    assert max(end for *_, end in encoder.pieces(text)) == len(text)
