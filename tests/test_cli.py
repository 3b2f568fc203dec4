import json
import os
import re
import subprocess
import sys
import tomllib

import pytest

import modecollapse as mc
from modecollapse._cli import main
from modecollapse._experiments._config import DEFAULT_TOML

SMALL = (
    DEFAULT_TOML.replace("dim = 64", "dim = 3")
    .replace("t_end = 40.0", "t_end = 4.0")
    .replace("save_points = 41", "save_points = 5")
)


def _write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new)


BAD_CASES = {
    "unknown key": (("seed = 0", "seed = 0\ncolour = 3"), "colour"),
    "unknown nested key": (("scale = 1.0\nmeans", "scale = 1.0\nshape = 2\nmeans"), "target.shape"),
    "missing key": (("t_end = 4.0\n", ""), "t_end"),
    "missing table key": (('estimator = "exact"\n', ""), "simulation.estimator"),
    "wrong type": (("dim = 3", 'dim = "three"'), "dim"),
    "bool for number": (("t_end = 4.0", "t_end = true"), "t_end"),
    "weights not positive": (("weights = [0.6, 0.4]", "weights = [1.2, -0.2]"), "target.weights"),
    "weights not summing": (("weights = [0.6, 0.4]", "weights = [0.6, 0.3]"), "target.weights"),
    "non-positive scale": (("scale = 1.0\nmeans", "scale = 0.0\nmeans"), "target.scale"),
    "dim < 1": (("dim = 3", "dim = 0"), "dim"),
    "length mismatch": (
        ("weights = [0.5, 0.5]", "weights = [0.2, 0.3, 0.5]"),
        "variational.weights",
    ),
    "non-PSD gram": (
        (
            'means = { kind = "antipodal", norm = 3.0 }',
            'means = { kind = "gram", T = [[1.0, 2.0], [2.0, 1.0]] }',
        ),
        "target.means.T",
    ),
    "init needs more rank": (
        (
            'init = { kind = "random", norm = 1.0 }',
            'init = { kind = "overlaps", R = [[1.0, -1.0], [0.0, 0.0]], '
            "Q = [[2.0, 0.0], [0.0, 1.0]] }",
            "dim = 3",
            "dim = 2",
        ),
        "dim",
    ),
    "target needs more rank": (
        (
            'means = { kind = "antipodal", norm = 3.0 }',
            'means = { kind = "gram", T = [[1.0, 0.0], [0.0, 1.0]] }',
            "dim = 3",
            "dim = 1",
        ),
        "dim",
    ),
    "non-PSD joint gram": (
        (
            'init = { kind = "random", norm = 1.0 }',
            'init = { kind = "overlaps", R = [[1.0, 1.0], [0.0, 0.0]], '
            "Q = [[1.0, 0.0], [0.0, 1.0]] }",
        ),
        "variational.init",
    ),
    "unknown kind": (('kind = "linear"', 'kind = "cosine"'), "annealing.kind"),
    "unknown estimator": (('estimator = "exact"', 'estimator = "magic"'), "simulation.estimator"),
    "non-finite number": (("rtol = 1e-7", "rtol = nan"), "simulation.rtol"),
    "infinite number": (("t_end = 4.0", "t_end = inf"), "t_end"),
    "beta0 out of range": (("beta0 = 0.2", "beta0 = 1.5"), "annealing.beta0"),
    "kind-specific key": (("duration = 20.0", "rate = 2.0"), "annealing.duration"),
    "unknown scale coupling": (
        ("duration = 20.0", 'duration = 20.0\nscale = "frozen"'),
        "annealing.scale",
    ),
    "unknown objective": (
        ("[simulation]", '[objective]\nkind = "chi2"\n\n[simulation]'),
        "objective.kind",
    ),
    "renyi without alpha": (
        ("[simulation]", '[objective]\nkind = "renyi"\n\n[simulation]'),
        "objective.alpha",
    ),
    "renyi alpha not positive": (
        ("[simulation]", '[objective]\nkind = "renyi"\nalpha = 0.0\n\n[simulation]'),
        "objective.alpha",
    ),
    "forward-kl with annealing": (
        ("[simulation]", '[objective]\nkind = "forward-kl"\n\n[simulation]'),
        "objective.kind",
    ),
    "alpha for reverse-kl": (
        ("[simulation]", '[objective]\nkind = "reverse-kl"\nalpha = 0.5\n\n[simulation]'),
        "objective.alpha",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_experiment_file(tmp_path, capsys, case):
    edits, key = BAD_CASES[case]
    text = SMALL
    for old, new in zip(edits[::2], edits[1::2]):
        text = _replace(text, old, new)
    config = _write(tmp_path, text)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", config, "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"`{key}`" in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    "content", [b"dim = = 3\n", b"\xff\xfe\x00garbage", None], ids=["not-toml", "binary", "missing"]
)
def test_unreadable_or_non_toml_file(tmp_path, capsys, content):
    path = tmp_path / "exp.toml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", str(path), "--out", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`--config`" in err
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("not a folder")
    for argv, key in [
        (["compare", "--dims", "8,x", "--out", str(tmp_path / "o")], "--dims"),
        (["compare", "--dims", "0,8", "--out", str(tmp_path / "o")], "--dims"),
        (["run"], "--out"),
        (["frobnicate"], "frobnicate"),
        (["run", "--out", str(tmp_path / "file.txt")], "--out"),
    ]:
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and key in err, err
    assert not (tmp_path / "o").exists()


def test_every_key_of_the_default_is_required(tmp_path):
    """Removing any non-optional key of the default experiment is a `missing key` error.

    The tuning keys `rtol` and `atol` have documented defaults (issue 11, fault 8)."""
    optional = {"particles", "step", "rtol", "atol"}
    data = tomllib.loads(DEFAULT_TOML)

    def paths(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict) and k not in ("means", "init", "learning_rates"):
                yield from paths(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}"

    for path in paths(data):
        if path.split(".")[-1] in optional:
            continue
        broken = json.loads(json.dumps(data))
        node = broken
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        del node[last]
        with pytest.raises(mc.ConfigError, match=re.escape(f"`{path}`: missing key")):
            mc.parse_experiment(broken)


def test_run_end_to_end(tmp_path):
    out = tmp_path / "out"
    main(["run", "--config", _write(tmp_path, SMALL), "--out", str(out), "--no-progress"])
    result = json.loads((out / "result.json").read_text())
    assert set(result) >= {"times", "theory", "full", "max_abs_diff", "wall_seconds", "config"}
    assert len(result["times"]) == 5
    for route in ("theory", "full"):
        assert set(result[route]) == {"R", "Q", "weights", "scale", "objective"}
        assert len(result[route]["R"]) == 5 and len(result[route]["R"][0]) == 2
    assert set(result["max_abs_diff"]) >= {"R", "Q", "weights", "scale"}
    assert max(result["max_abs_diff"].values()) < 1e-4
    assert result["config"]["dim"] == 3
    for block in ("outcome", "outcome_full"):
        assert set(result[block]) >= {"masses", "covered", "emc", "mode_score", "kl", "label"}
        assert result[block]["label"] in mc.metrics.LABELS
    assert (out / "overlaps.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_run_renyi_end_to_end(tmp_path):
    # `[objective] renyi`: both routes record F_α; at t = 0 they are the same Gram-form value of
    # the same models, which the library's `Renyi` gives from the built problem.
    out = tmp_path / "out"
    text = _replace(
        SMALL, "[simulation]", '[objective]\nkind = "renyi"\nalpha = 0.5\n\n[simulation]'
    )
    main(["run", "--config", _write(tmp_path, text), "--out", str(out), "--no-progress"])
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["objective"] == {
        "kind": "renyi",
        "alpha": 0.5,
        "quadrature": "accurate",
    }
    problem = mc.build_problem(mc.parse_experiment(tomllib.loads(text)))
    f0 = float(mc.Renyi(0.5)(problem.family, problem.target, result["beta"][0]))
    assert result["theory"]["objective"][0] == pytest.approx(f0, rel=1e-12)
    assert result["full"]["objective"][0] == pytest.approx(f0, rel=1e-12)
    assert max(result["max_abs_diff"].values()) < 1e-5


def test_run_with_adiabatic_scale(tmp_path):
    out = tmp_path / "out"
    text = _replace(SMALL, "duration = 20.0", 'duration = 20.0\nscale = "adiabatic"')
    main(["run", "--config", _write(tmp_path, text), "--out", str(out), "--no-progress"])
    result = json.loads((out / "result.json").read_text())
    beta = result["beta"]
    for route in ("theory", "full"):
        scale = result[route]["scale"]
        # s·√β = σ = 1 up to the file's rtol 1e-7 (a trained scale would be off by ~0.3)
        assert max(abs(s * b**0.5 - 1.0) for s, b in zip(scale, beta)) < 1e-4
    assert result["config"]["annealing"]["scale"] == "adiabatic"


def test_run_without_full_flow(tmp_path):
    out = tmp_path / "out"
    text = _replace(SMALL, "full = true", "full = false")
    main(["run", "--config", _write(tmp_path, text), "--out", str(out), "--no-progress"])
    result = json.loads((out / "result.json").read_text())
    assert result["full"] is None and result["max_abs_diff"] is None
    assert result["wall_seconds"]["full"] is None


def test_main_leaves_the_process_as_it_was(tmp_path):
    """In-process `main` (float32, cached, checks switched to NaN) restores x64 and the checks."""
    import jax
    import jax.numpy as jnp

    text = _replace(SMALL, "full = true", "full = false")
    config = _write(tmp_path, text)
    main(["run", "--config", config, "--out", str(tmp_path / "o"), "--precision", "float32"])
    assert jax.config.read("jax_enable_x64")
    with pytest.raises(Exception, match="`weights` must be positive and sum to 1"):
        mc.GaussianMixture(jnp.zeros((2, 3)), jnp.array([0.5, 0.6]), 1.0)


def test_compare_end_to_end(tmp_path, capsys):
    out = tmp_path / "cmp"
    main(
        [
            "compare",
            "--config",
            _write(tmp_path, SMALL),
            "--dims",
            "3,5",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    report = json.loads((out / "compare.json").read_text())
    assert report["dims"] == [3, 5] and len(report["rows"]) == 2
    for row in report["rows"]:
        assert max(row["max_abs_diff"].values()) < 1e-4
    table = capsys.readouterr().out
    assert "max|dR|" in table and (out / "compare.png").exists()


def test_numerical_failure_is_reported(tmp_path, capsys):
    text = _replace(SMALL, "atol = 1e-9", "atol = 1e-9\nmax_steps = 3")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["run", "--config", _write(tmp_path, text), "--out", str(out), "--no-progress"])
    assert e.value.code == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("modecollapse: error: numerical failure") and "Traceback" not in err
    assert "maximum number of solver steps" in last and '"dim":3' in last
    assert not out.exists()


def test_module_entry_point_help():
    proc = subprocess.run(
        [sys.executable, "-m", "modecollapse", "compare", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0 and "--dims" in proc.stdout
