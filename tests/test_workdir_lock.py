"""The work directory's lock: one holder, stale locks of the dead, a second training refused."""

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest
from hang_guard import HANG_SECONDS

from unipinrec.workdir_lock import LOCK_FILE, WorkdirLock, WorkdirLocked

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "experiments" / "configs" / "synthetic.py")
HOST = socket.gethostname()


def _holder(workdir: pathlib.Path) -> dict:
  return json.loads((workdir / LOCK_FILE).read_text())


def _dead_pid() -> int:
  """The PID of a process that has finished (and been reaped)."""
  process = subprocess.Popen([sys.executable, "-c", "pass"])
  process.wait()
  return process.pid


def _refusal(workdir: pathlib.Path, holder: dict) -> str:
  return (
    f"work directory {workdir} is in use by a training on host {holder['host']}, "
    f"PID {holder['pid']}, since {holder['since']}; "
    f"stop it or remove {workdir / LOCK_FILE} if it is dead"
  )


def test_the_lock_file_names_its_holder_and_goes_on_release(tmp_path):
  workdir = tmp_path / "new" / "run"  # created by the lock
  with WorkdirLock(str(workdir)):
    holder = _holder(workdir)
    assert (holder["host"], holder["pid"]) == (HOST, os.getpid())
    assert sorted(os.listdir(workdir)) == [LOCK_FILE]  # its temporary file is gone
  assert not os.listdir(workdir)
  with WorkdirLock(str(workdir)):  # free again
    assert _holder(workdir)["pid"] == os.getpid()
  with WorkdirLock(str(workdir), primary=False):  # the other processes of a multi-host run
    assert not os.listdir(workdir)


def test_a_second_acquirer_is_refused_with_the_holder_s_host_and_pid(tmp_path):
  with WorkdirLock(str(tmp_path)):
    holder = _holder(tmp_path)
    second = WorkdirLock(str(tmp_path))
    with pytest.raises(WorkdirLocked) as refused:
      second.acquire()
    assert str(refused.value) == _refusal(tmp_path, holder)
    second.release()  # not its lock: stays
    assert _holder(tmp_path) == holder


def test_a_stale_lock_of_a_dead_process_of_this_host_is_taken_over(tmp_path, caplog):
  stale = {"host": HOST, "pid": _dead_pid(), "since": "2020-01-01T00:00:00+00:00"}
  (tmp_path / LOCK_FILE).write_text(json.dumps(stale))
  with WorkdirLock(str(tmp_path)):
    assert _holder(tmp_path)["pid"] == os.getpid()
  assert not (tmp_path / LOCK_FILE).exists()
  taken = [r.getMessage() for r in caplog.records if "taking over" in r.getMessage()]
  assert taken == [
    f"taking over {tmp_path / LOCK_FILE} from a training that is gone: "
    f"host {HOST}, PID {stale['pid']}, since {stale['since']}"
  ]


def test_a_lock_of_another_host_is_refused_not_taken_over(tmp_path):
  other = {"host": f"not-{HOST}", "pid": _dead_pid(), "since": "2020-01-01T00:00:00+00:00"}
  (tmp_path / LOCK_FILE).write_text(json.dumps(other))
  with pytest.raises(WorkdirLocked) as refused:
    WorkdirLock(str(tmp_path)).acquire()
  assert str(refused.value) == _refusal(tmp_path, other)
  assert _holder(tmp_path) == other
  # A lock file that says nothing readable is refused alike, not taken over.
  (tmp_path / LOCK_FILE).write_text("{truncated")
  with pytest.raises(WorkdirLocked, match=r"on host \?, PID \?, since \?"):
    WorkdirLock(str(tmp_path)).acquire()


def _train(workdir: pathlib.Path, **popen) -> subprocess.Popen:
  """A runlocal training long enough to be running when a second one starts."""
  return subprocess.Popen(
    [
      sys.executable,
      "-m",
      "experiments.train",
      f"--workdir={workdir}",
      f"--config={CONFIG}:runlocal",
      "--config.num_steps=400",
      "--config.checkpoint.every_steps=100",
    ],
    cwd=REPO,
    env={**os.environ, "JAX_PLATFORMS": "cpu"},
    text=True,
    **popen,
  )


@pytest.mark.slow
def test_a_second_training_in_a_work_directory_in_use_exits_2_and_the_first_finishes(tmp_path):
  workdir = tmp_path / "run"
  with open(tmp_path / "first.log", "w") as log:
    first = _train(workdir, stdout=subprocess.DEVNULL, stderr=log)
  try:
    deadline = time.time() + HANG_SECONDS
    while not (workdir / LOCK_FILE).exists():
      assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
      assert time.time() < deadline, "no lock file before the hang guard"
      time.sleep(0.05)
    holder = _holder(workdir)
    second = _train(workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, stderr = second.communicate(timeout=HANG_SECONDS)
    first.wait(timeout=HANG_SECONDS)
  finally:
    if first.poll() is None:
      first.kill()
      first.wait()
  assert second.returncode == 2
  assert (holder["host"], holder["pid"]) == (HOST, first.pid)
  assert stderr == f"error: {_refusal(workdir, holder)}\n"
  assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]
  assert json.loads((workdir / "results.json").read_text())["step"] == 400
  assert not (workdir / LOCK_FILE).exists()
