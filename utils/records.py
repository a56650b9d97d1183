"""Reading what a stage wrote: its record (`config.json`: the config it ran with and its
results; training/checkpoints.py writes it) and any file of its checkpoint, each failure one
CheckpointError naming the file and the script to rerun.
"""
import json
from pathlib import Path

from utils.errors import CheckpointError
from utils.files import stage_of


def read_record(folder, made_by):
    """(the bytes, the content) of the record `folder`/config.json that `made_by` wrote: one
    CheckpointError saying what to rerun if the folder is another stage's, or the record is
    missing, damaged or not a stage's (no {"config": {...}})."""
    path = Path(folder) / "config.json"
    raw = read_artifact(path, lambda p: p.read_bytes(), made_by)
    content = read_artifact(path, lambda p: json.loads(raw), made_by)
    if not (isinstance(content, dict) and isinstance(content.get("config"), dict)):
        raise CheckpointError(f"{path} is not a record of {made_by} (no \"config\"): rerun "
                              f"{made_by}")
    if stage_of(folder) not in (made_by, None):
        raise CheckpointError(f"{folder}/ holds a checkpoint of {stage_of(folder)}, not of "
                              f"{made_by}: rerun {made_by} or pass its folder")
    return raw, content


def record_facts(record):
    """What a stage's record says it ran on: {network, seed, quick, data_source, data_sha256};
    older deploy records kept the network in "pruned" and the data in "data", and older records
    of every stage have no "quick" (none was a --quick run the readers would now take)."""
    config, pruned, data = record["config"], record.get("pruned") or {}, record.get("data") or {}
    return dict(network=config.get("network", pruned.get("network")), seed=config.get("seed"),
                quick=config.get("quick", False),
                data_source=config.get("data_source", data.get("source")),
                data_sha256=config.get("data_sha256", data.get("sha256")))


def read_artifact(path, reader, made_by):
    """`reader(path)`; any failure becomes one CheckpointError naming the file and what to rerun.

    Why catch everything: a damaged file fails deep inside Keras, zipfile, h5py or NumPy with
    exceptions of many types (BadZipFile, OSError, KeyError, ...), none of which says what to do.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path} is missing: rerun {made_by}")
    try:
        return reader(path)
    except Exception as e:  # noqa: BLE001
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"{path} is damaged or unreadable ({reason}): rerun "
                              f"{made_by}") from None
