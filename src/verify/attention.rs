//! Attention rows: prefill (`attention::forward`), flash-decoding (`attention::decode_partials`
//! then `attention::merge`) and the LSE merge alone. [`Problem`] is the one host-side attention
//! problem of the tests (`tests/attention.rs`, `tests/attention_decode.rs`,
//! `tests/sequence_parallel.rs`), the benches and these rows; [`Uploaded::attention`] is the one
//! place they build an [`attn::Attention`].

use half::{bf16, f16};

use super::{failed, stage, up, Outcome, Row};
use crate::device::{Device, DeviceBuffer};
use crate::dtype::Float;
use crate::error::Result;
use crate::ops::attention::{self as attn, HalfFloat, MaskMode, Path, Positions};
use crate::reference::attention as reference;
use crate::testing::{lse_mismatch, rel_l2, to_dtype, tol, Rng};

/// One attention problem on the host: packed Q `[total_q, H, D]`, K/V `[total_kv, H_kv, D]` as
/// f32 values exact in the dtype they run in, explicit positions and depths, key validity.
#[derive(Clone, Debug)]
pub struct Problem {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub cu_q: Vec<i32>,
    pub cu_kv: Vec<i32>,
    pub q_pos: Vec<i32>,
    pub kv_pos: Vec<i32>,
    /// Some((q_offset, kv_offset)): the op is given `Positions::Implicit` (`t + offset`; they
    /// must equal `q_pos` / `kv_pos`, which the reference reads).
    pub implicit: Option<(i32, i32)>,
    /// Depths (passed to the op in duo-causal mode only; all 0 otherwise).
    pub q_depth: Vec<i32>,
    pub kv_depth: Vec<i32>,
    /// Nonzero where the key slot is valid; None: all valid (and the op gets no buffer).
    pub kv_valid: Option<Vec<u8>>,
    pub mode: MaskMode,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub scale: f32,
}

/// A [`Problem`] on a device (what [`Uploaded::attention`] borrows).
pub struct Uploaded<T: HalfFloat> {
    pub q: DeviceBuffer<T>,
    pub k: DeviceBuffer<T>,
    pub v: DeviceBuffer<T>,
    pub cu_q: DeviceBuffer<i32>,
    pub cu_kv: DeviceBuffer<i32>,
    pub q_pos: DeviceBuffer<i32>,
    pub kv_pos: DeviceBuffer<i32>,
    pub q_depth: DeviceBuffer<i32>,
    pub kv_depth: DeviceBuffer<i32>,
    pub kv_valid: Option<DeviceBuffer<u8>>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    /// The longest query and key sequences (the op's grid bounds).
    max_seqlen_q: usize,
    max_seqlen_kv: usize,
    implicit: Option<(i32, i32)>,
    mode: MaskMode,
    scale: f32,
}

impl<T: HalfFloat> Uploaded<T> {
    /// The op's arguments for this problem on `path`.
    pub fn attention(&self, path: Path) -> attn::Attention<'_, T> {
        let (q_pos, kv_pos) = match self.implicit {
            Some((a, b)) => (
                Positions::Implicit { offset: a },
                Positions::Implicit { offset: b },
            ),
            None => (
                Positions::Explicit(&self.q_pos),
                Positions::Explicit(&self.kv_pos),
            ),
        };
        let duo = self.mode == MaskMode::DuoCausal;
        attn::Attention {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            cu_seqlens_q: &self.cu_q,
            cu_seqlens_kv: &self.cu_kv,
            max_seqlen_q: self.max_seqlen_q,
            max_seqlen_kv: self.max_seqlen_kv,
            q_pos,
            kv_pos,
            q_depth: duo.then_some(&self.q_depth),
            kv_depth: duo.then_some(&self.kv_depth),
            kv_valid: self.kv_valid.as_ref(),
            scale: self.scale,
            mode: self.mode,
            path,
        }
    }
}

/// Outputs of one run, downloaded: O `[total_q, H, D]`, LSE `[H, total_q]`.
pub type Out = (Vec<f32>, Vec<f32>);
/// The f64 reference: O and LSE.
pub type Reference = (Vec<f64>, Vec<f64>);

