"""Perturbation condition names: parsing, normalising and seen-gene subgroups.

A condition names the genes perturbed in a cell, joined by ``+``, with ``ctrl`` as filler:
``"ctrl"`` (control), ``"A+ctrl"`` or ``"ctrl+A"`` (single), ``"A+B"`` (double; the order
of the genes does not matter). This is GEARS' convention, used by the standard dataset's obs
``condition`` column. Parsing returns the perturbed genes as a sorted tuple, so that the two
spellings of a condition compare equal.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

CTRL = "ctrl"
"""Name of the control condition (and the filler of single perturbations)."""

SUBGROUPS: tuple[str, ...] = (
    "single_seen",
    "single_unseen",
    "combo_seen0",
    "combo_seen1",
    "combo_seen2",
)
"""Subgroup names, after GEARS' simulation split: how many of a condition's genes were
perturbed in any training condition."""


def parse_condition(
    condition: str,
    known_genes: Collection[str] | None = None,
    *,
    known_as: str = "var_names",
    control: str = CTRL,
) -> tuple[str, ...]:
    """Return the genes a condition perturbs, sorted (``()`` for control).

    Parameters
    ----------
    condition
        ``"ctrl"``, ``"A+ctrl"``, ``"ctrl+A"`` or ``"A+B"`` (any number of ``+``-joined genes
        is accepted; ``ctrl`` parts are dropped).
    known_genes
        If given, every gene must be in it.
    known_as
        What ``known_genes`` is, for the error message.
    control
        The control's name (the filler dropped from the parts); ``"ctrl"`` in the standard
        datasets, another name for a library user's own data.

    Raises
    ------
    ValueError
        If the name is empty or has an empty part, names a gene twice, or names a gene not in
        ``known_genes``.

    Examples
    --------
    >>> parse_condition("ctrl+B")
    ('B',)
    >>> parse_condition("B+A")
    ('A', 'B')
    """
    if not isinstance(condition, str) or not condition.strip():
        raise ValueError(f"condition {condition!r}: expected a non-empty string like 'A+ctrl'")
    parts = [p.strip() for p in condition.split("+")]
    if any(not p for p in parts):
        raise ValueError(
            f"condition {condition!r} has an empty part; expected 'ctrl', 'A+ctrl' or 'A+B'"
        )
    genes = [p for p in parts if p != control]
    if len(set(genes)) != len(genes):
        raise ValueError(f"condition {condition!r} names a gene more than once")
    if known_genes is not None:
        for gene in genes:
            if gene not in known_genes:
                raise ValueError(
                    f"condition {condition!r}: gene {gene!r} is not in {known_as} "
                    f"({len(known_genes)} genes)"
                )
    return tuple(sorted(genes))


def format_condition(genes: Iterable[str]) -> str:
    """Standard spelling of a condition: ``"ctrl"``, ``"A+ctrl"`` or ``"A+B"`` (genes sorted)."""
    genes = sorted(genes)
    if not genes:
        return CTRL
    if len(genes) == 1:
        return f"{genes[0]}+{CTRL}"
    return "+".join(genes)


def normalise_condition(condition: str, known_genes: Collection[str] | None = None) -> str:
    """Parse and re-spell a condition, e.g. ``"ctrl+A"`` -> ``"A+ctrl"``, ``"B+A"`` -> ``"A+B"``."""
    return format_condition(parse_condition(condition, known_genes))


def is_control(condition: str) -> bool:
    """Whether the condition perturbs no gene."""
    return len(parse_condition(condition)) == 0


def n_genes(condition: str) -> int:
    """Number of perturbed genes (0 control, 1 single, 2 double)."""
    return len(parse_condition(condition))


def perturbed_genes(conditions: Iterable[str]) -> set[str]:
    """All genes perturbed in any of the conditions."""
    genes: set[str] = set()
    for condition in conditions:
        genes.update(parse_condition(condition))
    return genes


def n_seen(condition: str, seen_genes: Collection[str]) -> int:
    """How many of the condition's genes are in ``seen_genes``."""
    return sum(g in seen_genes for g in parse_condition(condition))


def subgroup(condition: str, seen_genes: Collection[str]) -> str:
    """GEARS-style subgroup of a condition given the genes perturbed in training.

    Singles are ``"single_seen"`` or ``"single_unseen"``; doubles ``"combo_seen<k>"`` with
    ``k`` the number of their genes seen in training. Control and conditions of three or
    more genes raise ``ValueError``.
    """
    genes = parse_condition(condition)
    k = sum(g in seen_genes for g in genes)
    if len(genes) == 1:
        return "single_seen" if k else "single_unseen"
    if len(genes) == 2:
        return f"combo_seen{k}"
    raise ValueError(
        f"condition {condition!r}: subgroups are defined for single and double perturbations"
    )
