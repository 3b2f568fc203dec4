"""One-dimensional Gaussian expectations of the logistic sigmoid, its derivatives and softplus.

For X = m + √v Z, Z ~ N(0, 1), and

    f_{-1} = softplus,  f_0 = σ (logistic sigmoid),  f_n = σ^{(n)} (n ≥ 1),

`sigmoid_moments(orders, m, v)` computes E[f_n(X)] for every n in `orders` at once, sharing one
set of terms or nodes, and `sigmoid_moment(n, m, v)` is the single-order form (docs/theory.md §8):

- (I1) heat equation: ∂_m E[f_n(X)] = E[f_{n+1}(X)] and ∂_v E[f_n(X)] = ½ E[f_{n+2}(X)]. This is
  the derivative rule of the `jax.custom_jvp`; it evaluates the shifted orders in one joint call,
  so derivatives of every order are available and finite, also at v = 0.
- float64, (I6): a probit mixture σ(x) ≈ Σ_k a_k Φ(x/s_k), whose Gaussian expectations are
  closed-form (Φ(m/τ_k), τ_k² = s_k² + v, and Hermite polynomials times φ(m/τ_k) for the
  derivatives). Its error at every (m, v) is at most sup_x of the mixture's own error. Φ is
  computed from the term's φ and a polynomial for the Mills ratio (I8), ≤ 9e-16 absolute.
  - "accurate" (default), (I7): the trapezoidal rule in log s of the exact scale mixture
    (σ(x) = ∫ Φ(x/s) g(s) ds, s = 2K with K Kolmogorov-distributed), 27 terms; error ≤ 8.2e-14
    for 0 ≤ n ≤ 4 (1.4e-14 for softplus, its rounding), 6.4e-13 and 5.2e-12 for n = 5, 6.
  - "fast", (I6): 10 minimax-fitted terms (benchmarks/probit_fit.py); error ≤ 7.8e-10 for
    n ≤ 2, 3.9e-9 and 2.8e-8 for n = 3, 4 (`_PROBIT_ERROR`).
- float32 (either name), (I2)–(I5): each f_n split into a part with a closed-form Gaussian
  expectation (the kink of softplus, the step of σ) and a remainder that decays like e^{−y} on
  y ≥ 0, integrated by 20 Gauss–Legendre nodes on a window that follows the Gaussian
  (L = 6, Y = 18); about one unit in the last place. (With 40 nodes, L = 8, Y = 32 this was the
  float64 rule before (I7).)
- v == 0: f_n(m) exactly; v < 0 is read as 0.

Both loops (terms, nodes) are a `jax.lax.fori_loop`, one running sum per output. XLA fuses each
sum's update on its own and recomputes inside it the shared values it uses, so a costly value
should feed as few sums as possible: the probit rule forms softplus after the loop, from the sums
of Φ and of τφ, rather than summing m Φ + τφ (docs/theory.md, (I6), "The layout of the sums").
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


@functools.cache
def _gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.hermite.hermgauss(n)
    # ∫ e^{−t²} g(t) dt ≈ Σ w g(t); with z = √2 t this is √π E[g(Z/√2)].
    return np.sqrt(2.0) * x, w / np.sqrt(np.pi)


def gauss_hermite(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite rule for expectations over a standard normal.

    **Arguments:**

    - `n`: number of nodes, a positive Python int.

    **Returns:** `(nodes, weights)`, two float64 NumPy arrays of shape (n,), such that
    `Σ_i weights[i] f(nodes[i]) ≈ E[f(Z)]` for Z ~ N(0, 1) (exact for polynomials of degree
    ≤ 2n − 1). The weights sum to one.

    **Example:**
    ```python
    z, w = gauss_hermite(20)
    np.sum(w * z**2)  # 1.0
    np.sum(w * np.cos(z))  # exp(-1/2)
    ```
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive int, got {n!r}.")
    x, w = _gauss_hermite(n)
    return x.copy(), w.copy()


@functools.cache
def _tensor_gauss_hermite(dim: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = _gauss_hermite(n)
    nodes = np.stack([g.ravel() for g in np.meshgrid(*([x] * dim), indexing="ij")], axis=-1)
    weights = np.prod(
        np.stack([g.ravel() for g in np.meshgrid(*([w] * dim), indexing="ij")], axis=-1), axis=-1
    )
    return nodes, weights


def tensor_gauss_hermite(dim: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The tensor Gauss–Hermite rule for E[f(Z)], Z ~ N(0, I_dim), n nodes per dimension.

    The one tensor grid of the package: the softmax expectations (eq. (G2)) and the embedding
    rule of the SGD noise (eq. (N5)) both use it.

    **Arguments:**

    - `dim`: the dimension, a positive Python int.
    - `n`: nodes per dimension, a positive Python int.

    **Returns:** `(nodes, weights)`, float64 NumPy arrays of shapes (nⁿᵈⁱᵐ, dim) and (nᵈⁱᵐ,), the
    weights summing to one (exact for polynomials of degree ≤ 2n − 1 in each coordinate).

    **Example:**
    ```python
    z, w = tensor_gauss_hermite(2, 10)
    np.sum(w * z[:, 0] ** 2 * z[:, 1] ** 2)  # 1.0
    ```
    """
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"`dim` must be a positive int, got {dim!r}.")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"`n` must be a positive int, got {n!r}.")
    nodes, weights = _tensor_gauss_hermite(dim, n)
    return nodes.copy(), weights.copy()


