"""The contract between the harness and the methods: the bottom room both sides import.

``tasks``
    The one task list (:data:`~contract.tasks.TASKS`), the environment groups, and each
    task's method contract (what a method receives and returns).
``registry``
    :func:`~contract.registry.register` and the look-ups the harness uses; parameter values
    checked against the functions' annotations.
``conditions``
    The perturbation condition grammar (``ctrl``, ``A+ctrl``, ``A+B``) and seen-gene
    subgroups, shared by the perturbation tasks, their baselines and the scGPT library.
``pca``
    The PCA that integration scores use as their reference, shared with the PCA baselines.

Nothing here imports the harness (``benchmark``), the methods (``baselines``) or the model
(``scgpt``); it needs only the standard library (``pca`` imports scanpy lazily).
"""