impl Problem {
    /// One sequence of `seq_len` tokens at positions `0..seq_len` (implicit), no depths, every
    /// key valid, random values exact in `T` (uniform in ±2): the sequence-parallel problem.
    pub fn single_sequence<T: Float>(
        seq_len: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        mode: MaskMode,
        seed: u64,
    ) -> Problem {
        let mut r = Rng(seed);
        let q = r.values_in::<T>(seq_len * heads * head_dim, 2.0);
        let k = r.values_in::<T>(seq_len * kv_heads * head_dim, 2.0);
        let v = r.values_in::<T>(seq_len * kv_heads * head_dim, 2.0);
        let pos: Vec<i32> = (0..seq_len as i32).collect();
        Problem {
            heads,
            kv_heads,
            head_dim,
            cu_q: vec![0, seq_len as i32],
            cu_kv: vec![0, seq_len as i32],
            q_pos: pos.clone(),
            kv_pos: pos,
            implicit: Some((0, 0)),
            q_depth: vec![0; seq_len],
            kv_depth: vec![0; seq_len],
            kv_valid: None,
            mode,
            q,
            k,
            v,
            scale: 1.0 / (head_dim as f32).sqrt(),
        }
    }

    pub fn total_q(&self) -> usize {
        self.q_pos.len()
    }

    pub fn total_kv(&self) -> usize {
        self.kv_pos.len()
    }

    /// Key validity as an array (all ones when the problem has none).
    pub fn valid(&self) -> Vec<u8> {
        self.kv_valid
            .clone()
            .unwrap_or_else(|| vec![1u8; self.total_kv()])
    }

    /// Key validity to edit (made all ones first when the problem has none).
    pub fn valid_mut(&mut self) -> &mut Vec<u8> {
        let n = self.total_kv();
        self.kv_valid.get_or_insert_with(|| vec![1u8; n])
    }

    /// The f64 reference.
    pub fn reference(&self) -> Reference {
        self.reference_with_valid(&self.valid())
    }

    /// The f64 reference with the given key validity.
    pub fn reference_with_valid(&self, valid: &[u8]) -> Reference {
        reference::attention(&reference::Problem {
            q: &self.q,
            k: &self.k,
            v: &self.v,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            cu_q: &self.cu_q,
            cu_kv: &self.cu_kv,
            q_pos: &self.q_pos,
            kv_pos: &self.kv_pos,
            q_depth: &self.q_depth,
            kv_depth: &self.kv_depth,
            kv_valid: valid,
            scale: self.scale,
            mode: self.mode,
        })
    }

    /// Reference partials of `splits` splits (each sequence's keys in `splits` contiguous
    /// ranges), concatenated like [`attn::Partials`].
    pub fn reference_partials(&self, splits: usize) -> Reference {
        let all = self.valid();
        let (mut o, mut l) = (vec![], vec![]);
        for s in 0..splits {
            let mut valid = vec![0u8; all.len()];
            for w in self.cu_kv.windows(2) {
                let (k0, len) = (w[0] as usize, (w[1] - w[0]) as usize);
                let (j0, j1) = (k0 + s * len / splits, k0 + (s + 1) * len / splits);
                valid[j0..j1].copy_from_slice(&all[j0..j1]);
            }
            let (so, sl) = self.reference_with_valid(&valid);
            o.extend(so);
            l.extend(sl);
        }
        (o, l)
    }