@functools.cache
def _sigmoid_derivative_poly(n: int) -> tuple[float, ...]:
    """Coefficients (lowest degree first) of P_n with σ^{(n)} = P_n(σ) (eq. (I4))."""
    p = np.polynomial.Polynomial([0.0, 1.0])
    ds = np.polynomial.Polynomial([0.0, 1.0, -1.0])  # σ' = σ(1 − σ)
    for _ in range(n):
        p = p.deriv() * ds
    return tuple(float(c) for c in p.coef)


def _horner(coef: tuple[float, ...], s: Array) -> Array:
    out = jnp.full_like(s, coef[-1])
    for c in reversed(coef[:-1]):
        out = out * s + c
    return out


@functools.cache
def _sigmoid_derivative_qd(n: int) -> tuple[int, tuple[float, ...]]:
    """σ^{(n)} = d^b R_n(q) for n ≥ 1, with q = σ(1 − σ) = σ', d = 1 − 2σ; returns (b, R_n).

    From q' = q d and d' = −2q (so d² = 1 − 4q): odd orders are polynomials in q, even orders d
    times one, e.g. σ⁽³⁾ = q − 6q², σ⁽⁴⁾ = q d (1 − 12q); R_n has degree ⌈n/2⌉ and R_n(0) = 0.
    """
    b, c = 0, [0.0, 1.0]  # σ' = q
    for _ in range(n - 1):
        if b == 0:  # (Σ c_k q^k)' = d Σ k c_k q^k
            c = [k * ck for k, ck in enumerate(c)]
        else:  # (d Σ c_k q^k)' = Σ c_k (k q^k (1 − 4q) − 2 q^{k+1})
            new = [0.0] * (len(c) + 1)
            for k, ck in enumerate(c):
                new[k] += k * ck
                new[k + 1] -= (4 * k + 2) * ck
            c = new
        b = 1 - b
    while c[-1] == 0.0:
        c.pop()
    return b, tuple(c)


