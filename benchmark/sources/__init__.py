"""Where the benchmark's data and models come from.

``download``
    Streamed, resumed, verified downloads; a first download is format-checked before its
    digest is pinned.
``checkpoints``
    scGPT checkpoint folders: released ones fetched, committed ones copied, both checked.
``census``
    Nested CELLxGENE census subsets as pre-training shards (the paper's data-size series).
``demo``
    The real PBMC data shipped inside scanpy, in the standard layout.
``genes``
    Gene identifiers: symbols vs Ensembl ids, id -> symbol maps, vocabulary coverage.
``corpus``
    The demo's pre-training corpus: the training cells of the configured datasets.

The simulator (``benchmark.simulate``) is its own package: its builders are named in
``config/datasets.yaml`` as ``benchmark.simulate:<function>``.
"""
