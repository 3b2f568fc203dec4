import json
import os
import signal
import subprocess
import sys
import time
import tomllib

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from scipy.io import netcdf_file

import modecollapse as mc
from modecollapse._cli import main
from modecollapse._experiments._config import DEFAULT_TOML, ConfigError
from modecollapse._experiments._sweep import (
    SweepTimeout,
    plan_sweep,
    redraw_means,
    run_sweep,
    write_netcdf,
)
from modecollapse.metrics import outcome_fields

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


@pytest.mark.slow  # multi-process robustness (subprocesses); the suite budget
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
    # a device count in XLA_FLAGS is the user's choice: the sweep keeps it (one device here)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }
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


TINY = _sweep_toml('"variational.init.norm" = [0.5]', 2, 1)  # two chunks of one trajectory


@pytest.fixture(scope="module")
def first_of_two_processes(tmp_path_factory):
    """Process 0 of a (simulated) 2-process sweep whose process 1 never runs: it does its chunk,
    writes checkpoint-0-of-2.npz, then waits for process 1 until `merge_timeout`."""
    out = tmp_path_factory.mktemp("two") / "out"
    plan = plan_sweep(tomllib.loads(TINY), "theory")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(jax, "process_count", lambda: 2)
        mp.setattr(jax, "process_index", lambda: 0)
        start = time.perf_counter()
        with pytest.raises(SweepTimeout) as e:
            run_sweep(plan, str(out), merge_timeout=0.5)
        waited = time.perf_counter() - start
    return plan, out, str(e.value), waited


@pytest.mark.slow  # multi-process robustness (subprocesses); the suite budget
def test_merge_timeout_is_configurable_and_says_who_is_missing(first_of_two_processes):
    _, out, message, waited = first_of_two_processes
    assert sorted(os.listdir(out)) == ["checkpoint-0-of-2.npz"]
    assert "`merge_timeout`" in message and "process 1 of 2" in message, message
    assert "0 of 1 trajectories" in message and "\n" not in message, message
    assert waited < 60, waited  # compile + one trajectory + 0.5 s, not the 24 h default


@pytest.mark.slow  # multi-process robustness (subprocesses); the suite budget
def test_resume_with_another_process_count_is_refused(first_of_two_processes):
    """Fault 4: resuming a 2-process checkpoint with one process used to start from scratch."""
    plan, out, _, _ = first_of_two_processes
    with pytest.raises(ConfigError) as e:
        run_sweep(plan, str(out), resume=True)  # this test runs as 1 process
    message = str(e.value)
    assert message.startswith("`--resume`:") and "checkpoint-0-of-2.npz" in message, message
    assert "this run has 1" in message and "--num-processes 2" in message, message
    with pytest.raises(ConfigError, match="--resume"):
        run_sweep(plan, str(out))  # nor is a fresh run in that folder
    assert sorted(os.listdir(out)) == ["checkpoint-0-of-2.npz"]  # nothing was written


