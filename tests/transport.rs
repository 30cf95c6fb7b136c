//! The transports beyond simulated ranks.
//!
//! - `P2p` over n distinct host-memory devices (SIMT instances, CPU instances) gives exactly what
//!   `Simulated` gives on the same copies: random copy lists, and whole AllGather plans
//!   (`parallel::plan`) on arc-disjoint and single rings;
//! - P2p rejects mixed backends, one device twice, buffers on the wrong device, bad copies;
//! - `DeviceBuffer::copy_range_from_peer` between host-memory devices, and its errors;
//! - the NCCL transport: on a machine without libnccl or a CUDA GPU (this one) construction is an
//!   error naming NCCL, never a panic; the id bootstrap (hex, id file, environment) is tested
//!   without NCCL. The NCCL data path itself needs GPUs (NCCL refuses two ranks on one GPU) and is
//!   not tested here.

use std::collections::HashMap;
use std::time::Duration;

use tessera::parallel::plan::{all_gather, AllGatherPlan, GatherLayout, Segment};
use tessera::parallel::transport::{
    parse_id_file, publish_id, read_id, IdSource, Nccl, NcclBootstrap, NcclId, P2p, PeerGroup,
};
use tessera::parallel::{Copy, RankBuffers, Simulated, Transport};
use tessera::testing::Rng;
use tessera::{Device, DeviceBuffer};

/// Rank r's buffers: `lens.len()` buffers with distinct contents, on `dev`.
fn rank_bufs(dev: &Device, r: usize, lens: &[usize]) -> Vec<DeviceBuffer<u32>> {
    lens.iter()
        .enumerate()
        .map(|(i, &l)| {
            let data: Vec<u32> = (0..l)
                .map(|e| (r * 1_000_000 + i * 10_000 + e) as u32)
                .collect();
            dev.upload(&data, "rank").unwrap()
        })
        .collect()
}

/// Three ranks with two 16-word buffers each, a P2p transport over `devs`, and a valid copy of
/// 4 words from rank 0's buffer 0 to rank 1's buffer 1 on ring 0.
fn p2p_three_ranks(devs: &[Device]) -> (RankBuffers<u32>, P2p, Copy) {
    let lens = [16usize, 16];
    let bufs = RankBuffers {
        bufs: (0..3).map(|r| rank_bufs(&devs[r], r, &lens)).collect(),
    };
    let good = Copy {
        src_rank: 0,
        src_buf: 0,
        src_off: 0,
        dst_rank: 1,
        dst_buf: 1,
        dst_off: 0,
        len: 4,
        ring: 0,
    };
    (bufs, P2p::new(devs).unwrap(), good)
}

fn download_all(b: &RankBuffers<u32>) -> Vec<Vec<Vec<u32>>> {
    b.bufs
        .iter()
        .map(|l| l.iter().map(|x| x.download().unwrap()).collect())
        .collect()
}

/// A random step: copies whose destination ranges do not overlap each other or any source
/// range (a step's copies are independent).
fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

fn random_step(rng: &mut Rng, n: usize, lens: &[usize], count: usize) -> Vec<Copy> {
    // buffer 0 of every rank is read-only source, buffers 1.. receive
    let mut taken: HashMap<(usize, usize), Vec<(usize, usize)>> = HashMap::new();
    let mut out = Vec::new();
    let mut tries = 0;
    while out.len() < count && tries < 10_000 {
        tries += 1;
        let src_rank = below(rng, n as u64) as usize;
        let mut dst_rank = below(rng, n as u64) as usize;
        if dst_rank == src_rank {
            dst_rank = (dst_rank + 1) % n;
        }
        let dst_buf = 1 + below(rng, (lens.len() - 1) as u64) as usize;
        let len = 1 + below(rng, lens[dst_buf].min(lens[0]) as u64) as usize;
        let src_off = below(rng, (lens[0] - len + 1) as u64) as usize;
        let dst_off = below(rng, (lens[dst_buf] - len + 1) as u64) as usize;
        let ranges = taken.entry((dst_rank, dst_buf)).or_default();
        if ranges
            .iter()
            .any(|&(a, b)| dst_off < b && a < dst_off + len)
        {
            continue;
        }
        ranges.push((dst_off, dst_off + len));
        out.push(Copy {
            src_rank,
            src_buf: 0,
            src_off,
            dst_rank,
            dst_buf,
            dst_off,
            len,
            ring: below(rng, 4) as usize,
        });
    }
    out
}