    /// Upload the problem to `dev`, the values as `T`.
    pub fn upload<T: HalfFloat>(&self, dev: &Device) -> Result<Uploaded<T>> {
        Ok(Uploaded {
            q: dev.upload(&to_dtype::<T>(&self.q), "q")?,
            k: dev.upload(&to_dtype::<T>(&self.k), "k")?,
            v: dev.upload(&to_dtype::<T>(&self.v), "v")?,
            cu_q: dev.upload(&self.cu_q, "cu_q")?,
            cu_kv: dev.upload(&self.cu_kv, "cu_kv")?,
            q_pos: dev.upload(&self.q_pos, "q_pos")?,
            kv_pos: dev.upload(&self.kv_pos, "kv_pos")?,
            q_depth: dev.upload(&self.q_depth, "q_depth")?,
            kv_depth: dev.upload(&self.kv_depth, "kv_depth")?,
            kv_valid: match &self.kv_valid {
                Some(x) => Some(dev.upload(x, "kv_valid")?),
                None => None,
            },
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            max_seqlen_q: attn::max_seqlen(&self.cu_q),
            max_seqlen_kv: attn::max_seqlen(&self.cu_kv),
            implicit: self.implicit,
            mode: self.mode,
            scale: self.scale,
        })
    }

    /// `attention::forward` on `dev` in `T` on `path`, downloaded.
    pub fn forward<T: HalfFloat>(&self, dev: &Device, path: Path) -> Result<Out> {
        let u = self.upload::<T>(dev)?;
        // The device-side check of cu_seqlens must pass on a valid problem.
        let out = attn::forward(&u.attention(path))?.checked()?;
        Ok((out.o.download()?, out.lse.download()?))
    }

    /// Compare a prefill (or sequence-parallel) output with the reference: O relative L2 (the
    /// error) within [`tol::HALF`], LSE within [`tol::LSE_ABS`] (exactly -inf where the reference
    /// is), O exactly 0 on the rows that see no key, and the output lengths.
    pub fn compare_forward(&self, out: &Out, reference: &Reference) -> Outcome {
        let ((o, l), (ro, rl)) = (out, reference);
        let e = rel_l2(o, ro);
        let (n, d) = (self.total_q(), self.head_dim);
        // A row that sees no key has O = 0 exactly.
        let zero_bad = rl
            .iter()
            .enumerate()
            .filter(|(_, &y)| y == f64::NEG_INFINITY)
            .find_map(|(j, _)| {
                let (h, i) = (j / n, j % n);
                let at = (i * self.heads + h) * d;
                o.get(at..at + d)
                    .is_none_or(|r| r.iter().any(|&x| x != 0.0))
                    .then_some((i, h))
            });
        let result = if o.len() != ro.len() || l.len() != rl.len() {
            Err(format!(
                "output lengths O {} LSE {} differ from the reference's {} {}",
                o.len(),
                l.len(),
                ro.len(),
                rl.len()
            ))
        } else if let Some(i) = lse_mismatch(l, rl) {
            Err(format!("LSE[{i}] {} vs reference {}", l[i], rl[i]))
        } else if let Some((i, h)) = zero_bad {
            Err(format!("row {i} head {h} sees no key but O is not 0"))
        } else if e > tol::HALF {
            Err(format!("O relative L2 {e:.2e} > {:.0e}", tol::HALF))
        } else {
            Ok(())
        };
        Outcome {
            error: format!("{e:.2e}"),
            result,
        }
    }

    /// The whole prefill case on one device and path: reference, run, compare.
    pub fn check_forward<T: HalfFloat>(&self, dev: &Device, path: Path) -> Outcome {
        let reference = self.reference();
        self.check_forward_against::<T>(dev, path, &reference)
    }

    /// [`Problem::check_forward`] with the reference computed once by the caller.
    pub fn check_forward_against<T: HalfFloat>(
        &self,
        dev: &Device,
        path: Path,
        reference: &Reference,
    ) -> Outcome {
        match stage(dev, "attention::forward", || self.forward::<T>(dev, path)) {
            Err(e) => Outcome::not_run(e),
            Ok(out) => self.compare_forward(&out, reference),
        }
    }
}

// ---- prefill ----------------------------------------------------------------------------------

