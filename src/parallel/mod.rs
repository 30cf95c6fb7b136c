//! Sequence parallelism (TASP): the AllGather schedule as data, the transports that carry it, and
//! sequence-parallel attention on top.
//!
//! - [`plan`]: per step, which piece (sub-chunk of which rank's block) each rank sends to which
//!   peer on which ring, built from a [`crate::topology::RingSchedule`] and validated;
//! - [`Transport`]: moves the bytes of one step. [`Simulated`] keeps n logical ranks as n buffer
//!   sets on one device (any executor, SIMT and CPU included); the other transports live in
//!   [`transport`];
//! - [`attention`]: sequence-parallel attention (non-causal and zigzag causal; TASP rings or the
//!   single-ring baseline) built on [`crate::ops::attention::forward`] and
//!   [`crate::ops::attention::merge`].

use crate::device::{Device, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};

pub mod attention;
pub mod model;
pub mod moe;
pub mod plan;
pub mod transport;

/// One copy of a contiguous element range from a buffer of one rank to a buffer of another.
/// Buffers are named by their index in the rank's buffer list (see [`RankBuffers`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    pub src_rank: usize,
    pub src_buf: usize,
    pub src_off: usize,
    pub dst_rank: usize,
    pub dst_buf: usize,
    pub dst_off: usize,
    pub len: usize,
    /// The ring (channel) that carries this copy; transports may use one stream per ring.
    pub ring: usize,
}

/// The buffers of the ranks a transport hosts: `bufs[rank][i]`. Ranks a process does not host
/// (NCCL: every rank but its own) hold an empty list.
pub struct RankBuffers<T: DType> {
    pub bufs: Vec<Vec<DeviceBuffer<T>>>,
}

impl<T: DType> RankBuffers<T> {
    /// The buffer `i` of `rank`, or an error naming the op when it is not hosted here.
    pub fn get(&self, op: &'static str, rank: usize, i: usize) -> Result<&DeviceBuffer<T>> {
        self.bufs
            .get(rank)
            .and_then(|b| b.get(i))
            .ok_or_else(|| Error::invalid(op, format!("rank {rank} has no buffer {i} here")))
    }
}

/// Moves the copies of one AllGather step between ranks. A step's copies are independent of each
/// other (no copy reads what another copy of the same step writes); [`Transport::exchange`] may
/// therefore run them concurrently, and returns once they are queued. [`Transport::wait`] returns
/// when everything queued has landed.
pub trait Transport<T: DType> {
    /// Short name for reports ("simulated", "p2p", "nccl").
    fn name(&self) -> &'static str;
    /// Number of ranks in the group.
    fn ranks(&self) -> usize;
    /// The ranks whose buffers this process holds.
    fn local_ranks(&self) -> Vec<usize>;
    /// The device of a local rank.
    fn device(&self, rank: usize) -> Result<&Device>;
    /// Queue one step's copies. Copies whose source and destination are both remote are ignored.
    /// Every copy is checked before any is queued: an invalid step is an error that queues
    /// nothing. After an error from the device while queuing, call [`Transport::wait`] before
    /// reusing or dropping the buffers.
    fn exchange(&mut self, bufs: &mut RankBuffers<T>, copies: &[Copy]) -> Result<()>;
    /// Wait for every queued copy.
    fn wait(&mut self) -> Result<()>;
}

/// n logical ranks as n buffer sets on one device. Copies are device-to-device copies on the
/// device's stream, so they serialise with compute: this transport tests correctness and
/// measures the copy schedule, not link concurrency.
pub struct Simulated {
    device: Device,
    n: usize,
}

impl Simulated {
    pub fn new(device: &Device, n: usize) -> Result<Simulated> {
        if n == 0 {
            return Err(Error::invalid(
                "parallel::Simulated",
                "needs at least 1 rank",
            ));
        }
        Ok(Simulated {
            device: device.clone(),
            n,
        })
    }
}

/// Checks a copy against the buffers it names (shared by the transports).
pub(crate) fn check_copy<T: DType>(
    op: &'static str,
    bufs: &RankBuffers<T>,
    c: &Copy,
    need_src: bool,
    need_dst: bool,
) -> Result<()> {
    if c.src_rank == c.dst_rank {
        return Err(Error::invalid(
            op,
            format!("copy from rank {} to itself", c.src_rank),
        ));
    }
    let check = |rank: usize, i: usize, off: usize, what: &str| -> Result<()> {
        let b = bufs.get(op, rank, i)?;
        if off.checked_add(c.len).is_none_or(|e| e > b.len()) {
            return Err(Error::invalid(
                op,
                format!(
                    "{what} range {off}..{off}+{} of rank {rank} buffer {i} is outside its {} \
                     elements",
                    c.len,
                    b.len()
                ),
            ));
        }
        Ok(())
    };
    if need_src {
        check(c.src_rank, c.src_buf, c.src_off, "source")?;
    }
    if need_dst {
        check(c.dst_rank, c.dst_buf, c.dst_off, "destination")?;
    }
    Ok(())
}

