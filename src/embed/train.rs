//! Offline training of the embedding model from synthetic templates
//! (`whorl embed-train`): the covariance of the raw pair histograms and
//! its eigen-decomposition by the cyclic Jacobi method. k-means is kept for
//! experiments with codebook methods. Everything is seeded and
//! deterministic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Eigen-decomposition of a symmetric matrix (row-major n×n): eigenvalues
/// descending and eigenvectors as rows.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..60 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off < 1e-18 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-30 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = order.iter().flat_map(|&i| (0..n).map(move |k| (i, k))).map(|(i, k)| v[k * n + i]).collect();
    (values, vectors)
}

/// Learns an embedding model: the raw histograms of `templates` with
/// `bins`, centred and whitened to `dout` dimensions (eigenvalues floored
/// at `eps` × the largest).
pub fn train_model(
    templates: &[crate::template::Template],
    bins: super::pairs::PairBins,
    dout: usize,
    eps: f64,
    version: u32,
) -> super::EmbedModel {
    use rayon::prelude::*;
    let din = bins.dim();
    let data: Vec<f32> = templates
        .par_iter()
        .flat_map_iter(|t| {
            let mut h = vec![0f32; din];
            super::raw_histogram(t, bins, &mut h);
            h
        })
        .collect();
    let whitening = super::whiten::Whitening::learn(&data, din, dout.min(din), eps);
    super::EmbedModel { version, bins, whitening }
}

/// k-means with k-means++ seeding; returns K rows of `dim`.
pub fn kmeans(points: &[f32], dim: usize, k: usize, iterations: usize, seed: u64) -> Vec<f32> {
    let n = points.len() / dim;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let d2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>();
    let mut centroids: Vec<f32> = row(rng.random_range(0..n)).to_vec();
    let mut best: Vec<f32> = (0..n).map(|i| d2(row(i), &centroids[..dim])).collect();
    while centroids.len() < k * dim {
        let total: f32 = best.iter().sum();
        let mut r = rng.random::<f32>() * total;
        let mut pick = n - 1;
        for (i, &b) in best.iter().enumerate() {
            r -= b;
            if r <= 0.0 {
                pick = i;
                break;
            }
        }
        let c = row(pick).to_vec();
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(d2(row(i), &c));
        }
        centroids.extend(c);
    }
    let mut assign = vec![0usize; n];
    for _ in 0..iterations {
        for (i, a) in assign.iter_mut().enumerate() {
            *a = (0..k)
                .map(|c| (d2(row(i), &centroids[c * dim..(c + 1) * dim]), c))
                .min_by(|x, y| x.0.total_cmp(&y.0))
                .map(|x| x.1)
                .unwrap_or(0);
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            counts[a] += 1;
            for (s, v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(row(i)) {
                *s += f64::from(*v);
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for d in 0..dim {
                    centroids[c * dim + d] = (sums[c * dim + d] / counts[c] as f64) as f32;
                }
            }
        }
    }
    centroids
}
