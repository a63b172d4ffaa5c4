// MCC re-scoring: one workgroup scores one (probe, candidate) pair with the
// bit-based cylinder similarity and LSS-R, in integer arithmetic, giving
// exactly the CPU's ScoreParts (src/mcc/matcher.rs). Prepended with
// shaders/shared/mcc.wgsl.

const WG: u32 = 64u;
const CHUNK: u32 = 1024u;   // pairs examined per round (and keys held)
const MAXN: u32 = 256u;     // cylinders per template (prepared::MAX_CYLINDERS + 1)

var<workgroup> keys: array<u32, CHUNK>;
var<workgroup> top: array<u32, MAXN>;
var<workgroup> merged: array<u32, MAXN>;
var<workgroup> n_keys: atomic<u32>;
var<workgroup> shared_count: u32;
var<workgroup> top_len: u32;
var<workgroup> lambda: array<u32, MAXN>;
var<workgroup> lambda_next: array<u32, MAXN>;
var<workgroup> lambda0: array<u32, MAXN>;
var<workgroup> pair_i: array<u32, MAXN>;
var<workgroup> pair_j: array<u32, MAXN>;
var<workgroup> eff: array<u32, MAXN>;
var<workgroup> total: atomic<u32>;

// Number of entries of `top[0..len)` (sorted descending) greater than x.
fn greater_in_top(len: u32, x: u32) -> u32 {
    var lo = 0u;
    var hi = len;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (top[mid] > x) { lo = mid + 1u; } else { hi = mid; }
    }
    return lo;
}

// Number of entries of `keys[0..len)` (sorted descending) greater than x.
fn greater_in_keys(len: u32, x: u32) -> u32 {
    var lo = 0u;
    var hi = len;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (keys[mid] > x) { lo = mid + 1u; } else { hi = mid; }
    }
    return lo;
}

