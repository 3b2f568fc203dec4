"""The collapse formula (docs/theory.md, §13) and schedule design (§14)."""

import json
import math
import tomllib
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import modecollapse as mc
from modecollapse._annealing import _formula
from modecollapse._annealing._design import optimise_schedule
from modecollapse._cli import main
from modecollapse._dynamics._solve import SolverOptions, integrate_final
from modecollapse._jobs._design import DEFAULT_DESIGN_TOML, formula_arguments, simulate_collapse

NORM, DIM = 5.0, 1000
BASE = dict(target_norm=NORM, init_norm=3.0, dim=DIM, t_end=300.0)


def _state(r1, r2, perp, norm, log_s):
    """(R, Q) of m_k = r_k e + perp e_{k+1}: projections r_k on μ/|μ|, orthogonal parts apart."""
    R = jnp.array([[r1 * norm, -r1 * norm], [r2 * norm, -r2 * norm]])
    Q = jnp.array([[r1 * r1 + perp**2, r1 * r2], [r1 * r2, r2 * r2 + perp**2]])
    return mc.GramState(R, Q, jnp.zeros(2), jnp.asarray(log_s))


@pytest.mark.parametrize("beta, perp", [(0.05, 3.0), (0.4, 0.5), (1.0, 3.0)])
def test_linear_rates_match_the_theory_vector_field(beta, perp):
    """Eqs. (P2)–(P4) against the hand-derived theory RHS (T1)–(T2), differentiated by autodiff."""
    sigma, norm, rate = 1.0, NORM, 1.0
    T = jnp.array([[norm**2, -(norm**2)], [-(norm**2), norm**2]])
    target = mc.TargetStatistics(T, jnp.log(jnp.array([0.5, 0.5])), jnp.asarray(sigma))
    log_s = 0.5 * math.log(sigma**2 / beta)  # adiabatic scale at this β
    rates = mc.LearningRates(rate, 0.0, 0.0)
    schedule = mc.LinearSchedule(beta, 1e9)  # β constant over the instant we look at

    def dr(r1, r2):
        d = mc.theory_vector_field(
            0.0, _state(r1, r2, perp, norm, log_s), target, schedule, rates, DIM
        )
        return d.R[:, 0] / norm

    # growth rates of u = (r1 + r2)/2 and v = (r1 − r2)/2 at the symmetric state (linear in r)
    _, du = jax.jvp(dr, (0.0, 0.0), (1.0, 1.0))
    _, dv = jax.jvp(dr, (0.0, 0.0), (1.0, -1.0))
    lam_u = float(du[0])
    lam_v = float(dv[0])
    # the formula's rates at the same point (log v0 very small: separation = orthogonal part)
    y = (jnp.log(perp * math.sqrt(2.0)), jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))
    args = (
        schedule,
        jnp.asarray(norm),
        jnp.asarray(sigma),
        jnp.zeros(()),
        jnp.asarray(rate),
        jnp.asarray(-60.0),
        None,
    )
    _, d_log_a, d_ratio, _ = _formula._field(jnp.zeros(()), y, args)
    assert lam_v == pytest.approx(float(d_log_a), rel=1e-7, abs=1e-10)
    assert lam_v - lam_u == pytest.approx(float(d_ratio), rel=1e-7, abs=1e-10)


def test_outer_integral_has_converged():
    """The 48-node half-normal rule of eq. (P9) against a 160-node rule."""
    schedule = mc.LinearSchedule(0.03, 50.0)
    for weight in (0.7,):
        coarse = mc.p_collapse_formula(schedule, weight=weight, **BASE)
        z, w = _formula._Z_NODES, _formula._Z_WEIGHTS
        try:
            _formula._Z_NODES, _formula._Z_WEIGHTS = _formula._half_normal_rule(160)
            fine = mc.p_collapse_formula(schedule, weight=weight, **BASE)
        finally:
            _formula._Z_NODES, _formula._Z_WEIGHTS = z, w
        assert abs(float(coarse) - float(fine)) < 1e-6


