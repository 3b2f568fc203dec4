"""An independent high-precision reference for Gaussian softmax statistics with 4 logits.

E[LSE(ℓ)], E[π(ℓ)], E[π(ℓ)π(ℓ)ᵀ] for ℓ ~ N(mean, cov), n = 4, any PSD cov, by:

- one logit c integrated in closed form given the others (docs/theory.md, eq. (G5); the 1-D
  kernel is checked against scipy quadrature to 1e-12 in tests/test_integrals.py), with c chosen
  differently from the package's rule (the smallest positive conditional variance, not the
  largest), so that the remaining plane and its features differ;
- the remaining two coordinates by nested *adaptive* Gauss–Kronrod (7/15) quadrature on
  [−9, 9]², broken at every pairwise tie (inner) and at every tie centre and triple point
  (outer), and subdivided until the Kronrod–Gauss differences fall below the tolerance.

It shares no quadrature with the package's graded rule (G6)–(G8): no fixed panels, no grading,
no Gauss–Legendre, no truncation at ±6.5. Slow (seconds to a minute per case); used to write
tests/data/softmax_reference.npz (benchmarks/softmax_reference.py) and in slow tests.
"""

import itertools

import numpy as np

_XK = np.array(
    [
        0.991455371120812639206854697526329,
        0.949107912342758524526189684047851,
        0.864864423359769072789712788640926,
        0.741531185599394439863864773280788,
        0.586087235467691130294144845693013,
        0.405845151377397166906606412076961,
        0.207784955007898467600689403773245,
        0.000000000000000000000000000000000,
    ]
)
_WK = np.array(
    [
        0.022935322010529224963732008058970,
        0.063092092629978553290700663189204,
        0.104790010322250183839876322541518,
        0.140653259715525918745189590510238,
        0.169004726639267902826583426598550,
        0.190350578064785409913256402421014,
        0.204432940075298892414161999234649,
        0.209482141084727828012999174891714,
    ]
)
_WG = np.array(
    [
        0.129484966168869693270611432679082,
        0.279705391489276667901467771423780,
        0.381830050505118944950369775488975,
        0.417959183673469387755102040816327,
    ]
)
_NODES = np.concatenate([-_XK[:-1], _XK[::-1]])  # 15 Kronrod nodes, ascending
_W15 = np.concatenate([_WK[:-1], _WK[::-1]])
_W7 = np.zeros(15)
_W7[1:14:2] = np.concatenate([_WG[:-1], _WG[::-1]])
_HALF = 9.0


def adaptive(f, points, tol, lo=-_HALF, hi=_HALF, max_rounds=40):
    """∫_lo^hi f(z) φ(z) dz by adaptive Gauss–Kronrod; f maps (P,) → (P, m)."""
    pts = np.unique(np.clip(np.concatenate([[lo, hi], np.asarray(points, float)]), lo, hi))
    a, b = pts[:-1], pts[1:]
    keep = b - a > 1e-14
    a, b = a[keep], b[keep]
    total = 0.0
    for _ in range(max_rounds):
        mid, half = 0.5 * (a + b), 0.5 * (b - a)
        z = (mid[:, None] + half[:, None] * _NODES).ravel()
        vals = f(z) * (np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi))[:, None]
        vals = vals.reshape(len(a), 15, -1)
        k = np.einsum("j,ijm->im", _W15, vals) * half[:, None]
        g = np.einsum("j,ijm->im", _W7, vals) * half[:, None]
        err = np.max(np.abs(k - g), axis=1)
        # accept a panel when its error is below its share of the tolerance
        ok = err <= tol * np.maximum(half / (hi - lo), 1e-3)
        total = total + np.sum(k[ok], axis=0)
        if ok.all():
            return total
        a, b = a[~ok], b[~ok]
        m = 0.5 * (a + b)
        a, b = np.concatenate([a, m]), np.concatenate([m, b])
    return total + np.sum(k[~ok], axis=0)


def _ties_along(a, b, width):
    """z where two of the logits a + b z tie, with the tie's width in z."""
    out = []
    for j, k in itertools.combinations(range(len(a)), 2):
        db = b[j] - b[k]
        if abs(db) > 1e-12:
            z0, w = -(a[j] - a[k]) / db, width[j, k] / abs(db)
            out += [z0 + d * w for d in (-8, -2, -0.5, 0, 0.5, 2, 8)]
    return out