// rho(t, k) in Q15 (lssr::rho_from).
fn rho(pa: u32, na: u32, gb: u32, nb: u32, t: u32, k: u32) -> u32 {
    let it = pair_i[t];
    let jt = pair_j[t];
    let ik = pair_i[k];
    let jk = pair_j[k];
    let ga = probes[geom_offset(pa, na) + it * na + ik];
    let gg = gallery[geom_offset(gb, nb) + jt * nb + jk];
    let z1 = z1_of(ga & 0xffffu, gg & 0xffffu);
    if (z1 == 0u) {
        return 0u;
    }
    let ta = probe_angle(pa, na, it);
    let tb = gallery_angle(gb, nb, jt);
    let ka = probe_angle(pa, na, ik);
    let kb = gallery_angle(gb, nb, jk);
    let d2 = angle_diff((ta - ka) & 0xffffu, (tb - kb) & 0xffffu);
    let d3 = angle_diff((ta - (ga >> 16u)) & 0xffffu, (tb - (gg >> 16u)) & 0xffffu);
    let z2 = luts[params.lut_z2 + (d2 >> 3u)];
    let z3 = luts[params.lut_z3 + (d3 >> 3u)];
    return (((z1 * z2) >> 15u) * z3) >> 15u;
}

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let item_index = wid.x + wid.y * nwg.x;
    if (item_index >= params.n_items) {
        return;
    }
    let item = items[item_index];
    let pa = item.probe;
    let gb = item.cand;
    let na = blob_n(probes[pa]);
    let nb = blob_n(gallery[gb]);
    if (na == 0u || nb == 0u) {
        if (tid == 0u) {
            results[item_index] = vec4<u32>(0u, 0u, 0u, 0u);
        }
        return;
    }
    let n_p = luts[params.lut_np + min(min(na, nb), 255u)];
    let n_r_max = min(na, nb);
    if (tid == 0u) {
        top_len = 0u;
        atomicStore(&total, 0u);
    }
    workgroupBarrier();

    // Gamma: rounds of CHUNK pairs; the non-zero keys of a round are sorted
    // and merged into the running top-n_R list.
    let pairs = na * nb;
    for (var base = 0u; base < pairs; base += CHUNK) {
        if (tid == 0u) {
            atomicStore(&n_keys, 0u);
        }
        for (var s = tid; s < CHUNK; s += WG) {
            keys[s] = 0u;
        }
        workgroupBarrier();
        let end = min(base + CHUNK, pairs);
        for (var p = base + tid; p < end; p += WG) {
            let i = p / nb;
            let j = p % nb;
            if (angle_diff(probe_angle(pa, na, i), gallery_angle(gb, nb, j)) <= params.delta_theta) {
                let g = gamma_pair(cyl_offset(pa, i), cyl_offset(gb, j));
                if (g > 0u) {
                    let slot = atomicAdd(&n_keys, 1u);
                    keys[slot] = (g << 16u) | (0xffffu - p);
                }
            }
        }
        workgroupBarrier();
        if (tid == 0u) {
            shared_count = atomicLoad(&n_keys);
        }
        let count = workgroupUniformLoad(&shared_count);
        if (count == 0u) {
            continue;
        }
        var size = 1u;
        while (size < count) {
            size = size << 1u;
        }
        // Bitonic sort of keys[0..size), descending (unused slots hold 0).
        for (var k = 2u; k <= size; k = k << 1u) {
            for (var j = k >> 1u; j > 0u; j = j >> 1u) {
                for (var i = tid; i < size; i += WG) {
                    let l = i ^ j;
                    if (l > i) {
                        let a = keys[i];
                        let b = keys[l];
                        let first = (i & k) == 0u;
                        if ((first && a < b) || (!first && a > b)) {
                            keys[i] = b;
                            keys[l] = a;
                        }
                    }
                }
                workgroupBarrier();
            }
        }
        // Merge the sorted round into the top list (keys are distinct).
        let t_len = workgroupUniformLoad(&top_len);
        let m_len = min(n_r_max, t_len + count);
        for (var i = tid; i < t_len; i += WG) {
            let pos = i + greater_in_keys(count, top[i]);
            if (pos < m_len) { merged[pos] = top[i]; }
        }
        for (var j = tid; j < count; j += WG) {
            let pos = j + greater_in_top(t_len, keys[j]);
            if (pos < m_len) { merged[pos] = keys[j]; }
        }
        workgroupBarrier();
        for (var i = tid; i < m_len; i += WG) {
            top[i] = merged[i];
        }
        if (tid == 0u) {
            top_len = m_len;
        }
        workgroupBarrier();
    }

    let n_r = workgroupUniformLoad(&top_len);
    if (n_r == 0u) {
        if (tid == 0u) {
            results[item_index] = vec4<u32>(0u, n_p, 0u, 0u);
        }
        return;
    }
    for (var t = tid; t < n_r; t += WG) {
        let key = top[t];
        let p = 0xffffu - (key & 0xffffu);
        pair_i[t] = p / nb;
        pair_j[t] = p % nb;
        lambda[t] = key >> 16u;
        lambda0[t] = key >> 16u;
    }
    workgroupBarrier();

    // Relaxation (w_R = 1/2), rho recomputed each iteration.
    if (n_r >= 2u) {
        for (var it = 0u; it < params.n_rel; it++) {
            for (var t = tid; t < n_r; t += WG) {
                var support = 0u;
                for (var k = 0u; k < n_r; k++) {
                    if (k != t) {
                        support += (rho(pa, na, gb, nb, t, k) * lambda[k]) >> 15u;
                    }
                }
                lambda_next[t] = (lambda[t] + support / (n_r - 1u)) >> 1u;
            }
            workgroupBarrier();
            for (var t = tid; t < n_r; t += WG) {
                lambda[t] = lambda_next[t];
            }
            workgroupBarrier();
        }
    }

    // Efficiency and the n_P best pairs (ties by rank).
    for (var t = tid; t < n_r; t += WG) {
        eff[t] = (lambda[t] << 15u) / lambda0[t];
    }
    workgroupBarrier();
    let take = min(n_p, n_r);
    for (var t = tid; t < n_r; t += WG) {
        var rank = 0u;
        for (var k = 0u; k < n_r; k++) {
            if (eff[k] > eff[t] || (eff[k] == eff[t] && k < t)) {
                rank += 1u;
            }
        }
        if (rank < take) {
            atomicAdd(&total, lambda[t]);
        }
    }
    workgroupBarrier();
    if (tid == 0u) {
        results[item_index] = vec4<u32>(atomicLoad(&total), n_p, n_r, 0u);
    }
}