def test_separated_start_gives_one_half():
    """Components that start far apart never overlap: ΔΛ = 0 and each falls to its nearest mode
    independently, P = ½ (eq. (P9) with k = 1)."""
    terms = mc.collapse_formula_terms(
        mc.NoAnnealing(),
        target_norm=NORM,
        init_norm=60.0,
        dim=DIM,
        t_end=100.0,
        scale_coupling="frozen",
    )
    assert float(jnp.max(terms.log_ratio)) < 1e-3
    assert float(terms.p) == pytest.approx(0.5, abs=1e-3)


def test_slower_annealing_lowers_the_prediction():
    ps = [
        float(mc.p_collapse_formula(mc.LinearSchedule(0.03, t), **BASE)) for t in (5.0, 50.0, 150.0)
    ]
    none = float(mc.p_collapse_formula(mc.NoAnnealing(), **BASE))
    assert none > ps[0] > ps[1] > ps[2] > 0.0


def test_gradients_match_central_differences():
    """d P_formula/d(β0, τ) through diffrax against central finite differences."""

    def p(theta):
        return mc.p_collapse_formula(mc.LinearSchedule(theta[0], theta[1]), **BASE)

    theta = jnp.array([0.2, 30.0])
    grad = jax.grad(p)(theta)
    for i, h in ((0, 1e-4), (1, 1e-3)):
        e = jnp.zeros(2).at[i].set(h)
        fd = (p(theta + e) - p(theta - e)) / (2 * h)
        assert float(grad[i]) == pytest.approx(float(fd), rel=1e-4, abs=1e-8)
    assert float(grad[1]) < 0  # longer annealing helps


def test_formula_matches_the_theory_monte_carlo_in_its_regime():
    """ρ = ½, c/s(0) ≤ 1, fast annealing: within 0.05 + 3 SE of the theory-ODE Monte Carlo
    (the regime pinned in docs/theory.md, §13; the phase diagram reports every cell)."""
    exp = _design_experiment()
    seeds = 300
    sim = simulate_collapse(exp, "linear", 0.1, 15.0, seeds)
    pred = float(mc.p_collapse_formula(mc.LinearSchedule(0.1, 15.0), formula_arguments(exp)))
    se = math.sqrt(max(sim["p_collapse"] * (1 - sim["p_collapse"]), 0.01) / seeds)
    assert abs(pred - sim["p_collapse"]) < 0.05 + 3 * se


def _design_experiment(**replace):
    text = DEFAULT_DESIGN_TOML
    for old, new in replace.items():
        text = text.replace(old, new)
    return mc.parse_experiment(tomllib.loads(text))


def test_formula_arguments_reject_what_it_does_not_cover():
    with pytest.raises(mc.ConfigError, match="variational.components"):
        formula_arguments(
            _design_experiment(
                **{
                    "components = 2\nweights = [0.5, 0.5]": (
                        "components = 3\nweights = [0.4, 0.3, 0.3]"
                    )
                }
            )
        )
    with pytest.raises(mc.ConfigError, match="variational.weights"):
        formula_arguments(
            _design_experiment(
                **{
                    "weights = [0.5, 0.5]\nscale = 1.0\ninit": (
                        "weights = [0.6, 0.4]\nscale = 1.0\ninit"
                    )
                }
            )
        )


def test_schedule_families():
    b = 0.1
    for kind in ("linear", "geometric"):
        s = mc.make_schedule(kind, b, 20.0)
        assert float(s(0.0)) == pytest.approx(b) and float(s(20.0)) == pytest.approx(1.0)
    s = mc.make_schedule("exponential", b, 20.0)
    assert float(s(20.0)) == pytest.approx(1 - 0.9 * math.exp(-3.0))


