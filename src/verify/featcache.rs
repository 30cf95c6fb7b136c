//! `featcache.select` checks: the three classes and the C1 list bit-exact against the f64
//! reference ([`crate::reference::featcache`]) on random scores with many ties (values drawn
//! from a few levels), all-equal scores, zeros, and cache counts up to the table's end.

use crate::device::Device;
use crate::ops::featcache::{self, EXP_TABLE_LEN};
use crate::reference::featcache as reference;
use crate::testing::{first_diff, Rng};

use super::{stage, Outcome, Row};

/// One selection problem.
#[derive(Clone, Debug)]
pub struct Case {
    pub label: String,
    pub his: Vec<f32>,
    pub fut: Vec<f32>,
    pub cf: Vec<u32>,
    pub cr: f64,
    pub low_mass: f64,
}

impl Case {
    /// `n` tokens; `levels` distinct score values per input (few levels: many ties; 0: all equal
    /// to 1).
    pub fn generate(n: usize, levels: u32, cr: f64, low_mass: f64, seed: u64) -> Case {
        let mut r = Rng(seed);
        let v = |r: &mut Rng| {
            if levels == 0 {
                1.0
            } else {
                (r.next_u64() % levels as u64) as f32 * 0.25
            }
        };
        let his = (0..n).map(|_| v(&mut r)).collect();
        let fut = (0..n).map(|_| v(&mut r)).collect();
        let cf = (0..n)
            .map(|_| {
                if levels == 0 {
                    0
                } else {
                    (r.next_u64() % 4) as u32 * (EXP_TABLE_LEN as u32 - 1) / 3
                }
            })
            .collect();
        Case {
            label: format!("N={n} levels={levels} cr={cr} low_mass={low_mass}"),
            his,
            fut,
            cf,
            cr,
            low_mass,
        }
    }

    /// The classes and C1 on `dev` against the reference, bit for bit.
    pub fn outcome(&self, dev: &Device) -> Outcome {
        let want = reference::score(&self.his, &self.fut, &self.cf)
            .and_then(|s| reference::select(&s, self.cr, self.low_mass));
        let want = match want {
            Ok(w) => w,
            Err(e) => return Outcome::not_run(format!("reference: {e}")),
        };
        let got = stage(dev, featcache::OP, || {
            featcache::select_host(dev, &self.his, &self.fut, &self.cf, self.cr, self.low_mass)
        });
        let (class, c1) = match got {
            Ok(v) => v,
            Err(e) => return Outcome::not_run(e),
        };
        Outcome::exact(if let Some(i) = first_diff(&class, &want.class) {
            Err(format!(
                "class[{i}] = {:?}, reference {:?}",
                class.get(i),
                want.class.get(i)
            ))
        } else if let Some(i) = first_diff(&c1, &want.c1) {
            Err(format!(
                "c1[{i}] = {:?}, reference {:?}",
                c1.get(i),
                want.c1.get(i)
            ))
        } else {
            Ok(())
        })
    }
}

/// The verify cases: ties, all equal, a size past one block, the ratio's ends.
pub fn cases() -> Vec<Case> {
    vec![
        Case::generate(1000, 5, 0.7, 0.1, 0xfc1),
        Case::generate(333, 0, 0.5, 0.25, 0xfc2),
        Case::generate(97, 3, 0.0, 0.1, 0xfc3),
        Case::generate(64, 7, 1.0, 1.0, 0xfc4),
        Case::generate(0, 5, 0.5, 0.1, 0xfc5),
    ]
}

/// The rows of one device.
pub fn rows(dev: &Device) -> Vec<Row> {
    cases()
        .into_iter()
        .map(|c| c.outcome(dev).row("featcache.select", "f32", dev, c.label))
        .collect()
}
