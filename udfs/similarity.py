"""Exact cosine top-k on executors: one matrix product per Arrow batch, each partition keeping its own top-k.

``make_topk_function`` returns the ``mapInArrow`` body for "which rows are closest to these queries": the
queries (unit vectors) travel inside the function, once per task; every batch of (id, embedding) rows is scored
with one product (rows x dim) @ (dim x queries), and only each query's best k so far are kept, so memory is
bounded by the batch size, never the table. Ties are broken by id (the smaller id ranks first), a query never
matches its own id, and rows without a vector never match. ``make_pairs_function`` scores blocks of rows against
blocks (each pair once) for near-duplicate search.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa

TOPK_SCHEMA = "query_index int, id string, score double"
PAIRS_SCHEMA = "id_a string, id_b string, score double"


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, in float64; zero rows stay zero."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def arrow_vectors(batch: pa.RecordBatch, column: str = "embedding") -> tuple[np.ndarray, np.ndarray]:
    """(ids, rows x dim matrix) of a batch's rows that have a vector; rows with a null vector are dropped."""
    vectors = batch.column(column)
    present = np.asarray(vectors.is_valid())
    ids = np.asarray(batch.column("id").to_pylist(), dtype=object)[present]
    kept = vectors.filter(pa.array(present))
    if len(kept) == 0:
        return ids.astype(str), np.zeros((0, 0), np.float32)
    dim = len(kept[0])
    flat = np.asarray(kept.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return ids.astype(str), flat.reshape(len(kept), dim)


def best_k(query: np.ndarray, ids: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """Positions of each query's k best (score desc, then id asc) among flat candidates (query, id, score)."""
    order = np.lexsort((ids, -scores, query))
    ranked_query = query[order]
    starts = np.searchsorted(ranked_query, ranked_query, side="left")
    rank = np.arange(len(order)) - starts
    return order[rank < k]


BLOCK_ROWS = 16384  # rows scored by one product: bounds memory (rows x dim + rows x queries floats)
SELECTION_MARGIN = 1e-5  # float32 scores pick candidates within this of each query's k-th; float64 decides


class TopK:
    """Each query's best k rows seen so far, as flat arrays (query index, id, score).

    A batch is scored with one float32 product (the GEMM that bounds the speed); the few candidates within
    ``SELECTION_MARGIN`` of each query's k-th score are rescored in float64, so ranks and scores are exact cosines
    (to 1e-12), not float32's.
    """

    def __init__(self, queries: np.ndarray, query_ids: list[str | None], k: int, min_score: float | None):
        self.queries = unit_rows(queries)  # (n_queries, dim), float64
        self.queries32 = self.queries.astype(np.float32)
        self.query_ids = np.asarray([q if q is not None else "" for q in query_ids], dtype=str)
        self.k, self.min_score = k, min_score
        self.query = np.zeros(0, np.int64)
        self.ids = np.zeros(0, dtype=str)
        self.scores = np.zeros(0, np.float64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors, dtype=np.float64))
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0).astype(np.float32)
        scores = (vectors * scale[:, None]) @ self.queries32.T  # (rows, queries): the one product per block
        scores[norms == 0] = -np.inf  # rows without a direction never match
        own = np.nonzero(np.isin(ids, self.query_ids))[0]
        for row in own:  # a query never matches itself (few rows: only the queries' own)
            scores[row, self.query_ids == ids[row]] = -np.inf
        floor = self._kth_so_far()  # each query's k-th best before this block: a candidate must beat it
        n_rows = len(ids)
        if n_rows > self.k:
            kth = np.partition(scores, n_rows - self.k, axis=0)[n_rows - self.k] if floor is None else floor
            keep = scores >= (kth - SELECTION_MARGIN)[None, :]
        else:
            keep = np.ones_like(scores, dtype=bool)
        keep &= np.isfinite(scores)
        if self.min_score is not None:
            keep &= scores >= self.min_score - SELECTION_MARGIN
        candidates = np.flatnonzero(
            keep.any(axis=1)
        )  # few rows hold a candidate of any query: look only there
        rows, cols = np.nonzero(keep[candidates])
        rows = candidates[rows]
        if len(rows) == 0:
            return
        exact = np.einsum("ij,ij->i", unit_rows(vectors[rows]), self.queries[cols])
        if self.min_score is not None:
            passing = exact >= self.min_score
            rows, cols, exact = rows[passing], cols[passing], exact[passing]
        query = np.concatenate([self.query, cols.astype(np.int64)])
        found = np.concatenate([self.ids, ids[rows]])
        values = np.concatenate([self.scores, exact])
        chosen = best_k(query, found, values, self.k)
        self.query, self.ids, self.scores = query[chosen], found[chosen], values[chosen]

    def _kth_so_far(self) -> np.ndarray | None:
        """Each query's k-th best score kept so far, once every query has k (else None: not known yet)."""
        counts = np.bincount(self.query, minlength=len(self.queries))
        if len(self.query) == 0 or counts.min() < self.k:
            return None
        kth = np.full(len(self.queries), np.inf)
        np.minimum.at(kth, self.query, self.scores)
        return kth.astype(np.float32)

    def batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_arrays(
            [
                pa.array(self.query.astype(np.int32)),
                pa.array(self.ids.tolist(), pa.string()),
                pa.array(self.scores, pa.float64()),
            ],
            names=["query_index", "id", "score"],
        )