impl<T: DType> Transport<T> for Simulated {
    fn name(&self) -> &'static str {
        "simulated"
    }
    fn ranks(&self) -> usize {
        self.n
    }
    fn local_ranks(&self) -> Vec<usize> {
        (0..self.n).collect()
    }
    fn device(&self, rank: usize) -> Result<&Device> {
        if rank >= self.n {
            return Err(Error::invalid(
                "parallel::Simulated",
                format!("rank {rank} of {}", self.n),
            ));
        }
        Ok(&self.device)
    }
    fn exchange(&mut self, bufs: &mut RankBuffers<T>, copies: &[Copy]) -> Result<()> {
        const OP: &str = "parallel::Simulated::exchange";
        if bufs.bufs.len() != self.n {
            return Err(Error::invalid(
                OP,
                format!("{} buffer sets for {} ranks", bufs.bufs.len(), self.n),
            ));
        }
        // Check every copy before making any, so that a failed step changes nothing.
        for c in copies {
            if c.src_rank >= self.n || c.dst_rank >= self.n {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "copy {} -> {} in a group of {}",
                        c.src_rank, c.dst_rank, self.n
                    ),
                ));
            }
            check_copy(OP, bufs, c, true, true)?;
            let src = &bufs.bufs[c.src_rank][c.src_buf];
            let dst = &bufs.bufs[c.dst_rank][c.dst_buf];
            if !src.device().same(&self.device) || !dst.device().same(&self.device) {
                return Err(Error::invalid(
                    OP,
                    "simulated ranks keep every buffer on the transport's device",
                ));
            }
        }
        for c in copies {
            // Distinct ranks: borrow the source immutably and the destination mutably.
            let (src, dst) = if c.src_rank < c.dst_rank {
                let (a, b) = bufs.bufs.split_at_mut(c.dst_rank);
                (&a[c.src_rank][c.src_buf], &mut b[0][c.dst_buf])
            } else {
                let (a, b) = bufs.bufs.split_at_mut(c.src_rank);
                (&b[0][c.src_buf], &mut a[c.dst_rank][c.dst_buf])
            };
            dst.copy_range_from(c.dst_off, src, c.src_off, c.len)?;
        }
        Ok(())
    }
    fn wait(&mut self) -> Result<()> {
        self.device.synchronize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(dev: &Device, n: usize) -> RankBuffers<u32> {
        RankBuffers {
            bufs: (0..n)
                .map(|r| {
                    let data: Vec<u32> = (0..16).map(|i| (r * 100 + i) as u32).collect();
                    vec![dev.upload(&data, "rank").unwrap()]
                })
                .collect(),
        }
    }

    #[test]
    fn simulated_copies_ranges_between_ranks() {
        for dev in [Device::cpu(), Device::simt()] {
            let mut bufs = group(&dev, 3);
            let mut t = Simulated::new(&dev, 3).unwrap();
            let copies = [
                Copy {
                    src_rank: 2,
                    src_buf: 0,
                    src_off: 1,
                    dst_rank: 0,
                    dst_buf: 0,
                    dst_off: 10,
                    len: 3,
                    ring: 0,
                },
                Copy {
                    src_rank: 0,
                    src_buf: 0,
                    src_off: 0,
                    dst_rank: 1,
                    dst_buf: 0,
                    dst_off: 14,
                    len: 2,
                    ring: 1,
                },
            ];
            Transport::<u32>::exchange(&mut t, &mut bufs, &copies).unwrap();
            Transport::<u32>::wait(&mut t).unwrap();
            let r0 = bufs.bufs[0][0].download().unwrap();
            assert_eq!(&r0[9..14], &[9, 201, 202, 203, 13]);
            let r1 = bufs.bufs[1][0].download().unwrap();
            assert_eq!(&r1[13..], &[113, 0, 1]);
            assert_eq!(bufs.bufs[2][0].download().unwrap()[0], 200);
        }
    }

    #[test]
    fn simulated_rejects_bad_copies() {
        let dev = Device::cpu();
        let mut bufs = group(&dev, 2);
        let mut t = Simulated::new(&dev, 2).unwrap();
        let good = Copy {
            src_rank: 0,
            src_buf: 0,
            src_off: 0,
            dst_rank: 1,
            dst_buf: 0,
            dst_off: 0,
            len: 4,
            ring: 0,
        };
        let bad = [
            Copy { len: 17, ..good },
            Copy {
                dst_off: 13,
                ..good
            },
            Copy {
                dst_rank: 0,
                ..good
            },
            Copy {
                src_rank: 5,
                ..good
            },
            Copy { src_buf: 1, ..good },
        ];
        for c in bad {
            let e = Transport::<u32>::exchange(&mut t, &mut bufs, &[c]).unwrap_err();
            assert!(e.to_string().contains("Simulated"), "{e}");
        }
        assert!(Simulated::new(&dev, 0).is_err());
    }
}
