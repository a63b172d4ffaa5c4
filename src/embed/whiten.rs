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
        use nalgebra::DMatrix;
        let n = data.len() / din;
        let mut x = DMatrix::from_row_iterator(n, din, data.iter().map(|&v| f64::from(v)));
        let mean: Vec<f64> = (0..din).map(|c| if n == 0 { 0.0 } else { x.column(c).mean() }).collect();
        for (c, m) in mean.iter().enumerate() {
            x.column_mut(c).add_scalar_mut(-m);
        }
        let cov = (x.transpose() * &x) / n.max(1) as f64;
        let (values, vectors) = symmetric_eigen(cov.as_slice(), din);
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

    /// Learned (supervised) whitening from rows of `din` in `data` and the
    /// pairs of rows that are impressions of one finger (Radenović, Tolias,
    /// Chum, "Fine-tuning CNN image retrieval with no human annotation",
    /// TPAMI 41(7), 2019, section 3.4, after Mikolajczyk and Matas 2007):
    /// whiten by the covariance of mated differences
    /// `C_S = E[(x_i − x_j)(x_i − x_j)ᵀ]` (so that what varies between
    /// impressions of one finger counts least), then rotate onto the
    /// principal directions of the whitened data and keep the `dout`
    /// largest: the directions along which different fingers differ most
    /// relative to how much one finger varies. Eigenvalues of `C_S` are
    /// floored at `eps` × the largest.
    pub fn learn_supervised(data: &[f32], din: usize, pairs: &[(usize, usize)], dout: usize, eps: f64) -> Whitening {
        use nalgebra::DMatrix;
        let n = data.len() / din;
        let x = DMatrix::from_row_iterator(n, din, data.iter().map(|&v| f64::from(v)));
        let mean: Vec<f64> = (0..din).map(|c| x.column(c).mean()).collect();
        // C_S from the mated differences.
        let d = DMatrix::from_row_iterator(
            pairs.len(),
            din,
            pairs.iter().flat_map(|&(i, j)| (0..din).map(move |c| (i, j, c))).map(|(i, j, c)| x[(i, c)] - x[(j, c)]),
        );
        let cs = (d.transpose() * &d) / pairs.len().max(1) as f64;
        let (values, vectors) = symmetric_eigen(cs.as_slice(), din);
        let floor = eps * values.first().copied().unwrap_or(1.0).max(1e-12);
        // P1 = C_S^(−1/2) = U diag((λ + floor)^(−1/2)) Uᵀ (rows of `vectors` are U's columns).
        let u = DMatrix::from_row_slice(din, din, &vectors).transpose();
        let scale = DMatrix::from_diagonal(&nalgebra::DVector::from_iterator(
            din,
            values.iter().map(|&l| (l.max(0.0) + floor).powf(-0.5)),
        ));
        let p1 = &u * scale * u.transpose();
        // The centred data whitened by P1, and its principal directions.
        let mut xc = x;
        for (c, m) in mean.iter().enumerate() {
            xc.column_mut(c).add_scalar_mut(-m);
        }
        let w = xc * &p1;
        let cd = (w.transpose() * &w) / n.max(1) as f64;
        let (_, rot) = symmetric_eigen(cd.as_slice(), din);
        let dout = dout.min(din);
        let top = DMatrix::from_row_slice(dout, din, &rot[..dout * din]);
        let proj = top * p1;
        let proj: Vec<f32> =
            (0..dout).flat_map(|r| (0..din).map(move |c| (r, c))).map(|(r, c)| proj[(r, c)] as f32).collect();
        Whitening { din, dout, mean: mean.iter().map(|&m| m as f32).collect(), proj }
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
