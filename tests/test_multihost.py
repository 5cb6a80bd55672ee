"""Several processes: each reads its part of every batch, checkpoints restore on another topology.

The end-to-end test starts `jax.distributed` processes on 127.0.0.1 (2 fake CPU
devices each, gloo collectives), preempts them with SIGTERM, resumes on one
device, and compares with an uninterrupted run on two processes.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from hang_guard import HANG_SECONDS

from unipinrec.data.pipeline import training_iterator

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "experiments" / "configs" / "synthetic.py")
NUM_STEPS = 16
RUN = [
  f"--config={CONFIG}:runlocal",
  f"--config.num_steps={NUM_STEPS}",
  "--config.log_every=1",
  "--config.checkpoint.every_steps=1000",  # only the preemption's and the final save
  # Meshes sum in different orders; the tolerances below hold for the float noise this
  # learning rate makes of it (runlocal's 1e-3 doubles it, and AUCs of the tiny
  # evaluation then flip a pair).
  "--config.optimizer.learning_rate=5e-4",
]
FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
FIGURES = ("retrieval", "retrieval_unfiltered", "ranking", "ranking_by_retrieval_head")


def test_process_parts_form_the_same_global_batches_on_any_process_count():
  examples = {"x": np.arange(37)[:, None] * np.ones((1, 2), int)}
  whole = training_iterator(examples, 8, seed=3)
  expected = [next(whole)["x"] for _ in range(7)]  # past one epoch (37 examples)
  for count in (2, 4):
    parts = [training_iterator(examples, 8, 3, (index, count)) for index in range(count)]
    for step, want in enumerate(expected[:6]):
      got = np.concatenate([next(part)["x"] for part in parts])
      np.testing.assert_array_equal(got, want, f"{count} parts, batch {step}")
    # Six batches in, the position (the same in every part) continues on another count.
    state = parts[0].get_state()
    assert all(part.get_state() == state for part in parts)
    resumed = training_iterator(examples, 8, 3, (1, 2))
    resumed.set_state(state)
    np.testing.assert_array_equal(next(resumed)["x"], expected[6][4:])


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _train(
  workdir: pathlib.Path, processes: int, tag: str, extra: tuple[str, ...] = ()
) -> list[tuple[subprocess.Popen, pathlib.Path]]:
  """Starts `processes` training processes (2 fake devices each when several), logs in workdir."""
  devices = 2 if processes > 1 else 1
  env = dict(
    os.environ,
    JAX_PLATFORMS="cpu",
    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST_COMPILE}",
  )
  workdir.mkdir(parents=True, exist_ok=True)
  command = [sys.executable, "-m", "experiments.train", f"--workdir={workdir}", *RUN, *extra]
  if processes > 1:
    command += [
      "--distributed",
      f"--coordinator_address=127.0.0.1:{_free_port()}",
      f"--num_processes={processes}",
    ]
  launched = []
  for index in range(processes):
    log = workdir / f"{tag}_{index}.log"
    process_id = [f"--process_id={index}"] if processes > 1 else []
    with open(log, "w") as stderr:
      process = subprocess.Popen(
        command + process_id, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr
      )
    launched.append((process, log))
  return launched


def _wait(launched, deadline: float) -> None:
  for process, log in launched:
    process.wait(timeout=max(deadline - time.time(), 1))
    assert process.returncode == 0, log.read_text()[-3000:]


def _saved_params(workdir: pathlib.Path, step: int) -> dict[str, np.ndarray]:
  """The parameters of checkpoint `step`, as host arrays, whatever mesh wrote them."""
  path = workdir / "checkpoints" / str(step) / "state"
  metadata = ocp.StandardCheckpointer().metadata(path).item_metadata.tree
  target = {"params": jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), metadata["params"])}
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  restored = ocp.PyTreeCheckpointer().restore(
    path, args=ocp.args.PyTreeRestore(target, restore_args=restore_args, partial_restore=True)
  )
  return {
    jax.tree_util.keystr(path): leaf
    for path, leaf in jax.tree_util.tree_leaves_with_path(restored["params"])
  }


def _figures(workdir: pathlib.Path) -> dict[str, float]:
  document = json.loads((workdir / "results.json").read_text())
  flat = {"step": document["step"]}
  for name in FIGURES:
    flat.update({f"{name}/{k}": v for k, v in document[name].items()})
  return flat


def test_two_processes_preempted_then_resumed_on_one_device_match_an_uninterrupted_run(tmp_path):
  preempted, straight = tmp_path / "preempted", tmp_path / "straight"
  deadline = time.time() + HANG_SECONDS
  launched = []
  try:
    # The reference: 2 processes on a (1, 2, 2) mesh, uninterrupted, evaluated across them.
    reference = _train(straight, 2, "straight", ("--config.mesh.fsdp=2", "--config.mesh.model=2"))
    # Preempted: 2 processes on a (1, 4, 1) mesh; one of them gets SIGTERM once training runs.
    first = _train(preempted, 2, "first")
    launched += reference + first
    while "step 2/" not in first[0][1].read_text():
      assert all(p.poll() is None for p, _ in first), first[0][1].read_text()[-3000:]
      assert time.time() < deadline, "no training step logged"
      time.sleep(0.2)
    first[1][0].send_signal(signal.SIGTERM)
    _wait(first, deadline)  # both exit 0, having saved at the same step
    steps = sorted(int(p.name) for p in (preempted / "checkpoints").iterdir() if p.name.isdigit())
    assert 2 <= steps[-1] < NUM_STEPS and not (preempted / "results.json").exists()
    for _, log in first:
      assert f"preempted: saved step {steps[-1]}" in log.read_text()

    # The restart: one process, one device.
    resumed = _train(preempted, 1, "resumed")
    launched += resumed
    _wait(resumed + reference, deadline)
  finally:
    for process, _ in launched:
      if process.poll() is None:
        process.kill()
        process.wait()

  assert f"resumed from step {steps[-1]}" in resumed[0][1].read_text()
  got, want = _saved_params(preempted, NUM_STEPS), _saved_params(straight, NUM_STEPS)
  assert sorted(got) == sorted(want)
  for key, value in want.items():
    # atol: Adam turns the rounding noise of exactly-zero gradients (the key bias) into
    # updates of about 1e-6.
    np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-5, err_msg=key)
  # Evaluated on one process and across two: the same figures.
  assert _figures(preempted) == pytest.approx(_figures(straight), rel=1e-5, abs=1e-6)