/// One prefill attention case of the verify rows. Tiles are 64 query rows and 32 keys, so the
/// lengths give partial Q and K/V tiles, and the masks below give every tile class.
pub struct Spec {
    pub name: &'static str,
    pub mode: MaskMode,
    /// Sequence lengths (queries and keys alike; 0 and 1 allowed).
    pub seqs: &'static [usize],
    pub heads: usize,
    pub kv_heads: usize,
    pub d: usize,
    /// Implicit positions `t + offset` for (queries, keys) (full/causal only).
    pub offsets: Option<(i32, i32)>,
    /// Runs of invalid key slots: (sequence, first slot, end slot) relative to the sequence.
    pub invalid: &'static [(usize, usize, usize)],
    /// About 5% of the key slots invalid at random as well.
    pub random_invalid: bool,
}

/// The prefill cases: which tile classes, row kinds and paths each reaches is in
/// docs/architecture.md ("What each verify row reaches").
pub const SPECS: &[Spec] = &[
    // MHA, D = 128; a whole invalid K/V tile (skipped in full mode too), tiles with some invalid
    // slots (boundary), fully valid tiles; an empty sequence and a one-token sequence whose only
    // key is invalid (its row sees nothing: O = 0, LSE = -inf).
    Spec {
        name: "full",
        mode: MaskMode::Full,
        seqs: &[77, 0, 1, 130],
        heads: 2,
        kv_heads: 2,
        d: 128,
        offsets: None,
        invalid: &[(2, 0, 1), (3, 8, 72)],
        random_invalid: false,
    },
    // GQA 2: tiles past the diagonal skipped, below it fully visible, on it boundary.
    Spec {
        name: "causal",
        mode: MaskMode::Causal,
        seqs: &[77, 130],
        heads: 4,
        kv_heads: 2,
        d: 64,
        offsets: None,
        invalid: &[],
        random_invalid: false,
    },
    // GQA 4, queries ahead of the keys (every row sees keys).
    Spec {
        name: "causal+offset",
        mode: MaskMode::Causal,
        seqs: &[77, 130],
        heads: 4,
        kv_heads: 1,
        d: 64,
        offsets: Some((40, -8)),
        invalid: &[],
        random_invalid: false,
    },
    // Queries behind the keys: rows at positions < 10 see no key, the one-token sequence skips
    // every K/V tile.
    Spec {
        name: "causal-offset",
        mode: MaskMode::Causal,
        seqs: &[1, 77],
        heads: 4,
        kv_heads: 2,
        d: 64,
        offsets: Some((-20, 10)),
        invalid: &[],
        random_invalid: false,
    },
    // TaH two-depth layout (~10% hard positions, KV grouped by depth slot: depth-1 tiles skipped
    // by depth for depth-0 query tiles), 5% invalid slots, and the first 40 depth-0 slots of the
    // first sequence invalid (a whole invalid tile; depth-0 rows at positions < 40 see nothing).
    Spec {
        name: "duo-causal",
        mode: MaskMode::DuoCausal,
        seqs: &[77, 130],
        heads: 4,
        kv_heads: 2,
        d: 128,
        offsets: None,
        invalid: &[(0, 0, 40)],
        random_invalid: true,
    },
];

impl Spec {
    /// The problem of this spec: packed rows (queries and keys share the layout), positions and
    /// depths, key validity (None: all valid) and values exact in `T`.
    pub fn problem<T: Float>(&self, seed: u64) -> Problem {
        let mut r = Rng(seed);
        let duo = self.mode == MaskMode::DuoCausal;
        let (mut cu, mut pos, mut depth) = (vec![0i32], vec![], vec![]);
        for &len in self.seqs {
            pos.extend(0..len as i32);
            depth.extend(std::iter::repeat_n(0, len));
            if duo {
                for p in 0..len as i32 {
                    if r.unit() < 0.1 {
                        pos.push(p);
                        depth.push(1);
                    }
                }
            }
            cu.push(pos.len() as i32);
        }
        let n = pos.len();
        let valid = (self.random_invalid || !self.invalid.is_empty()).then(|| {
            let mut v: Vec<u8> = (0..n)
                .map(|_| u8::from(!self.random_invalid || r.unit() >= 0.05))
                .collect();
            for &(b, from, to) in self.invalid {
                let at = cu[b] as usize;
                v[at + from..at + to].fill(0);
            }
            v
        });
        let q = r.values_in::<T>(n * self.heads * self.d, 2.0);
        let k = r.values_in::<T>(n * self.kv_heads * self.d, 2.0);
        let v = r.values_in::<T>(n * self.kv_heads * self.d, 2.0);
        let (qo, ko) = self.offsets.unwrap_or((0, 0));
        Problem {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.d,
            cu_q: cu.clone(),
            cu_kv: cu,
            q_pos: pos.iter().map(|p| p + qo).collect(),
            kv_pos: pos.iter().map(|p| p + ko).collect(),
            implicit: (!duo).then_some((qo, ko)),
            q_depth: depth.clone(),
            kv_depth: depth,
            kv_valid: valid,
            mode: self.mode,
            q,
            k,
            v,
            scale: 1.0 / (self.d as f32).sqrt(),
        }
    }

