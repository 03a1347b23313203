"""The compression search on a real PostgreSQL server: four workers, one killed mid-trial.

`.ci/run` installs PostgreSQL from Debian, starts it and creates the role this test logs in
with; elsewhere set ``FRACTURE_EDGE_TEST_POSTGRES`` to an admin URL (a role that may create
databases), or the test is skipped with that reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

optuna = pytest.importorskip("optuna")
psycopg2 = pytest.importorskip("psycopg2")
pytest.importorskip("torch")

ADMIN_URL = os.environ.get(
    "FRACTURE_EDGE_TEST_POSTGRES",
    "postgresql://fracture_edge:fracture_edge@127.0.0.1:5432/postgres",
)


@pytest.fixture
def database():
    """A fresh database on the server, dropped afterwards; its SQLAlchemy URL."""
    try:
        admin = psycopg2.connect(ADMIN_URL, connect_timeout=3)
    except psycopg2.OperationalError as error:
        pytest.skip(f"no PostgreSQL server at {ADMIN_URL} ({error}); .ci/run starts one")
    admin.autocommit = True
    name = f"fracture_edge_test_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    base = ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg2://", 1)
    with admin.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,)
        )
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
    admin.close()


def _trials(storage: str):
    try:
        study = optuna.load_study(study_name="pg", storage=storage)
    except KeyError:  # no worker has created the study yet
        return []
    return study.get_trials(deepcopy=False)


@pytest.mark.slow
def test_four_workers_and_one_killed_mid_trial(tmp_path, database, tiny_student):
    """Four workers join one study; one is killed (SIGKILL) while it holds a trial. The others
    finish, the study stays usable, and the dead worker's trial is marked FAIL (heartbeats)."""
    cache, student = tiny_student
    command = [
        sys.executable, "-m", "fracture_edge.cli", "tune", "--cache", str(cache),
        "--students", str(student), "--study", "pg", "--storage", database,
        "--out", str(tmp_path / "out"), "--sizes", "64", "--prune-ratios", "0",
        "--modes", "float32", "--latency-runs", "5", "--calibration-images", "8",
        "--heartbeat-s", "2",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = {}
    for _ in range(4):
        worker = subprocess.Popen(
            [*command, "--trials", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        workers[worker.pid] = worker
    deadline, victim = time.monotonic() + 600, None
    while victim is None and time.monotonic() < deadline:
        for trial in _trials(database):
            owner = trial.user_attrs.get("worker", "")
            pid = int(owner.rsplit(":", 1)[1]) if ":" in owner else None
            if trial.state.name == "RUNNING" and pid in workers:
                victim = (trial.number, pid)
                break
        time.sleep(0.3)
    if victim is None:
        for worker in workers.values():
            worker.kill()
        pytest.fail("no worker started a trial within 10 minutes")
    killed_trial, pid = victim
    workers.pop(pid).send_signal(signal.SIGKILL)
    for worker in workers.values():
        _, stderr = worker.communicate(timeout=900)
        assert worker.returncode == 0, stderr.decode()[-2000:]

    time.sleep(7)  # past the grace period (three heartbeats) of the dead worker
    report = subprocess.run(
        [*command, "--trials", "0", "--max-size-mb", "100"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    states = {trial.number: trial.state.name for trial in _trials(database)}
    assert states[killed_trial] == "FAIL", states
    assert sorted(states.values()).count("COMPLETE") == 3, states  # the others finished
    assert "chosen: trial" in report.stdout
    finished = [t for t in _trials(database) if t.state.name == "COMPLETE"]
    assert len({t.user_attrs["worker"] for t in finished}) == 3
