"""Two "machines" (separate `reasonlab ablate` processes from separate folders) sweep one study on a
real PostgreSQL server started for the test; one is killed mid-trial and run again. Skipped, with
the reason, only where no server can be started (no PostgreSQL installed: apt-get install postgresql)."""

import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from reasonlab.experiments.sweep import make_storage, trial_key

pytestmark = pytest.mark.slow  # a dead worker's trial is rerun once its heartbeat is 60 s old: about 90 s

SUITE = """
name: pg
base: cpu-tiny
configs:
  a_base: {}
  b_small: {model.d_model: "/2"}
"""
PASSWORD = "s3cret-pw"


def _bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL cluster on localhost (as the postgres user where the tests run as root)."""
    pytest.importorskip("psycopg", reason="the PostgreSQL driver is missing: pip install -e '.[postgres]'")
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL server can be started here: initdb/pg_ctl not found (apt-get install postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="reasonlab-pg-"))  # not under pytest's root-only folder
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("no PostgreSQL server can be started here: running as root without a postgres user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    data, port = root / "data", _free_port()
    (root / "pw").write_text(PASSWORD)
    if os.geteuid() == 0:
        shutil.chown(root / "pw", "postgres")
    steps = [[*as_user, initdb, "-D", str(data), "-U", "rl", f"--pwfile={root / 'pw'}", "--auth=scram-sha-256",
              "-E", "UTF8"],
             [*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "start", "-o",
              f"-p {port} -k {root} -c listen_addresses=localhost"]]
    for command in steps:
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"no PostgreSQL server can be started here: {' '.join(command[:3])}... said "
                        f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    yield f"postgresql://rl:{PASSWORD}@localhost:{port}/postgres"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def _ablate(suite: Path, out: Path, url: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "reasonlab", "ablate", "--suite", str(suite), "--steps", "60", "--seeds", "2",
               "--storage", url, "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_two_machines_share_a_sweep_and_a_killed_one_loses_nothing(tmp_path, postgres_url):
    suite = tmp_path / "pg.yaml"
    suite.write_text(SUITE)
    a_out, b_out = tmp_path / "machine_a", tmp_path / "machine_b"
    tic = time.monotonic()
    a, b = _ablate(suite, a_out, postgres_url), _ablate(suite, b_out, postgres_url)  # at once, on a fresh database
    while not list((b_out / "trials").glob("*/metrics.jsonl")):  # B is mid-trial
        assert b.poll() is None and time.monotonic() - tic < 120, b.communicate()
        time.sleep(0.2)
    b.send_signal(signal.SIGKILL)
    b.wait()
    rerun = _ablate(suite, b_out, postgres_url)
    outputs = {name: proc.communicate(timeout=400) for name, proc in (("a", a), ("b", rerun))}
    for name, proc in (("a", a), ("b", rerun)):
        assert proc.returncode == 0, outputs[name][1][-3000:]
        assert PASSWORD not in outputs[name][0] + outputs[name][1]

    study = optuna.load_study(study_name=None, storage=make_storage(postgres_url))
    completed = [trial_key(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    assert sorted(completed) == [(name, seed) for name in ("a_base", "b_small") for seed in (0, 1)]  # each once
    reports = [json.loads((out / "ablation_results.json").read_text()) for out in (a_out, b_out)]
    assert reports[0]["configs"] == reports[1]["configs"] and reports[0]["ranking"] == reports[1]["ranking"]
    assert all(entry["status"] == "complete" for entry in reports[0]["configs"].values())
    assert PASSWORD not in (a_out / "ablation_results.json").read_text()