def make_topk_function(queries: np.ndarray, query_ids: list[str | None], k: int, min_score: float | None):
    """The ``mapInArrow`` body: (id, embedding) batches -> this partition's top k rows of every query."""

    def topk_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        best = TopK(queries, query_ids, k, min_score)
        pending: list[tuple[np.ndarray, np.ndarray]] = []
        held = 0
        for batch in batches:  # Arrow batches are small: score blocks of BLOCK_ROWS rows, one product each
            ids, vectors = arrow_vectors(batch)
            if len(ids):
                pending.append((ids, vectors))
                held += len(ids)
            if held >= BLOCK_ROWS:
                best.add(np.concatenate([p[0] for p in pending]), np.concatenate([p[1] for p in pending]))
                pending, held = [], 0
        if pending:
            best.add(np.concatenate([p[0] for p in pending]), np.concatenate([p[1] for p in pending]))
        yield best.batch()

    return topk_batches


def make_file_topk_function(
    queries: np.ndarray,
    query_ids: list[str | None],
    k: int,
    min_score: float | None,
    layer: str,
    pooling: str,
    files_by_task: list[list[str]],
):
    """The ``mapInArrow`` body over ``spark.range(tasks)``: task i reads ``files_by_task[i]`` with pyarrow, keeps
    the set's rows (layer, pooling) and returns its top k of every query. Same results as ``make_topk_function``."""

    def topk_files(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        best = TopK(queries, query_ids, k, min_score)
        columns = ["id", "embedding", "layer", "pooling"]
        for batch in batches:
            for task in batch.column("id").to_pylist():
                for path in files_by_task[task]:
                    # layer and pooling as dictionaries: the set's filter compares a few values, not every row's
                    source = pq.ParquetFile(path, read_dictionary=["layer", "pooling"])
                    for part in source.iter_batches(batch_size=BLOCK_ROWS, columns=columns):
                        same_layer = pc.equal(part.column("layer"), layer)
                        mine = pc.and_(same_layer, pc.equal(part.column("pooling"), pooling))
                        ids, vectors = arrow_vectors(part.filter(mine))
                        best.add(ids, vectors)
        yield best.batch()

    return topk_files


def block_pairs(
    ids_a: np.ndarray,
    vectors_a: np.ndarray,
    ids_b: np.ndarray,
    vectors_b: np.ndarray,
    same: bool,
    min_score: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of rows of two blocks scoring at least ``min_score``; within one block, each pair once (i < j)."""
    scores = unit_rows(vectors_a) @ unit_rows(vectors_b).T
    keep = scores >= min_score
    if same:
        keep &= np.triu(np.ones_like(keep, dtype=bool), k=1)
    rows, cols = np.nonzero(keep)
    return ids_a[rows], ids_b[cols], scores[rows, cols]


def make_pairs_function(min_score: float):
    """The ``mapInArrow`` body over block pairs (block_a, ids_a, vectors_a, block_b, ids_b, vectors_b)."""

    def pair_batches(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for row in batch.to_pylist():
                a_ids, b_ids = np.asarray(row["ids_a"], dtype=str), np.asarray(row["ids_b"], dtype=str)
                a = np.asarray(row["vectors_a"], dtype=np.float32)
                b = np.asarray(row["vectors_b"], dtype=np.float32)
                if len(a_ids) == 0 or len(b_ids) == 0:
                    continue
                first, second, scores = block_pairs(
                    a_ids, a, b_ids, b, row["block_a"] == row["block_b"], min_score
                )
                # each pair once, the smaller id first, whatever block each came from
                swap = first > second
                low, high = np.where(swap, second, first), np.where(swap, first, second)
                yield pa.RecordBatch.from_arrays(
                    [
                        pa.array(low.tolist(), pa.string()),
                        pa.array(high.tolist(), pa.string()),
                        pa.array(scores),
                    ],
                    names=["id_a", "id_b", "score"],
                )

    return pair_batches
