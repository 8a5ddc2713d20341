"""Seeded single-cell simulator with known ground truth for the embedded demo.

Every simulated data set is drawn from one :class:`SimulationWorld` (genes, gene programs,
cell types and a signed transcription-factor network), so all of them share gene symbols
and the demo scGPT model can be pre-trained on a corpus of all of them.

Generative model (per cell, natural-log scale)
----------------------------------------------
1. Intrinsic state ``e = activity @ program_effect + tf_noise``: a cell type is a mixture of
   gene programs (each program raises the log-abundance of its member genes) and each cell
   jitters its program activities and its TF levels.
2. Regulation: ``l = base_log_mean + R(e)`` with the linear propagation operator
   ``R(s) = s + R(s)[:, TFs] @ W`` iterated ``propagation_steps`` times, ``W`` the signed
   TF -> target weights. TF -> TF edges only go from a lower to a higher TF index, so the
   network is a DAG and the operator is exact after a few steps.
3. Expected counts ``mu = library_size * softmax(l)``; counts are negative binomial
   (gamma-Poisson) with a per-gene inverse dispersion ``theta``.
4. Batch effects (:func:`apply_batch_effects`) act on the counts: a per-batch library-size
   factor, a per-batch gene-wise log-normal scaling and extra, low-count-biased dropout.

A CRISPRi-like knockdown of gene A multiplies A's transcription by a knockdown fraction, i.e.
adds ``log(fraction)`` to A's log-abundance. A gene program is a pathway / complex whose
output needs its members: knocking down member A of program P also lowers P's activity, in
proportion to the log knockdown (``activity_P * dependency_A * log(fraction)``), which lowers
all of P's genes (its master TFs included). Both changes travel through ``R``, so members of
one program (a screen's gene "family") have similar responses and different programs
different ones, as genes sharing a complex or pathway do in real Perturb-seq data. Because the
response is linear in the log knockdown and ``R`` is linear, a double knockdown is exactly
additive in log-abundance unless the simulator adds an explicit interaction term (synergy,
buffering or a neomorphic effect), and the ground truth records which doubles got one.

Modules
-------
``world``
    :class:`SimulationWorld`, :func:`make_world`, :func:`ground_truth_targets`.
``batch_effects``
    :class:`BatchEffects`, :func:`make_batch_effects`, :func:`apply_batch_effects`.
``celltypes``
    :func:`simulate_celltypes` (cell types in batches; the batched cells the multi-omic
    simulators start from).
``atlas``
    :func:`simulate_atlas` (tissues, donors and batches: the pre-training corpus).
``perturbation``
    :func:`simulate_perturbation` (single and double knockdowns).
``multiome``
    :func:`simulate_multiome` and :func:`simulate_multiome_setting` (RNA + protein + ATAC,
    paired or mosaic).
``_common``
    Random streams, cell states and count sampling shared by the simulators.
"""

from benchmark.simulate._common import NORMALISE_TARGET_SUM
from benchmark.simulate.atlas import simulate_atlas
from benchmark.simulate.batch_effects import BatchEffects, apply_batch_effects, make_batch_effects
from benchmark.simulate.celltypes import simulate_celltypes
from benchmark.simulate.multiome import (
    MULTIOME_SETTINGS,
    simulate_multiome,
    simulate_multiome_setting,
)
from benchmark.simulate.perturbation import simulate_perturbation
from benchmark.simulate.world import SimulationWorld, ground_truth_targets, make_world

__all__ = [
    "MULTIOME_SETTINGS",
    "NORMALISE_TARGET_SUM",
    "BatchEffects",
    "SimulationWorld",
    "apply_batch_effects",
    "ground_truth_targets",
    "make_batch_effects",
    "make_world",
    "simulate_atlas",
    "simulate_celltypes",
    "simulate_multiome",
    "simulate_multiome_setting",
    "simulate_perturbation",
]
