"""Pre-training in the workflow and what transfers from it.

``pretraining``
    The workflow's pre-training step (config ``model.pretrain``) as a library call.
``series``
    The scaling and context series (paper Supp. Fig. 13): :class:`~benchmark.transfer.series.TransferPlan`
    plans their runs for ``workflow/rules/transfer.smk``; nested corpora; the context target.
``report``
    The series' table and figures.
``quality``
    Ground-truth checks of a model pre-trained on simulated cells
    (``benchmarks/pretraining_quality.py``).
"""
