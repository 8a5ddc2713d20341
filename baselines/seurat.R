# Seurat (v4) integration and label transfer for scgpt-bench.
#
# Called from baselines/seurat.py through baselines/_rbridge.py. Counts arrive as the parts of a
# genes x cells CSC matrix (0-based row indices `i`, column pointers `p`, values `x`) with the
# gene and cell names, so that nothing is densified. Every function returns a plain list whose
# cell names travel beside the values: Seurat reorders cells (IntegrateData does), and the
# Python side re-aligns by name.

suppressPackageStartupMessages({
  library(Matrix)
  library(Seurat)
})

scgpt_bench_counts <- function(i, p, x, genes, cells) {
  m <- Matrix::sparseMatrix(
    i = as.integer(i), p = as.integer(p), x = as.numeric(x),
    dims = c(length(genes), length(cells)), index1 = FALSE,
    dimnames = list(as.character(genes), as.character(cells))
  )
  as(m, "dgCMatrix")
}

# A Seurat object from counts (NormalizeData: LogNormalize, scale factor 1e4) or, when
# `normalized` is TRUE, from values that are already log-normalised (kept as they are).
scgpt_bench_object <- function(m, meta, normalized) {
  obj <- CreateSeuratObject(counts = m, meta.data = meta, min.cells = 0, min.features = 0)
  if (isTRUE(normalized)) {
    obj <- SetAssayData(obj, slot = "data", new.data = m)
  } else {
    obj <- NormalizeData(obj, normalization.method = "LogNormalize", scale.factor = 1e4,
                         verbose = FALSE)
  }
  obj
}

# Anchor-based integration (Stuart et al. 2019): one object per batch, anchors on all given
# genes (the benchmark's shared HVGs), IntegrateData, then ScaleData + RunPCA on the
# integrated assay. Returns list(embedding = cells x npcs, cells = names in that order).
scgpt_bench_integrate <- function(i, p, x, genes, cells, batch, reduction = "cca", dims = 30L,
                                  k_anchor = 5L, k_filter = 200L, k_score = 30L,
                                  k_weight = 100L, npcs = 30L, normalized = FALSE, seed = 0L) {
  set.seed(seed)
  m <- scgpt_bench_counts(i, p, x, genes, cells)
  meta <- data.frame(batch = as.character(batch), row.names = colnames(m))
  obj <- scgpt_bench_object(m, meta, normalized)
  features <- rownames(obj)
  objects <- SplitObject(obj, split.by = "batch")
  dims_use <- seq_len(dims)
  if (reduction == "rpca") {
    objects <- lapply(objects, function(o) {
      o <- ScaleData(o, features = features, verbose = FALSE)
      RunPCA(o, features = features, npcs = dims, seed.use = seed, verbose = FALSE)
    })
  }
  anchors <- FindIntegrationAnchors(
    object.list = objects, anchor.features = features, reduction = reduction,
    dims = dims_use, k.anchor = k_anchor, k.filter = k_filter, k.score = k_score,
    verbose = FALSE
  )
  integrated <- IntegrateData(anchorset = anchors, dims = dims_use, k.weight = k_weight,
                              verbose = FALSE)
  DefaultAssay(integrated) <- "integrated"
  integrated <- ScaleData(integrated, verbose = FALSE)
  integrated <- RunPCA(integrated, npcs = npcs, seed.use = seed, verbose = FALSE)
  emb <- Embeddings(integrated, reduction = "pca")
  list(embedding = unname(emb), cells = rownames(emb))
}

# Reference mapping by label transfer (Seurat's "Mapping and annotating query datasets"):
# PCA of the reference on its variable genes, FindTransferAnchors (reference PCA projected onto
# the query), TransferData of the reference labels. Returns list(predicted, score, cells).
scgpt_bench_transfer <- function(ref_i, ref_p, ref_x, ref_genes, ref_cells, labels,
                                 query_i, query_p, query_x, query_genes, query_cells,
                                 nfeatures = 2000L, dims = 30L, k_anchor = 5L,
                                 k_filter = 200L, k_score = 30L, k_weight = 50L,
                                 normalized = FALSE, seed = 0L) {
  set.seed(seed)
  ref_m <- scgpt_bench_counts(ref_i, ref_p, ref_x, ref_genes, ref_cells)
  query_m <- scgpt_bench_counts(query_i, query_p, query_x, query_genes, query_cells)
  ref_meta <- data.frame(cell_type = as.character(labels), row.names = colnames(ref_m))
  reference <- scgpt_bench_object(ref_m, ref_meta, normalized)
  query <- scgpt_bench_object(query_m, NULL, normalized)
  nfeatures <- min(nfeatures, nrow(reference))
  reference <- FindVariableFeatures(reference, selection.method = "vst", nfeatures = nfeatures,
                                    verbose = FALSE)
  reference <- ScaleData(reference, verbose = FALSE)
  reference <- RunPCA(reference, npcs = dims, seed.use = seed, verbose = FALSE)
  anchors <- FindTransferAnchors(
    reference = reference, query = query, dims = seq_len(dims), reference.reduction = "pca",
    k.anchor = k_anchor, k.filter = k_filter, k.score = k_score, verbose = FALSE
  )
  pred <- TransferData(anchorset = anchors, refdata = reference$cell_type,
                       dims = seq_len(dims), k.weight = k_weight, verbose = FALSE)
  list(
    predicted = as.character(pred$predicted.id),
    score = as.numeric(pred$prediction.score.max),
    cells = rownames(pred)
  )
}