    fn sizes(&self) -> String {
        let mut sizes = format!(
            "seqs {:?} H={}/{} D={}",
            self.seqs, self.heads, self.kv_heads, self.d
        );
        if let Some((a, b)) = self.offsets {
            sizes += &format!(" pos q{a:+} kv{b:+}");
        }
        if self.random_invalid || !self.invalid.is_empty() {
            sizes += " invalid slots";
        }
        sizes
    }
}

/// The label of a path in the op column.
pub fn path_name(path: Path) -> &'static str {
    match path {
        Path::Auto => "auto",
        Path::TensorCore => "tensor-core",
        Path::Scalar => "scalar",
    }
}

/// Prefill attention (`attention::forward`): every case of [`SPECS`] x path on one dtype and
/// device (both kernel paths on a kernel executor, the one path of the CPU). Error: relative L2
/// of O; see [`Problem::compare_forward`].
fn forward_rows_dtype<T: HalfFloat>(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    let paths: &[Path] = if dev.backend().runs_kernels() {
        &[Path::TensorCore, Path::Scalar]
    } else {
        &[Path::Auto]
    };
    for (k, s) in SPECS.iter().enumerate() {
        let p = s.problem::<T>(0xa77e_0000 + k as u64);
        let reference = p.reference();
        for &path in paths {
            let op = format!("attention.forward {} {}", s.name, path_name(path));
            rows.push(p.check_forward_against::<T>(dev, path, &reference).row(
                &op,
                T::KIND.name(),
                dev,
                s.sizes(),
            ));
        }
    }
    rows
}

/// Prefill attention rows for both dtypes.
pub fn forward_rows(dev: &Device) -> Vec<Row> {
    let mut rows = forward_rows_dtype::<f16>(dev);
    rows.extend(forward_rows_dtype::<bf16>(dev));
    rows
}

// ---- decode (flash-decoding) ------------------------------------------------------------------

