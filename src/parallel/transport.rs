//! The transports beyond simulated ranks: [`P2p`] (one process, one rank per device) and [`Nccl`]
//! (one process per rank and GPU). Both carry the same [`struct@Copy`] lists as [`super::Simulated`].
//!
//! **P2p.** Rank r is device r. Between host-memory devices (n distinct `Device::simt()` or
//! `Device::cpu_separate()` instances) a copy is a host `memcpy`, so P2p is fully tested on the CPU. On
//! CUDA a copy is `cuMemcpyPeerAsync` on a copy stream of the *source* device, one stream per
//! ring (copy [`Copy::ring`]), with peer access enabled between every pair where the hardware
//! allows it. The streams of a step wait for the compute work queued on both devices before
//! [`Transport::exchange`]; [`Transport::wait`] waits for the copy streams and the devices. HIP is
//! not implemented (an error); mixed backends are an error. See [`crate::device::peer`].
//!
//! **Nccl.** One process per rank; rank r hosts only its own buffers (`bufs[r]`; the other lists
//! are empty). A step is one NCCL group: for each copy in order, `ncclSend` when this rank is the
//! source and `ncclRecv` when it is the destination (copies between two other ranks are skipped).
//! Every rank must pass the same copy list in the same order: NCCL matches the operations between
//! a pair of ranks in the order they are posted. The bootstrap of the NCCL id is described at
//! [`IdSource`] and [`NcclBootstrap`]. Construction returns an error, never a panic, when libnccl
//! or a CUDA GPU is missing. NCCL refuses two ranks on one GPU, so this transport cannot be tested
//! on one GPU; it has not run on a GPU yet.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::device::nccl::NcclId;
use crate::device::nccl::{self, Communicator, P2pOp};
pub use crate::device::peer::PeerGroup;
use crate::device::peer::MAX_CHANNELS;
use crate::device::{Device, DeviceBuffer};
use crate::dtype::DType;
use crate::error::{Error, Result};

use super::{check_copy, Copy, RankBuffers, Transport};

/// The source buffer (shared) and destination buffer (exclusive) of a copy between two distinct
/// ranks. The copy was checked with [`check_copy`].
fn pair<'a, T: DType>(
    bufs: &'a mut RankBuffers<T>,
    c: &Copy,
) -> (&'a DeviceBuffer<T>, &'a mut DeviceBuffer<T>) {
    if c.src_rank < c.dst_rank {
        let (a, b) = bufs.bufs.split_at_mut(c.dst_rank);
        (&a[c.src_rank][c.src_buf], &mut b[0][c.dst_buf])
    } else {
        let (a, b) = bufs.bufs.split_at_mut(c.src_rank);
        (&b[0][c.src_buf], &mut a[c.dst_rank][c.dst_buf])
    }
}

fn check_ranks(op: &'static str, c: &Copy, n: usize) -> Result<()> {
    if c.src_rank >= n || c.dst_rank >= n {
        return Err(Error::invalid(
            op,
            format!("copy {} -> {} in a group of {n}", c.src_rank, c.dst_rank),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// P2p
// ---------------------------------------------------------------------------------------------

/// n ranks on n devices of one process, one rank per device. See the module docs.
#[derive(Debug)]
pub struct P2p {
    group: PeerGroup,
}

impl P2p {
    /// Rank r is `devices[r]`. The devices must be distinct and of one backend (CUDA, or host
    /// memory: SIMT or CPU).
    pub fn new(devices: &[Device]) -> Result<P2p> {
        Ok(P2p {
            group: PeerGroup::new(devices)?,
        })
    }

    /// True when copies from rank `from` to rank `to` take a direct peer path (always true for
    /// host memory; on CUDA, whether peer access could be enabled).
    pub fn direct(&self, from: usize, to: usize) -> bool {
        self.group.direct(from, to)
    }
}

impl<T: DType> Transport<T> for P2p {
    fn name(&self) -> &'static str {
        "p2p"
    }
    fn ranks(&self) -> usize {
        self.group.len()
    }
    fn local_ranks(&self) -> Vec<usize> {
        (0..self.group.len()).collect()
    }
    fn device(&self, rank: usize) -> Result<&Device> {
        self.group.devices().get(rank).ok_or_else(|| {
            Error::invalid(
                "parallel::P2p",
                format!("rank {rank} of {}", self.group.len()),
            )
        })
    }
    fn exchange(&mut self, bufs: &mut RankBuffers<T>, copies: &[Copy]) -> Result<()> {
        const OP: &str = "parallel::P2p::exchange";
        let n = self.group.len();
        if bufs.bufs.len() != n {
            return Err(Error::invalid(
                OP,
                format!("{} buffer sets for {n} ranks", bufs.bufs.len()),
            ));
        }
        // Check every copy before queuing any.
        for c in copies {
            check_ranks(OP, c, n)?;
            check_copy(OP, bufs, c, true, true)?;
            if c.ring >= MAX_CHANNELS {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "copy {} -> {} on ring {}: at most {MAX_CHANNELS} rings (copy channels)",
                        c.src_rank, c.dst_rank, c.ring
                    ),
                ));
            }
            for (rank, i) in [(c.src_rank, c.src_buf), (c.dst_rank, c.dst_buf)] {
                let d = bufs.bufs[rank][i].device();
                if !d.same(&self.group.devices()[rank]) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "buffer {i} of rank {rank} is on {}, not on the rank's device {}",
                            d.backend(),
                            self.group.devices()[rank].backend()
                        ),
                    ));
                }
            }
        }
        let mut step = self.group.step()?;
        for c in copies {
            let (src, dst) = pair(bufs, c);
            step.copy(dst, c.dst_off, src, c.src_off, c.len, c.ring)?;
        }
        Ok(())
    }
    fn wait(&mut self) -> Result<()> {
        self.group.synchronize()
    }
}

