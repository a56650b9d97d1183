"""tf.distribute: MirroredStrategy on two logical CPUs, MultiWorkerMirroredStrategy with two worker
processes on localhost. Each runs in fresh interpreters (the devices and the cluster must be set
before TensorFlow starts)."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from _models import assert_pruned_weights_are_zero, users_data
from pruning import get_masks

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                reason="tf.distribute needs the TensorFlow backend")


def environment(**extra):
    """The workers' environment: TensorFlow's backend, and this folder on the path (_models)."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
            **extra}


def test_mirrored_strategy_on_two_cpu_devices_keeps_masks_identical_and_zeros_zero():
    result = subprocess.run([sys.executable, str(HERE / "workers" / "mirrored.py")], cwd=HERE,
                            capture_output=True, text=True, timeout=300, env=environment())
    assert result.returncode == 0, result.stderr[-2000:]
    assert "replicas 2, masks identical, zeros hold" in result.stdout


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_on_localhost_share_the_masks_and_the_chiefs_checkpoint_keeps_them(tmp_path):
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    processes = [subprocess.Popen(
        [sys.executable, str(HERE / "workers" / "multiworker.py"), str(tmp_path)], cwd=HERE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment(
            TF_CONFIG=json.dumps({"cluster": {"worker": workers},
                                  "task": {"type": "worker", "index": i}})))
        for i in range(2)]
    for i, p in enumerate(processes):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, f"worker {i}: {err[-2000:]}"
    chief, other = (dict(np.load(tmp_path / f"worker{i}.npz")) for i in range(2))
    assert sorted(chief) == sorted(other) and any(k.startswith("mask:") for k in chief)
    for key in chief:  # identical masks and weights on both workers
        np.testing.assert_array_equal(chief[key], other[key], err_msg=key)
    masks = {k[5:]: v for k, v in chief.items() if k.startswith("mask:")}
    for key, mask in masks.items():
        assert abs(1 - mask.mean() - 0.6) < 0.01, key
        assert not chief[f"weight:{key}"][~mask].any(), key
    loaded = keras.models.load_model(tmp_path / "chief.keras")
    for key, mask in get_masks(loaded).items():
        np.testing.assert_array_equal(mask, masks[key])
    loaded.fit(*users_data(), batch_size=16, verbose=0)
    assert_pruned_weights_are_zero(loaded, masks)