/// Host-memory device factories: n distinct SIMT executors or n distinct CPU paths
/// (`Device::cpu_separate`; every `Device::cpu()` is one device).
fn host_groups(n: usize) -> Vec<(&'static str, Vec<Device>)> {
    vec![
        ("simt", (0..n).map(|_| Device::simt()).collect()),
        ("cpu", (0..n).map(|_| Device::cpu_separate()).collect()),
    ]
}

#[test]
fn p2p_equals_simulated_on_random_steps() {
    let lens = [97usize, 64, 33, 128];
    for n in [2usize, 3, 5, 8] {
        for (family, devs) in host_groups(n) {
            let mut rng = Rng(0x7a5b ^ n as u64);
            let mut p2p_bufs = RankBuffers {
                bufs: (0..n).map(|r| rank_bufs(&devs[r], r, &lens)).collect(),
            };
            let one = devs[0].clone();
            let mut sim_bufs = RankBuffers {
                bufs: (0..n).map(|r| rank_bufs(&one, r, &lens)).collect(),
            };
            let mut p2p = P2p::new(&devs).unwrap();
            let mut sim = Simulated::new(&one, n).unwrap();
            assert_eq!(Transport::<u32>::name(&p2p), "p2p");
            assert_eq!(Transport::<u32>::ranks(&p2p), n);
            assert_eq!(
                Transport::<u32>::local_ranks(&p2p),
                (0..n).collect::<Vec<_>>()
            );
            for (r, d) in devs.iter().enumerate() {
                assert!(Transport::<u32>::device(&p2p, r).unwrap().same(d));
                assert!(p2p.direct(r, (r + 1) % n));
            }
            assert!(Transport::<u32>::device(&p2p, n).is_err());
            for _ in 0..6 {
                let copies = random_step(&mut rng, n, &lens, 3 * n);
                p2p.exchange(&mut p2p_bufs, &copies).unwrap();
                sim.exchange(&mut sim_bufs, &copies).unwrap();
                Transport::<u32>::wait(&mut p2p).unwrap();
                Transport::<u32>::wait(&mut sim).unwrap();
            }
            assert_eq!(
                download_all(&p2p_bufs),
                download_all(&sim_bufs),
                "{family} n {n}"
            );
        }
    }
}

/// The step-k cycles (0, k, 2k, ...) mod n: arc-disjoint Hamiltonian cycles for prime n.
fn step_rings(n: usize) -> Vec<Vec<usize>> {
    (1..n)
        .map(|k| (0..n).map(|i| i * k % n).collect())
        .collect()
}