# −log(1 − s)/s on s ∈ [0, ½] (lowest degree first): Chebyshev least-squares fit of degree 20 in
# long double, converted to the power basis; relative error ≤ 1e-15 there. With s = σ(−y) this is
# log1p(e^{−y})/σ(−y). XLA's float64 log1p is a scalar call, several times the cost of this.
_LOG1P_COEF = (
    1.0000000000000004,
    0.4999999999996953,
    0.3333333333980878,
    0.24999999394137143,
    0.20000031189592368,
    0.1666566889864016,
    0.14307182128492552,
    0.1217227837223238,
    0.1479423340663304,
    -0.21267738368164216,
    2.131819509234393,
    -10.27678819657962,
    41.22841159426459,
    -127.98039915457771,
    310.93035139710275,
    -582.5637055229674,
    827.1514966816305,
    -860.8848284250926,
    621.1225965942639,
    -278.31722907502524,
    58.831284194720794,
)


def _estrin(coef: tuple[float, ...], x: Array) -> Array:
    """Σ coef[k] x^k by Estrin's scheme (short dependency chains)."""
    terms: list = list(coef)
    power = x
    while len(terms) > 1:
        if len(terms) % 2:
            terms.append(0.0)
        terms = [a + b * power for a, b in zip(terms[::2], terms[1::2])]
        power = power * power
    return terms[0] + jnp.zeros_like(x)


def _log1p_exp_neg(e: Array, s: Array) -> Array:
    """log1p(e) for e = e^{−y} ∈ [0, 1], given s = σ(−y) = e/(1 + e); full relative precision."""
    if e.dtype == np.float64:
        return s * _estrin(_LOG1P_COEF, s)
    return jnp.log1p(e)  # float32: XLA's log1p is vectorized


# The window rule (I5), per floating dtype: (nodes, L, Y). Chosen by measurement against adaptive
# quadrature (docs/theory.md §8): the quadrature error is ≤ 4e-14 (n ≤ 4) in float64 and ≤ 5e-8
# in float32, below the rounding of the results. float32's rule under either kernel name; the
# float64 entry (the accurate rule before eq. (I7)) serves other dtypes.
_WINDOW = {np.dtype(np.float64): (40, 8.0, 32.0), np.dtype(np.float32): (20, 6.0, 18.0)}

# The probit mixture of eq. (I6), the float64 "fast" kernel: σ(x) ≈ Σ_k a_k Φ(x / s_k), with the
# scales s_k and weights a_k (Σ a_k = 1) fitted jointly for softplus and σ … σ⁽⁴⁾ by iteratively
# reweighted least squares towards the minimax error on x ∈ [0, 40] (benchmarks/probit_fit.py).
# Its largest errors there, sup_x |f_n(x) − mixture|, bound the error of every Gaussian expectation
# (any m, any v ≥ 0): see `_PROBIT_ERROR` and docs/theory.md, eq. (I6).
_PROBIT_SCALES = (
    0.6388123642761835,
    0.7912012749291082,
    0.9688795670004348,
    1.1866947597283168,
    1.4595518546131325,
    1.8050000196538398,
    2.2432317400064274,
    2.797992515194618,
    3.5068671692447553,
    4.461030563829002,
)
_PROBIT_WEIGHTS = (
    0.00023391125486061783,
    0.0072349625920787135,
    0.05174423287619167,
    0.1560770578033489,
    0.2579877187108534,
    0.2666232807719968,
    0.177918888713587,
    0.06960011835928473,
    0.01208971445126845,
    0.0004901144665297183,
)
# sup_x |f_n(x) − Σ_k a_k ∂_x^n Φ(x/s_k)| for n = −1 … 6, on a grid of spacing 1e-3 over [0, 60].
_PROBIT_ERROR = {
    -1: 7.84e-10,
    0: 6.43e-10,
    1: 5.94e-10,
    2: 7.28e-10,
    3: 3.89e-09,
    4: 2.76e-08,
    5: 2.08e-07,
    6: 1.69e-06,
}