def test_list_valued_parameter_is_a_labelled_coordinate(tmp_path):
    """Fault 9: `target.weights` values are a coordinate xarray shows and selects by, not 0, 1."""
    import xarray as xr

    weights = [[0.5, 0.5], [0.7, 0.3]]
    text = _sweep_toml(
        f'"target.weights" = {json.dumps(weights)}, "annealing.beta0" = [0.2, 1.0]', 2, 8
    )
    plan = plan_sweep(tomllib.loads(text), "theory")
    results = run_sweep(plan, str(tmp_path))
    assert set(results) == {f.name for f in outcome_fields()} | {
        "num_steps",
        "completed",
        "solve_seconds",
    }
    write_netcdf(str(tmp_path / "results.nc"), plan, results)
    with xr.open_dataset(tmp_path / "results.nc") as ds:
        assert list(ds["target_weights"].values) == [json.dumps(w) for w in weights]
        assert "target_weights_values" in ds.coords and "target_weights" in ds.indexes
        np.testing.assert_array_equal(ds["target_weights_values"].values, weights)
        np.testing.assert_array_equal(ds["annealing_beta0"].values, [0.2, 1.0])
        label = results["label"].reshape(2, 2, 2)
        np.testing.assert_array_equal(ds["label"].sel(target_weights="[0.7, 0.3]").values, label[1])
        row = ds["target_weights_values"].sel(target_weights="[0.7, 0.3]").values
        np.testing.assert_array_equal(row, weights[1])
        assert set(ds.data_vars) == {f.name for f in outcome_fields()} | {"num_steps"}


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_redraw_means_keeps_the_family_dtype(dtype):
    """The full route's random initial means keep the family's dtype (float32 under x64 too)."""
    d, norm = 4096, 3.0
    family = mc.IsotropicMixture(jnp.zeros((2, d)), jnp.zeros(2), jnp.zeros(()))
    family = jax.tree.map(lambda x: x.astype(dtype), family)
    q = redraw_means(family, jr.key(0), norm)
    assert {x.dtype for x in jax.tree.leaves(q)} == {jnp.dtype(dtype)}
    assert q.means.shape == (2, d)
    np.testing.assert_array_equal(q.logits, family.logits)
    # |m_k|² = norm² χ²_d / d: mean norm² with sd norm² √(2/d) ≈ 0.02·norm²
    np.testing.assert_allclose(jnp.sum(q.means**2, axis=1), norm**2, rtol=0.1)


@pytest.mark.slow  # multi-process robustness (subprocesses); the suite budget
def test_two_processes_with_jax_distributed(tmp_path, single_process_small):
    """Two local CPU processes (jax.distributed), one output folder: equal to one process."""
    import socket

    config = _write(tmp_path, SMALL)
    # one CPU device per process, as in the one-process reference (bitwise equality)
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
    }
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


def test_one_cpu_device_per_core_sets_the_count_once(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    mc.one_cpu_device_per_core(3)
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
    mc.one_cpu_device_per_core(5)  # a count already set (by the user or before) is kept
    assert os.environ["XLA_FLAGS"] == "--xla_force_host_platform_device_count=3"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false")
    mc.one_cpu_device_per_core(2)  # other flags stay
    assert os.environ["XLA_FLAGS"].split() == [
        "--xla_cpu_enable_fast_math=false",
        "--xla_force_host_platform_device_count=2",
    ]
    monkeypatch.delenv("XLA_FLAGS")
    mc.one_cpu_device_per_core(1)  # one core: nothing to split
    assert "XLA_FLAGS" not in os.environ


def test_prefer_wide_cpu_vectors_only_with_avx512_and_never_over_the_user(monkeypatch):
    from modecollapse._experiments import _sweep

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setattr(_sweep, "_has_avx512", lambda: False)
    mc.prefer_wide_cpu_vectors()
    assert "XLA_FLAGS" not in os.environ
    monkeypatch.setattr(_sweep, "_has_avx512", lambda: True)
    mc.prefer_wide_cpu_vectors()
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=512"
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_prefer_vector_width=256")
    mc.prefer_wide_cpu_vectors()  # the user's width is kept
    assert os.environ["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=256"


def test_sweep_chunk_is_the_computation_of_run_sweep(tmp_path):
    """The public chunk pieces (for benchmarks) compute exactly what `run_sweep` records."""
    plan = plan_sweep(tomllib.loads(_sweep_toml('"annealing.beta0" = [0.2]', 4, 4)), "theory")
    results = run_sweep(plan, str(tmp_path / "out"))
    outcome, steps = mc.sweep_chunk(plan)(
        mc.sweep_inputs(plan, np.arange(4)), mc.sweep_solver_options(plan)
    )
    np.testing.assert_array_equal(np.asarray(steps), results["num_steps"])
    np.testing.assert_array_equal(np.asarray(outcome.label), results["label"])
    np.testing.assert_allclose(np.asarray(outcome.kl), results["kl"], rtol=1e-12)