#[test]
fn p2p_equals_simulated_on_allgather_plans() {
    let te = 4; // elements per token
    for (n, rings) in [
        (2usize, step_rings(2)),
        (3, step_rings(3)),
        (5, step_rings(5)),
        (7, step_rings(7)),
        (4, vec![vec![0, 1, 2, 3], vec![0, 3, 2, 1]]),
        (6, vec![(0..6).collect()]),
    ] {
        let plan = AllGatherPlan::from_rings(n, &rings).unwrap();
        let subs = plan.subs();
        let local_len: Vec<usize> = (0..n).map(|r| 3 * subs + r).collect();
        let pieces: Vec<Vec<Vec<Segment>>> = (0..n)
            .map(|r| {
                let l = local_len[r];
                (0..subs)
                    .map(|c| {
                        let (a, b) = (l * c / subs, l * (c + 1) / subs);
                        vec![Segment {
                            offset: a,
                            len: b - a,
                        }]
                    })
                    .collect()
            })
            .collect();
        let layout = GatherLayout::new(&plan, te, local_len.clone(), pieces).unwrap();
        for (family, devs) in host_groups(n) {
            let build = |dev_of: &dyn Fn(usize) -> Device| RankBuffers {
                bufs: (0..n)
                    .map(|r| {
                        let dev = dev_of(r);
                        let own: Vec<u32> = (0..local_len[r] * te)
                            .map(|i| (r * 100_000 + i) as u32)
                            .collect();
                        let k = dev.upload(&own, "k").unwrap();
                        let v: Vec<u32> = own.iter().map(|x| x ^ 0x8000_0000).collect();
                        let v = dev.upload(&v, "v").unwrap();
                        layout.rank_buffers(&dev, r, k, v).unwrap()
                    })
                    .collect(),
            };
            let mut a = build(&|r| devs[r].clone());
            let mut b = build(&|_| devs[0].clone());
            // receive buffers start with undefined contents: zero both sides
            for bufs in [&mut a, &mut b] {
                for list in bufs.bufs.iter_mut() {
                    for buf in list.iter_mut().skip(2) {
                        let z = vec![0u32; buf.len()];
                        buf.upload(&z).unwrap();
                    }
                }
            }
            all_gather(&layout, &mut a, &mut P2p::new(&devs).unwrap()).unwrap();
            all_gather(&layout, &mut b, &mut Simulated::new(&devs[0], n).unwrap()).unwrap();
            assert_eq!(download_all(&a), download_all(&b), "{family} n {n}");
        }
    }
}

#[test]
fn p2p_rejects_bad_groups_and_copies() {
    // mixed backends, one device twice, no device
    let e = P2p::new(&[Device::simt(), Device::cpu()]).unwrap_err();
    assert!(e.to_string().contains("one backend"), "{e}");
    let d = Device::cpu();
    let e = P2p::new(&[d.clone(), Device::cpu_separate(), d]).unwrap_err();
    assert!(e.to_string().contains("same device"), "{e}");
    assert!(P2p::new(&[]).is_err());

    let devs: Vec<Device> = (0..3).map(|_| Device::cpu_separate()).collect();
    let (mut bufs, mut t, good) = p2p_three_ranks(&devs);
    let before = download_all(&bufs);
    for c in [
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
            src_rank: 3,
            ..good
        },
        Copy { src_buf: 2, ..good },
    ] {
        // a bad copy after a good one: nothing of the step is queued
        let e = t.exchange(&mut bufs, &[good, c]).unwrap_err();
        assert!(e.to_string().contains("P2p"), "{e}");
    }
    assert_eq!(download_all(&bufs), before);
    // a rank's buffer on another rank's device
    bufs.bufs[1][1] = devs[2].upload(&[0u32; 16], "wrong").unwrap();
    let e = t.exchange(&mut bufs, &[good]).unwrap_err();
    assert!(e.to_string().contains("not on the rank's device"), "{e}");
    // wrong number of buffer sets
    let mut two = RankBuffers {
        bufs: (0..2).map(|r| rank_bufs(&devs[r], r, &[16, 16])).collect(),
    };
    assert!(t.exchange(&mut two, &[]).is_err());
}

