//! The convex hull of a template's minutiae enlarged by Ω: cells outside it
//! are invalid (Cappelli et al. 2010, section 3.1, ξ_m). A point is inside
//! the enlarged hull when it is inside the hull or within Ω of its boundary
//! (a Minkowski sum with a disc); degenerate hulls (one point, collinear
//! points) become a point or a segment with the same rule.

/// A convex polygon in counter-clockwise order (in a y-up sense) and Ω.
#[derive(Debug, Clone)]
pub struct EnlargedHull {
    vertices: Vec<(f64, f64)>,
    omega2: f64,
}

fn cross(o: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
}

/// Squared distance from `p` to segment `a`-`b`.
fn seg_dist2(p: (f64, f64), a: (f64, f64), b: (f64, f64)) -> f64 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 { (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (qx, qy) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    qx * qx + qy * qy
}

impl EnlargedHull {
    /// The hull of `points` (Andrew's monotone chain) enlarged by `omega`.
    pub fn new(points: &[(f64, f64)], omega: f64) -> EnlargedHull {
        let mut pts: Vec<(f64, f64)> = points.to_vec();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        pts.dedup();
        if pts.len() < 3 {
            return EnlargedHull { vertices: pts, omega2: omega * omega };
        }
        let mut hull: Vec<(f64, f64)> = Vec::with_capacity(2 * pts.len());
        for pass in 0..2 {
            let start = hull.len();
            let iter: Box<dyn Iterator<Item = &(f64, f64)>> =
                if pass == 0 { Box::new(pts.iter()) } else { Box::new(pts.iter().rev()) };
            for &p in iter {
                while hull.len() >= start + 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
                    hull.pop();
                }
                hull.push(p);
            }
            hull.pop();
        }
        EnlargedHull { vertices: hull, omega2: omega * omega }
    }

    /// Whether `p` lies in the enlarged hull.
    pub fn contains(&self, p: (f64, f64)) -> bool {
        let v = &self.vertices;
        match v.len() {
            0 => false,
            1 => {
                let (dx, dy) = (p.0 - v[0].0, p.1 - v[0].1);
                dx * dx + dy * dy <= self.omega2
            }
            2 => seg_dist2(p, v[0], v[1]) <= self.omega2,
            n => {
                let mut inside = true;
                for i in 0..n {
                    let (a, b) = (v[i], v[(i + 1) % n]);
                    if cross(a, b, p) < 0.0 {
                        inside = false;
                        if seg_dist2(p, a, b) <= self.omega2 {
                            return true;
                        }
                    }
                }
                inside
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn square_hull_with_margin() {
        let h = EnlargedHull::new(&[(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0), (5.0, 5.0)], 2.0);
        assert!(h.contains((5.0, 5.0)));
        assert!(h.contains((11.9, 5.0)));
        assert!(!h.contains((12.1, 5.0)));
        assert!(h.contains((11.4, 11.4)));
        assert!(!h.contains((11.5, 11.5)));
    }

    #[test]
    fn degenerate_hulls() {
        assert!(!EnlargedHull::new(&[], 5.0).contains((0.0, 0.0)));
        let p = EnlargedHull::new(&[(1.0, 1.0)], 5.0);
        assert!(p.contains((4.0, 5.0)) && !p.contains((4.0, 5.1)));
        let s = EnlargedHull::new(&[(0.0, 0.0), (10.0, 0.0), (20.0, 0.0)], 1.0);
        assert!(s.contains((15.0, 0.9)) && !s.contains((15.0, 1.1)) && !s.contains((21.1, 0.0)));
    }
}
