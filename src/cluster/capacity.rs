//! The capacity model: how many machines a gallery and a search rate need,
//! from per-node figures measured on real hardware (`whorl capacity
//! measure` writes them; `benches/reports/cluster/` holds the ones measured
//! here).
//!
//! ```text
//! fingers        N·F                         (identities × fingers each)
//! stored         N·F·R                       (R replicas)
//! per search     candidate stage: every probe finger searches its
//!                position's graph in every group: f·V·t_cand(n_part),
//!                n_part = N·F / (V·10)      (ten positions per group),
//!                t_cand: least-squares line in log n, never falling
//!                re-scoring: c comparisons at m matches/s per core
//!                (or per GPU where measured)
//! work           λ · (candidate + re-scoring) core-seconds per second
//! nodes          the largest of: RAM (resident bytes per finger), disk,
//!                cores to carry the work at ≤ 70% use, and GPUs
//! latency        a search fans out to every node at once: each runs its
//!                share of the groups on the cores one search may use;
//!                plus queueing at the planned utilisation (M/M/c, as an
//!                M/M/1 approximation per node: t / (1 − ρ))
//! recall         the best k of every partition merge into one list of k
//!                per finger, so the mate is kept with probability
//!                exact_k(N·F/10) · hnsw_k(n_part) / exact_k(n_part):
//!                exact search's recall at list length k over a whole
//!                position, times the share of it HNSW keeps per partition
//! ```

use serde::{Deserialize, Serialize};

/// What was measured on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Where and when it was measured.
    pub measured_on: String,
    /// RAM that must stay resident per finger for the candidate stage
    /// (vectors and graph), bytes.
    pub resident_bytes_per_finger: f64,
    /// Disk per finger (the whole shard: cylinders, minutiae, vectors,
    /// graph), bytes; cylinders are read from the page cache when
    /// re-scored, so RAM beyond the resident part speeds re-scoring.
    pub disk_bytes_per_finger: f64,
    /// Candidate search of one probe finger in one partition: seconds at
    /// each measured partition size (fingers), ascending.
    pub candidate_s: Vec<(f64, f64)>,
    /// Cylinder comparisons per core-second on this CPU.
    pub cpu_matches_per_core_s: f64,
    /// Comparisons per GPU-second, if measured on a GPU.
    pub gpu_matches_per_s: Option<f64>,
    /// Comparisons per search: one finger, ten-print.
    pub comparisons_single: f64,
    /// Comparisons per ten-print search.
    pub comparisons_tenprint: f64,
    /// Fixed cost per search (parsing, preparing, fusing, RPCs), core-seconds.
    pub fixed_core_s: f64,
    /// Mate recall of the candidate stage at the measured sizes: the share
    /// of mated single-finger probes whose mate is in the `k` candidates the
    /// server keeps, searching one partition of that many fingers (HNSW).
    #[serde(default)]
    pub recall: Vec<(f64, f64)>,
    /// Exact search's mate recall at the same list length `k` over that
    /// many fingers of one position: the most any index could keep. A
    /// cluster merges the best `k` of every partition into one list per
    /// finger, so its recall follows this curve at the size of a whole
    /// position, times what HNSW keeps of it at the partition size.
    #[serde(default)]
    pub exact_recall: Vec<(f64, f64)>,
}

impl Profile {
    /// Candidate time at partition size `n`: the least-squares line in
    /// log n through every measured size, never falling with size. One
    /// HNSW search at a fixed ef grows about logarithmically with the
    /// graph, and single measurements on a shared VM scatter by ±20%
    /// (2.39, 3.24, 2.77 core-ms at 100k, 300k, 1M), so joining the points
    /// would make a larger partition look cheaper.
    pub fn candidate_at(&self, n: f64) -> f64 {
        fit_log(&self.candidate_s, n)
    }

    /// Mate recall at partition size `n`, if measured: interpolated
    /// linearly in log n between measured sizes, extrapolated along the
    /// last segment.
    pub fn recall_at(&self, n: f64) -> Option<f64> {
        (!self.recall.is_empty()).then(|| interp_log(&self.recall, n).clamp(0.0, 1.0))
    }