#[test]
fn peer_copy_between_host_devices() {
    for (a, b) in [
        (Device::simt(), Device::simt()),
        (Device::cpu_separate(), Device::cpu_separate()),
    ] {
        let src = a.upload(&[1u16, 2, 3, 4, 5], "src").unwrap();
        let mut dst = b.upload(&[0u16; 6], "dst").unwrap();
        dst.copy_range_from_peer(2, &src, 1, 3).unwrap();
        assert_eq!(dst.download().unwrap(), vec![0, 0, 2, 3, 4, 0]);
        dst.copy_range_from_peer(0, &src, 0, 0).unwrap();
        let e = dst.copy_range_from_peer(4, &src, 0, 3).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        // same device: the plain device copy
        let mut same = a.upload(&[0u16; 5], "same").unwrap();
        same.copy_range_from_peer(0, &src, 0, 5).unwrap();
        assert_eq!(same.download().unwrap(), vec![1, 2, 3, 4, 5]);
    }
    let src = Device::simt().upload(&[1u8; 4], "src").unwrap();
    let mut dst = Device::cpu().upload(&[0u8; 4], "dst").unwrap();
    let e = dst.copy_range_from_peer(0, &src, 0, 4).unwrap_err();
    assert!(e.to_string().contains("one backend"), "{e}");
    // a PeerGroup step refuses buffers of devices outside the group
    let devs = [Device::cpu_separate(), Device::cpu_separate()];
    let mut g = PeerGroup::new(&devs).unwrap();
    let outside = Device::cpu_separate().upload(&[0u8; 4], "x").unwrap();
    let mut d = devs[1].upload(&[0u8; 4], "d").unwrap();
    let mut step = g.step().unwrap();
    assert!(step.copy(&mut d, 0, &outside, 0, 4, 0).is_err());
    let s = devs[0].upload(&[7u8; 4], "s").unwrap();
    step.copy(&mut d, 1, &s, 0, 3, 5).unwrap();
    drop(step);
    g.synchronize().unwrap();
    assert_eq!(d.download().unwrap(), vec![0, 7, 7, 7]);
}

/// Sequence-parallel attention over P2p (rank r on its own host device) gives bit-identical
/// outputs to the same run over Simulated ranks on one device: the transport changes where the
/// bytes live, not what is computed.
#[test]
fn sp_attention_over_p2p_equals_simulated() {
    use half::bf16;
    use tessera::ops::attention::Path;
    use tessera::parallel::attention::{forward, token_ranges, RankQkv, SpAttention};

    let (h, hk, d) = (2usize, 1usize, 64usize);
    for (n, rings) in [
        (3usize, step_rings(3)),
        (5, step_rings(5)),
        (4, vec![vec![0, 1, 2, 3], vec![0, 3, 2, 1]]),
    ] {
        let plan = AllGatherPlan::from_rings(n, &rings).unwrap();
        for causal in [false, true] {
            let seq_len = 4 * n + 3;
            let cfg = SpAttention {
                plan: &plan,
                seq_len,
                heads: h,
                kv_heads: hk,
                head_dim: d,
                scale: 0.125,
                causal,
                path: Path::Auto,
            };
            let mut rng = Rng(0x5eed ^ (n as u64) << 8 ^ causal as u64);
            let mut gen = |len: usize| -> Vec<bf16> {
                (0..len)
                    .map(|_| bf16::from_f64(rng.unit() * 2.0 - 1.0))
                    .collect()
            };
            let (q, k, v) = (
                gen(seq_len * h * d),
                gen(seq_len * hk * d),
                gen(seq_len * hk * d),
            );
            let ranges = token_ranges(n, seq_len, causal);
            let local = |x: &[bf16], row: usize, r: usize| -> Vec<bf16> {
                ranges[r]
                    .iter()
                    .flat_map(|g| x[g.start * row..g.end * row].iter().copied())
                    .collect()
            };
            for (family, devs) in host_groups(n) {
                let run = |dev_of: &dyn Fn(usize) -> Device, t: &mut dyn Transport<bf16>| {
                    let bufs: Vec<_> = (0..n)
                        .map(|r| {
                            let dev = dev_of(r);
                            (
                                dev.upload(&local(&q, h * d, r), "q").unwrap(),
                                dev.upload(&local(&k, hk * d, r), "k").unwrap(),
                                dev.upload(&local(&v, hk * d, r), "v").unwrap(),
                            )
                        })
                        .collect();
                    let inputs: Vec<_> = bufs
                        .iter()
                        .map(|(q, k, v)| Some(RankQkv { q, k, v }))
                        .collect();
                    let out = forward(&cfg, &inputs, t).unwrap();
                    out.outs
                        .iter()
                        .map(|o| {
                            let o = o.as_ref().unwrap();
                            (o.o.download().unwrap(), o.lse.download().unwrap())
                        })
                        .collect::<Vec<_>>()
                };
                let mut p2p = P2p::new(&devs).unwrap();
                let a = run(&|r| devs[r].clone(), &mut p2p);
                let mut sim = Simulated::new(&devs[0], n).unwrap();
                let b = run(&|_| devs[0].clone(), &mut sim);
                for (r, (x, y)) in a.iter().zip(&b).enumerate() {
                    let same = |u: &[f32], w: &[f32]| {
                        u.len() == w.len()
                            && u.iter().zip(w).all(|(p, q)| p.to_bits() == q.to_bits())
                    };
                    assert!(
                        same(&x.0, &y.0) && same(&x.1, &y.1),
                        "{family} n {n} causal {causal} rank {r}"
                    );
                }
            }
        }
    }
}

