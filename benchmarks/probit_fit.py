"""Fit the probit mixture of the fast 1-D kernel (docs/theory.md, eq. (I6)).

σ(x) ≈ Σ_k a_k Φ(x / s_k) with Σ_k a_k = 1. The N scales and weights are fitted jointly for
softplus and σ, σ′, …, σ⁽⁴⁾ (each term's softplus is x Φ(x/s) + s φ(x/s), its n-th derivative
(−1)^{n−1} He_{n−1}(x/s) φ(x/s) / s^n), by Levenberg–Marquardt with an analytic Jacobian inside
iteratively reweighted least squares (Lawson's scheme towards the minimax error), from random
starts and from the (N − 1)-term fit. The errors are only needed on x ≥ 0: the error of σ and of
the odd derivatives is odd in x, that of softplus and the even derivatives even.

The residual of order n is divided by its tolerance weight (`--weights`, six numbers for
n = −1 … 4), so that the higher derivatives, which the theory needs less precisely, may err more.
Prints the scales, weights and the sup errors for n = −1 … 6 on a grid of spacing 1e-3 over
[0, 60], in the form pasted into `modecollapse/_numerics/_integrals.py`.

    python benchmarks/probit_fit.py [--terms 10] [--seed 2] [--starts 5]
        [--weights 1,1,1,1,20,50] [--out benchmarks/results/probit_fit.json]
"""

import argparse
import json

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit, ndtr

ORDERS = (-1, 0, 1, 2, 3, 4)


def _phi(u):
    return np.exp(-0.5 * u * u) / np.sqrt(2.0 * np.pi)


def _hermite_e(k, u):
    h0, h1 = np.ones_like(u), u
    if k == 0:
        return h0
    for j in range(1, k):
        h0, h1 = h1, u * h1 - j * h0
    return h1


def reference(n, x):
    """f_n(x): softplus (n = −1), σ (0) and σ⁽ⁿ⁾ in the polynomials of q = σ(1 − σ), d = 1 − 2σ."""
    s = expit(x)
    q, d = s * expit(-x), 1.0 - 2.0 * s
    return {
        -1: np.logaddexp(0.0, x),
        0: s,
        1: q,
        2: q * d,
        3: q - 6.0 * q * q,
        4: q * d * (1.0 - 12.0 * q),
        5: q - 30.0 * q**2 + 120.0 * q**3,
        6: q * d * (1.0 - 60.0 * q + 360.0 * q * q),
    }[n]


def term(n, x, s):
    """The n-th function of each mixture term, shape (len(x), len(s))."""
    u = x[:, None] / s
    if n == -1:
        return x[:, None] * ndtr(u) + s * _phi(u)
    if n == 0:
        return ndtr(u)
    return (-1.0) ** (n - 1) * _hermite_e(n - 1, u) * _phi(u) / s**n


def _unpack(p):
    k = len(p) // 2
    b = p[k:]
    a = np.exp(b - b.max())
    return np.exp(p[:k]), a / a.sum()


def _residual_and_jacobian(p, x, tol, w):
    s, a = _unpack(p)
    res, jac = [], []
    for n in ORDERS:
        fn = term(n, x, s)
        model = fn @ a
        res.append((model - reference(n, x)) / tol[n])
        # Heat equation in s²: ∂_s F_n = s F_{n+2}, so ∂_{log s} F_n = s² F_{n+2}; softmax weights.
        jac.append(
            np.concatenate([a * s * s * term(n + 2, x, s), a * (fn - model[:, None])], 1) / tol[n]
        )
    return np.concatenate(res) * w, np.concatenate(jac) * w[:, None]


def _minimax(p, x, tol, iterations):
    w = np.ones(len(ORDERS) * len(x))
    ones = w.copy()
    best = (np.abs(_residual_and_jacobian(p, x, tol, ones)[0]).max(), p)
    for _ in range(iterations):
        fit = least_squares(
            lambda q: _residual_and_jacobian(q, x, tol, w)[0],
            p,
            jac=lambda q: _residual_and_jacobian(q, x, tol, w)[1],
            method="lm",
            xtol=1e-15,
            ftol=1e-15,
            gtol=1e-15,
            max_nfev=400,
        )
        p = fit.x
        e = np.abs(_residual_and_jacobian(p, x, tol, ones)[0])
        if e.max() < best[0]:
            best = (e.max(), p.copy())
        w = w * np.sqrt(e / e.max() + 1e-6)  # Lawson: weight up where the error is largest
        w /= w.mean()
    return best


def sup_errors(scales, weights, orders=tuple(range(-1, 7))):
    """sup over x ∈ [0, 60] (spacing 1e-3) of |f_n(x) − Σ_k a_k ∂_x^n Φ(x/s_k)|, per order."""
    x = np.linspace(0.0, 60.0, 60001)
    s, a = np.asarray(scales), np.asarray(weights)
    return {n: float(np.abs(term(n, x, s) @ a - reference(n, x)).max()) for n in orders}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--terms", type=int, default=10)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--weights", default="1,1,1,1,20,50")
    parser.add_argument("--out", default="benchmarks/results/probit_fit.json")
    args = parser.parse_args()
    tol = dict(zip(ORDERS, map(float, args.weights.split(","))))
    x = np.concatenate(
        [np.linspace(0, 8, 1201), np.linspace(8, 20, 401)[1:], np.linspace(20, 40, 81)[1:]]
    )
    rng = np.random.default_rng(args.seed)
    best = None
    with np.errstate(all="ignore"):
        for start in range(args.starts):
            s0 = np.sort(np.exp(rng.uniform(np.log(0.7), np.log(4.5), args.terms)))
            p0 = np.concatenate([np.log(s0), rng.normal(0.0, 0.5, args.terms)])
            err, p = _minimax(p0, x, tol, 15)
            print(f"start {start}: weighted max error {err:.2e}", flush=True)
            if best is None or err < best[0]:
                best = (err, p)
        err, p = _minimax(best[1], x, tol, 60)
    scales, weights = _unpack(p)
    order = np.argsort(scales)
    scales, weights = scales[order], weights[order]
    errors = sup_errors(scales, weights)
    print("_PROBIT_SCALES = (" + ", ".join(repr(float(c)) for c in scales) + ")")
    print("_PROBIT_WEIGHTS = (" + ", ".join(repr(float(c)) for c in weights) + ")")
    print("_PROBIT_ERROR = {" + ", ".join(f"{n}: {e:.2e}" for n, e in errors.items()) + "}")
    record = {
        "terms": args.terms,
        "seed": args.seed,
        "starts": args.starts,
        "weights": tol,
        "scales": scales.tolist(),
        "mixture_weights": weights.tolist(),
        "sup_error_on_0_60": {str(n): e for n, e in errors.items()},
    }
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