def _kolmogorov_scale_density(s: np.ndarray) -> np.ndarray:
    """Density g of S = 2K, K Kolmogorov-distributed: σ(x) = ∫ Φ(x/s) g(s) ds (eq. (I7)).

    P(S ≤ s) = 1 − 2 Σ_j (−1)^{j−1} e^{−j²s²/2} = (2√(2π)/s) Σ_j e^{−(2j−1)²π²/(2s²)}; each series
    is differentiated where it converges fast (the second below s = 2).
    """
    s = np.asarray(s, np.float64)
    small = np.minimum(s, 2.0)
    j = np.arange(1, 31)[:, None]
    c = (2 * j - 1) ** 2 * np.pi**2 / 2
    low = (
        2
        * np.sqrt(2 * np.pi)
        * np.sum(np.exp(-c / small**2) * (2 * c / small**4 - 1 / small**2), 0)
    )
    large = np.maximum(s, 2.0)
    high = 2 * np.sum((-1.0) ** (j - 1) * j**2 * large * np.exp(-(j**2) * large**2 / 2), 0)
    return np.where(s < 2.0, low, high)


# The accurate float64 rule, eq. (I7): the trapezoidal rule in log s of the exact mixture,
# s_k = s_0 e^{kh} on [0.35, 8] with h = 0.12 (27 terms), a_k = h s_k g(s_k), normalised. Its
# sup errors over x (the bound at every (m, v)), measured as for `_PROBIT_ERROR`: 1.4e-14 (n = −1,
# the rounding of values up to 60), ≤ 1.1e-14 (n = 0 … 3), 8.2e-14 (4), 6.4e-13 (5), 5.2e-12 (6).
_TRAPEZOID = (0.35, 8.0, 0.12)


@functools.cache
def _mixture(kernel: str) -> tuple[np.ndarray, np.ndarray]:
    """(scales, weights) of the float64 probit mixture of `kernel` (eqs. (I6), (I7))."""
    if kernel == "fast":
        return np.asarray(_PROBIT_SCALES), np.asarray(_PROBIT_WEIGHTS)
    lo, hi, h = _TRAPEZOID
    scales = np.exp(np.arange(np.log(lo), np.log(hi), h))
    weights = h * scales * _kolmogorov_scale_density(scales)
    return scales, weights / math.fsum(weights)


KERNELS = ("accurate", "fast")


def _window(dtype) -> tuple[int, float, float]:
    return _WINDOW.get(np.dtype(dtype), _WINDOW[np.dtype(np.float64)])


def check_kernel(kernel: object) -> str:
    """`kernel` if it names a rule of the 1-D kernel ("accurate" or "fast"); else a ValueError.

    **Example:** `check_kernel("fast")  # "fast"`
    """
    if not isinstance(kernel, str) or kernel not in KERNELS:
        names = ", ".join(map(repr, KERNELS))
        raise ValueError(f"`kernel` must be one of {names}, got {kernel!r}.")
    return kernel


@functools.cache
def _legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return x, w / math.sqrt(2.0 * math.pi)  # the weights carry the 1/√(2π) of φ


def _parity(n: int) -> float:
    """ε_n: the remainder weight is N(y) + ε_n N(−y) (up to the overall sign of eqs. (I2)–(I4))."""
    return 1.0 if n == -1 or n % 2 == 1 else -1.0


def _normal_cdf(t: Array) -> Array:
    # erfc keeps full relative precision in the lower tail.
    return 0.5 * jax.lax.erfc(-t / math.sqrt(2.0))


# Φ(−t) = φ(t) M(t) for t ≥ 0, with the Mills ratio M as a degree-14 polynomial in
# y = 1 / (1 + a t), a = 0.33 (eq. (I8)): a weighted minimax fit of the absolute error of φ M,
# ≤ 7.8e-16 on t ∈ [0, 40] (beyond, φ < 1e-347 underflows). It shares the term's exponential φ;
# XLA's float64 erfc costs more than the rest of a mixture term.
_MILLS_A = 0.33
_MILLS_COEF = (
    -9.009430150730413e-05,
    0.3319573156668476,
    0.310358499103811,
    0.41459139680047163,
    -0.28208672674856805,
    1.6428622953317955,
    -3.334684245217016,
    5.5009674281708385,
    -6.769504622461511,
    5.783524436281368,
    -3.4019207581900446,
    1.3627678253760678,
    -0.3566400311974576,
    0.05497750104404986,
    -0.003766082343645394,
)