// ---------------------------------------------------------------------------------------------
// NCCL bootstrap
// ---------------------------------------------------------------------------------------------

/// Environment variable: this process's rank (falls back to `RANK`, as torchrun sets it).
pub const ENV_RANK: &str = "TESSERA_RANK";
/// Environment variable: the number of ranks (falls back to `WORLD_SIZE`).
pub const ENV_WORLD_SIZE: &str = "TESSERA_WORLD_SIZE";
/// Environment variable: the NCCL id as 256 hex digits ([`IdSource::Hex`]).
pub const ENV_NCCL_ID: &str = "TESSERA_NCCL_ID";
/// Environment variable: a path through which rank 0 publishes the id ([`IdSource::File`]).
pub const ENV_NCCL_ID_FILE: &str = "TESSERA_NCCL_ID_FILE";
/// Environment variable: seconds the other ranks wait for the id file (default 300).
pub const ENV_NCCL_TIMEOUT_S: &str = "TESSERA_NCCL_TIMEOUT_S";
/// NCCL's own variable: `<host>:<port>` of the bootstrap root ([`IdSource::NcclCommId`]).
pub const ENV_NCCL_COMM_ID: &str = "NCCL_COMM_ID";

/// Default wait for the id file.
pub const DEFAULT_ID_TIMEOUT: Duration = Duration::from_secs(300);

/// Where the ranks get the NCCL unique id from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdSource {
    /// Rank 0 generates the id (`ncclGetUniqueId`) and publishes it at `path`, atomically (a
    /// temporary file in the same directory, then a rename); the other ranks poll for the file
    /// until `timeout`. Use a fresh path per job (a stale file from an earlier run with the same
    /// world size would be read as the id); the file records the world size, and a mismatch is
    /// an error.
    File { path: PathBuf, timeout: Duration },
    /// The id as 256 hex digits. The process that generated it hosts NCCL's bootstrap root and
    /// must stay alive until every rank has joined: in practice rank 0 generated it (see
    /// [`NcclId::generate`]) and handed it out, or it was derived from `NCCL_COMM_ID`.
    Hex(String),
    /// `NCCL_COMM_ID=<host>:<port>` is set in every rank's environment: each rank derives the
    /// same id from it, and rank 0 opens the bootstrap root at that address when it joins.
    NcclCommId,
}

/// Rank, world size and id source, as a launcher provides them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NcclBootstrap {
    pub rank: usize,
    pub world: usize,
    pub id: IdSource,
}

