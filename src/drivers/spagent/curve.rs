//! The engine's latency curve: seconds per decode iteration by batch size, a replaceable table.

use serde::{Deserialize, Serialize};

use super::OP;
use crate::error::{Error, Result};

/// Seconds per decode iteration as a function of the batch size: a table of `(batch, seconds)`
/// points, linearly interpolated between points, flat below the first, and extended past the
/// last with the slope of the last segment (flat with one point).
///
/// Points must have batch sizes ≥ 1 and strictly increasing, and finite positive seconds that
/// never decrease with the batch (a bigger batch is never faster per iteration).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LatencyCurve {
    pub(super) points: Vec<(usize, f64)>,
}

/// The accepted JSON forms of a curve: `[[1, 0.02], [32, 0.021]]` or `{"points": [...]}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum CurveJson {
    Bare(Vec<(usize, f64)>),
    Wrapped { points: Vec<(usize, f64)> },
}

impl LatencyCurve {
    /// A validated curve from `(batch, seconds per iteration)` points.
    pub fn new(points: Vec<(usize, f64)>) -> Result<Self> {
        if points.is_empty() {
            return Err(Error::invalid(OP, "latency curve: no points"));
        }
        for (i, &(b, s)) in points.iter().enumerate() {
            if b == 0 {
                return Err(Error::invalid(
                    OP,
                    format!("latency curve: point {i} has batch 0 (batches start at 1)"),
                ));
            }
            if !s.is_finite() || s <= 0.0 {
                return Err(Error::invalid(
                    OP,
                    format!("latency curve: point {i} (batch {b}) has latency {s} s; it must be finite and > 0"),
                ));
            }
            if i > 0 {
                let (pb, ps) = points[i - 1];
                if b <= pb {
                    return Err(Error::invalid(
                        OP,
                        format!("latency curve: batch sizes must increase strictly, point {i} has batch {b} after {pb}"),
                    ));
                }
                if s < ps {
                    return Err(Error::invalid(
                        OP,
                        format!("latency curve: not monotone, batch {b} takes {s} s < {ps} s at batch {pb}"),
                    ));
                }
            }
        }
        Ok(LatencyCurve { points })
    }

    /// A constant curve: every iteration takes `seconds`, whatever the batch.
    pub fn constant(seconds: f64) -> Result<Self> {
        Self::new(vec![(1, seconds)])
    }

    /// The default curve, **illustrative, not measured** (docs/spagent.md gives its reasoning): a
    /// memory-bound decode regime, flat at about 20 ms per iteration up to a batch of 32 (each
    /// iteration reads all weights once, whatever the batch), then linear at 0.1875 ms per extra
    /// sequence (KV-cache reads and FLOPs that grow with the batch).
    pub fn illustrative() -> Self {
        LatencyCurve {
            points: vec![
                (1, 0.020),
                (32, 0.021),
                (64, 0.027),
                (128, 0.039),
                (256, 0.063),
            ],
        }
    }

    /// A curve from JSON: `[[batch, seconds], ...]` or `{"points": [[batch, seconds], ...]}`,
    /// e.g. measured numbers. Malformed JSON is an `Error::Format`; a bad curve an
    /// `Error::InvalidArgument` naming `spagent.sim`.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let parsed: CurveJson = serde_json::from_slice(bytes).map_err(|e| Error::Format {
            context: "spagent latency curve (JSON)".to_string(),
            msg: format!(
                "{e}; expected [[batch, seconds], ...] or {{\"points\": [[batch, seconds], ...]}}"
            ),
        })?;
        match parsed {
            CurveJson::Bare(p) | CurveJson::Wrapped { points: p } => Self::new(p),
        }
    }

    /// The `(batch, seconds)` points.
    pub fn points(&self) -> &[(usize, f64)] {
        &self.points
    }

    /// Seconds one decode iteration takes with `batch` running requests.
    pub fn iter_latency(&self, batch: usize) -> f64 {
        let p = &self.points;
        let b = batch as f64;
        let (b0, s0) = p[0];
        if batch <= b0 {
            return s0;
        }
        for w in p.windows(2) {
            let ((lb, ls), (hb, hs)) = (w[0], w[1]);
            if batch <= hb {
                let f = (b - lb as f64) / (hb - lb) as f64;
                return ls + f * (hs - ls);
            }
        }
        match p.len() {
            1 => s0,
            n => {
                let ((lb, ls), (hb, hs)) = (p[n - 2], p[n - 1]);
                hs + (b - hb as f64) * (hs - ls) / (hb - lb) as f64
            }
        }
    }

    pub(super) fn check(&self) -> Result<()> {
        Self::new(self.points.clone()).map(|_| ())
    }
}

impl Default for LatencyCurve {
    fn default() -> Self {
        Self::illustrative()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn curve_interpolates_and_extrapolates() {
        let c = LatencyCurve::new(vec![(1, 0.010), (32, 0.012), (64, 0.020)]).unwrap();
        assert_eq!(c.iter_latency(1), 0.010);
        assert_eq!(c.iter_latency(32), 0.012);
        // Halfway between 32 and 64: 0.012 + 0.5·0.008.
        assert!(close(c.iter_latency(48), 0.016));
        // Past the end, the last slope (0.008 / 32 per sequence): 0.020 + 32·0.00025.
        assert!(close(c.iter_latency(96), 0.028));
        // 16.5/31 of the way from 1 to 32 at b = 16: 0.010 + 15/31·0.002.
        assert!(close(c.iter_latency(16), 0.010 + 15.0 / 31.0 * 0.002));
        let one = LatencyCurve::constant(0.03).unwrap();
        assert_eq!(one.iter_latency(1), 0.03);
        assert_eq!(one.iter_latency(500), 0.03);
        let d = LatencyCurve::illustrative();
        assert_eq!(d.iter_latency(1), 0.020);
        assert_eq!(d.iter_latency(32), 0.021);
        assert!(close(d.iter_latency(300), 0.063 + 44.0 * 0.024 / 128.0));
    }

    #[test]
    fn curve_from_json_both_forms() {
        let a = LatencyCurve::from_json(b"[[1, 0.02], [32, 0.021], [64, 0.03]]").unwrap();
        let b = LatencyCurve::from_json(br#"{"points": [[1, 0.02], [32, 0.021], [64, 0.03]]}"#)
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.points(), &[(1, 0.02), (32, 0.021), (64, 0.03)]);
        assert!(matches!(
            LatencyCurve::from_json(b"{\"pts\": 3}"),
            Err(Error::Format { .. })
        ));
        assert!(matches!(
            LatencyCurve::from_json(b"[[1.5, 0.02]]"),
            Err(Error::Format { .. })
        ));
        let e = LatencyCurve::from_json(b"[[1, 0.02], [8, 0.01]]").unwrap_err();
        assert!(e.to_string().contains("spagent.sim") && e.to_string().contains("monotone"));
        let e = LatencyCurve::from_json(b"[]").unwrap_err();
        assert!(e.to_string().contains("no points"));
    }
}