def _normal_cdf_from_pdf(u: Array, pdf: Array) -> Array:
    """Φ(u) to ≤ 9e-16 absolute, given pdf = φ(u) (eq. (I8))."""
    tail = pdf * _estrin(_MILLS_COEF, 1.0 / (1.0 + _MILLS_A * jnp.abs(u)))  # Φ(−|u|)
    return jnp.where(u > 0, 1.0 - tail, tail)


def _at_zero_variance(orders: tuple[int, ...], m: Array) -> list[Array]:
    """f_n(m) for every n in `orders`, accurate in both tails (P_n at σ(−|m|), eq. (I4))."""
    e = jnp.exp(-jnp.abs(m))
    s = e / (1.0 + e)  # σ(−|m|)
    pos = m > 0
    out = []
    for n in orders:
        if n == -1:
            out.append(jnp.maximum(m, 0.0) + _log1p_exp_neg(e, s))
        elif n == 0:
            out.append(jnp.where(pos, 1.0 - s, s))
        else:
            out.append(jnp.where(pos, _parity(n), 1.0) * _horner(_sigmoid_derivative_poly(n), s))
    return out


def _moments(orders: tuple[int, ...], kernel: str, m: Array, v: Array) -> tuple[Array, ...]:
    """E[f_n(m + √v Z)] for n in `orders` by the `kernel` rule; m, v of one shape and dtype."""
    if m.dtype == np.float64:
        return _probit_moments(orders, kernel, m, v)
    return _window_moments(orders, m, v)


@functools.cache
def _hermite_e(k: int) -> tuple[float, ...]:
    """Coefficients (lowest degree first) of the probabilists' Hermite polynomial He_k."""
    return tuple(float(c) for c in np.polynomial.hermite_e.herme2poly([0.0] * k + [1.0]))


def _probit_moments(orders: tuple[int, ...], kernel: str, m: Array, v: Array) -> tuple[Array, ...]:
    """Eq. (I6): E[f_n(m + √v Z)] of the probit mixture Σ_k a_k Φ(x / s_k), in closed form.

    With τ_k² = s_k² + v and u_k = m / τ_k: E[Φ(X / s_k)] = Φ(u_k), its m-derivatives
    ∂_m^n Φ(u_k) = (−1)^{n−1} He_{n−1}(u_k) φ(u_k) / τ_k^n, and for softplus
    E[max(X + s_k Z', 0)] = m Φ(u_k) + τ_k φ(u_k). v = 0 returns f_n(m) exactly.

    Each accumulated sum uses Φ at most once: softplus is m Σ a_k Φ(u_k) + Σ a_k τ_k φ(u_k),
    combined after the loop (m does not depend on k). XLA fuses each sum separately and
    recomputes shared values in every fusion that uses them, so a Φ used by two sums was
    computed twice; in the theory's solve loop this layout made one right-hand side 1.8× cheaper
    (docs/theory.md, (I6), "The layout of the sums").
    """
    v = jnp.where(v > 0, v, 0.0)  # v < 0 (e.g. round-off in an ODE) is read as v = 0
    scales, weights = _mixture(kernel)
    scales2 = jnp.asarray(np.square(scales), m.dtype)
    weights = jnp.asarray(weights, m.dtype)
    hermite = {n: _hermite_e(n - 1) for n in orders if n >= 1}
    # The sums: "cdf" = Σ a_k Φ(u_k), "tau_pdf" = Σ a_k τ_k φ(u_k), and n ≥ 1 as they are.
    sums: list[str | int] = ["cdf"] if (0 in orders or -1 in orders) else []
    sums += ["tau_pdf"] if -1 in orders else []
    sums += [n for n in orders if n >= 1]

    def term(k, acc):
        r = jax.lax.rsqrt(scales2[k] + v)  # 1 / τ_k
        u = m * r
        pdf = jnp.exp(-0.5 * u * u) * (1.0 / math.sqrt(2.0 * math.pi))
        out = []
        for a, key in zip(acc, sums):
            if key == "cdf":
                g = _normal_cdf_from_pdf(u, pdf)
            elif key == "tau_pdf":
                g = pdf / r
            else:
                n = int(key)
                sign = 1.0 if n % 2 else -1.0  # (−1)^{n−1}
                g = sign * _horner(hermite[n], u) * pdf * r**n
            out.append(a + weights[k] * g)
        return tuple(out)

    zeros = tuple(jnp.zeros_like(m) for _ in sums)
    acc = dict(zip(sums, jax.lax.fori_loop(0, len(scales), term, zeros)))
    exact = _at_zero_variance(orders, m)
    zero = v == 0
    out = []
    for n, f0 in zip(orders, exact):
        value = m * acc["cdf"] + acc["tau_pdf"] if n == -1 else acc["cdf" if n == 0 else n]
        out.append(jnp.where(zero, f0, value))
    return tuple(out)