impl NcclBootstrap {
    /// From the process environment: see [`NcclBootstrap::from_lookup`].
    pub fn from_env() -> Result<NcclBootstrap> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From a variable lookup (tests pass a map):
    /// - rank: `TESSERA_RANK`, else `RANK`; world size: `TESSERA_WORLD_SIZE`, else `WORLD_SIZE`;
    /// - id: `TESSERA_NCCL_ID` (hex) if set, else `TESSERA_NCCL_ID_FILE` (path; wait
    ///   `TESSERA_NCCL_TIMEOUT_S` seconds, default 300), else `NCCL_COMM_ID` if set.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<NcclBootstrap> {
        const OP: &str = "NCCL bootstrap";
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let num = |primary: &str, fallback: &str| -> Result<usize> {
            let (name, v) = match (get(primary), get(fallback)) {
                (Some(v), _) => (primary, v),
                (None, Some(v)) => (fallback, v),
                (None, None) => {
                    return Err(Error::invalid(OP, format!("set {primary} (or {fallback})")))
                }
            };
            v.trim().parse::<usize>().map_err(|_| {
                Error::invalid(OP, format!("{name}={v:?} is not a non-negative integer"))
            })
        };
        let rank = num(ENV_RANK, "RANK")?;
        let world = num(ENV_WORLD_SIZE, "WORLD_SIZE")?;
        if world == 0 || rank >= world {
            return Err(Error::invalid(
                OP,
                format!("rank {rank} is not in a group of {world}"),
            ));
        }
        let id = if let Some(hex) = get(ENV_NCCL_ID) {
            IdSource::Hex(hex)
        } else if let Some(path) = get(ENV_NCCL_ID_FILE) {
            let timeout = match get(ENV_NCCL_TIMEOUT_S) {
                None => DEFAULT_ID_TIMEOUT,
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s >= 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        Error::invalid(
                            OP,
                            format!("{ENV_NCCL_TIMEOUT_S}={v:?} is not a number of seconds"),
                        )
                    })?,
            };
            IdSource::File {
                path: PathBuf::from(path),
                timeout,
            }
        } else if get(ENV_NCCL_COMM_ID).is_some() {
            IdSource::NcclCommId
        } else {
            return Err(Error::invalid(
                OP,
                format!(
                    "no NCCL id source: set {ENV_NCCL_ID} (hex), {ENV_NCCL_ID_FILE} (path) or \
                     {ENV_NCCL_COMM_ID} (host:port)"
                ),
            ));
        };
        Ok(NcclBootstrap { rank, world, id })
    }
}

const ID_FILE_MAGIC: &str = "tessera-nccl-id 1";

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

/// Write the id file atomically: `<path>.tmp.<pid>` in the same directory, flushed, then renamed
/// over `path`. Format: a line `tessera-nccl-id 1 world=<n>`, then the id as 256 hex digits.
pub fn publish_id(path: &Path, id: &NcclId, world: usize) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let ctx = |what: &str, p: &Path| format!("NCCL id file: {what} {}", p.display());
    {
        let mut f = std::fs::File::create(&tmp).map_err(io_err(ctx("create", &tmp)))?;
        writeln!(f, "{ID_FILE_MAGIC} world={world}\n{}", id.to_hex())
            .map_err(io_err(ctx("write", &tmp)))?;
        f.sync_all().map_err(io_err(ctx("sync", &tmp)))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::Io {
            context: format!(
                "NCCL id file: rename {} to {}",
                tmp.display(),
                path.display()
            ),
            source: e,
        }
    })
}

/// Parse an id file's text, checking the world size it records.
pub fn parse_id_file(text: &str, world: usize) -> Result<NcclId> {
    let bad = |msg: String| Error::Format {
        context: "NCCL id file".into(),
        msg,
    };
    let mut lines = text.lines();
    let head = lines.next().unwrap_or("");
    let rest = head.strip_prefix(ID_FILE_MAGIC).ok_or_else(|| {
        bad(format!(
            "first line {head:?} is not '{ID_FILE_MAGIC} world=N'"
        ))
    })?;
    let w: usize = rest
        .trim()
        .strip_prefix("world=")
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| bad(format!("first line {head:?} has no world=N")))?;
    if w != world {
        return Err(bad(format!(
            "written for a group of {w} ranks, this group has {world} (a stale file from \
             another job?)"
        )));
    }
    NcclId::from_hex(lines.next().unwrap_or(""))
}

