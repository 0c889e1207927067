"""One single-threaded CPU device per core for training: which flags, and that they reach JAX (and only JAX)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pg2edge.cpu_devices import DEVICE_COUNT_FLAG, THREADS_FLAG, cpu_device_flags


def test_one_device_per_core_that_divides_the_batch():
    assert cpu_device_flags("", 2, 32) == f"{DEVICE_COUNT_FLAG}=2 {THREADS_FLAG}=false"
    assert cpu_device_flags("--xla_cpu_enable_fast_math=false", 4, 48).split() == [
        "--xla_cpu_enable_fast_math=false", f"{DEVICE_COUNT_FLAG}=4", f"{THREADS_FLAG}=false"]
    assert cpu_device_flags("", 8, 24) == f"{DEVICE_COUNT_FLAG}=3 {THREADS_FLAG}=false"  # 8 rows each at least


def test_leaves_the_devices_alone_when_there_is_nothing_to_split_or_the_user_chose():
    assert cpu_device_flags("", 1, 32) is None
    assert cpu_device_flags("", 2, 8) is None  # 4 rows per device: too thin
    assert cpu_device_flags("", 2, 17) is None
    assert cpu_device_flags(f"{DEVICE_COUNT_FLAG}=4", 2, 32) is None
    assert cpu_device_flags(f"{THREADS_FLAG}=true", 2, 32) is None


def test_split_reaches_jax_and_restores_the_environment():
    """In a fresh process: JAX starts with the devices the flags ask for, and XLA_FLAGS reads as before after."""
    code = ("import json, os, jax; from pg2edge.cpu_devices import split_cpu_for_training;"
            "n = split_cpu_for_training(32);"
            "print(json.dumps([n, len(jax.devices('cpu')), os.environ.get('XLA_FLAGS')]))")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    n, devices, flags = json.loads(out.strip().splitlines()[-1])
    expected = cpu_device_flags("", len(os.sched_getaffinity(0)), 32)
    assert n == devices == (1 if expected is None else int(expected.split()[0].split("=")[1]))
    assert flags is None
