"""Dataset-scale saliency sweeps: every image of a folder, in fixed shards, crash-safe and
resumable, scaled out with torch.distributed (torchrun).

    plan.py         the sorted image list, its shards, label files
    manifest.py     DIR/manifest.json: a folder's options, checked on every run
    store.py        atomic shard files and the merged index
    loading.py      decoding in DataLoader workers; bad files become error records
    distributed.py  the torchrun process group (NCCL on GPUs, gloo on CPUs)
    targets.py      target=: predicted, one class, or a label file's class per image
    maps.py         one batch's maps (scaled float16) and index rows
    runner.py       sweep(): the shard loop
    results.py      load_sweep(): the index, the errors, one image's map
"""

from pyfastviz.sweep.results import Sweep, load_sweep
from pyfastviz.sweep.runner import METHODS, SweepSummary, sweep

__all__ = ["METHODS", "Sweep", "SweepSummary", "load_sweep", "sweep"]
