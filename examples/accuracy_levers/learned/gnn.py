"""A learned representation from the minutiae themselves (outside the product).

A graph network over each minutia's K nearest neighbours (edge features in
the minutia's own frame: distance, direction to the neighbour, neighbour's
direction; so translation- and rotation-invariant), max- and mean-pooled per
minutia, two node layers, then the minutiae pooled (square root of the sum
and max) into 256 dimensions; trained with a symmetric InfoNCE loss on two
impressions of each of B synthetic fingers per step (training seed only).
Every 500 steps it prints exact-search hit rates on the evaluation
population (impression 1 of 1,000 against impression 0 of 10,000) alone and
fused with the shipped embedding (z-scored similarities, weights 0.5 and 1).

    python gnn.py K STEPS B        (defaults 16 2000 256)

Data: `cargo run --release --example accuracy_levers -- dump 30000 target/learned`
(WHORL_LEARNED_DATA names another folder). See README.md.
"""
import os, sys, time
import numpy as np
import jax, jax.numpy as jnp
import optax

DATA = os.environ.get("WHORL_LEARNED_DATA", "target/learned")
P = 80
K = int(sys.argv[1]) if len(sys.argv) > 1 else 16
STEPS = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
B = int(sys.argv[3]) if len(sys.argv) > 3 else 256
W1, W2, W3, DOUT = 32, 64, 128, 256
IMPS = 4


def load(path):
    a = np.fromfile(os.path.join(DATA, path), dtype=np.float32).reshape(-1, 2 + 128 * 3)
    fid = a[:, 0].astype(np.int64)
    n = np.minimum(a[:, 1].astype(np.int64), P)
    pts = a[:, 2:].reshape(-1, 128, 3)[:, :P].copy()
    mask = (np.arange(P)[None, :] < n[:, None]).astype(np.float32)
    return fid, pts, mask


def edges(pts, mask):
    # pts (N,P,3) mask (N,P) -> edge feats (N,P,K,5), emask (N,P,K)
    x, y, t = pts[..., 0], pts[..., 1], pts[..., 2]
    dx = x[:, None, :] - x[:, :, None]  # [i,j] = xj - xi
    dy = y[:, None, :] - y[:, :, None]
    d = jnp.sqrt(dx * dx + dy * dy)
    valid = (mask[:, None, :] * mask[:, :, None]) * (1 - jnp.eye(P))[None]
    dd = jnp.where(valid > 0, d, 1e9)
    negd, idx = jax.lax.top_k(-dd, K)  # nearest K
    dk = -negd
    ek = (dk < 1e8).astype(jnp.float32)
    take = lambda m: jnp.take_along_axis(m, idx, axis=2)
    dxk, dyk = take(dx), take(dy)
    tj = jnp.take_along_axis(jnp.broadcast_to(t[:, None, :], dx.shape), idx, axis=2)
    ti = t[:, :, None]
    phi = jnp.arctan2(-dyk, dxk)
    al = phi - ti
    be = tj - ti
    dk = jnp.where(ek > 0, dk, 0.0)
    f = jnp.stack([dk / 100.0, jnp.cos(al), jnp.sin(al), jnp.cos(be), jnp.sin(be)], -1) * ek[..., None]
    return f, ek


def init(key):
    ks = jax.random.split(key, 8)
    def lin(k, i, o):
        return {"w": jax.random.normal(k, (i, o)) * np.sqrt(2.0 / i), "b": jnp.zeros(o)}
    return {
        "e1": lin(ks[0], 5, W1), "e2": lin(ks[1], W1, W2),
        "n1": lin(ks[2], W2 * 2, W3), "n2": lin(ks[3], W3, W3),
        "o": lin(ks[4], W3 * 2, DOUT),
    }


def ap(l, x):
    return x @ l["w"] + l["b"]


