# Seurat (v4) weighted nearest neighbours (Hao et al. 2021) for scgpt-bench's multi-omic task.
#
# Called from baselines/seurat_wnn.py through baselines/_rbridge.py. The per-modality
# reductions (RNA PCA, protein PCA, ATAC LSI) are computed in Python and arrive as cells x dims
# matrices in the order of `cells`; FindMultiModalNeighbors weighs them per cell and returns
# the weighted shared-nearest-neighbour graph (wsnn), sent back as the parts of a sparse
# matrix with its cell names (Seurat may reorder cells; Python re-aligns by name).

suppressPackageStartupMessages({
  library(Matrix)
  library(Seurat)
})

scgpt_bench_wnn <- function(cells, rna = NULL, protein = NULL, atac = NULL,
                            rna_dims = 30L, protein_dims = 18L, atac_dims = 50L,
                            k_nn = 20L, seed = 0L) {
  set.seed(seed)
  cells <- as.character(cells)
  # A Seurat object needs an assay, but FindMultiModalNeighbors reads only the reductions: a
  # one-feature carrier assay holds the cell names and its values are never used.
  carrier <- Matrix::sparseMatrix(i = 1L, j = 1L, x = 1, dims = c(1L, length(cells)),
                                  dimnames = list("cells", cells))
  obj <- CreateSeuratObject(counts = as(carrier, "dgCMatrix"), min.cells = 0,
                            min.features = 0)
  reductions <- list()
  dims <- list()
  add <- function(obj, emb, name, key) {
    emb <- as.matrix(emb)
    rownames(emb) <- cells
    colnames(emb) <- paste0(key, seq_len(ncol(emb)))
    obj[[name]] <- CreateDimReducObject(embeddings = emb, key = key, assay = DefaultAssay(obj))
    obj
  }
  if (!is.null(rna)) {
    obj <- add(obj, rna, "pca", "pca_")
    reductions[[length(reductions) + 1]] <- "pca"
    dims[[length(dims) + 1]] <- seq_len(min(rna_dims, ncol(rna)))
  }
  if (!is.null(protein)) {
    obj <- add(obj, protein, "apca", "apca_")
    reductions[[length(reductions) + 1]] <- "apca"
    dims[[length(dims) + 1]] <- seq_len(min(protein_dims, ncol(protein)))
  }
  if (!is.null(atac)) {
    # `atac` holds LSI components 2..n already (the first, depth-driven one is dropped).
    obj <- add(obj, atac, "lsi", "lsi_")
    reductions[[length(reductions) + 1]] <- "lsi"
    dims[[length(dims) + 1]] <- seq_len(min(atac_dims - 1L, ncol(atac)))
  }
  if (length(reductions) < 2) stop("WNN needs at least two modalities' reductions")
  obj <- FindMultiModalNeighbors(obj, reduction.list = reductions, dims.list = dims,
                                 k.nn = k_nn, verbose = FALSE)
  g <- as(obj@graphs$wsnn, "dgCMatrix")
  weights <- sapply(reductions, function(r) {
    col <- grep(paste0("^", r, "\\.weight$"), colnames(obj@meta.data), value = TRUE)
    if (length(col)) mean(obj@meta.data[[col[1]]]) else NA_real_
  })
  list(i = g@i, p = g@p, x = g@x, cells = colnames(g), rows = rownames(g),
       reductions = unlist(reductions), mean_weights = as.numeric(weights))
}
