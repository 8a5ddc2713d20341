"""Reference mapping: place query cells onto a labelled reference and transfer its labels.

Same contract, inputs, outputs and metrics as :mod:`benchmark.tasks.annotation` (the scGPT
paper scores reference mapping by the accuracy and macro precision / recall / F1 of the
transferred labels); the methods differ: they map the query into a reference embedding
(scArches-style query surgery with scANVI, Seurat label transfer, kNN in a PCA or scGPT
embedding) rather than train a classifier. The paper has no table for this task.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.tasks.annotation import AnnotationTask


@dataclass(frozen=True, kw_only=True)
class ReferenceMappingTask(AnnotationTask):
    """Reference -> query label transfer (see :class:`AnnotationTask`)."""

    name = "reference_mapping"
    paper_table = None


TASK = ReferenceMappingTask()