def _window_moments(orders: tuple[int, ...], m: Array, v: Array) -> tuple[Array, ...]:
    """Eqs. (I2)–(I5): closed form plus the window rule on the decaying remainder."""
    nodes, half_width, y_max = _window(m.dtype)
    v = jnp.where(v > 0, v, 0.0)  # v < 0 (e.g. round-off in an ODE) is read as v = 0
    zero = v == 0
    sd = jnp.sqrt(jnp.where(zero, 1.0, v))  # v = 0 is answered below; keep this branch finite
    mu = jnp.abs(m)
    t = mu / sd
    # The window of eq. (I5) in z = (y − μ)/√v: the part of μ ± L√v inside y ∈ [0, Y].
    lo = jnp.maximum(-t, -half_width)
    hi = jnp.maximum(lo, jnp.minimum((y_max - mu) / sd, half_width))  # empty when μ ≫ Y
    centre = 0.5 * (lo + hi)
    radius = 0.5 * (hi - lo)
    x_nodes, w_nodes = _legendre(nodes)
    x_nodes = jnp.asarray(x_nodes, m.dtype)
    w_nodes = jnp.asarray(w_nodes, m.dtype)
    polys = {n: _sigmoid_derivative_qd(n) for n in orders if n >= 1}

    def node(i, acc):
        z = centre + radius * x_nodes[i]
        y = jnp.maximum(mu + sd * z, 0.0)
        # N(y; μ, v) dy = φ(z) dz and N(−y; μ, v) = N(y; μ, v) e^{−2μy/v}, y/√v = t + z ≥ 0.
        w_plus = w_nodes[i] * jnp.exp(-0.5 * z * z)
        w_minus = w_plus * jnp.exp(-2.0 * t * jnp.maximum(t + z, 0.0))
        w_odd = w_plus + w_minus
        w_even = w_plus - w_minus
        e = jnp.exp(-y)
        s = e / (1.0 + e)  # σ(−y), full relative precision in the tail
        q = s - s * s  # σ'(−y)
        qd = q * (1.0 - 2.0 * s)  # σ''(−y)
        out = []
        for a, n in zip(acc, orders):
            if n == -1:
                g = _log1p_exp_neg(e, s)
            elif n == 0:
                g = s
            else:
                b, coef = polys[n]
                tail: tuple[float, ...] = coef[1:]
                g = (qd if b else q) * (_estrin(tail, q) if len(tail) > 1 else tail[0])  # pyright: ignore[reportGeneralTypeIssues]
            out.append(a + (w_odd if _parity(n) > 0 else w_even) * g)
        return tuple(out)

    acc = jax.lax.fori_loop(0, nodes, node, tuple(jnp.zeros_like(m) for _ in orders))
    tt = m / sd
    cdf = _normal_cdf(tt)
    pdf = jnp.exp(-0.5 * tt * tt) / math.sqrt(2.0 * math.pi)
    exact = _at_zero_variance(orders, m)
    nonneg = m >= 0
    out = []
    for n, a, f0 in zip(orders, acc, exact):
        # Eqs. (I2)–(I4) at mean μ = |m|; for m < 0 the remainder is ε_n times that at |m|.
        sign = -1.0 if n >= 0 and n % 2 == 0 else 1.0
        remainder = radius * a * jnp.where(nonneg, sign, sign * _parity(n))
        if n == -1:
            closed = m * cdf + sd * pdf  # eq. (I2): E[max(X, 0)]
        elif n == 0:
            closed = cdf  # eq. (I3): P(X > 0)
        else:
            closed = jnp.zeros_like(m)  # eq. (I4): no closed-form part
        out.append(jnp.where(zero, f0, closed + remainder))
    return tuple(out)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _sigmoid_moments(orders: tuple[int, ...], kernel: str, m: Array, v: Array) -> tuple[Array, ...]:
    return _moments(orders, kernel, m, v)


