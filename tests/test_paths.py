"""Users' paths as Spark and the job's own file I/O need them (Databricks' two names for one place)."""

from __future__ import annotations

import os

import pytest

from jobs.platform.errors import ElmoLakeError, InputError
from jobs.platform.paths import join, local_path, spark_path


def test_dbfs_volumes_and_object_stores_map_to_what_each_side_opens():
    assert (
        spark_path("/dbfs/lake/out") == "dbfs:/lake/out" and local_path("dbfs:/lake/out") == "/dbfs/lake/out"
    )
    assert local_path("dbfs:lake") == "/dbfs/lake" and spark_path("dbfs:/x") == "dbfs:/x"
    volume = "/Volumes/main/default/elmo_lake/out"
    assert spark_path(volume) == volume == local_path(volume)
    for uri in ("s3://bucket/lake", "abfss://c@acct.dfs.core.windows.net/lake", "gs://b/x", "hdfs://nn/lake"):
        assert spark_path(uri) == uri
        with pytest.raises(InputError, match="cannot open an object-store URI; give a local folder, a Unity"):
            local_path(uri)
    assert local_path("file:///tmp/x") == "/tmp/x" and spark_path("file:///tmp/x") == "file:///tmp/x"
    assert spark_path("rel/dir") == os.path.abspath("rel/dir") == local_path("rel/dir")
    assert join("s3://b/lake/", "runs") == "s3://b/lake/runs" and join("/a", "b", "c") == "/a/b/c"


def test_a_delta_rs_write_whose_files_the_client_cannot_see_fails_clearly(tmp_path):
    import pyarrow.fs as pafs

    from jobs.lake.delta_rs_engine import _check_staging_visible

    _check_staging_visible(pafs.LocalFileSystem(), str(tmp_path), "lake/t")  # visible: nothing to say
    with pytest.raises(ElmoLakeError, match="must share the storage of lake/t"):
        _check_staging_visible(pafs.LocalFileSystem(), str(tmp_path / "elsewhere"), "lake/t")
