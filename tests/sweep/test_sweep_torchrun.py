"""A 2-process torchrun (gloo, CPU) sweep writes exactly the files of a 1-process sweep."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_sweep import make_folder

SCRIPT = Path(__file__).with_name("tiny_sweep.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.skipif(not TORCHRUN.exists() and not shutil.which("torchrun"), reason="torchrun is not installed")
def test_two_processes_equal_one(tmp_path):
    data = tmp_path / "data"
    make_folder(data, 13)
    args = [str(data), "--method", "gradient", "--shard-size", "3"]
    single = subprocess.run([sys.executable, str(SCRIPT), args[0], str(tmp_path / "one"), *args[1:]], env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr
    torchrun = str(TORCHRUN) if TORCHRUN.exists() else shutil.which("torchrun")
    double = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", str(SCRIPT), args[0],
                             str(tmp_path / "two"), *args[1:]], env=ENV, capture_output=True, text=True, timeout=300)
    if double.returncode != 0 and any(s in double.stderr.lower() for s in ("eaddrinuse", "address already in use",
                                                                            "rendezvousconnectionerror")):
        pytest.skip(f"torchrun could not start its rendezvous (no free port?): {double.stderr.strip()[-300:]}")
    assert double.returncode == 0, double.stderr
    assert "on 2 process(es)" in double.stdout and "16 images, 13 mapped, 3 errors" in double.stdout
    one = {p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()}
    two = {p.relative_to(tmp_path / "two"): p.read_bytes() for p in (tmp_path / "two").rglob("*") if p.is_file()}
    assert sorted(two) == sorted(one)
    for name in one:
        assert two[name] == one[name], name