    /// Exact search's mate recall at list length `k` over `n` fingers, if measured.
    pub fn exact_recall_at(&self, n: f64) -> Option<f64> {
        (!self.exact_recall.is_empty()).then(|| interp_log(&self.exact_recall, n).clamp(0.0, 1.0))
    }

    /// Mate recall of a search whose position holds `position` fingers
    /// split into partitions of `partition`: exact search's recall over the
    /// whole position, times the share of exact search's mates HNSW keeps
    /// at the partition size (`None` without both curves).
    pub fn cluster_recall(&self, position: f64, partition: f64) -> Option<f64> {
        let whole = self.exact_recall_at(position)?;
        let kept = self.recall_at(partition)? / self.exact_recall_at(partition)?.max(1e-9);
        Some((whole * kept.min(1.0)).clamp(0.0, 1.0))
    }
}

fn fit_log(pts: &[(f64, f64)], n: f64) -> f64 {
    if pts.len() < 2 {
        return pts.first().map_or(0.0, |p| p.1);
    }
    let k = pts.len() as f64;
    let xs = pts.iter().map(|p| p.0.max(1.0).ln());
    let mx = xs.clone().sum::<f64>() / k;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / k;
    let sxx: f64 = xs.clone().map(|x| (x - mx).powi(2)).sum();
    let sxy: f64 = xs.zip(pts).map(|(x, p)| (x - mx) * (p.1 - my)).sum();
    let slope = if sxx > 1e-12 { (sxy / sxx).max(0.0) } else { 0.0 };
    my + slope * (n.max(1.0).ln() - mx)
}

fn interp_log(pts: &[(f64, f64)], n: f64) -> f64 {
    match pts {
        [] => 0.0,
        [(_, y)] => *y,
        _ => {
            let x = n.max(1.0).ln();
            let i = pts.windows(2).position(|w| x <= w[1].0.ln()).unwrap_or(pts.len() - 2);
            let (x0, y0) = (pts[i].0.ln(), pts[i].1);
            let (x1, y1) = (pts[i + 1].0.ln(), pts[i + 1].1);
            if (x1 - x0).abs() < 1e-12 { y0 } else { y0 + (y1 - y0) * (x - x0) / (x1 - x0) }
        }
    }
}

/// What is asked of the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Demand {
    /// Enrolled identities.
    pub identities: f64,
    /// Fingers enrolled per identity.
    pub fingers: f64,
    /// Average searches per second.
    pub rate: f64,
    /// Peak searches per second.
    pub peak: f64,
    /// Latency target, seconds.
    pub latency_s: f64,
    /// Fingers per search probe (10: ten-prints; 1: single fingers).
    pub probe_fingers: f64,
}

/// The machines on offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// CPU cores per node.
    pub cores: f64,
    /// RAM per node, bytes.
    pub ram_bytes: f64,
    /// Disk per node, bytes.
    pub disk_bytes: f64,
    /// GPUs per node (0: CPU re-scoring).
    pub gpus: f64,
    /// Replicas per group.
    pub replicas: f64,
    /// Virtual groups.
    pub groups: f64,
    /// Cores one search may use on a node.
    pub cores_per_search: f64,
    /// Highest planned utilisation.
    pub max_utilisation: f64,
}