// ---- NCCL ----

fn hex_id() -> String {
    (0..128u32)
        .map(|i| format!("{:02x}", (i * 37 + 11) % 256))
        .collect()
}

#[test]
fn nccl_construction_errors_name_nccl() {
    // This machine has neither libnccl nor a CUDA GPU: every constructor errors, none panics.
    for dev in [Device::cpu(), Device::simt()] {
        let e = Nccl::check(&dev).unwrap_err();
        let msg = e.to_string();
        eprintln!("expected error on this machine: {msg}");
        assert!(msg.contains("NCCL"), "{msg}");
        assert!(msg.contains("CUDA device"), "{msg}");
        for id in [
            IdSource::Hex(hex_id()),
            IdSource::NcclCommId,
            IdSource::File {
                path: std::env::temp_dir().join("tessera-nccl-never-written"),
                timeout: Duration::from_millis(10),
            },
        ] {
            let e = Nccl::new(&dev, 0, 2, id).unwrap_err();
            assert!(e.to_string().contains("NCCL"), "{e}");
        }
        let e = Nccl::from_env(&dev).unwrap_err();
        assert!(e.to_string().contains("NCCL"), "{e}");
        assert!(Nccl::new(&dev, 2, 2, IdSource::Hex(hex_id())).is_err());
    }
    // Where there is a GPU but no libnccl (or the reverse), the message says which is missing.
    if let Ok(gpu) = Device::cuda(0) {
        if let Err(e) = Nccl::check(&gpu) {
            assert!(e.to_string().contains("NCCL"), "{e}");
        }
    }
    if tessera::device::nccl::probe().is_err() {
        let e = NcclId::generate().unwrap_err();
        assert!(e.to_string().contains("NCCL"), "{e}");
        assert!(e.to_string().contains("libnccl"), "{e}");
    }
}

#[test]
fn nccl_id_hex_round_trip() {
    let id = NcclId::from_hex(&hex_id()).unwrap();
    assert_eq!(id.to_hex(), hex_id());
    assert_eq!(NcclId::from_hex(&format!("  {}\n", hex_id())).unwrap(), id);
    for bad in [
        String::new(),
        hex_id()[..254].to_string(),
        format!("{}zz", &hex_id()[..254]),
        format!("{}0", hex_id()),
        format!("é{}", &hex_id()[..254]),
    ] {
        let e = NcclId::from_hex(&bad).unwrap_err();
        assert!(e.to_string().contains("256 hex digits"), "{e}");
    }
}