/// A random decode problem: sequence `b` has `q_lens[b]` queries and `kv_lens[b]` keys, values
/// exact in `T` (uniform in ±1). Causal/Full: key `t` has position `t`, the queries are the
/// sequence's last positions. Duo-causal (TaH cache layout): the first ~80% of the slots hold
/// depth 0 for positions `0..n0`, the rest depth 1 for random hard positions; queries have random
/// depth 0/1. About 5% of the key slots are invalid. With `implicit`, q positions are
/// `t + offset` (one offset for all sequences) and kv positions `t`, passed as
/// `Positions::Implicit`.
#[allow(clippy::too_many_arguments)]
pub fn decode_problem<T: Float>(
    q_lens: &[usize],
    kv_lens: &[usize],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    mode: MaskMode,
    implicit: bool,
    seed: u64,
) -> Problem {
    let mut r = Rng(seed);
    let (tq, tk): (usize, usize) = (q_lens.iter().sum(), kv_lens.iter().sum());
    let q = r.values_in::<T>(tq * heads * head_dim, 1.0);
    let k = r.values_in::<T>(tk * kv_heads * head_dim, 1.0);
    let v = r.values_in::<T>(tk * kv_heads * head_dim, 1.0);
    let mut cu_q = vec![0i32];
    let mut cu_kv = vec![0i32];
    let (mut q_pos, mut kv_pos, mut q_depth, mut kv_depth, mut kv_valid) =
        (vec![], vec![], vec![], vec![], vec![]);
    let offset = kv_lens.first().map_or(0, |&l| l as i32) - q_lens.first().map_or(0, |&l| l as i32);
    for (&nq, &nk) in q_lens.iter().zip(kv_lens) {
        cu_q.push(cu_q.last().unwrap() + nq as i32);
        cu_kv.push(cu_kv.last().unwrap() + nk as i32);
        let n0 = if mode == MaskMode::DuoCausal && !implicit {
            nk - nk / 5
        } else {
            nk
        };
        for t in 0..nk {
            if t < n0 {
                kv_pos.push(t as i32);
                kv_depth.push(0);
            } else {
                kv_pos.push((r.next_u64() % n0.max(1) as u64) as i32);
                kv_depth.push(1);
            }
            kv_valid.push(u8::from(r.unit() >= 0.05));
        }
        for t in 0..nq {
            q_pos.push(if implicit {
                t as i32 + offset
            } else {
                (n0 + t) as i32 - nq as i32
            });
            q_depth.push((r.next_u64() % 2) as i32);
        }
    }
    Problem {
        heads,
        kv_heads,
        head_dim,
        cu_q,
        cu_kv,
        q_pos,
        kv_pos,
        implicit: implicit.then_some((offset, 0)),
        q_depth,
        kv_depth,
        kv_valid: Some(kv_valid),
        mode,
        q,
        k,
        v,
        scale: 1.0 / (head_dim as f32).sqrt(),
    }
}

/// Partial and merged outputs of one decode run, downloaded.
pub struct DecodeRun {
    pub o_part: Vec<f32>,
    pub lse_part: Vec<f32>,
    pub o: Vec<f32>,
    pub lse: Vec<f32>,
}

impl Problem {
    /// Upload to `dev` (as `T`) and run `decode_partials` then `merge` (which is what `decode`
    /// does).
    pub fn decode<T: HalfFloat>(&self, dev: &Device, splits: usize) -> Result<DecodeRun> {
        self.decode_ops::<T>(dev, splits).map_err(|(_, e)| e)
    }

    /// [`Problem::decode`], with the op that failed ("upload", `attention::decode_partials` or
    /// `attention::merge`); the device is synchronized after each op, so an asynchronous fault is
    /// charged to the op that launched it.
    fn decode_ops<T: HalfFloat>(
        &self,
        dev: &Device,
        splits: usize,
    ) -> std::result::Result<DecodeRun, (&'static str, crate::error::Error)> {
        let u = self.upload::<T>(dev).map_err(|e| ("upload", e))?;
        let a = u.attention(Path::Auto);
        let partials = || -> Result<_> {
            let p = attn::decode_partials(&a, splits)?;
            dev.synchronize()?;
            p.check.check()?;
            let (o, l) = (p.o.download()?, p.lse.download()?);
            Ok((p, o, l))
        };
        let (p, o_part, lse_part) = partials().map_err(|e| ("attention::decode_partials", e))?;
        let merged = || -> Result<_> {
            let m = attn::merge(
                &p.o,
                &p.lse,
                splits,
                self.total_q(),
                self.heads,
                self.head_dim,
            )?;
            dev.synchronize()?;
            Ok((m.o.download()?, m.lse.download()?))
        };
        let (o, lse) = merged().map_err(|e| ("attention::merge", e))?;
        Ok(DecodeRun {
            o_part,
            lse_part,
            o,
            lse,
        })
    }