def embed(params, pts, mask):
    f, ek = edges(pts, mask)
    h = jax.nn.relu(ap(params["e1"], f))
    h = jax.nn.relu(ap(params["e2"], h))  # (N,P,K,W2)
    hmax = jnp.max(jnp.where(ek[..., None] > 0, h, 0.0), axis=2)
    hmean = jnp.sum(h * ek[..., None], 2) / jnp.maximum(ek.sum(2)[..., None], 1)
    g = jnp.concatenate([hmax, hmean], -1)
    g = jax.nn.relu(ap(params["n1"], g))
    g = jax.nn.relu(ap(params["n2"], g))  # (N,P,W3)
    m = mask[..., None]
    s = jnp.sum(g * m, 1)
    s = jnp.sqrt(s + 1e-6)  # power normalisation of the sum
    mx = jnp.max(jnp.where(m > 0, g, 0.0), 1)
    z = ap(params["o"], jnp.concatenate([s, mx], -1))
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True)


def loss_fn(params, pa, ma, pb, mb, temp):
    za = embed(params, pa, ma)
    zb = embed(params, pb, mb)
    logits = za @ zb.T / temp
    lab = jnp.arange(za.shape[0])
    l1 = optax.softmax_cross_entropy_with_integer_labels(logits, lab).mean()
    l2 = optax.softmax_cross_entropy_with_integer_labels(logits.T, lab).mean()
    return (l1 + l2) / 2


def main():
    fid, pts, mask = load("train.pts")
    nf = len(fid) // IMPS
    pts = pts.reshape(nf, IMPS, P, 3)
    mask = mask.reshape(nf, IMPS, P)
    gfid, gp, gm = load("gal.pts")
    _, pp, pm = load("probe.pts")
    params = init(jax.random.PRNGKey(0))
    sched = optax.cosine_decay_schedule(2e-3, STEPS, 0.02)
    opt = optax.adamw(sched, weight_decay=1e-4)
    st = opt.init(params)
    temp = 0.05

    @jax.jit
    def step(params, st, pa, ma, pb, mb):
        l, g = jax.value_and_grad(loss_fn)(params, pa, ma, pb, mb, temp)
        u, st = opt.update(g, st, params)
        return optax.apply_updates(params, u), st, l

    emb_j = jax.jit(embed)

    def evaluate(params):
        G = np.concatenate([np.asarray(emb_j(params, gp[i:i + 500], gm[i:i + 500])) for i in range(0, len(gp), 500)])
        Q = np.concatenate([np.asarray(emb_j(params, pp[i:i + 500], pm[i:i + 500])) for i in range(0, len(pp), 500)])
        S = Q @ G.T
        mate = S[np.arange(len(Q)), np.arange(len(Q))]
        rank = (S > mate[:, None]).sum(1)
        out = [(rank < k).mean() * 100 for k in (10, 100, 500)]
        ge = np.fromfile(os.path.join(DATA, "gal.emb"), dtype=np.float32).reshape(-1, 512)
        pe = np.fromfile(os.path.join(DATA, "probe.emb"), dtype=np.float32).reshape(-1, 512)
        S2 = pe @ ge.T
        z = lambda M: (M - M.mean(1, keepdims=True)) / M.std(1, keepdims=True)
        for w in (0.5, 1.0):
            F = z(S2) + w * z(S)
            m2 = F[np.arange(len(Q)), np.arange(len(Q))]
            r2 = (F > m2[:, None]).sum(1)
            out += [(r2 < k).mean() * 100 for k in (10, 100, 500)]
        return out

    rng = np.random.default_rng(1)
    t0 = time.time()
    for it in range(STEPS):
        f = rng.choice(nf, B, replace=False)
        ia = rng.integers(0, IMPS, B)
        ib = (ia + rng.integers(1, IMPS, B)) % IMPS
        params, st, l = step(params, st, pts[f, ia], mask[f, ia], pts[f, ib], mask[f, ib])
        if it % 100 == 0 or it == STEPS - 1:
            msg = f"step {it} loss {float(l):.3f} {time.time()-t0:.0f}s"
            if it % 500 == 0 or it == STEPS - 1:
                msg += " eval 0.1%% %.1f 1%% %.1f 5%% %.1f | fused 0.5: %.1f %.1f %.1f | fused 1: %.1f %.1f %.1f" % tuple(evaluate(params))
            print(msg, flush=True)
            if it % 500 == 0:
                np.save(os.path.join(DATA, "gnn-params.npy"), jax.tree_util.tree_map(np.asarray, params), allow_pickle=True)
    np.save(os.path.join(DATA, "gnn-params.npy"), jax.tree_util.tree_map(np.asarray, params), allow_pickle=True)


main()
