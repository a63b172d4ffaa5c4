//! Centring and PCA whitening of embeddings (Jégou and Chum, "Negative
//! evidences and co-occurrences in image retrieval: the benefit of PCA and
//! whitening", ECCV 2012): the part of the vector every fingerprint shares
//! dominates raw cosine similarity; removing the mean and equalising the
//! principal directions makes inner products count what is particular to a
//! finger. Learned offline from synthetic templates.

use super::train::symmetric_eigen;

/// Mean, principal directions and their scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Whitening {
    /// Input dimension.
    pub din: usize,
    /// Output dimension.
    pub dout: usize,
    /// Mean of the training vectors (din).
    pub mean: Vec<f32>,
    /// `dout` rows of `din`: principal directions scaled by 1/√(λ + ε).
    pub proj: Vec<f32>,
}

/// Mean and eigen-decomposition of the covariance of training vectors.
#[derive(Debug, Clone)]
pub struct Pca {
    /// Input dimension.
    pub din: usize,
    /// Mean.
    pub mean: Vec<f64>,
    /// Eigenvalues, descending.
    pub values: Vec<f64>,
    /// Eigenvectors as rows, in the order of `values`.
    pub vectors: Vec<f64>,
}

impl Pca {
    /// Learns from rows of `din` in `data`.
    pub fn learn(data: &[f32], din: usize) -> Pca {
        let n = data.len() / din;
        let mut mean = vec![0f64; din];
        for x in data.chunks_exact(din) {
            for (m, v) in mean.iter_mut().zip(x) {
                *m += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        let mut cov = vec![0f64; din * din];
        let mut c = vec![0f64; din];
        for x in data.chunks_exact(din) {
            for (ci, (v, m)) in c.iter_mut().zip(x.iter().zip(&mean)) {
                *ci = f64::from(*v) - m;
            }
            for i in 0..din {
                if c[i] == 0.0 {
                    continue;
                }
                for j in i..din {
                    cov[i * din + j] += c[i] * c[j];
                }
            }
        }
        for i in 0..din {
            for j in i..din {
                cov[i * din + j] /= n.max(1) as f64;
                cov[j * din + i] = cov[i * din + j];
            }
        }
        let (values, vectors) = symmetric_eigen(&cov, din);
        Pca { din, mean, values, vectors }
    }
}

impl Whitening {
    /// Keeps the `dout` leading directions of `pca`, each scaled by
    /// `(λ + eps·λ_max)^−power`: `power` ½ whitens fully, smaller powers
    /// only partly (keeping the space less isotropic, which graph indexes
    /// search more easily).
    pub fn from_pca(pca: &Pca, dout: usize, eps: f64, power: f64) -> Whitening {
        let din = pca.din;
        let dout = dout.min(din);
        let floor = eps * pca.values.first().copied().unwrap_or(1.0).max(1e-12);
        let mut proj = Vec::with_capacity(dout * din);
        for k in 0..dout {
            let s = (pca.values[k].max(0.0) + floor).powf(-power);
            proj.extend(pca.vectors[k * din..(k + 1) * din].iter().map(|&v| (v * s) as f32));
        }
        Whitening { din, dout, mean: pca.mean.iter().map(|&m| m as f32).collect(), proj }
    }

    /// Learns full whitening from rows of `din` in `data`, keeping `dout`
    /// directions and flooring eigenvalues at `eps` × the largest.
    pub fn learn(data: &[f32], din: usize, dout: usize, eps: f64) -> Whitening {
        Whitening::from_pca(&Pca::learn(data, din), dout, eps, 0.5)
    }

    /// Applies to `x` (din), writing `out` (dout), then L2-normalises.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        let centred: Vec<f32> = x.iter().zip(&self.mean).map(|(v, m)| v - m).collect();
        for (o, row) in out.iter_mut().zip(self.proj.chunks_exact(self.din)) {
            *o = super::dot(&centred, row);
        }
        super::normalise(out);
    }
}
