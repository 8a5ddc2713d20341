"""Reading a YAML file with errors that name the file, the line and the column.

Snakemake reports a YAML syntax error in a config file as ``Config file is not valid JSON or
YAML`` (no file, no line). The Snakefile reads the demo config through :func:`load_yaml`
first; a file given with ``--configfile`` is read by Snakemake before any workflow code
runs, so ``python -m benchmark.yamlfile FILE`` checks one by hand (``snakemake --verbose``
also shows the position).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "UniqueKeyLoader", "YamlFileError", "load_yaml"]


class YamlFileError(ValueError):
    """A YAML file that cannot be read; the message is ``<file>:<line>:<column>: <problem>``."""


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping gives one key twice (plain YAML silently keeps the last value).

    A :class:`yaml.MarkedYAMLError`: its message points at both keys (``line``, ``column``),
    and readers that report YAML errors by position (:mod:`benchmark.yamlfile`) report it so.
    """


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    YAML requires unique keys, but PyYAML (and so Snakemake's config reading) keeps the last
    of two without a word: ``scale: true`` then ``scale: false`` under one method runs with
    ``false``. Keys merged in with ``<<:`` may still be overridden (YAML's way to do it).
    """

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        first: dict[Any, Any] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first.get(key)
            except TypeError:  # an unhashable key: SafeLoader refuses it itself
                continue
            if seen is not None:
                raise DuplicateKeyError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"key {key!r} is given twice (first on line {seen.line + 1}); YAML would "
                    "silently keep only the last value: remove one",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | os.PathLike[str], *, loader: type[Any] = UniqueKeyLoader) -> Any:
    """Parse the YAML file ``path``.

    Parameters
    ----------
    path
        The file.
    loader
        PyYAML loader class; by default :class:`UniqueKeyLoader` (safe, and a key given twice
        is an error). Its :class:`yaml.MarkedYAMLError` errors are reported by position.

    Returns
    -------
    The parsed document (``None`` for an empty file).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist (the message names it).
    YamlFileError
        Not UTF-8 text, a key given twice, or a YAML error, e.g. ``config.yaml:3:7: not valid YAML: expected
        ',' or ']', but got ':' (while parsing a flow sequence started at line 1, column 8)``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise YamlFileError(f"{path}:{line}: not UTF-8 text ({err.reason})") from None
    try:
        return yaml.load(text, Loader=loader)  # a SafeLoader (or subclass) by default
    except yaml.MarkedYAMLError as err:
        raise YamlFileError(_describe(path, err)) from None
    except yaml.YAMLError as err:
        raise YamlFileError(f"{path}: not valid YAML ({err})") from None


def _describe(path: Path, err: yaml.MarkedYAMLError) -> str:
    """``file:line:column: problem (context at line L, column C)``, counted from 1."""
    mark = err.problem_mark or err.context_mark
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = err.problem or err.context or "not valid YAML"
    text = f"{where}: not valid YAML: {problem}"
    if err.context and err.problem and err.context_mark is not None:
        start = err.context_mark
        text += f" ({err.context} started at line {start.line + 1}, column {start.column + 1})"
    if err.note:
        text += f"; {err.note}"
    return text


def _main(argv: list[str] | None = None) -> int:
    """Check YAML files; print each error (``file:line:column: problem``), exit 1 on any."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.yamlfile", description="Check that YAML files parse."
    )
    parser.add_argument("files", nargs="+", help="YAML files, e.g. a --configfile")
    failed = False
    for name in parser.parse_args(argv).files:
        try:
            load_yaml(name)
        except (OSError, YamlFileError) as err:
            print(err, file=sys.stderr)
            failed = True
        else:
            print(f"{name}: ok")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(_main())