@_sigmoid_moments.defjvp
def _sigmoid_moments_jvp(
    orders: tuple[int, ...],
    kernel: str,
    primals: tuple[Array, Array],
    tangents: tuple[Array, Array],
) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
    # Heat equation, eq. (I1): ∂_m E[f_n] = E[f_{n+1}], ∂_v E[f_n] = ½ E[f_{n+2}]; all the orders
    # needed (n, n + 1, n + 2) in one joint call, itself differentiable by this same rule.
    m, v = primals
    dm, dv = tangents
    wanted = tuple(sorted(set(orders) | {n + 1 for n in orders} | {n + 2 for n in orders}))
    values = dict(zip(wanted, _sigmoid_moments(wanted, kernel, m, v)))
    out = tuple(values[n] for n in orders)
    d_out = tuple(values[n + 1] * dm + 0.5 * values[n + 2] * dv for n in orders)
    return out, d_out


# Compiled once per (orders, shape, dtype) for eager callers; inlined when already under `jax.jit`.
_sigmoid_moments_jit = jax.jit(_sigmoid_moments, static_argnums=(0, 1))


def _check_order(n: object, name: str) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < -1:
        raise ValueError(f"`{name}` must be a Python int ≥ -1, got {n!r}.")


def _as_floats(m: ArrayLike, v: ArrayLike) -> tuple[Array, Array]:
    dtype = jnp.result_type(m, v, 0.0)  # a weak 0.0: floats keep their width, ints → float
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"`m` and `v` must be real, got dtype {dtype}.")
    m, v = jnp.broadcast_arrays(jnp.asarray(m, dtype), jnp.asarray(v, dtype))
    return m, v


