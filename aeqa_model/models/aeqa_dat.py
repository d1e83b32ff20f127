"""AEQA-DAT (Table 1, Fig. 4): DA-Transformer trained through the SQS.

As DA-Transformer (models/dat.py) with three changes from AEQA-NAT (SPEC §5):
* the graph vertices take quantized inputs z_q(softcopy(H_x)) (Eq. 4, straight-through);
* glancing on the best alignment gives the chosen vertices the quantized target
  encoding z_q(H_y)_i instead of the gold token embedding (Eq. 11);
* L_SQA (Eq. 7-10) is added with weight epsilon, L_ay comparing the last decoder
  states on the vertices of the best alignment path with z_q(H_y).
The default graph factor is 3 (the paper's AEQA-DAT setting; Fig. 4 sweeps it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from aeqa_model.models.base import LossTerm
from aeqa_model.models.dat import GRAPH_FACTOR_HELP, DATOptions, DATransformer
from aeqa_model.models.glancing import same_dropout
from aeqa_model.models.options import option
from aeqa_model.models.sqa import SQSMixin, SQSOptions, sqa_terms


@dataclass(frozen=True)
class AEQADATOptions(SQSOptions, DATOptions):
    """AEQA-DAT's options: SQSOptions and DATOptions, with its own graph factor default
    (models/options.py)."""

    graph_factor: float = option(3, GRAPH_FACTOR_HELP + "; 3, the paper's AEQA-DAT setting (Fig. 4 sweeps it)",
                                 schema={"exclusiveMinimum": 0})


class AEQADAT(SQSMixin, DATransformer):
    arch = "aeqa_dat"
    default_decoding = "lookahead"
    Options = AEQADATOptions

    def __init__(self, dictionary, cfg, options):
        # The entry keeps its graph factor, the default written in: the checkpoint's
        # options name it (a reader never falls back to DAT's default).
        options = {"graph_factor": AEQADATOptions.graph_factor, **options}
        super().__init__(dictionary, cfg, options)
        self.init_sqs(cfg.embed_dim)                                        # SQS, sqa_weight, target_dropout

    def vertex_inputs(self, enc, enc_mask, sizes):
        h_m, vertex_mask = self.copy_inputs(enc, enc_mask, sizes)
        return self.sqs(h_m, vertex_mask).straight, vertex_mask                  # z_q(H_m)

    def losses(self, batch, update: int):
        target, tgt_lengths = self.dag_target(batch)
        y, y_mask = batch.target, batch.target.eq(self.pad)
        enc, enc_mask = self.encode(batch.src)                                     # H_x
        q_x, _, q_y = self.quantize_both(batch, enc, enc_mask, y_mask)             # Eq. 4, Eq. 5
        sizes = self.graph_sizes(enc_mask, tgt_lengths)
        inputs, vertex_mask = self.vertex_inputs(enc, enc_mask, sizes)
        # Target position i of Y sits at position i + offset of the DAG target (BOS first).
        offset = 1 if self.anchored else 0
        positions = torch.arange(target.size(1), device=y.device)[None, :]
        eligible = (positions >= offset) & (positions < offset + batch.target_lengths[:, None])
        gold = q_y.codes
        if offset:
            edge = torch.zeros_like(gold[:, :1])
            gold = torch.cat([edge, gold, edge], dim=1)
        with torch.no_grad(), same_dropout(y.device):
            path, predicted = self.first_pass_alignment(inputs, vertex_mask, enc, enc_mask, sizes,
                                                        target, tgt_lengths)
            if self.schedule(update) > 0:
                inputs = self.glance_inputs(inputs, path, predicted, target, eligible, gold, update)
        logits, trans, states = self.run_graph(inputs, vertex_mask, enc, enc_mask)
        terms = {"dag": LossTerm(self.dag_loss(logits, trans, sizes, target, tgt_lengths))}
        aligned = path[:, offset:offset + y.size(1)]
        states_at_y = states.gather(1, aligned.unsqueeze(-1).expand(-1, -1, states.size(-1)))
        terms.update(sqa_terms(enc, enc_mask, q_x, q_y, y_mask, states_at_y, self.sqa_weight))
        return terms
