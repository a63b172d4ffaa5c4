// Shared definitions of the MCC re-scoring kernels.
//
// Keep in sync with:
//   src/gpu/layout.rs    (GpuParams, GpuItem: the host side of these structs)
//   src/mcc/prepared.rs  (the blob layout read below, u64 words as pairs of u32)
//   src/mcc/lut.rs       (the lookup tables, concatenated into `luts`)
//   src/mcc/gamma.rs, src/mcc/lssr.rs (the CPU twin of every step)
//
// A prepared blob at u32 offset `o` with n cylinders:
//   u32[o]                                  n (bits 0-15), layout version (bits 16-31)
//   u32[o + 2 + 56 i .. + 8]                cylinder i: validity mask (208 cells in 256 bits)
//   u32[o + 2 + 56 i + 8 + 8 k .. + 8]      cylinder i: layer k bits
//   u32[o + 2 (1 + 28 n) + i / 2]           direction of cylinder i (u16, half i % 2)
//   u32[o + 2 (1 + 28 n + ceil(n / 4)) + i n + j]   geometry of pair (i, j): distance | direction << 16

struct GpuParams {
    n_items: u32,
    min_me_cells: u32,
    delta_theta: u32,
    n_rel: u32,
    lut_z1: u32,
    lut_z2: u32,
    lut_z3: u32,
    lut_np: u32,
    lut_stretch: u32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
};

struct GpuItem {
    probe: u32,      // u32 offset of the probe blob in `probes`
    cand: u32,       // u32 offset of the candidate blob in `gallery`
};

@group(0) @binding(0) var<storage, read> gallery: array<u32>;
@group(0) @binding(1) var<storage, read> probes: array<u32>;
@group(0) @binding(2) var<storage, read> items: array<GpuItem>;
@group(0) @binding(3) var<storage, read> luts: array<u32>;
@group(0) @binding(4) var<storage, read_write> results: array<vec4<u32>>;
@group(0) @binding(5) var<uniform> params: GpuParams;

const SQRT_LAST: u32 = 1536u;   // lut::SQRT_LEN - 1
const Z1_LEN: u32 = 257u;       // lut::Z1_LEN
const STRETCH_LAST: u32 = 255u; // lut::STRETCH_LEN - 1
const STRETCH_SHIFT: u32 = 6u;  // lut::STRETCH_SHIFT
const GAMMA_MAX: u32 = 65535u;  // gamma::GAMMA_MAX

fn lut_sqrt(n: u32) -> u32 {
    return luts[min(n, SQRT_LAST)];
}

// Z1 of two pairs' distances da, db (1/8 px, at most 65535), the difference
// scaled by the stretch of their mean distance (lut::Luts::z1_of); the
// product fits a u32 (65535 * 2^15 < 2^32).
fn z1_of(da: u32, db: u32) -> u32 {
    let b = min((da + db) >> STRETCH_SHIFT, STRETCH_LAST);
    let d1 = ((max(da, db) - min(da, db)) * luts[params.lut_stretch + b]) >> 15u;
    if (d1 >= Z1_LEN) {
        return 0u;
    }
    return luts[params.lut_z1 + d1];
}

// |dPhi(a, b)| of two angles in units of 2 pi / 65536 (lut::angle_diff).
fn angle_diff(a: u32, b: u32) -> u32 {
    let d = (a - b) & 0xffffu;
    return select(d, 65536u - d, d >= 32768u);
}

fn blob_n(word0: u32) -> u32 {
    return word0 & 0xffffu;
}

fn cyl_offset(o: u32, i: u32) -> u32 {
    return o + 2u + 56u * i;
}

fn angle_offset(o: u32, n: u32) -> u32 {
    return o + 2u * (1u + 28u * n);
}

fn geom_offset(o: u32, n: u32) -> u32 {
    return o + 2u * (1u + 28u * n + (n + 3u) / 4u);
}

fn probe_angle(o: u32, n: u32, i: u32) -> u32 {
    return (probes[angle_offset(o, n) + i / 2u] >> (16u * (i % 2u))) & 0xffffu;
}

fn gallery_angle(o: u32, n: u32, i: u32) -> u32 {
    return (gallery[angle_offset(o, n) + i / 2u] >> (16u * (i % 2u))) & 0xffffu;
}

// Base cells valid in both cylinders (probe cylinder at `a`, gallery
// cylinder at `b`, u32 offsets).
fn mask_count(a: u32, b: u32) -> u32 {
    var both = 0u;
    for (var w = 0u; w < 8u; w++) {
        both += countOneBits(probes[a + w] & gallery[b + w]);
    }
    return both;
}

// (|c_a ^ mask_b|, |c_b ^ mask_a|, |c_a|b xor c_b|a|) summed over the six
// layers (gamma::pair_counts): c_a is never set outside mask_a, and
// |x xor y| = |x| + |y| - 2 |x and y|.
fn layer_counts(a: u32, b: u32) -> vec3<u32> {
    var ca = 0u;
    var cb = 0u;
    var ab = 0u;
    for (var w = 0u; w < 8u; w++) {
        let ma = probes[a + w];
        let mb = gallery[b + w];
        for (var k = 1u; k <= 6u; k++) {
            let x = probes[a + 8u * k + w];
            let y = gallery[b + 8u * k + w];
            ca += countOneBits(x & mb);
            cb += countOneBits(y & ma);
            ab += countOneBits(x & y);
        }
    }
    return vec3<u32>(ca, cb, ca + cb - 2u * ab);
}

// gamma (Q16, at most GAMMA_MAX) of probe cylinder at `a` and gallery
// cylinder at `b` (u32 offsets), 0 when not matchable (gamma::gamma_from).
fn gamma_pair(a: u32, b: u32) -> u32 {
    if (mask_count(a, b) < params.min_me_cells) {
        return 0u;
    }
    let c = layer_counts(a, b);
    let ca = c.x;
    let cb = c.y;
    let px = c.z;
    let den = lut_sqrt(ca) + lut_sqrt(cb);
    if (den == 0u) {
        return 0u;
    }
    let q = (lut_sqrt(px) << 16u) / den;
    return min(65536u - min(q, 65536u), GAMMA_MAX);
}
