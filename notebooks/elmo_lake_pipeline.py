# Databricks notebook source
# MAGIC %md
# MAGIC # elmo-lake on Databricks
# MAGIC Runs the pipeline on this notebook's Spark session, whatever compute it is attached to: **serverless**,
# MAGIC a **standard** (shared) access-mode cluster, a classic cluster, or a GPU cluster. On serverless and standard
# MAGIC clusters the session is a Spark Connect session: elmo-lake sends its code and the ELMo model to the executors
# MAGIC as session artifacts and never caches (serverless refuses `cache()`).
# MAGIC
# MAGIC Paths: by default everything lives in a Unity Catalog volume, `/Volumes/main/default/elmo_lake/...`, which
# MAGIC is the same path for Spark and for the files this notebook writes (report, predictions CSV, classifier).
# MAGIC `dbfs:/...` paths work too (elmo-lake maps them to `/dbfs/...` for its own file I/O).
# MAGIC
# MAGIC Before running: attach this repo (Git folder), and install the pinned dependencies of `pyproject.toml` into
# MAGIC the notebook's environment (serverless: the Environment panel; clusters: cluster libraries or `%pip`), all but
# MAGIC `pyspark`, which Databricks provides.

# COMMAND ----------

# MAGIC %md ## Settings: where the data is, where the tables go, and any `--set` overrides

# COMMAND ----------

dbutils.widgets.text("train", "/Volumes/main/default/elmo_lake/tweets/train.csv")  # noqa: F821 (dbutils: Databricks)
dbutils.widgets.text("score", "/Volumes/main/default/elmo_lake/tweets/unlabeled.csv")  # noqa: F821
dbutils.widgets.text("out", "/Volumes/main/default/elmo_lake/out")  # noqa: F821
dbutils.widgets.text("model", "")  # noqa: F821  (empty: the default model; or /Volumes/..., dbfs:/..., a hub handle)
dbutils.widgets.text("classifier", "sklearn")  # noqa: F821  (sklearn on the driver, or spark: Spark ML)
dbutils.widgets.text("schema", "")  # noqa: F821  (empty: paths only; e.g. main.elmo_lake: also register the tables there, for Databricks SQL — needs `out` in an external location, since Unity Catalog keeps no tables in Volumes)
dbutils.widgets.text("settings", "")  # noqa: F821  (comma-separated section.key=value, e.g. train.select=false,embed.layer=all)
train_path, score_path, out, engine = (dbutils.widgets.get(k) for k in ("train", "score", "out", "classifier"))  # noqa: F821
model = dbutils.widgets.get("model") or None  # noqa: F821
overrides = [s.strip() for s in dbutils.widgets.get("settings").split(",") if s.strip()]  # noqa: F821

# COMMAND ----------

import os
import sys

repo = os.path.dirname(os.getcwd())  # this notebook lives in notebooks/ of the repo
sys.path.insert(0, repo)
os.environ["ELMO_LAKE_HOME"] = repo

from jobs.platform.config import load_config  # noqa: E402
from jobs.platform.paths import default_model  # noqa: E402
from jobs.platform.session import is_connect  # noqa: E402

cfg = load_config("databricks", overrides)
print("Spark Connect session" if is_connect(spark) else "classic session", "| Delta engine:", cfg.delta.engine)  # noqa: F821

# COMMAND ----------

# MAGIC %md ## The whole pipeline: ingest -> clean -> embed -> train -> predict -> report

# COMMAND ----------

from jobs import pipeline  # noqa: E402
from jobs.learning.baseline import quality_lines  # noqa: E402

schema = dbutils.widgets.get("schema") or None  # noqa: F821
result = pipeline.run(spark, cfg, train_path, score_path, out, model or default_model(), engine, schema)  # noqa: F821
print("\n".join(quality_lines(result["classifier"].metrics)))  # selected set, F1 with its interval, baseline, verdict
print("predictions:", result["predictions_csv"], "| report:", result["report_html"])

# COMMAND ----------

# MAGIC %md ## Query the embeddings with SQL
# MAGIC The table is registered as a temporary view through elmo-lake's reader, so this works with the Delta
# MAGIC connector and without it (serverless allows temporary views; it refuses global ones).

# COMMAND ----------

from jobs.lake.delta_tables import read_delta  # noqa: E402

read_delta(spark, f"{out}/train_embeddings", cfg.delta.engine).createOrReplaceTempView("train_embeddings")  # noqa: F821
head = spark.sql(  # noqa: F821
    "SELECT id, model_id, layer, pooling, dim, slice(embedding, 1, 5) AS head FROM train_embeddings ORDER BY id LIMIT 10"
)
display(head)  # noqa: F821
