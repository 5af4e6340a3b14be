"""Epoch records that `dp-bench compare` and `cargo bench --bench data_parallel -- --trainer` read.

Standard library only: import it, or copy this file next to a training script. Each rank calls
`write_epoch` once per epoch, after the epoch's training (and evaluation, where it runs one):

    import dp_records
    dp_records.write_epoch("workdir", rank, epoch, training_time, tokens_per_sec,
                           validation_loss=val_loss, bleu=bleu)

It writes `workdir/rank{rank}_results_epoch{epoch}.json`, the name and the four keys of the
CMU 11-868 data-parallel assignment's records, atomically (a temporary file, then a rename), so a
reader never sees half a file. Optional keywords add what unlocks more of dp-bench's report
(docs/records.md): `tokens`, `compute_time`, `allreduce_time`, `wait_time`, `data_time`,
`flops`, `started_at`, `world_size`, `global_batch_size`, `device`, `implementation`.

On a GPU, read the clock only after `torch.cuda.synchronize()`: CUDA work is queued, and a clock
read without it times the queueing, not the training (the assignment's script did not, and its
throughput came out several times too high).
"""

import json
import math
import os

#: Optional keys and the type each must have.
OPTIONAL = {
    "tokens": float,
    "compute_time": float,
    "allreduce_time": float,
    "wait_time": float,
    "data_time": float,
    "flops": float,
    "started_at": float,
    "world_size": int,
    "global_batch_size": int,
    "device": str,
    "implementation": str,
}


def file_name(rank, epoch):
    """The record's name, as the assignment and dp-bench name it."""
    return f"rank{rank}_results_epoch{epoch}.json"


def _positive(name, value):
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} is {value}: it must be a finite number above 0")
    return value


def _finite_or_none(value):
    """JSON has no NaN: a value that is not finite is written as null (no value)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def write_epoch(workdir, rank, epoch, training_time, tokens_per_sec, validation_loss=None,
                bleu=None, **optional):
    """Writes rank `rank`'s record of epoch `epoch` into `workdir` and returns its path.

    `training_time`: seconds of this rank's training loop in the epoch, the device synchronised
    before each clock read. `tokens_per_sec`: this rank's tokens per second of that time.
    """
    unknown = sorted(set(optional) - set(OPTIONAL))
    if unknown:
        raise TypeError(f"unknown record keys {unknown}; known: {sorted(OPTIONAL)}")
    record = {
        "training_time": _positive("training_time", training_time),
        "tokens_per_sec": _positive("tokens_per_sec", tokens_per_sec),
        "validation_loss": _finite_or_none(validation_loss),
        "bleu": _finite_or_none(bleu),
    }
    for key, value in optional.items():
        if value is None:
            continue
        kind = OPTIONAL[key]
        if kind is float:
            value = float(value)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{key} is {value}: it must be a finite number, 0 or more")
        elif kind is int:
            value = int(value)
            if value < 1:
                raise ValueError(f"{key} is {value}: it must be 1 or more")
        else:
            value = str(value)
        record[key] = value
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, file_name(rank, epoch))
    tmp = os.path.join(workdir, f".{file_name(rank, epoch)}.tmp.{os.getpid()}")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