/// Poll for the id file until it appears or `timeout` passes.
pub fn read_id(path: &Path, world: usize, timeout: Duration) -> Result<NcclId> {
    let start = Instant::now();
    loop {
        match std::fs::read_to_string(path) {
            Ok(text) => return parse_id_file(&text, world),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::Io {
                    context: format!("NCCL id file: read {}", path.display()),
                    source: e,
                })
            }
        }
        if start.elapsed() >= timeout {
            return Err(Error::invalid(
                "NCCL bootstrap",
                format!(
                    "no NCCL id at {} after {:.1} s: is rank 0 running, with the same {}?",
                    path.display(),
                    timeout.as_secs_f64(),
                    ENV_NCCL_ID_FILE
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Nccl
// ---------------------------------------------------------------------------------------------

/// One rank of an NCCL group: this process's rank on one CUDA GPU. See the module docs.
#[derive(Debug)]
pub struct Nccl {
    comm: Communicator,
    device: Device,
}

impl Nccl {
    /// Checks that NCCL can run here: libnccl loads (version 2.14 or newer) and `device` is a CUDA
    /// device. The error names NCCL and every missing piece.
    pub fn check(device: &Device) -> Result<()> {
        let mut missing = Vec::new();
        if device.cuda_exec().is_none() {
            missing.push(format!(
                "NCCL needs a CUDA device (one GPU per rank), got {}",
                device.backend()
            ));
        }
        if let Err(e) = nccl::probe() {
            missing.push(match e {
                Error::DeviceUnavailable { msg, .. } => msg,
                e => e.to_string(),
            });
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::DeviceUnavailable {
            backend: "nccl",
            msg: format!("the NCCL transport cannot run here: {}", missing.join("; ")),
        })
    }

    /// Joins group `world` as `rank` on `device` (a CUDA GPU), with the id from `id`. Blocks until
    /// every rank has joined (and, for [`IdSource::File`], until the file appears or times out).
    pub fn new(device: &Device, rank: usize, world: usize, id: IdSource) -> Result<Nccl> {
        if world == 0 || rank >= world {
            return Err(Error::invalid(
                "parallel::Nccl",
                format!("rank {rank} is not in a group of {world}"),
            ));
        }
        Self::check(device)?;
        let id = match id {
            IdSource::Hex(h) => NcclId::from_hex(&h)?,
            IdSource::NcclCommId => {
                if std::env::var_os(ENV_NCCL_COMM_ID).is_none() {
                    return Err(Error::invalid(
                        "parallel::Nccl",
                        format!("IdSource::NcclCommId needs {ENV_NCCL_COMM_ID}=<host>:<port>"),
                    ));
                }
                NcclId::generate()?
            }
            IdSource::File { path, timeout } => {
                if rank == 0 {
                    let id = NcclId::generate()?;
                    publish_id(&path, &id, world)?;
                    id
                } else {
                    read_id(&path, world, timeout)?
                }
            }
        };
        let comm = Communicator::init(device, rank, world, &id)?;
        Ok(Nccl {
            comm,
            device: device.clone(),
        })
    }

    /// [`Nccl::new`] with rank, world size and id source from the environment
    /// ([`NcclBootstrap::from_env`]).
    pub fn from_env(device: &Device) -> Result<Nccl> {
        Self::check(device)?;
        let b = NcclBootstrap::from_env()?;
        Self::new(device, b.rank, b.world, b.id)
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.comm.rank()
    }
}

impl<T: DType> Transport<T> for Nccl {
    fn name(&self) -> &'static str {
        "nccl"
    }
    fn ranks(&self) -> usize {
        self.comm.world()
    }
    fn local_ranks(&self) -> Vec<usize> {
        vec![self.comm.rank()]
    }
    fn device(&self, rank: usize) -> Result<&Device> {
        if rank != self.comm.rank() {
            return Err(Error::invalid(
                "parallel::Nccl",
                format!(
                    "rank {rank} is not hosted by this process (rank {})",
                    self.comm.rank()
                ),
            ));
        }
        Ok(&self.device)
    }
    fn exchange(&mut self, bufs: &mut RankBuffers<T>, copies: &[Copy]) -> Result<()> {
        const OP: &str = "parallel::Nccl::exchange";
        let (me, n) = (self.comm.rank(), self.comm.world());
        if bufs.bufs.len() != n {
            return Err(Error::invalid(
                OP,
                format!(
                    "{} buffer sets for {n} ranks (ranks not hosted here hold empty lists)",
                    bufs.bufs.len()
                ),
            ));
        }
        let mut ops = Vec::new();
        for c in copies {
            check_ranks(OP, c, n)?;
            let (send, recv) = (c.src_rank == me, c.dst_rank == me);
            if c.src_rank == c.dst_rank || send || recv {
                check_copy(OP, bufs, c, send, recv)?;
            }
            if send {
                ops.push(P2pOp::Send {
                    buf: c.src_buf,
                    off: c.src_off,
                    len: c.len,
                    peer: c.dst_rank,
                });
            } else if recv {
                ops.push(P2pOp::Recv {
                    buf: c.dst_buf,
                    off: c.dst_off,
                    len: c.len,
                    peer: c.src_rank,
                });
            }
        }
        self.comm.step(&mut bufs.bufs[me], &ops)
    }
    fn wait(&mut self) -> Result<()> {
        self.comm.synchronize()?;
        self.device.synchronize()
    }
}