@pytest.mark.slow
def test_optimiser_lowers_the_objective():
    res = optimise_schedule(
        "linear",
        formula_arguments(_design_experiment()),
        beta0=0.5,
        duration=5.0,
        price=1e-3,
        steps=12,
        learning_rate=0.2,
    )
    assert res.objective < res.history[0]["objective"] - 0.05
    assert np.isfinite(res.p) and res.steps == 12


@pytest.mark.parametrize(
    "argv, key",
    [(["--price", "0"], "--price"), (["--steps", "0"], "--steps"), (["--seeds", "-3"], "--seeds")],
)
def test_design_cli_one_line_errors(tmp_path, capsys, argv, key):
    with pytest.raises(SystemExit) as e:
        main(["design", "--out", str(tmp_path / "o"), *argv])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert key in err and "\n" not in err
    assert not (tmp_path / "o").exists()


def test_design_cli_rejects_uncovered_experiment(tmp_path, capsys):
    cfg = tmp_path / "exp.toml"
    cfg.write_text(
        DEFAULT_DESIGN_TOML.replace(
            'kind = "antipodal", norm = 5.0', 'kind = "orthogonal", norms = [5.0, 5.0]'
        )
    )
    with pytest.raises(SystemExit) as e:
        main(["design", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    assert "target.means.kind" in capsys.readouterr().err


@pytest.mark.slow
def test_design_cli_end_to_end(tmp_path):
    import json

    main(["design", "--out", str(tmp_path / "o"), "--steps", "40", "--seeds", "1000"])
    report = json.loads((tmp_path / "o" / "design.json").read_text())
    opt = report["optimum"]
    assert opt["objective"] < report["optimiser"]["history"][0]["objective"]
    lo, hi = opt["p_simulated_ci"]
    assert lo - 0.05 <= opt["p_formula"] <= hi + 0.05
    assert report["formula_regime"] == {"ok": True, "reasons": []}
    assert (tmp_path / "o" / "design.png").stat().st_size > 10_000


# --- the formula's setting, its solve entry and its regime (fault 5)


def test_setting_and_keywords_give_the_same_formula():
    schedule = mc.LinearSchedule(0.1, 40.0)
    setting = mc.FormulaSetting(**BASE, weight=0.6)
    by_keywords = mc.p_collapse_formula(schedule, weight=0.6, **BASE)
    assert float(mc.p_collapse_formula(schedule, setting)) == float(by_keywords)
    assert float(mc.collapse_formula_terms(schedule, setting).p) == float(by_keywords)
    with pytest.raises(TypeError, match="FormulaSetting"):
        mc.p_collapse_formula(schedule, setting, weight=0.6)
    with pytest.raises(ValueError, match="`scale_coupling`"):
        mc.FormulaSetting(**BASE, scale_coupling="trained")
    with pytest.raises(ValueError, match="`variational_scale`"):
        mc.FormulaSetting(**BASE, variational_scale=2.0)


@pytest.mark.parametrize("adjoint", ["recursive-checkpoint", "direct"])
def test_final_state_solve_and_its_adjoints_against_the_closed_form(adjoint):
    """The formula's solve entry: y(1) = e^{-k} for y' = −k y, and dy(1)/dk = −e^{-k}."""
    options = SolverOptions(rtol=1e-10, atol=1e-12, adjoint=adjoint)

    def y1(k):
        return integrate_final(lambda t, y, k: -k * y, jnp.ones(()), k, 0.0, 1.0, options).y

    k = jnp.asarray(0.7)
    np.testing.assert_allclose(y1(k), math.exp(-0.7), rtol=1e-9)
    np.testing.assert_allclose(jax.grad(y1)(k), -math.exp(-0.7), rtol=1e-8)
    with pytest.raises(ValueError, match="`adjoint`"):
        SolverOptions(adjoint="backwards")


def test_formula_regime_names_what_is_outside_it():
    inside = mc.formula_regime(mc.FormulaSetting(**BASE, weight=0.7))  # weights held at ½: exact
    assert inside == {"ok": True, "reasons": []}
    assert mc.formula_regime(mc.FormulaSetting(**BASE, weights_rate=1.0))["ok"]  # ρ = ½
    weights = mc.formula_regime(mc.FormulaSetting(**BASE, weight=0.7, weights_rate=1.0))
    scale = mc.formula_regime(mc.FormulaSetting(**BASE, scale_rate=0.1))
    assert not weights["ok"] and "`weight`" in weights["reasons"][0]
    assert not scale["ok"] and "`scale_rate`" in scale["reasons"][0]


def test_python_api_warns_outside_the_regime():
    schedule = mc.LinearSchedule(0.1, 40.0)
    with pytest.warns(mc.FormulaRegimeWarning, match="weight"):
        outside = mc.p_collapse_formula(schedule, weight=0.7, weights_rate=1.0, **BASE)
    with pytest.warns(mc.FormulaRegimeWarning, match="scale_rate"):
        mc.collapse_formula_terms(schedule, scale_rate=0.1, **BASE)
    with warnings.catch_warnings():
        warnings.simplefilter("error", mc.FormulaRegimeWarning)
        inside = mc.p_collapse_formula(schedule, weight=0.7, **BASE)
    assert float(outside) == float(inside)  # the warning changes nothing in the value


def test_formula_arguments_carry_the_experiment_rates():
    ok = formula_arguments(_design_experiment())
    assert ok.weights_rate == 1.0 and ok.scale_rate == 0.0 and mc.formula_regime(ok)["ok"]
    trained = formula_arguments(
        _design_experiment(
            **{
                "scale = 0.0 }": "scale = 0.05 }",
                'scale = "adiabatic"': 'scale = "trainable"',
            }
        )
    )
    assert trained.scale_coupling == "adiabatic" and trained.scale_rate == 0.05
    assert not mc.formula_regime(trained)["ok"]


@pytest.mark.slow  # a whole design run (about 45 s)
def test_design_says_when_it_is_outside_the_regime(tmp_path):
    """`design` at ρ = 0.7 with trainable weights: one warning, and design.json records why.
    The exponential start (rate 0.3) is read back as τ = 3/rate (eq. (A2))."""
    cfg = tmp_path / "exp.toml"
    text = DEFAULT_DESIGN_TOML.replace(
        "weights = [0.5, 0.5]\nscale = 1.0\nmeans", "weights = [0.7, 0.3]\nscale = 1.0\nmeans"
    ).replace(
        'kind = "linear"\nbeta0 = 0.5\nduration = 10.0',
        'kind = "exponential"\nbeta0 = 0.5\nrate = 0.3',
    )
    assert text.count("0.7, 0.3") == 1 and "rate = 0.3" in text
    cfg.write_text(text)
    out = tmp_path / "o"
    with pytest.warns(mc.FormulaRegimeWarning) as record:
        main(["design", "--config", str(cfg), "--out", str(out), "--steps", "1", "--seeds", "20"])
    assert sum(issubclass(w.category, mc.FormulaRegimeWarning) for w in record) == 1
    report = json.loads((out / "design.json").read_text())
    regime = report["formula_regime"]
    assert regime["ok"] is False and any("`weight`" in r for r in regime["reasons"])
    assert report["start"]["duration"] == pytest.approx(3.0 / 0.3)
    assert report["formula_arguments"]["weights_rate"] == 1.0


def test_formula_input_check_names_the_argument():
    """Fault 2, cheaply: the formula's own check (the one `design` reruns to report) names
    `init_norm`; the CLI end-to-end version is the slow test in tests/test_config.py."""
    with pytest.raises(Exception, match="`init_norm` must be > 0"):
        mc.p_collapse_formula(
            mc.LinearSchedule(0.1, 10.0),
            target_norm=5.0,
            weight=0.5,
            init_norm=0.0,
            dim=1000,
            t_end=300.0,
        )
