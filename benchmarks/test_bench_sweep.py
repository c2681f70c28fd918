"""pytest-benchmark smoke run of benchmarks/sweep.py: a tiny occlusion and gradient sweep."""

from benchmarks.sweep import sweep_rows, sweep_table


def test_sweep(benchmark, bench_device):
    rows = benchmark.pedantic(lambda: sweep_rows(bench_device, 2, window=112, stride=112, batch_size=2,
                                                 shard_size=1, workers=1, warmup=False), rounds=1)
    benchmark.extra_info["rows"] = rows
    assert [row["method"] for row in rows] == ["occlusion 112/112", "gradient"]
    assert all(row["images"] == 2 and 0 < row["model_fraction"] <= 1 for row in rows)
    assert sweep_table(rows).count("\n") == 3
