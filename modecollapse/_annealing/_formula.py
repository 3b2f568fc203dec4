"""A sharp formula for P(collapse) under annealing (docs/theory.md, §13, eqs. (P1)–(P9)).

Two components (K = 2, equal initial weights) fit an antipodal two-mode target μ_{1,2} = ±μ.
Near the symmetric state the projections r_k = m_k·μ/|μ| split into a symmetric part
u = (r_1 + r_2)/2 and an antisymmetric part v = (r_1 − r_2)/2. Linearising the theory ODE
(eqs. (T1)–(T2)) in (u, v) gives growth rates that differ only by the q–q overlap repulsion
(eq. (P3)); integrating them along the schedule, with the overlap switching itself off as the
components separate (eq. (P4)), maps the Bartlett initial law (u0, v0 i.i.d. N(0, c²/2d)) to the
final sign pattern of (r_1, r_2): the means end on the same mode iff |u| > |v| (eqs. (P6)–(P8)).

`FormulaSetting` holds the problem (all but the schedule); `formula_regime` says when a setting is
outside the regime of §13, and the formula then warns with `FormulaRegimeWarning`. The solves go
through the one solve entry, `_dynamics._solve.integrate_final`.
"""

import math
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._dynamics._solve import SolverOptions, integrate_final
from .._numerics._integrals import sigmoid_moment, sigmoid_moments
from ._schedules import AbstractSchedule

SCALE_COUPLINGS = ("adiabatic", "frozen")
_MAX_SEPARATION2 = 1e4  # δ²/s² beyond which the overlap E_12 is below 1e-300: cap it (eq. (P4))
_QUADRATURE = 48  # Gauss–Legendre nodes of the outer integral over |v0| (eq. (P9))
# The formula's solves (eqs. (P4)–(P7)): tight tolerances; a failed solve raises.
_OPTIONS = SolverOptions(solver="tsit5", rtol=1e-8, atol=1e-10, max_steps=16384, throw=True)


