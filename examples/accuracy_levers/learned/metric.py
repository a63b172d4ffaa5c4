"""Metric learning on the shipped pair histogram (outside the product).

Starts from the shipped model (centring and learned whitening, 1152 -> 512)
and fine-tunes it with a symmetric InfoNCE loss on two impressions of each
of B synthetic fingers per step (training seed only): MODE `lin` trains the
linear projection itself, `mlp` adds a residual one-hidden-layer network
(1024 units, output initialised to zero, so step 0 is the shipped model).
Prints exact-search hit rates on the evaluation population every 250 steps.

    python metric.py STEPS B LR TEMP MODE FINGERS   (defaults 2000 1024 1e-3 0.05 lin 30000)

Data: `cargo run --release --example accuracy_levers -- dump 30000 target/learned`
(WHORL_LEARNED_DATA names another folder). See README.md.
"""
import os, sys, time
import numpy as np
import jax, jax.numpy as jnp
import optax

DATA = os.environ.get("WHORL_LEARNED_DATA", "target/learned")
STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
B = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
LR = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-3
TEMP = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05
MODE = sys.argv[5] if len(sys.argv) > 5 else "lin"
NF = int(sys.argv[6]) if len(sys.argv) > 6 else 30000
DIN, DOUT, IMPS = 1152, 512, 4

def rd(p, d):
    return np.fromfile(os.path.join(DATA, p), dtype=np.float32).reshape(-1, d)

tr = rd("train.hist", DIN).reshape(30000, IMPS, DIN)[:NF]
gh, ph = rd("gal.hist", DIN), rd("probe.hist", DIN)
ge, pe = rd("gal.emb", DOUT), rd("probe.emb", DOUT)
m = np.fromfile(os.path.join(DATA, "model.f32"), dtype=np.float32)
mean, proj = m[:DIN], m[DIN:].reshape(DOUT, DIN)

def rates(G, Q):
    S = Q @ G.T
    mate = S[np.arange(len(Q)), np.arange(len(Q))]
    rank = (S > mate[:, None]).sum(1)
    return "0.1%% %.1f 1%% %.1f 5%% %.1f" % tuple((rank < k).mean() * 100 for k in (10, 100, 500))

print("shipped", rates(ge, pe), flush=True)

def nrm(z):
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True)

params = {"mean": jnp.asarray(mean), "proj": jnp.asarray(proj.T)}
if MODE == "mlp":
    H = 1024
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    params["w1"] = jax.random.normal(k1, (DIN, H)) * np.sqrt(2.0 / DIN)
    params["b1"] = jnp.zeros(H)
    params["w2"] = jnp.zeros((H, DOUT))

def embed(p, h):
    x = h - p["mean"]
    z = x @ p["proj"]
    if MODE == "mlp":
        z = z + jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"]
    return nrm(z)

print("init", rates(np.asarray(embed(params, gh)), np.asarray(embed(params, ph))), flush=True)

def loss_fn(p, a, b):
    za, zb = embed(p, a), embed(p, b)
    lg = za @ zb.T / TEMP
    lab = jnp.arange(a.shape[0])
    return (optax.softmax_cross_entropy_with_integer_labels(lg, lab).mean()
            + optax.softmax_cross_entropy_with_integer_labels(lg.T, lab).mean()) / 2

opt = optax.adam(optax.cosine_decay_schedule(LR, STEPS, 0.05))
st = opt.init(params)

@jax.jit
def step(p, st, a, b):
    l, g = jax.value_and_grad(loss_fn)(p, a, b)
    u, st = opt.update(g, st, p)
    return optax.apply_updates(p, u), st, l

rng = np.random.default_rng(1)
t0 = time.time()
for it in range(STEPS):
    f = rng.choice(NF, B, replace=False)
    ia = rng.integers(0, IMPS, B)
    ib = (ia + rng.integers(1, IMPS, B)) % IMPS
    params, st, l = step(params, st, tr[f, ia], tr[f, ib])
    if it % 250 == 0 or it == STEPS - 1:
        print(f"step {it} loss {float(l):.3f} {time.time()-t0:.0f}s",
              rates(np.asarray(embed(params, gh)), np.asarray(embed(params, ph))), flush=True)
np.save(os.path.join(DATA, f"metric-{MODE}.npy"), {k: np.asarray(v) for k, v in params.items()}, allow_pickle=True)
