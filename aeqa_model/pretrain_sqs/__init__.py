"""pretrain_sqs (App. A.2): the pre-aligned Semantic Quantization Space.

``pretrain`` holds the stage (denoising pre-training of the encoder, then the
alignment that builds the codebook); ``cli`` is its command line
(``python -m aeqa_model.pretrain_sqs.cli``, ``aeqa-pretrain-sqs``).
"""
