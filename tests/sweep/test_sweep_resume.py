"""A sweep SIGKILLed at random moments and rerun ends with exactly the files of an
uninterrupted run, and never rewrites a finished shard."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from tiny_sweep import make_folder

SCRIPT = Path(__file__).with_name("tiny_sweep.py")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def launch(data, out):
    return subprocess.Popen([sys.executable, str(SCRIPT), str(data), str(out), "--delay", "0.03"], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process) -> str:
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return stdout


def wait_for_manifest(process, out):
    while not (out / "manifest.json").exists() and process.poll() is None:
        time.sleep(0.005)


def snapshot(out: Path) -> dict:
    """Finished shard files -> (inode, mtime): a rewrite (even to the same bytes) changes them."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (out / "shards").glob("*")
            if not p.name.endswith(".tmp") and (p.with_suffix(".json")).exists()}


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    data = tmp_path / "data"
    make_folder(data, 30)
    process = launch(data, tmp_path / "whole")
    wait_for_manifest(process, tmp_path / "whole")
    started = time.monotonic()
    finished(process)
    run_time = time.monotonic() - started  # from the manifest (imports and setup done) to the end
    rng = random.Random(7)
    out = tmp_path / "out"
    kept, kills = {}, 0
    for _ in range(4):
        process = launch(data, out)
        wait_for_manifest(process, out)
        time.sleep(rng.uniform(0.1, 0.3) * run_time)
        if process.poll() is not None:
            break
        process.send_signal(signal.SIGKILL)
        process.communicate()
        kills += 1
        now = snapshot(out)
        assert {name: now[name] for name in kept} == kept, "a finished shard was written again"
        kept = now
    assert kills >= 3 and 0 < len(kept) < 2 * 9, "the kills should land mid-sweep"
    stdout = finished(launch(data, out))
    assert f"{len(kept) // 2 * 4} done by an earlier run" in stdout
    after = snapshot(out)
    assert {name: after[name] for name in kept} == kept
    assert not list(out.rglob("*.tmp"))
    whole = {p.relative_to(tmp_path / "whole"): p.read_bytes() for p in (tmp_path / "whole").rglob("*") if p.is_file()}
    resumed = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert sorted(resumed) == sorted(whole)
    for name in whole:  # index, errors, manifest and every shard's maps and rows, bitwise
        assert resumed[name] == whole[name], name
