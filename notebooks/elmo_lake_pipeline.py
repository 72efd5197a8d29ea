# Databricks notebook source
# MAGIC %md
# MAGIC # elmo-lake on Databricks
# MAGIC Runs the stages on this cluster's Spark session. Delta goes through the built-in connector
# MAGIC (`conf/databricks.toml` sets `delta.engine = "spark"`). Attach the repo (Repos) and install its pinned
# MAGIC dependencies on the cluster first (`%pip install -r` the list in `pyproject.toml`, or a cluster library).

# COMMAND ----------

# MAGIC %md ## Settings: where the data is and where the tables go

# COMMAND ----------

dbutils.widgets.text("train", "dbfs:/FileStore/tweets/train.csv")  # noqa: F821 (dbutils exists on Databricks)
dbutils.widgets.text("score", "dbfs:/FileStore/tweets/unlabeled.csv")  # noqa: F821
dbutils.widgets.text("out", "dbfs:/elmo-lake/tweets")  # noqa: F821
dbutils.widgets.text("model", "")  # noqa: F821  (empty: the default model; or dbfs:/..., a TF Hub handle, ...)
train_path, score_path, out = (dbutils.widgets.get(k) for k in ("train", "score", "out"))  # noqa: F821
model = dbutils.widgets.get("model") or None  # noqa: F821

# COMMAND ----------

import os
import sys

repo = os.path.dirname(os.getcwd())  # this notebook lives in notebooks/ of the repo
sys.path.insert(0, repo)
os.environ["ELMO_LAKE_HOME"] = repo

from jobs.config import load_config  # noqa: E402
from jobs.paths import default_model  # noqa: E402

cfg = load_config("databricks")

# COMMAND ----------

# MAGIC %md ## The whole pipeline: ingest -> clean -> embed -> train -> predict -> report

# COMMAND ----------

from jobs import pipeline  # noqa: E402

result = pipeline.run(spark, cfg, train_path, score_path, out.replace("dbfs:/", "/dbfs/"), model or default_model(), "spark")  # noqa: F821
print("validation F1:", result["classifier"].metrics["validation"]["f1"])

# COMMAND ----------

# MAGIC %md ## Query the embeddings with SQL

# COMMAND ----------

display(spark.sql(f"SELECT id, model_id, layer, pooling, dim, slice(embedding, 1, 5) AS head FROM delta.`{out}/train_embeddings` LIMIT 10"))  # noqa: F821
