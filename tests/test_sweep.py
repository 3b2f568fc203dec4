import json
import os
import signal
import subprocess
import sys
import time
import tomllib

import numpy as np
import pytest
from scipy.io import netcdf_file

from modecollapse._cli import main
from modecollapse._experiments._config import DEFAULT_TOML
from modecollapse._experiments._sweep import plan_sweep, run_sweep, wilson

BASE = (
    DEFAULT_TOML.replace("dim = 64", "dim = 16")
    .replace("t_end = 40.0", "t_end = 20.0")
    .replace("save_points = 41", "save_points = 11")
)


def _sweep_toml(parameters: str, seeds: int, chunk: int, base: str = BASE) -> str:
    return base + f"\n[sweep]\nparameters = {{ {parameters} }}\nseeds = {seeds}\nchunk = {chunk}\n"


SMALL = _sweep_toml('"variational.init.norm" = [0.5, 4.0], "annealing.beta0" = [0.2, 1.0]', 6, 5)


def _write(tmp_path, text, name="sweep.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _sweep_cmd(config, out, *extra):
    return [
        sys.executable,
        "-m",
        "modecollapse",
        "sweep",
        "--config",
        config,
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def _nc(path):
    with netcdf_file(path, "r", mmap=False) as f:
        return {k: v[:].copy() for k, v in f.variables.items()}


def test_resume_equals_uninterrupted(tmp_path):
    plan = plan_sweep(tomllib.loads(SMALL), "theory")
    full = run_sweep(plan, str(tmp_path / "a"))
    partial = run_sweep(plan, str(tmp_path / "b"), stop_after_chunks=2)
    assert int(partial["completed"].sum()) == 10
    resumed = run_sweep(plan, str(tmp_path / "b"), resume=True)
    for field in ("label", "masses", "kl", "emc", "mode_score", "status", "num_steps"):
        np.testing.assert_array_equal(resumed[field], full[field])


def test_resume_after_kill_9(tmp_path):
    """A real SIGKILL mid-sweep, then --resume: the results equal an uninterrupted run."""
    text = _sweep_toml('"variational.init.norm" = [0.5, 2.0, 4.0]', 16, 4)
    config = _write(tmp_path, text)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _sweep_cmd(config, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not (killed / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with np.load(killed / "checkpoint.npz") as z:
        assert 0 < int(z["completed"].sum()) < 48, "the kill must land mid-sweep"
    subprocess.run(_sweep_cmd(config, killed, "--resume"), env=env, check=True, capture_output=True)
    clean = tmp_path / "clean"
    subprocess.run(_sweep_cmd(config, clean), env=env, check=True, capture_output=True)
    a, b = _nc(killed / "results.nc"), _nc(clean / "results.nc")
    for field in ("label", "masses", "kl", "emc", "status"):
        np.testing.assert_array_equal(a[field], b[field])


@pytest.fixture(scope="module")
def single_process_small(tmp_path_factory):
    """SMALL swept by one CLI process on one CPU device: the reference of the next two tests."""
    tmp = tmp_path_factory.mktemp("single")
    out = tmp / "out"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    subprocess.run(_sweep_cmd(_write(tmp, SMALL), out), env=env, check=True, capture_output=True)
    assert json.loads((out / "summary.json").read_text())["devices"] == 1
    return _nc(out / "results.nc")


def test_sharding_over_four_devices_matches_one(tmp_path, single_process_small):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
    }
    out = tmp_path / "dev4"
    cmd = _sweep_cmd(_write(tmp_path, SMALL), out)
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    assert json.loads((out / "summary.json").read_text())["devices"] == 4
    one, four = single_process_small, _nc(out / "results.nc")
    # Discrete outcomes are identical. Continuous metrics agree to rounding: XLA's CPU kernels
    # round differently at a quarter of the batch per device (docs/theory.md, §10).
    for field in ("label", "status", "num_steps", "covered", "n_covered"):
        np.testing.assert_array_equal(one[field], four[field])
    for field in ("masses", "kl", "emc", "mode_score"):
        np.testing.assert_allclose(one[field], four[field], rtol=1e-12, atol=1e-14)


def test_failed_trajectories_are_recorded_not_fatal(tmp_path):
    text = _sweep_toml(
        '"t_end" = [1.0, 200.0]',
        3,
        6,
        base=BASE.replace("atol = 1e-9", "atol = 1e-9\nmax_steps = 60"),
    )
    out = tmp_path / "out"
    main(["sweep", "--config", _write(tmp_path, text), "--out", str(out), "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 3 and summary["labels"]["failed"] == 3
    assert summary["p_collapse"][1] is None  # no successful seed in that cell
    nc = _nc(out / "results.nc")
    assert list(nc["status"][0]) == [0, 0, 0] and list(nc["status"][1]) == [1, 1, 1]


@pytest.mark.parametrize(
    "parameters,key",
    [
        ('"variational.init.colour" = [1.0]', "variational.init.colour"),
        ('"variational.components" = [2, 3]', "sweep.parameters.variational.components"),
        ('"target.scale" = [1.0, -1.0]', "target.scale"),
        ('"dim" = []', "sweep.parameters.dim"),
    ],
)
def test_bad_sweep_config(tmp_path, capsys, parameters, key):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "sweep",
                "--config",
                _write(tmp_path, _sweep_toml(parameters, 2, 2)),
                "--out",
                str(out),
            ]
        )
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"`{key}`" in err, err
    assert not out.exists()


def test_existing_checkpoint_needs_resume(tmp_path, capsys):
    config = _write(tmp_path, SMALL)
    out = tmp_path / "out"
    main(["sweep", "--config", config, "--out", str(out), "--no-progress"])
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--config", config, "--out", str(out), "--no-progress"])
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err


def test_wilson_interval_known_values():
    lo, hi = wilson(np.array([0, 5, 10]), np.array([10, 10, 10]))
    np.testing.assert_allclose(lo, [0.0, 0.2366, 0.7225], atol=1e-4)
    np.testing.assert_allclose(hi, [0.2775, 0.7634, 1.0], atol=1e-4)


def test_two_processes_with_jax_distributed(tmp_path, single_process_small):
    """Two local CPU processes (jax.distributed), one output folder: equal to one process."""
    import socket

    config = _write(tmp_path, SMALL)
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    multi = tmp_path / "multi"
    cmd = _sweep_cmd(config, multi, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2")
    procs = [
        subprocess.Popen(
            cmd + ["--process-id", str(i)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    a, b = _nc(multi / "results.nc"), single_process_small
    for field in ("label", "masses", "kl", "emc", "status", "num_steps"):
        np.testing.assert_array_equal(a[field], b[field])
    assert json.loads((multi / "summary.json").read_text())["processes"] == 2


# Last in the file: its in-process CLI run then loads from the persistent compilation cache what
# the subprocess runs above compiled for the same SMALL sweep.
def test_sweep_end_to_end(tmp_path):
    out = tmp_path / "out"
    main(["sweep", "--config", _write(tmp_path, SMALL), "--out", str(out), "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {
        "parameters",
        "p_collapse",
        "p_collapse_ci",
        "labels",
        "failed",
        "trajectories_per_second",
    }
    assert summary["parameters"] == {
        "variational.init.norm": [0.5, 4.0],
        "annealing.beta0": [0.2, 1.0],
    }
    assert np.shape(summary["p_collapse"]) == (2, 2) and np.shape(summary["p_collapse_ci"]) == (
        2,
        2,
        2,
    )
    assert sum(summary["labels"].values()) == 24 and summary["failed"] == 0
    nc = _nc(out / "results.nc")
    assert nc["label"].shape == (2, 2, 6) and nc["masses"].shape == (2, 2, 6, 2)
    np.testing.assert_allclose(nc["variational_init_norm"], [0.5, 4.0])
    # summary and results agree
    p = (nc["label"] != 0).mean(-1)
    np.testing.assert_allclose(p, summary["p_collapse"])
    np.testing.assert_allclose(nc["masses"].sum(-1), 1.0, atol=1e-9)
    assert (out / "phase.png").read_bytes()[:4] == b"\x89PNG"