    /// The decode case on one device: partials against the reference on each split's keys and
    /// the merged result against attention over all keys, each relative L2 (-inf-aware, see
    /// [`rel_l2`]) within `tol`; the error is the worst of the four. A failure names the op of
    /// the chain it comes from.
    pub fn check_decode<T: HalfFloat>(&self, dev: &Device, splits: usize, tol: f64) -> Outcome {
        let (ro, rl) = self.reference();
        let (rpo, rpl) = self.reference_partials(splits);
        let r = self
            .decode_ops::<T>(dev, splits)
            .map_err(|(op, e)| {
                if op == "upload" {
                    format!("upload failed: {e}")
                } else {
                    failed(op, &e)
                }
            })
            .map(|run| {
                [
                    rel_l2(&run.o_part, &rpo),
                    rel_l2(&run.lse_part, &rpl),
                    rel_l2(&run.o, &ro),
                    rel_l2(&run.lse, &rl),
                ]
            });
        match r {
            Err(e) => Outcome::not_run(e),
            Ok(e) => {
                let worst = e.iter().cloned().fold(0f64, f64::max);
                let result = if e[0].max(e[1]) > tol {
                    Err(format!(
                        "attention::decode_partials: o_part {:.1e} lse_part {:.1e} > {tol:.0e}",
                        e[0], e[1]
                    ))
                } else if e[2].max(e[3]) > tol {
                    Err(format!(
                        "attention::merge: o {:.1e} lse {:.1e} > {tol:.0e} (partials within)",
                        e[2], e[3]
                    ))
                } else {
                    Ok(())
                };
                Outcome {
                    error: format!("{worst:.1e}"),
                    result,
                }
            }
        }
    }
}

/// One decode case of the verify rows: per-sequence query and key counts, heads, head dim, mode,
/// implicit positions, splits.
pub struct DecodeCase {
    pub name: &'static str,
    pub q_lens: &'static [usize],
    pub kv_lens: &'static [usize],
    pub heads: usize,
    pub kv_heads: usize,
    pub d: usize,
    pub mode: MaskMode,
    pub implicit: bool,
    pub splits: usize,
}

/// The three explicit-position cases: one per mode over the same ragged batch.
const fn decode_mode_case(name: &'static str, mode: MaskMode) -> DecodeCase {
    DecodeCase {
        name,
        q_lens: &[1, 2, 0, 1],
        kv_lens: &[300, 77, 0, 5],
        heads: 8,
        kv_heads: 2,
        d: 128,
        mode,
        implicit: false,
        splits: 3,
    }
}

pub const DECODE_CASES: &[DecodeCase] = &[
    decode_mode_case("full", MaskMode::Full),
    decode_mode_case("causal", MaskMode::Causal),
    decode_mode_case("duocausal", MaskMode::DuoCausal),
    // Implicit positions (queries at t + 1): most keys of the long sequences are in the future,
    // so many splits see nothing (-inf partials the merge skips); a query over no keys; a
    // sequence of 2 keys in 4 splits (empty ranges); GQA 12 = a chunk of 8 heads and one of 4;
    // D = 64 (2 elements per lane on wave32, 1 on wave64).
    DecodeCase {
        name: "causal implicit",
        q_lens: &[1, 1, 3, 2],
        kv_lens: &[2, 0, 257, 64],
        heads: 12,
        kv_heads: 1,
        d: 64,
        mode: MaskMode::Causal,
        implicit: true,
        splits: 4,
    },
];

/// Decode rows: [`DECODE_CASES`] on one dtype, held to [`tol::HALF_AIM`].
fn decode_rows_dtype<T: HalfFloat>(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    for (ci, c) in DECODE_CASES.iter().enumerate() {
        let p = decode_problem::<T>(
            c.q_lens,
            c.kv_lens,
            c.heads,
            c.kv_heads,
            c.d,
            c.mode,
            c.implicit,
            0xdec0 + ci as u64,
        );
        let sizes = format!(
            "q={:?} kv={:?} H={}/{} D={} S={}",
            c.q_lens, c.kv_lens, c.heads, c.kv_heads, c.d, c.splits
        );
        rows.push(p.check_decode::<T>(dev, c.splits, tol::HALF_AIM).row(
            &format!("attention.decode.{}", c.name),
            T::KIND.name(),
            dev,
            sizes,
        ));
    }
    rows
}

/// Decode rows for both dtypes.
pub fn decode_rows(dev: &Device) -> Vec<Row> {
    let mut rows = decode_rows_dtype::<f16>(dev);
    rows.extend(decode_rows_dtype::<bf16>(dev));
    rows
}