def sigmoid_moments(
    orders: tuple[int, ...], m: ArrayLike, v: ArrayLike, *, kernel: str = "accurate"
) -> tuple[Array, ...]:
    """Gaussian expectations of softplus, σ and derivatives of σ, several orders at once.

    Computes E[f_n(m + √v Z)] for Z ~ N(0, 1) and every n in `orders`, where f_{-1} = softplus,
    f_0 = σ and f_n = σ^{(n)} for n ≥ 1, with one set of terms shared by all orders
    (docs/theory.md, eqs. (I6), (I7); float32: (I2)–(I5)): about the cost of one order. Accurate
    to ≤ 1e-13 absolute in float64 for −1 ≤ n ≤ 4 at every m and v ≥ 0 (a bound, not only a
    scan); v = 0 returns f_n(m) exactly.

    Differentiable to any order in `m` and `v` through a `jax.custom_jvp` built on the heat
    equation (eq. (I1)), which evaluates the shifted orders n + 1, n + 2 in one joint call;
    derivatives are finite at v = 0. Compatible with `jax.jit` and `jax.vmap`.

    **Arguments:**

    - `orders`: which functions, a static tuple of Python ints ≥ −1 (repeats allowed).
    - `m`: the mean; broadcasts against `v`.
    - `v`: the variance, ≥ 0 (negative values are treated as 0); broadcasts against `m`.
    - `kernel`: the rule, "accurate" (default, eq. (I7): 27 terms) or "fast" (eq. (I6): in
      float64 a 10-term probit mixture, absolute error ≤ 1e-9 for orders ≤ 2, ≤ 5e-9 for 3 and
      ≤ 3e-8 for 4 at every (m, v), about 0.4× the accurate rule's cost; float32 is the same
      window rule either way).

    **Returns:** a tuple with one array per entry of `orders`, each of the broadcast shape of `m`
    and `v`, in their common floating dtype (float32 stays float32).

    **Example:**
    ```python
    sp, s, ds = sigmoid_moments((-1, 0, 1), 0.5, 2.0)  # E[softplus], E[σ], E[σ'] at once
    sigmoid_moments((0,), 0.0, 4.0)  # (0.5,) by symmetry
    jax.grad(lambda v: sigmoid_moments((0,), 1.0, v)[0])(2.0)  # ½ E[σ''(1 + √2 Z)]
    ```
    """
    if not isinstance(orders, tuple) or not orders:
        raise ValueError(f"`orders` must be a non-empty tuple of Python ints ≥ -1, got {orders!r}.")
    for n in orders:
        if not isinstance(n, int) or isinstance(n, bool) or n < -1:
            raise ValueError(f"`orders` must be a tuple of Python ints ≥ -1, got {orders!r}.")
    check_kernel(kernel)
    m, v = _as_floats(m, v)
    distinct = tuple(sorted(set(orders)))
    values = dict(zip(distinct, _sigmoid_moments_jit(distinct, kernel, m, v)))
    return tuple(values[n] for n in orders)


def sigmoid_moment(n: int, m: ArrayLike, v: ArrayLike) -> Float[Array, "..."]:
    """Gaussian expectation of softplus, the logistic sigmoid σ, or a derivative of σ.

    Computes E[f_n(m + √v Z)] for Z ~ N(0, 1), where f_{-1} = softplus, f_0 = σ and
    f_n = σ^{(n)} (the n-th derivative) for n ≥ 1. Accurate to ≤ 1e-13 absolute in float64 for
    n ≤ 4, at every m and v ≥ 0 (docs/theory.md, eq. (I7)); v = 0 returns f_n(m) exactly. The
    single-order form of `sigmoid_moments`, which computes several orders for the price of one.

    Differentiable to any order in `m` and `v` through a `jax.custom_jvp` built on the heat
    equation ∂_m E[f_n] = E[f_{n+1}], ∂_v E[f_n] = ½ E[f_{n+2}] (eq. (I1)); derivatives are finite
    at v = 0. Compatible with `jax.jit` and `jax.vmap`.

    **Arguments:**

    - `n`: which function, a static Python int ≥ −1.
    - `m`: the mean; broadcasts against `v`.
    - `v`: the variance, ≥ 0 (negative values are treated as 0); broadcasts against `m`.

    **Returns:** an array of the broadcast shape of `m` and `v`, in their common floating dtype.

    **Example:**
    ```python
    sigmoid_moment(0, 0.0, 4.0)  # 0.5 by symmetry
    sigmoid_moment(-1, 1.0, 0.0)  # softplus(1)
    jax.grad(sigmoid_moment, argnums=2)(0, 1.0, 2.0)  # ½ E[σ''(1 + √2 Z)]
    ```
    """
    _check_order(n, "n")
    m, v = _as_floats(m, v)
    return _sigmoid_moments_jit((n,), "accurate", m, v)[0]