#[test]
fn nccl_id_file_publish_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nccl.id");
    let id = NcclId::from_hex(&hex_id()).unwrap();
    // a reader that starts before the file exists sees it once rank 0 publishes it
    let reader = {
        let path = path.clone();
        std::thread::spawn(move || read_id(&path, 4, Duration::from_secs(20)))
    };
    std::thread::sleep(Duration::from_millis(120));
    publish_id(&path, &id, 4).unwrap();
    assert_eq!(reader.join().unwrap().unwrap(), id);
    // no temporary file is left behind
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("nccl.id")]);
    // world size recorded in the file must match
    let e = read_id(&path, 8, Duration::from_millis(10)).unwrap_err();
    assert!(e.to_string().contains("stale"), "{e}");
    // a missing file times out with a message naming the path
    let missing = dir.path().join("absent.id");
    let e = read_id(&missing, 4, Duration::from_millis(60)).unwrap_err();
    assert!(e.to_string().contains("absent.id"), "{e}");
    // malformed files
    for text in [
        "",
        "hello\n",
        "tessera-nccl-id 1 world=x\n",
        "tessera-nccl-id 1 world=4\nabc\n",
    ] {
        assert!(parse_id_file(text, 4).is_err(), "{text:?}");
    }
    // publishing into a missing directory is an I/O error naming the file
    let e = publish_id(&dir.path().join("no/such/dir/id"), &id, 4).unwrap_err();
    assert!(e.to_string().contains("NCCL id file"), "{e}");
}

#[test]
fn nccl_bootstrap_from_variables() {
    let vars = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let run = |m: HashMap<String, String>| NcclBootstrap::from_lookup(|k| m.get(k).cloned());

    let b = run(vars(&[
        ("TESSERA_RANK", "1"),
        ("TESSERA_WORLD_SIZE", "4"),
        ("TESSERA_NCCL_ID", &hex_id()),
    ]))
    .unwrap();
    assert_eq!((b.rank, b.world), (1, 4));
    assert_eq!(b.id, IdSource::Hex(hex_id()));

    // torchrun's RANK / WORLD_SIZE as fallbacks; the id file with a timeout
    let b = run(vars(&[
        ("RANK", "3"),
        ("WORLD_SIZE", "8"),
        ("TESSERA_NCCL_ID_FILE", "/tmp/job/id"),
        ("TESSERA_NCCL_TIMEOUT_S", "2.5"),
    ]))
    .unwrap();
    assert_eq!((b.rank, b.world), (3, 8));
    assert_eq!(
        b.id,
        IdSource::File {
            path: "/tmp/job/id".into(),
            timeout: Duration::from_millis(2500)
        }
    );
    // default timeout; TESSERA_* wins over the fallbacks; hex wins over the file
    let b = run(vars(&[
        ("TESSERA_RANK", "0"),
        ("RANK", "5"),
        ("TESSERA_WORLD_SIZE", "2"),
        ("TESSERA_NCCL_ID_FILE", "/tmp/id"),
    ]))
    .unwrap();
    assert_eq!(b.rank, 0);
    assert_eq!(
        b.id,
        IdSource::File {
            path: "/tmp/id".into(),
            timeout: Duration::from_secs(300)
        }
    );
    let b = run(vars(&[
        ("TESSERA_RANK", "0"),
        ("TESSERA_WORLD_SIZE", "2"),
        ("TESSERA_NCCL_ID", &hex_id()),
        ("TESSERA_NCCL_ID_FILE", "/tmp/id"),
    ]))
    .unwrap();
    assert_eq!(b.id, IdSource::Hex(hex_id()));
    // NCCL_COMM_ID
    let b = run(vars(&[
        ("TESSERA_RANK", "0"),
        ("TESSERA_WORLD_SIZE", "2"),
        ("NCCL_COMM_ID", "10.0.0.1:29500"),
    ]))
    .unwrap();
    assert_eq!(b.id, IdSource::NcclCommId);

    // errors name the variable
    for (pairs, needle) in [
        (vec![("TESSERA_WORLD_SIZE", "2")], "TESSERA_RANK"),
        (vec![("TESSERA_RANK", "0")], "TESSERA_WORLD_SIZE"),
        (
            vec![("TESSERA_RANK", "x"), ("TESSERA_WORLD_SIZE", "2")],
            "TESSERA_RANK",
        ),
        (
            vec![("TESSERA_RANK", "2"), ("TESSERA_WORLD_SIZE", "2")],
            "not in a group",
        ),
        (
            vec![("TESSERA_RANK", "0"), ("TESSERA_WORLD_SIZE", "2")],
            "TESSERA_NCCL_ID_FILE",
        ),
        (
            vec![
                ("TESSERA_RANK", "0"),
                ("TESSERA_WORLD_SIZE", "2"),
                ("TESSERA_NCCL_ID_FILE", "/tmp/id"),
                ("TESSERA_NCCL_TIMEOUT_S", "-1"),
            ],
            "TESSERA_NCCL_TIMEOUT_S",
        ),
    ] {
        let e = run(vars(&pairs)).unwrap_err();
        assert!(e.to_string().contains(needle), "{e} (wanted {needle})");
    }
}