// ---- merge ------------------------------------------------------------------------------------

/// Random partials for the merge: `[splits, total_q, H, D]` O and `[splits, H, total_q]` LSE with
/// LSE in ±`spread`, about a quarter -inf (their O set to NaN: a merge must not read them), and
/// every LSE of the row `i = 0, h = 0` -inf.
pub fn merge_inputs(
    splits: usize,
    total_q: usize,
    heads: usize,
    head_dim: usize,
    spread: f64,
    seed: u64,
) -> (Vec<f32>, Vec<f32>) {
    let mut r = Rng(seed);
    let mut lse: Vec<f32> = (0..splits * heads * total_q)
        .map(|_| {
            if r.unit() < 0.25 {
                f32::NEG_INFINITY
            } else {
                ((r.unit() - 0.5) * 2.0 * spread) as f32
            }
        })
        .collect();
    for s in 0..splits {
        if total_q > 0 {
            lse[s * heads * total_q] = f32::NEG_INFINITY;
        }
    }
    let mut o: Vec<f32> = (0..splits * total_q * heads * head_dim)
        .map(|_| (r.unit() - 0.5) as f32 * 4.0)
        .collect();
    for s in 0..splits {
        for i in 0..total_q {
            for h in 0..heads {
                if lse[(s * heads + h) * total_q + i] == f32::NEG_INFINITY {
                    let at = ((s * total_q + i) * heads + h) * head_dim;
                    o[at..at + head_dim].fill(f32::NAN);
                }
            }
        }
    }
    (o, lse)
}

/// The f64 reference merge in the op's layouts.
pub use crate::reference::attention::merge_packed as merge_reference;

/// The merge case on one device: `attention::merge` of the partials against
/// [`merge_reference`], O and LSE relative L2 (the error is the larger) within [`tol::F32`].
pub fn check_merge(
    dev: &Device,
    o: &[f32],
    lse: &[f32],
    splits: usize,
    total_q: usize,
    heads: usize,
    d: usize,
) -> Outcome {
    let (ro, rl) = merge_reference(o, lse, splits, total_q, heads, d);
    let run = || -> std::result::Result<(Vec<f32>, Vec<f32>), String> {
        let ob = up(dev, o, "o_part")?;
        let lb = up(dev, lse, "lse_part")?;
        stage(dev, "attention::merge", || {
            let m = attn::merge(&ob, &lb, splits, total_q, heads, d)?;
            Ok((m.o.download()?, m.lse.download()?))
        })
    };
    match run().map(|(mo, ml)| rel_l2(&mo, &ro).max(rel_l2(&ml, &rl))) {
        Err(e) => Outcome::not_run(e),
        Ok(e) => Outcome {
            error: format!("{e:.1e}"),
            result: if e > tol::F32 {
                Err(format!("error {e:.1e} > {:.0e}", tol::F32))
            } else {
                Ok(())
            },
        },
    }
}

/// Merge rows on random partials (see [`merge_inputs`]): (splits, total_q, heads, D, LSE spread).
/// 3584 outputs (14 full blocks of 256 threads); 960 (a partial last block); one split.
pub const MERGE_CASES: &[(usize, usize, usize, usize, f64)] = &[
    (5, 7, 4, 128, 150.0),
    (2, 3, 5, 64, 30.0),
    (1, 2, 3, 64, 5.0),
];

pub fn merge_rows(dev: &Device) -> Vec<Row> {
    let mut rows = Vec::new();
    for (ci, &(splits, total_q, heads, d, spread)) in MERGE_CASES.iter().enumerate() {
        let (o, lse) = merge_inputs(splits, total_q, heads, d, spread, 0x3e76e + ci as u64);
        rows.push(check_merge(dev, &o, &lse, splits, total_q, heads, d).row(
            "attention.merge",
            "f32",
            dev,
            format!("S={splits} q={total_q} H={heads} D={d} lse±{spread}, -inf rows"),
        ));
    }
    rows
}
