"""The sets of an embedding table: one (model_id, layer, pooling) each; vectors of different sets never mix."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F


def embedding_set(model_id: str, layer: str, pooling: str) -> Column:
    """The rows of one (model_id, layer, pooling) set in an embedding table."""
    return (F.col("model_id") == model_id) & (F.col("layer") == layer) & (F.col("pooling") == pooling)
