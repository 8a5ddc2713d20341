"""Gene identifiers: detection, coverage and harmonisation to symbols."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from benchmark.sources.genes import (
    CoverageReport,
    detect_id_type,
    gene_coverage,
    harmonise_genes,
    is_ensembl,
    read_gene_mapping,
    strip_version,
    translate_gene_lists,
)


def test_ensembl_detection():
    assert is_ensembl("ENSG00000141510")
    assert is_ensembl("ENSG00000141510.17")
    assert is_ensembl("ENSMUSG00000059552")
    assert not is_ensembl("TP53")
    assert not is_ensembl("ENSG0001")
    assert detect_id_type(["ENSG00000141510", "ENSG00000012048"]) == "ensembl"
    assert detect_id_type(["TP53", "BRCA1", "MT-CO1"]) == "symbol"
    assert detect_id_type(["TP53", "ENSG00000012048"]) == "mixed"
    assert detect_id_type([]) == "empty"
    assert strip_version(["ENSG00000141510.17", "TP53.1"]) == ["ENSG00000141510", "TP53.1"]


def test_gene_coverage_hand_example():
    report = gene_coverage(["A", "B", "C", "D", "E"], ["A", "C", "E", "Z"])
    assert report == CoverageReport(5, 3, 0.6, ("B", "D"))
    # A scGPT vocab.json mapping counts by its keys.
    assert gene_coverage(["A", "B"], {"A": 0, "<pad>": 1}).n_matched == 1
    empty = gene_coverage([], {"A"})
    assert (empty.n_genes, empty.n_matched, empty.fraction) == (0, 0, 0.0)
    assert report.as_dict()["unmatched_examples"] == ["B", "D"]
    assert "3/5 genes" in str(report)


def _ensembl_adata() -> ad.AnnData:
    ids = ["ENSG00000000001", "ENSG00000000002", "ENSG00000000003", "ENSG00000000004"]
    X = sp.csr_matrix(np.array([[1, 2, 3, 4], [0, 1, 0, 5]], dtype=np.float32))
    var = pd.DataFrame({"gene_name": ["A", "B", "A", None]}, index=ids)
    return ad.AnnData(X=X, var=var)


def test_harmonise_sums_duplicate_symbols_of_counts():
    out, report = harmonise_genes(_ensembl_adata(), symbol_column="gene_name", duplicates="sum")
    assert list(out.var_names) == ["A", "B", "ENSG00000000004"]
    np.testing.assert_array_equal(out.X.toarray(), [[4, 2, 4], [0, 1, 5]])
    assert out.var.loc["A", "gene_id"] == "ENSG00000000001;ENSG00000000003"
    assert out.var.loc["B", "gene_id"] == "ENSG00000000002"
    assert report.id_type == "ensembl"
    assert (report.n_input, report.n_output) == (4, 3)
    assert report.n_without_symbol == 1 and report.without_symbol_examples == ("ENSG00000000004",)
    assert report.n_duplicated_symbols == 1 and report.duplicated_examples == ("A",)


def test_harmonise_policies_first_and_make_unique():
    first, report = harmonise_genes(_ensembl_adata(), symbol_column="gene_name", is_counts=False)
    assert report.duplicates == "first"
    assert list(first.var_names) == ["A", "B", "ENSG00000000004"]
    np.testing.assert_array_equal(first.X.toarray()[:, 0], [1, 0])
    unique, _ = harmonise_genes(
        _ensembl_adata(), symbol_column="gene_name", duplicates="make_unique"
    )
    assert list(unique.var_names) == ["A", "B", "A-1", "ENSG00000000004"]
    assert unique.n_vars == 4


def test_harmonise_needs_a_symbol_source_for_ensembl_ids():
    adata = _ensembl_adata()
    with pytest.raises(ValueError, match=r"Ensembl ids .*\(var columns: \[.gene_name.\]\)"):
        harmonise_genes(adata)


def test_harmonise_with_mapping_file(tmp_path):
    table = tmp_path / "genes.tsv"
    table.write_text(
        "ensembl_id\tsymbol\nENSG00000000001.3\tA\nENSG00000000002\tB\nENSG00000000004\tD\n"
    )
    mapping = read_gene_mapping(table)
    assert mapping == {"ENSG00000000001": "A", "ENSG00000000002": "B", "ENSG00000000004": "D"}
    adata = _ensembl_adata()
    adata.var = adata.var.drop(columns="gene_name")
    out, report = harmonise_genes(adata, mapping=mapping)
    assert list(out.var_names) == ["A", "B", "ENSG00000000003", "D"]
    assert report.symbol_source == "mapping"


def test_symbols_keep_ids_from_column():
    adata = ad.AnnData(
        X=sp.csr_matrix(np.ones((2, 2), dtype=np.float32)),
        var=pd.DataFrame({"gene_ids": ["ENSG00000000001", "ENSG00000000002"]}, index=["A", "B"]),
    )
    out, report = harmonise_genes(adata, id_column="gene_ids")
    assert list(out.var["gene_id"]) == ["ENSG00000000001", "ENSG00000000002"]
    assert report.id_type == "symbol" and report.n_duplicated_symbols == 0


def test_translate_gene_lists():
    uns = {"de": {"A+ctrl": np.array(["g1", "g2"], dtype=object)}, "other": ["x", "g1"]}
    out = translate_gene_lists(uns, {"g1": "A", "g2": "B"})
    assert list(out["de"]["A+ctrl"]) == ["A", "B"]
    assert out["other"] == ["x", "g1"]
