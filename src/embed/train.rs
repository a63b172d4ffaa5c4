//! Offline training of the embedding model from synthetic templates
//! (`whorl embed-train`): covariances of the raw pair histograms and their
//! eigen-decompositions (nalgebra). k-means is kept for
//! experiments with codebook methods. Everything is seeded and
//! deterministic.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Eigen-decomposition of a symmetric matrix (row-major n×n): eigenvalues
/// descending and eigenvectors as rows. nalgebra's `SymmetricEigen`
/// (Householder tridiagonalisation and implicit QR): a 1152×1152
/// covariance takes seconds, where cyclic Jacobi took many minutes.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let m = nalgebra::DMatrix::from_row_slice(n, n, &a[..n * n]);
    let eig = nalgebra::SymmetricEigen::new(m);
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| eig.eigenvalues[j].total_cmp(&eig.eigenvalues[i]));
    let values = order.iter().map(|&i| eig.eigenvalues[i]).collect();
    let vectors = order.iter().flat_map(|&i| eig.eigenvectors.column(i).iter().copied().collect::<Vec<_>>()).collect();
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

/// Learns an embedding model with learned (supervised) whitening
/// ([`super::whiten::Whitening::learn_supervised`]): `templates` with the
/// finger each is an impression of; every two impressions of one finger
/// make a mated pair.
pub fn train_model_supervised(
    templates: &[(u64, crate::template::Template)],
    bins: super::pairs::PairBins,
    dout: usize,
    eps: f64,
    version: u32,
) -> super::EmbedModel {
    use rayon::prelude::*;
    let din = bins.dim();
    let data: Vec<f32> = templates
        .par_iter()
        .flat_map_iter(|(_, t)| {
            let mut h = vec![0f32; din];
            super::raw_histogram(t, bins, &mut h);
            h
        })
        .collect();
    let mut by_finger: std::collections::BTreeMap<u64, Vec<usize>> = std::collections::BTreeMap::new();
    for (i, (f, _)) in templates.iter().enumerate() {
        by_finger.entry(*f).or_default().push(i);
    }
    let pairs: Vec<(usize, usize)> = by_finger
        .values()
        .flat_map(|v| v.iter().enumerate().flat_map(move |(k, &i)| v[k + 1..].iter().map(move |&j| (i, j))))
        .collect();
    let whitening = super::whiten::Whitening::learn_supervised(&data, din, &pairs, dout.min(din), eps);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigen_decomposition_of_a_known_matrix() {
        // [[2, 1], [1, 2]]: eigenvalues 3 and 1, eigenvectors (1, 1)/√2 and (1, −1)/√2.
        let (v, e) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((v[0] - 3.0).abs() < 1e-12 && (v[1] - 1.0).abs() < 1e-12);
        let s = std::f64::consts::FRAC_1_SQRT_2;
        assert!((e[0].abs() - s).abs() < 1e-12 && (e[0] - e[1]).abs() < 1e-12);
        assert!((e[2] + e[3]).abs() < 1e-12);
    }
}