def _half_normal_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes z_i = Φ⁻¹((1 + p_i)/2) and weights for E f(|Z|) = ∫_0^1 f(z(p)) dp."""
    from statistics import NormalDist

    x, w = np.polynomial.legendre.leggauss(n)
    p = 0.5 * (x + 1.0)
    z = np.array([NormalDist().inv_cdf(0.5 * (1.0 + pi)) for pi in p])
    return z, 0.5 * w


_Z_NODES, _Z_WEIGHTS = _half_normal_rule(_QUADRATURE)


def _Phi(x: Array) -> Array:
    return 0.5 * jax.lax.erfc(-x / math.sqrt(2.0))


class FormulaRegimeWarning(UserWarning):
    """The collapse formula is used outside the regime it was derived for (docs/theory.md, §13)."""


class FormulaSetting(eqx.Module):
    """The problem the collapse formula describes: everything but the schedule (docs/theory.md §13).

    K = J = 2, an antipodal target ±μ with weights (ρ, 1 − ρ) and scale σ, two components started
    at random with norm c in dimension d and equal weights ½, trainable means (rate η_m).

    **Arguments:**

    - `target_norm`: |μ|: the target means are ±μ.
    - `init_norm`: c: the initial means are m_k = c g_k/√d (eq. (B1)).
    - `dim`: d.
    - `t_end`: the horizon of the flow.
    - `weight`: ρ, the weight of the first target mode (default ½).
    - `scale`: σ, the target's component scale.
    - `rate`: η_m, the learning rate of the means.
    - `scale_coupling`: "adiabatic" (s² = σ²/β(t), eq. (S5); also the large-d limit of a trained
      scale) or "frozen" (s fixed at `variational_scale`, default σ).
    - `variational_scale`: s for `scale_coupling="frozen"`.
    - `weights_rate`: η_w of the experiment being described (default 0). The formula holds the
      weights at ½; with η_w > 0 that is its regime only at ρ = ½ (`formula_regime`).
    - `scale_rate`: η_s of the experiment being described (default 0). The formula's scale is
      adiabatic or frozen; a trained scale (η_s > 0) is outside its regime (`formula_regime`).

    **Example:**
    ```python
    setting = FormulaSetting(target_norm=5.0, init_norm=3.0, dim=1000, t_end=300.0)
    p_collapse_formula(LinearSchedule(0.05, 50.0), setting)
    ```
    """

    target_norm: ArrayLike
    init_norm: ArrayLike
    dim: ArrayLike
    t_end: ArrayLike
    weight: ArrayLike = 0.5
    scale: ArrayLike = 1.0
    rate: ArrayLike = 1.0
    scale_coupling: str = eqx.field(static=True, default="adiabatic")
    variational_scale: ArrayLike | None = None
    weights_rate: float = eqx.field(static=True, default=0.0)
    scale_rate: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        if self.scale_coupling not in SCALE_COUPLINGS:
            raise ValueError(
                f"`scale_coupling` must be one of {SCALE_COUPLINGS}, got {self.scale_coupling!r}."
            )
        if self.scale_coupling == "adiabatic" and self.variational_scale is not None:
            raise ValueError(
                '`variational_scale` is only used with `scale_coupling="frozen"`; drop it or '
                'set `scale_coupling="frozen"`.'
            )
        for name in ("weights_rate", "scale_rate"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"`{name}` must be >= 0, got {getattr(self, name)!r}.")

    def to_dict(self) -> dict[str, Any]:
        """The setting as plain numbers and strings (JSON-ready), `variational_scale` only if set.

        **Returns:** a dict of the fields.

        **Example:**
        ```python
        FormulaSetting(target_norm=5.0, init_norm=3.0, dim=1000, t_end=300.0).to_dict()["dim"]
        ```
        """
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if value is None:
                continue
            out[name] = value if isinstance(value, str | int | float) else float(value)
        return out


def _concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]


def formula_regime(setting: FormulaSetting) -> dict[str, Any]:
    """Whether `setting` lies in the regime the formula was derived for (docs/theory.md, §13).

    Outside it: (i) ρ ≠ ½ with trainable weights, where the logits move at first order and the
    weights, not the split, decide (measured errors up to 0.16); (ii) a trained scale, which the
    formula treats as adiabatic (or frozen) instead of following its own dynamics (eq. (T5)).
    A traced `weight` (under `jit`/`grad`) is not checked.

    **Arguments:**

    - `setting`: a `FormulaSetting`.

    **Returns:** `{"ok": bool, "reasons": [str, ...]}` (JSON-ready; `reasons` empty iff ok).

    **Example:**
    ```python
    formula_regime(FormulaSetting(5.0, 3.0, 1000, 300.0, weight=0.7, weights_rate=1.0))["ok"]
    ```
    """
    reasons = []
    w = setting.weight
    if setting.weights_rate > 0 and _concrete(w) and abs(float(np.asarray(w)) - 0.5) > 1e-12:
        rho = float(np.asarray(w))
        reasons.append(
            f"`weight` ρ = {rho:g} != 1/2 with trainable weights (`weights_rate` = "
            f"{setting.weights_rate:g}): the formula holds the weights at 1/2; read it as a trend "
            "up to τ ≈ 50 (docs/theory.md §13)"
        )
    if setting.scale_rate > 0:
        reasons.append(
            f"a trainable scale (`scale_rate` = {setting.scale_rate:g}) is treated as "
            f"{setting.scale_coupling} (eq. (S5)), exact only as d → ∞ (docs/theory.md §13)"
        )
    return {"ok": not reasons, "reasons": reasons}


def warn_formula_regime(setting: FormulaSetting, stacklevel: int = 2) -> dict[str, Any]:
    """Warn with `FormulaRegimeWarning` if `setting` is outside the formula's regime.

    **Arguments:**

    - `setting`: a `FormulaSetting`.
    - `stacklevel`: as for `warnings.warn` (2: the caller of this function).

    **Returns:** `formula_regime(setting)`.

    **Example:**
    ```python
    regime = warn_formula_regime(setting)
    ```
    """
    regime = formula_regime(setting)
    if not regime["ok"]:
        warnings.warn(
            "the collapse formula is used outside its regime: " + "; ".join(regime["reasons"]),
            FormulaRegimeWarning,
            stacklevel=stacklevel + 1,
        )
    return regime


def _setting(setting: FormulaSetting | None, kwargs: dict[str, Any]) -> FormulaSetting:
    if setting is None:
        return FormulaSetting(**kwargs)
    if kwargs:
        raise TypeError(
            f"pass either a `FormulaSetting` or keywords, not both (got {', '.join(kwargs)})."
        )
    return setting


class CollapseFormula(eqx.Module):
    """The terms of the formula (eqs. (P5)–(P9)) at the quadrature nodes of |v0|.

    **Fields:**

    - `p`: predicted P(collapse by mean alignment), eq. (P9).
    - `z`: the nodes |v0|/σ0 of the outer integral (half-normal quantiles).
    - `log_ratio`: ΔΛ(|v0|) = ∫ η w χ/s² dt at each node, the log-advantage of the antisymmetric
      mode (eq. (P5)); it grows as |v0| shrinks, since small splits stay overlapped longer.
    - `bias`: y(t_end)/σ0 at each node: the symmetric drift forced by unequal target weights,
      in units of the initial spread (eq. (P7)); 0 for ρ = ½.
    - `overlap`: χ(t_end) at each node: the q–q overlap left at the end (near 0 once the split
      locked; near 1 means t_end was too short for the sign pattern to lock).
    """

    p: Float[Array, ""]
    z: Float[Array, " n"]
    log_ratio: Float[Array, " n"]
    bias: Float[Array, " n"]
    overlap: Float[Array, " n"]


def _overlap(log_sep2: Array, log_s2: Array) -> Array:
    """χ = E_12 + E_21 = 2 E[σ(−δ²/2s² + (δ/s) Z)] for equal weights (eq. (P4))."""
    r2 = jnp.exp(jnp.minimum(log_sep2 - log_s2, math.log(_MAX_SEPARATION2)))
    return 2.0 * sigmoid_moment(0, -0.5 * r2, r2)


def _log_s2(schedule, t, sigma, log_s0):
    if log_s0 is None:  # adiabatic: s² = σ²/β (eq. (S5))
        return 2.0 * jnp.log(sigma) - jnp.log(schedule(t))
    return 2.0 * log_s0


def _log_sep2(ell, log_v0, log_a):
    # separation² = |Δ_⊥|² + (r_1 − r_2)², with r_1 − r_2 = 2 v0 e^{Λ_a} (eq. (P4))
    return jnp.logaddexp(2.0 * ell, jnp.log(4.0) + 2.0 * (log_v0 + log_a))


def _field(t, y, args):
    ell, log_a, _, drift = y
    schedule, half_sep, sigma, logit_rho, rate, log_v0, log_s0 = args
    beta = schedule(t)
    sig2 = sigma**2
    log_s2 = _log_s2(schedule, t, sigma, log_s0)
    s2 = jnp.exp(log_s2)
    A = half_sep**2
    v_p = 4.0 * s2 * A / sig2**2  # variance of the p-logit difference under q_k (eq. (G1))
    f0, f1 = sigmoid_moments((0, 1), logit_rho, v_p)  # one joint kernel call (I6)
    eta_w = 0.5 * rate  # η_m w_k with w_k = ½
    lam_s = eta_w * beta / sig2 * (4.0 * f1 * A / sig2 - 1.0)  # eq. (P2)
    chi = _overlap(_log_sep2(ell, log_v0, log_a), log_s2)
    repulsion = eta_w * chi / s2  # eq. (P3)
    force = eta_w * beta / sig2 * half_sep * (2.0 * f0 - 1.0)  # eq. (P1)
    d_ell = eta_w * (chi / s2 - beta / sig2)  # eq. (P4)
    d_drift = -repulsion * drift + force * jnp.exp(-log_a)  # eq. (P7)
    return (d_ell, lam_s + repulsion, repulsion, d_drift)


def collapse_formula_terms(
    schedule: AbstractSchedule, setting: FormulaSetting | None = None, /, **kwargs: Any
) -> CollapseFormula:
    """The formula's terms: ΔΛ, the forced bias, the final overlap and P (eqs. (P1)–(P9)).

    **Arguments:** as in `p_collapse_formula`.

    **Returns:** a `CollapseFormula`.

    **Example:**
    ```python
    terms = collapse_formula_terms(LinearSchedule(0.05, 50.0), target_norm=5.0, init_norm=1.0,
                                   dim=1000, t_end=300.0)
    terms.log_ratio, terms.p
    ```
    """
    setting = _setting(setting, kwargs)
    warn_formula_regime(setting, stacklevel=2)
    return _formula_terms(schedule, setting)


def _formula_terms(schedule: AbstractSchedule, setting: FormulaSetting) -> CollapseFormula:
    dtype = jnp.result_type(float)
    jumps = tuple(b for b in schedule.breakpoints if b > 0)  # static kinks, if known
    schedule = jax.tree.map(lambda x: jnp.asarray(x, dtype), schedule)
    f = setting
    numbers = (f.target_norm, f.weight, f.scale, f.init_norm, f.dim, f.t_end, f.rate)
    numbers = tuple(jnp.asarray(x, dtype) for x in numbers)
    if f.scale_coupling == "frozen":
        s0 = f.scale if f.variational_scale is None else f.variational_scale
        frozen = jnp.asarray(s0, dtype)
    else:
        frozen = None
    return _terms(schedule, numbers, frozen, jnp.asarray(jumps, dtype) if jumps else None)


@eqx.filter_jit
def _terms(schedule, numbers, frozen, jumps) -> CollapseFormula:
    half_sep, rho, sigma, c, d, t1, rate = numbers
    dtype = half_sep.dtype
    rho = eqx.error_if(rho, (rho <= 0) | (rho >= 1), "`weight` (ρ) must lie in (0, 1).")
    c = eqx.error_if(c, c <= 0, "`init_norm` must be > 0.")
    d = eqx.error_if(d, d < 2, "`dim` must be >= 2.")
    log_sigma0 = jnp.log(c) - 0.5 * jnp.log(2.0 * d)  # u0, v0 ~ N(0, c²/2d) (eq. (P6))
    ell0 = 0.5 * jnp.log(2.0 * c**2 * (d - 1.0) / d)  # E|P⊥(m_1 − m_2)|² = 2c²(d−1)/d (B5)
    log_s0 = None if frozen is None else jnp.log(frozen)
    logit_rho = jnp.log(rho / (1 - rho))
    # Outer integral over |v0| = σ0 z, z half-normal, on its probability scale (eq. (P9)).
    z = jnp.asarray(_Z_NODES, dtype)
    zero = jnp.zeros((), dtype)

    def solve(log_v0):
        args = (schedule, half_sep, sigma, logit_rho, rate, log_v0, log_s0)
        y0 = (ell0, zero, zero, zero)
        end = integrate_final(_field, y0, args, zero, t1, _OPTIONS, breakpoints=jumps)
        ell, log_a, log_ratio, drift = end.y
        log_s2 = _log_s2(schedule, t1, sigma, log_s0)
        return log_ratio, drift, _overlap(_log_sep2(ell, log_v0, log_a), log_s2)

    log_ratio, drift, overlap = jax.vmap(solve)(log_sigma0 + jnp.log(z))
    bias = drift / jnp.exp(log_sigma0)
    # collapse iff |u0 e^{−ΔΛ} + y| > |v0|, u0 ~ N(0, σ0²) (eq. (P8))
    gain = jnp.exp(jnp.minimum(log_ratio, 600.0))  # the cap keeps gradients finite
    p_node = 1.0 - _Phi((z - bias) * gain) + _Phi((-z - bias) * gain)
    p = jnp.dot(jnp.asarray(_Z_WEIGHTS, dtype), p_node)
    return CollapseFormula(jnp.clip(p, 0.0, 1.0), z, log_ratio, bias, overlap)


def p_collapse_formula(
    schedule: AbstractSchedule, setting: FormulaSetting | None = None, /, **kwargs: Any
) -> Float[Array, ""]:
    """Predicted P(collapse by mean alignment) for K = J = 2 on an antipodal target (eq. (P9)).

    P = P(|v(t_end)| < |u(t_end)|), the probability that both means end on the same side of the
    target's symmetry plane, from the growth rates of the symmetric and antisymmetric modes
    integrated along the schedule and the exact initial law of (u0, v0). Differentiable in the
    schedule's parameters (gradients through diffrax). Assumptions and regime: docs/theory.md §13;
    outside the regime (`formula_regime`) it warns with `FormulaRegimeWarning`.

    **Arguments:**

    - `schedule`: β(t), any `AbstractSchedule`.
    - `setting`: a `FormulaSetting`; or, instead, its fields as keywords: `target_norm`,
      `init_norm`, `dim`, `t_end` (required), `weight`, `scale`, `rate`, `scale_coupling`,
      `variational_scale`, `weights_rate`, `scale_rate` (see `FormulaSetting`).

    **Returns:** the scalar P in [0, 1].

    **Example:**
    ```python
    p = p_collapse_formula(LinearSchedule(0.05, 50.0), target_norm=5.0, init_norm=1.0,
                           dim=1000, t_end=300.0)
    ```
    """
    setting = _setting(setting, kwargs)
    warn_formula_regime(setting, stacklevel=2)
    return _formula_terms(schedule, setting).p
