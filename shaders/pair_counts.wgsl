// Popcounts of every cylinder pair of one (probe, candidate) item: one
// invocation per pair, writing (cells valid in both, |c_a|b|, |c_b|a|,
// |c_a|b xor c_b|a|). Used to check, count for count, that the GPU computes
// the CPU's gamma::pair_counts. Prepended with shaders/shared/mcc.wgsl.

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let item = items[0];
    let na = blob_n(probes[item.probe]);
    let nb = blob_n(gallery[item.cand]);
    let p = gid.x;
    if (p >= na * nb) {
        return;
    }
    let a = cyl_offset(item.probe, p / nb);
    let b = cyl_offset(item.cand, p % nb);
    let c = layer_counts(a, b);
    results[p] = vec4<u32>(mask_count(a, b), c.x, c.y, c.z);
}