def four_logit_reference(mean, cov, tol=1e-11, kernel=None):
    """The flattened (LSE, π, ππᵀ) for n = 4 logits, mean (4,), cov (4, 4) PSD.

    `kernel(t, v)`: the 1-D kernel, (E softplus, E σ, E σ') of t + √v Z for arrays t and a
    scalar v (default: the package's `sigmoid_moments`, checked against scipy elsewhere).
    """
    if kernel is None:
        import jax.numpy as jnp

        import modecollapse as mc

        def kernel(t, v):
            out = mc.sigmoid_moments((-1, 0, 1), jnp.asarray(t), jnp.asarray(v))
            return [np.asarray(x) for x in out]

    mean = np.asarray(mean, float)
    cov = 0.5 * (np.asarray(cov, float) + np.asarray(cov, float).T)
    n = len(mean)
    assert n == 4
    # conditional variance of each logit (relative to the others' differences)
    D = np.concatenate([-np.ones((n - 1, 1)), np.eye(n - 1)], 1)

    def conditional(c):
        perm = list(range(n))
        perm[c], perm[-1] = perm[-1], perm[c]
        S = D @ cov[np.ix_(perm, perm)] @ D.T
        lam, V = np.linalg.eigh(S[:-1, :-1])
        scale = max(np.max(np.diag(S)), 1e-300)
        act = lam > 1e-12 * scale
        root = np.sqrt(np.where(act, lam, 1.0))
        b = np.where(act, (S[-1, :-1] @ V) / root, 0.0)
        A = V * np.where(act, root, 0.0)
        return max(S[-1, -1] - np.sum(b * b), 0.0), A, b, perm

    conds = [conditional(c) for c in range(n)]
    v_all = np.array([x[0] for x in conds])
    positive = np.where(v_all > 1e-12 * max(v_all.max(), 1e-300))[0]
    c = int(positive[np.argmin(v_all[positive])]) if len(positive) else 0
    v_c, A, b, perm = conds[c]
    m = mean[perm]
    alpha = np.concatenate([[0.0], m[1:] - m[0]])
    B = np.concatenate([np.zeros((1, 2)), A, b[None]], 0)  # (4, 2): logits = α + B y
    soft = np.sqrt(1.0 + v_c)
    width = np.ones((n, n))
    width[-1, :] = width[:, -1] = soft

    def rows(logits):
        rest = logits[:, :-1]
        top = np.max(rest, axis=1, keepdims=True)
        R = top[:, 0] + np.log(np.sum(np.exp(rest - top), axis=1))
        rho = np.exp(rest - R[:, None])
        sp, s0, s1 = kernel(logits[:, -1] - R, v_c)
        pi = np.concatenate([rho * (1 - s0)[:, None], s0[:, None]], 1)
        outer = np.zeros((len(R), n, n))
        outer[:, :-1, :-1] = rho[:, :, None] * rho[:, None, :] * (1 - s0 - s1)[:, None, None]
        outer[:, :-1, -1] = outer[:, -1, :-1] = rho * s1[:, None]
        outer[:, -1, -1] = s0 - s1
        return np.concatenate([(R + sp)[:, None], pi, outer.reshape(len(R), -1)], 1)

    def inner(y1s):
        out = []
        for y1 in y1s:
            a = alpha + B[:, 0] * y1
            bb = B[:, 1]
            f = lambda z, a=a, bb=bb: rows(a[None, :] + bb[None, :] * z[:, None])  # noqa: E731
            out.append(adaptive(f, _ties_along(a, bb, width), tol))
        return np.array(out)

    # outer breakpoints: every pair's centre along y1 (at y2 = 0) and every triple point's y1
    outer_pts = _ties_along(alpha, B[:, 0], width)
    for i, j, k in itertools.combinations(range(n), 3):
        M = np.array([B[i] - B[j], B[i] - B[k]])
        if abs(np.linalg.det(M)) > 1e-12 * max(np.abs(M).max() ** 2, 1e-300):
            y = np.linalg.solve(M, -np.array([alpha[i] - alpha[j], alpha[i] - alpha[k]]))
            w = 1.0 / max(np.abs(M[:, 0]).max(), 1e-12)
            outer_pts += [y[0] + d * w for d in (-8, -2, -0.5, 0, 0.5, 2, 8)]
    total = adaptive(inner, outer_pts, tol)
    total[0] += m[0]
    # undo the permutation of the logits
    lse, pi, outer = total[0], total[1 : 1 + n], total[1 + n :].reshape(n, n)
    inv = np.argsort(perm)
    return np.concatenate([[lse], pi[inv], outer[np.ix_(inv, inv)].ravel()])