/// Issue 9 (state changed on error): a step with a bad copy after good ones copies nothing, on
/// the simulated transport too (it used to run the good copies before checking the bad one).
#[test]
fn simulated_failed_step_copies_nothing() {
    for dev in [Device::cpu(), Device::simt()] {
        let lens = [16usize, 16];
        let mut bufs = RankBuffers {
            bufs: (0..3).map(|r| rank_bufs(&dev, r, &lens)).collect(),
        };
        let mut t = Simulated::new(&dev, 3).unwrap();
        let good = Copy {
            src_rank: 0,
            src_buf: 0,
            src_off: 0,
            dst_rank: 1,
            dst_buf: 1,
            dst_off: 0,
            len: 4,
            ring: 0,
        };
        let before = download_all(&bufs);
        let other = Device::simt();
        for c in [
            Copy { len: 17, ..good },
            Copy {
                dst_rank: 0,
                ..good
            },
            Copy {
                src_rank: 3,
                ..good
            },
            Copy { dst_buf: 2, ..good },
        ] {
            let e = t.exchange(&mut bufs, &[good, c]).unwrap_err();
            assert!(e.to_string().contains("Simulated"), "{e}");
            assert_eq!(download_all(&bufs), before, "{c:?} on {}", dev.backend());
        }
        // a buffer on another device, named by the second copy only
        bufs.bufs[2][1] = other.upload(&[0u32; 16], "elsewhere").unwrap();
        let before = download_all(&bufs);
        let bad = Copy {
            src_rank: 1,
            dst_rank: 2,
            ..good
        };
        let e = t.exchange(&mut bufs, &[good, bad]).unwrap_err();
        assert!(e.to_string().contains("transport's device"), "{e}");
        assert_eq!(download_all(&bufs), before, "on {}", dev.backend());
    }
}

/// P2p checks every copy's ring before queuing any: a ring past the channel limit after a good
/// copy used to queue (on host devices: perform) the good copy and then fail.
#[test]
fn p2p_bad_ring_queues_nothing() {
    for (family, devs) in host_groups(3) {
        let (mut bufs, mut t, good) = p2p_three_ranks(&devs);
        let before = download_all(&bufs);
        let bad = Copy {
            ring: tessera::device::peer::MAX_CHANNELS,
            ..good
        };
        let e = t.exchange(&mut bufs, &[good, bad]).unwrap_err();
        assert_eq!(download_all(&bufs), before, "{family}: {e}");
        assert!(
            e.to_string().contains("P2p") && e.to_string().contains("ring"),
            "{e}"
        );
        // the limit itself is fine
        let last = Copy {
            ring: tessera::device::peer::MAX_CHANNELS - 1,
            ..good
        };
        t.exchange(&mut bufs, &[last]).unwrap();
        Transport::<u32>::wait(&mut t).unwrap();
    }
}

/// A transport that fails the `fail_at`-th exchange (0-based) after queuing part of it, and
/// records whether anything is still in flight: what a caller sees after an error.
struct Flaky {
    inner: Simulated,
    calls: usize,
    fail_at: usize,
    in_flight: bool,
}