impl Default for NodeSpec {
    fn default() -> NodeSpec {
        NodeSpec {
            cores: 64.0,
            ram_bytes: 512.0 * (1u64 << 30) as f64,
            disk_bytes: 8.0e12,
            gpus: 0.0,
            replicas: 2.0,
            groups: 1024.0,
            cores_per_search: 8.0,
            max_utilisation: 0.7,
        }
    }
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sizing {
    /// Nodes needed, and what decided it.
    pub nodes: f64,
    /// "memory", "disk", "cpu (peak)" or "gpu (peak)".
    pub bound_by: String,
    /// Nodes each bound asks for: memory, disk, cpu, gpu.
    pub nodes_by: [f64; 4],
    /// RAM needed in all (resident part), bytes.
    pub ram_bytes: f64,
    /// Disk in all, bytes.
    pub disk_bytes: f64,
    /// GPUs in all.
    pub gpus: f64,
    /// Fingers per partition (group × position).
    pub partition: f64,
    /// Core-seconds one search costs: candidate stage, re-scoring, fixed.
    pub core_s: [f64; 3],
    /// Utilisation at the average and the peak rate.
    pub utilisation: [f64; 2],
    /// Expected latency at the average and the peak rate, seconds.
    pub latency_s: [f64; 2],
    /// Whether the peak latency meets the target.
    pub meets_target: bool,
    /// Candidate-stage mate recall of one partition of this size, when measured.
    pub recall: Option<f64>,
    /// Exact search's mate recall at list length `k` over all the fingers
    /// of one position (the cluster keeps the best `k` of all partitions).
    pub exact_recall: Option<f64>,
    /// The cluster's candidate-stage mate recall: `exact_recall` times the
    /// share of exact search's mates HNSW keeps at the partition size.
    pub cluster_recall: Option<f64>,
    /// Fingers of one position in the whole gallery.
    pub position: f64,
}

/// Sizes a cluster for `d` with nodes like `spec`, from profile `p`.
pub fn size(p: &Profile, d: &Demand, spec: &NodeSpec) -> Sizing {
    let fingers = d.identities * d.fingers;
    let stored = fingers * spec.replicas;
    // Fingers of one finger position; each group splits it into partitions.
    let position = fingers / 10.0;
    let partition = position / spec.groups;
    // Known positions: each probe finger searches its position in every group.
    let cand = d.probe_fingers * spec.groups * p.candidate_at(partition);
    let comparisons = if d.probe_fingers > 1.0 { p.comparisons_tenprint } else { p.comparisons_single };
    let gpu_rate = p.gpu_matches_per_s.filter(|_| spec.gpus > 0.0);
    let rescore_core = if gpu_rate.is_some() { 0.0 } else { comparisons / p.cpu_matches_per_core_s };
    let core_s = [cand, rescore_core, p.fixed_core_s];
    let per_search: f64 = core_s.iter().sum();
    let ram = stored * p.resident_bytes_per_finger;
    let disk = stored * p.disk_bytes_per_finger;
    let by_mem = (ram / (spec.ram_bytes * 0.8)).ceil();
    let by_disk = (disk / (spec.disk_bytes * 0.8)).ceil();
    let by_cpu = (d.peak * per_search / (spec.cores * spec.max_utilisation)).ceil();
    let by_gpu = match gpu_rate {
        Some(g) => (d.peak * comparisons / (g * spec.gpus * spec.max_utilisation)).ceil(),
        None => 0.0,
    };
    let nodes_by = [by_mem, by_disk, by_cpu, by_gpu];
    let min_nodes = spec.replicas.max(1.0);
    let nodes = nodes_by.iter().copied().fold(min_nodes, f64::max);
    let bound_by = ["memory", "disk", "cpu (peak)", "gpu (peak)"]
        [nodes_by.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)]
    .to_string();
    let util = |rate: f64| rate * per_search / (nodes * spec.cores);
    let utilisation = [util(d.rate), util(d.peak)];
    // Service time of one search: every node works its share of the groups
    // in parallel, on the cores one search may use.
    let service = (cand / nodes + rescore_core / nodes.min(spec.groups)) / spec.cores_per_search.max(1.0)
        + gpu_rate.map_or(0.0, |g| comparisons / g)
        + p.fixed_core_s;
    let wait = |rho: f64| if rho >= 1.0 { f64::INFINITY } else { service / (1.0 - rho) };
    let latency_s = [wait(utilisation[0]), wait(utilisation[1])];
    Sizing {
        nodes,
        bound_by,
        nodes_by,
        ram_bytes: ram,
        disk_bytes: disk,
        gpus: nodes * spec.gpus,
        partition,
        core_s,
        utilisation,
        latency_s,
        meets_target: latency_s[1] <= d.latency_s,
        recall: p.recall_at(partition),
        exact_recall: p.exact_recall_at(position),
        cluster_recall: p.cluster_recall(position, partition),
        position,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile() -> Profile {
        Profile {
            measured_on: "test".into(),
            resident_bytes_per_finger: 1200.0,
            disk_bytes_per_finger: 14_000.0,
            candidate_s: vec![(1e4, 1e-4), (1e5, 2e-4), (1e6, 3e-4)],
            cpu_matches_per_core_s: 120_000.0,
            gpu_matches_per_s: Some(40e6),
            comparisons_single: 100.0,
            comparisons_tenprint: 1700.0,
            fixed_core_s: 0.002,
            recall: vec![(1e5, 0.9), (1e6, 0.85)],
            exact_recall: vec![(1e5, 0.95), (1e6, 0.9)],
        }
    }

    #[test]
    fn interpolation_is_in_log_size_and_extrapolates() {
        let p = profile();
        assert!((p.candidate_at(1e5) - 2e-4).abs() < 1e-12);
        assert!((p.candidate_at(10f64.powf(5.5)) - 2.5e-4).abs() < 1e-9);
        assert!((p.candidate_at(1e7) - 4e-4).abs() < 1e-9, "extrapolated along the line");
        assert!((p.recall_at(1e7).unwrap() - 0.80).abs() < 1e-9);
        assert!((p.exact_recall_at(1e7).unwrap() - 0.85).abs() < 1e-9);
    }

    #[test]
    fn candidate_time_is_a_line_in_log_size_that_never_falls() {
        // Scattered like the VM's measurements: the line through all of
        // them, not the last segment (which falls).
        let p = Profile { candidate_s: vec![(1e5, 2.39e-3), (3e5, 3.24e-3), (1e6, 2.77e-3)], ..profile() };
        let (a, b, c) = (p.candidate_at(1e5), p.candidate_at(1e6), p.candidate_at(1e7));
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(c < 3.5e-3, "grows slowly: {c}");
        // Falling everywhere: held flat at the mean.
        let p = Profile { candidate_s: vec![(1e5, 3e-3), (1e6, 2e-3)], ..profile() };
        assert!((p.candidate_at(1e8) - 2.5e-3).abs() < 1e-12);
        assert_eq!(Profile { candidate_s: vec![(1e5, 3e-3)], ..profile() }.candidate_at(1e8), 3e-3);
    }

    #[test]
    fn cluster_recall_is_the_whole_positions_exact_recall_times_what_hnsw_keeps() {
        let p = profile();
        // Partitions of 1e5 keep 0.9 / 0.95 of exact search's mates; a
        // position of 1e7 fingers has exact recall 0.85 at the same k.
        let r = p.cluster_recall(1e7, 1e5).unwrap();
        assert!((r - 0.85 * 0.9 / 0.95).abs() < 1e-9, "{r}");
        // One partition holding the whole position: the measured recall.
        assert!((p.cluster_recall(1e6, 1e6).unwrap() - 0.85).abs() < 1e-9);
        let bare = Profile { exact_recall: Vec::new(), ..p };
        assert_eq!(bare.cluster_recall(1e7, 1e5), None);
        let d = Demand { identities: 3e8, fingers: 10.0, rate: 5.0, peak: 50.0, latency_s: 10.0, probe_fingers: 10.0 };
        let s = size(&bare, &d, &NodeSpec::default());
        assert_eq!((s.cluster_recall, s.exact_recall), (None, None));
        assert!(s.recall.is_some());
    }

    #[test]
    fn more_load_needs_more_nodes_and_memory_binds_big_galleries() {
        let p = profile();
        let d = Demand { identities: 3e8, fingers: 10.0, rate: 5.0, peak: 50.0, latency_s: 10.0, probe_fingers: 10.0 };
        let s = size(&p, &d, &NodeSpec::default());
        assert!(s.nodes >= s.nodes_by[0] && s.nodes >= s.nodes_by[2]);
        assert!((s.ram_bytes - 3e9 * 2.0 * 1200.0).abs() < 1.0);
        let heavier = Demand { peak: 500.0, ..d.clone() };
        assert!(size(&p, &heavier, &NodeSpec::default()).nodes >= s.nodes);
        assert!(s.latency_s[0] <= s.latency_s[1]);
        let gpu = size(&p, &d, &NodeSpec { gpus: 8.0, ..NodeSpec::default() });
        assert_eq!(gpu.core_s[1], 0.0, "re-scoring moves to the GPUs");
    }
}