impl<T: tessera::DType> Transport<T> for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn ranks(&self) -> usize {
        Transport::<T>::ranks(&self.inner)
    }
    fn local_ranks(&self) -> Vec<usize> {
        Transport::<T>::local_ranks(&self.inner)
    }
    fn device(&self, rank: usize) -> tessera::Result<&Device> {
        Transport::<T>::device(&self.inner, rank)
    }
    fn exchange(&mut self, bufs: &mut RankBuffers<T>, copies: &[Copy]) -> tessera::Result<()> {
        let call = self.calls;
        self.calls += 1;
        self.inner.exchange(bufs, copies)?;
        self.in_flight = true;
        if call == self.fail_at {
            return Err(tessera::Error::invalid("flaky", "injected failure"));
        }
        Ok(())
    }
    fn wait(&mut self) -> tessera::Result<()> {
        self.in_flight = false;
        Transport::<T>::wait(&mut self.inner)
    }
}

/// A failed step leaves nothing in flight: `all_gather` waits for the transport before it
/// returns an error, so the caller may drop or reuse the buffers at once.
#[test]
fn all_gather_failure_leaves_nothing_in_flight() {
    let n = 5;
    let plan = AllGatherPlan::from_rings(n, &[(0..n).collect()]).unwrap();
    let local = vec![3usize; n];
    let pieces: Vec<Vec<Vec<Segment>>> = (0..n)
        .map(|_| vec![vec![Segment { offset: 0, len: 3 }]])
        .collect();
    let layout = GatherLayout::new(&plan, 2, local, pieces).unwrap();
    let dev = Device::cpu();
    for fail_at in 0..n - 1 {
        let mut bufs = RankBuffers {
            bufs: (0..n)
                .map(|r| {
                    let k = dev.upload(&[r as u32; 6], "k").unwrap();
                    let v = dev.upload(&[r as u32; 6], "v").unwrap();
                    layout.rank_buffers(&dev, r, k, v).unwrap()
                })
                .collect(),
        };
        let mut t = Flaky {
            inner: Simulated::new(&dev, n).unwrap(),
            calls: 0,
            fail_at,
            in_flight: false,
        };
        let e = all_gather(&layout, &mut bufs, &mut t).unwrap_err();
        assert!(e.to_string().contains("injected"), "{e}");
        assert!(!t.in_flight, "step {fail_at} failed with copies in flight");
    }
}

/// The same for sequence-parallel attention: a failed step returns only after the transport
/// has no copy in flight into the buffers the op is about to drop.
#[test]
fn sp_forward_failure_leaves_nothing_in_flight() {
    use half::bf16;
    use tessera::ops::attention::Path;
    use tessera::parallel::attention::{self as sp, RankQkv, SpAttention};
    let n = 4;
    let plan = AllGatherPlan::from_rings(n, &[(0..n).collect()]).unwrap();
    let (l, d) = (16usize, 64usize);
    for causal in [false, true] {
        for dev in [Device::cpu(), Device::simt()] {
            let ranges = sp::token_ranges(n, l, causal);
            let bufs: Vec<DeviceBuffer<bf16>> = ranges
                .iter()
                .map(|rs| {
                    let t: usize = rs.iter().map(|r| r.len()).sum();
                    dev.upload(&vec![bf16::ONE; t * d], "x").unwrap()
                })
                .collect();
            let inputs: Vec<Option<RankQkv<bf16>>> = bufs
                .iter()
                .map(|b| Some(RankQkv { q: b, k: b, v: b }))
                .collect();
            let cfg = SpAttention {
                plan: &plan,
                seq_len: l,
                heads: 1,
                kv_heads: 1,
                head_dim: d,
                scale: 0.125,
                causal,
                path: Path::Auto,
            };
            for fail_at in 0..n - 1 {
                let mut t = Flaky {
                    inner: Simulated::new(&dev, n).unwrap(),
                    calls: 0,
                    fail_at,
                    in_flight: false,
                };
                let e = sp::forward(&cfg, &inputs, &mut t).unwrap_err();
                assert!(e.to_string().contains("injected"), "{e}");
                assert!(
                    !t.in_flight,
                    "step {fail_at} failed with copies in flight (causal {causal}, {})",
                    dev.backend()
                );
            }
        }
    }
}
