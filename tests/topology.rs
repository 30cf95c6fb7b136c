//! Ring schedules for TASP (`tessera::topology`): every schedule is re-checked here by an
//! independent checker (not `topology::validate`), corrupted schedules must be rejected by
//! `validate`, and the `tessera topo` CLI output is parsed and re-checked.

use std::process::Command;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use tessera::parallel::plan::AllGatherPlan;
use tessera::topology::{self, search, Ring, RingSchedule, ScheduleKind};

/// Owner table of [`check_rings`]: `owner[a * n + b]` is the ring of arc a->b, or `FREE`.
struct Owner(Vec<u32>);
const FREE: u32 = u32::MAX;

impl std::ops::Index<usize> for Owner {
    type Output = u32;
    fn index(&self, i: usize) -> &u32 {
        &self.0[i]
    }
}

impl Owner {
    fn ring(&self, i: usize) -> Option<usize> {
        (self.0[i] != FREE).then_some(self.0[i] as usize)
    }
}

/// The independent checker: rings are permutations of 0..n, pairwise arc-disjoint, and (with
/// `cover`) use every ordered pair. Returns which ring owns each arc (n*n table).
fn check_rings(n: usize, rings: &[Ring], cover: bool) -> Result<Owner, String> {
    let mut owner = vec![FREE; n * n];
    for (c, ring) in rings.iter().enumerate() {
        let mut sorted = ring.clone();
        sorted.sort_unstable();
        if sorted != (0..n).collect::<Vec<_>>() {
            return Err(format!("ring {c} is not a permutation of 0..{n}"));
        }
        for i in 0..n {
            let (a, b) = (ring[i], ring[(i + 1) % n]);
            if owner[a * n + b] != FREE {
                return Err(format!(
                    "arc {a}->{b} on rings {} and {c}",
                    owner[a * n + b]
                ));
            }
            owner[a * n + b] = c as u32;
        }
    }
    if cover {
        for a in 0..n {
            for b in 0..n {
                if a != b && owner[a * n + b] == FREE {
                    return Err(format!("arc {a}->{b} uncovered"));
                }
            }
        }
    }
    Ok(Owner(owner))
}

/// Independent verdict for a schedule of kind Decomposition or Fallback.
fn independent_ok(s: &RingSchedule) -> bool {
    let n = s.n;
    match s.kind {
        ScheduleKind::Decomposition => {
            s.rings.len() == n - 1 && check_rings(n, &s.rings, true).is_ok()
        }
        ScheduleKind::Fallback => {
            (n == 4 || n == 6) && s.rings.len() == n - 2 && check_rings(n, &s.rings, false).is_ok()
        }
        _ => unreachable!("only used for decompositions and fallbacks"),
    }
}

fn check_decomposition(n: usize, s: &RingSchedule) {
    assert_eq!(s.n, n);
    if n == 4 || n == 6 {
        assert_eq!(s.kind, ScheduleKind::Fallback, "n = {n}");
        assert_eq!(s.rings.len(), n - 2, "n = {n}");
        check_rings(n, &s.rings, false).unwrap_or_else(|e| panic!("n = {n}: {e}"));
        let want = (n - 2) as f64 / (n - 1) as f64;
        assert!((s.link_utilisation() - want).abs() < 1e-12);
    } else {
        assert_eq!(s.kind, ScheduleKind::Decomposition, "n = {n}");
        assert_eq!(s.rings.len(), n - 1, "n = {n}");
        check_rings(n, &s.rings, true).unwrap_or_else(|e| panic!("n = {n}: {e}"));
        assert_eq!(s.link_utilisation(), 1.0);
    }
}

#[test]
fn decompositions_for_every_n_up_to_64_in_well_under_a_second() {
    let mut per_n = Vec::new();
    let t0 = Instant::now();
    let schedules: Vec<RingSchedule> = (2..=64)
        .map(|n| {
            let t = Instant::now();
            let s = topology::hamiltonian_decomposition(n).unwrap();
            per_n.push((n, t.elapsed()));
            s
        })
        .collect();
    let total = t0.elapsed();
    let (worst_n, worst) = per_n.iter().max_by_key(|(_, d)| *d).copied().unwrap();
    println!(
        "topology: hamiltonian_decomposition (construction + validate) for all n in 2..=64: \
         {:.2} ms total CPU wall time, slowest n = {worst_n} at {:.3} ms",
        total.as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
    // Generous bounds for a loaded CI machine; measured about 2 ms in total (docs/tasp.md).
    assert!(total < Duration::from_secs(2), "took {total:?}");
    assert!(
        worst < Duration::from_millis(500),
        "n = {worst_n} took {worst:?}"
    );
    for (i, s) in schedules.iter().enumerate() {
        check_decomposition(i + 2, s);
    }
}

#[test]
fn decompositions_up_to_256_and_spot_checks_to_the_limit() {
    for n in 65..=256 {
        check_decomposition(n, &topology::hamiltonian_decomposition(n).unwrap());
    }
    // Both residues mod 4 of even n, a prime, an odd composite, at the limit.
    for n in [4096, 4094, 4093, 4095, 1000, 1002] {
        let t = Instant::now();
        let s = topology::hamiltonian_decomposition(n).unwrap();
        let built = t.elapsed();
        check_decomposition(n, &s);
        println!("topology: n = {n}: built and validated in {built:?}");
    }
}

/// Every n up to the cap (each schedule goes through `validate` inside the constructor). About
/// ten minutes on one core: run with `cargo test --release --test topology -- --ignored`.
#[test]
#[ignore]
fn every_n_up_to_the_limit() {
    let t = Instant::now();
    for n in 2..=topology::MAX_RANKS {
        let s = topology::hamiltonian_decomposition(n).unwrap();
        let want = if n == 4 || n == 6 { n - 2 } else { n - 1 };
        assert_eq!(s.rings.len(), want, "n = {n}");
    }
    println!(
        "topology: all n in 2..={} built and validated in {:.1} s",
        topology::MAX_RANKS,
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn fallback_is_the_proven_maximum() {
    // The exhaustive search finds n - 1 for n = 3, 5 (a decomposition exists) and only n - 2 for
    // 4 and 6: Tillson's exceptions, re-derived.
    for n in 2..=6 {
        let best = search::max_arc_disjoint_cycles(n).unwrap();
        check_rings(n, &best, false).unwrap();
        let want = if n == 4 || n == 6 { n - 2 } else { n - 1 };
        assert_eq!(best.len(), want, "n = {n}");
    }
    let s4 = topology::hamiltonian_decomposition(4).unwrap();
    let s6 = topology::hamiltonian_decomposition(6).unwrap();
    assert!((s4.link_utilisation() - 2.0 / 3.0).abs() < 1e-12);
    assert!((s6.link_utilisation() - 0.8).abs() < 1e-12);
    println!(
        "topology: fallback n = 4: {:?} utilisation {:.4}; n = 6: {:?} utilisation {:.4}",
        s4.rings,
        s4.link_utilisation(),
        s6.rings,
        s6.link_utilisation()
    );
    // Every rank still reaches every other rank along each fallback ring.
    for s in [&s4, &s6] {
        for ring in &s.rings {
            assert_eq!(ring.len(), s.n);
        }
    }
    assert!(search::max_arc_disjoint_cycles(7).is_err());
    assert!(search::max_arc_disjoint_cycles(1).is_err());
}

#[test]
fn double_cover_uses_every_link_twice() {
    for n in [4, 6] {
        let rings = search::double_cover(n).unwrap();
        assert_eq!(rings.len(), 2 * (n - 1));
        let mut count = vec![0; n * n];
        for ring in &rings {
            let mut sorted = ring.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>());
            for i in 0..n {
                count[ring[i] * n + ring[(i + 1) % n]] += 1;
            }
        }
        for a in 0..n {
            for b in 0..n {
                assert_eq!(count[a * n + b], if a == b { 0 } else { 2 }, "{a}->{b}");
            }
        }
        // Distinct cycles.
        let mut r = rings.clone();
        r.sort();
        r.dedup();
        assert_eq!(r.len(), rings.len());
        println!("topology: double cover n = {n}: {rings:?}");
    }
    // The AllGather plan takes these rings as they are: every link carries two (half-size)
    // sub-chunks per step, and all n(n-1) links are used.
    for n in [4, 6] {
        let rings = search::double_cover(n).unwrap();
        let stats = AllGatherPlan::from_rings(n, &rings)
            .unwrap()
            .validate()
            .unwrap();
        assert_eq!(stats.link_load, 2, "n = {n}");
        assert_eq!(stats.links_used, n * (n - 1), "n = {n}");
    }
    assert!(search::double_cover(8).is_err());
    let mut bad = search::double_cover(4).unwrap();
    bad[0].swap(1, 2);
    assert!(search::validate_double_cover(4, &bad).is_err());
}

#[test]
fn rainbow_path_search_fails_exactly_for_4_and_6() {
    // A rainbow Hamiltonian path of a decomposition of K*_{n-1} gives a decomposition of K*_n;
    // for n = 4 and 6 the exhaustive search must come back empty.
    for m in [3, 5] {
        let rings = topology::rotational_decomposition(m).unwrap();
        assert_eq!(
            search::rainbow_path(&rings, u64::MAX).unwrap(),
            search::SearchOutcome::NoneExists,
            "m = {m}"
        );
    }
    // Also with the step-k decomposition of K*_5.
    let step5: Vec<Ring> = (1..5)
        .map(|k| (0..5).map(|i| i * k % 5).collect())
        .collect();
    assert_eq!(
        search::rainbow_path(&step5, u64::MAX).unwrap(),
        search::SearchOutcome::NoneExists
    );
    for m in (7..=25).step_by(2) {
        let rings = topology::rotational_decomposition(m).unwrap();
        let search::SearchOutcome::Found(path) = search::rainbow_path(&rings, 10_000_000).unwrap()
        else {
            panic!("m = {m}: no rainbow path found");
        };
        // Rainbow: Hamiltonian, m - 1 arcs on m - 1 different rings.
        let mut sorted = path.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..m).collect::<Vec<_>>());
        let owner = check_rings(m, &rings, true).unwrap();
        let mut colours: Vec<usize> = path
            .windows(2)
            .map(|w| owner.ring(w[0] * m + w[1]).unwrap())
            .collect();
        colours.sort_unstable();
        colours.dedup();
        assert_eq!(colours.len(), m - 1, "m = {m}");
        // Insert the new vertex m and close the path: a decomposition of K*_{m+1}.
        let mut new_rings = rings.clone();
        for w in path.windows(2) {
            let c = owner.ring(w[0] * m + w[1]).unwrap();
            let p = new_rings[c].iter().position(|&v| v == w[0]).unwrap();
            new_rings[c].insert(p + 1, m);
        }
        let mut last = path.clone();
        last.push(m);
        new_rings.push(last);
        check_rings(m + 1, &new_rings, true).unwrap();
    }
    assert!(topology::rotational_decomposition(4).is_err());
    assert!(search::rainbow_path(&[], 10).is_err());
}

#[test]
fn single_ring_baseline() {
    for n in 2..=40 {
        let s = topology::single_ring(n).unwrap();
        assert_eq!(s.kind, ScheduleKind::SingleRing);
        assert_eq!(s.rings, vec![(0..n).collect::<Vec<_>>()]);
        let want = if n == 2 { 1.0 } else { 1.0 / (n - 1) as f64 };
        assert!((s.link_utilisation() - want).abs() < 1e-12, "n = {n}");
    }
    // A rotation is the same cycle; the reversed ring is not the baseline.
    let mut s = topology::single_ring(5).unwrap();
    s.rings[0].rotate_left(2);
    topology::validate(&s).unwrap();
    s.rings[0].reverse();
    let e = topology::validate(&s).unwrap_err().to_string();
    assert!(e.contains("ring 0"), "{e}");
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    for n in [0, 1, topology::MAX_RANKS + 1, usize::MAX] {
        let e = topology::hamiltonian_decomposition(n)
            .unwrap_err()
            .to_string();
        assert!(e.contains("topology::hamiltonian_decomposition"), "{e}");
        assert!(topology::single_ring(n).is_err());
    }
    let cases = [
        (0, 8, "at least 2 nodes"),
        (1, 8, "hamiltonian_decomposition(8)"),
        (2, 0, "at least 1 rank"),
        (2, 3, "K*_3"),
        (4, 5, "K*_5"),
        (usize::MAX, 2, "exceeds"),
        (2, usize::MAX, "exceeds"),
        (64, 128, "exceeds"),
    ];
    for (u, m, want) in cases {
        let e = topology::multi_node(u, m).unwrap_err().to_string();
        assert!(e.contains(want), "multi_node({u}, {m}): {e}");
    }
    assert!(topology::hamiltonian_paths(0).is_err());
    assert!(topology::hamiltonian_paths(3).is_err());
    assert!(topology::hamiltonian_paths(5).is_err());
}

#[test]
fn hamiltonian_paths_per_node() {
    for m in (1..=48).filter(|&m| m != 3 && m != 5) {
        let paths = topology::hamiltonian_paths(m).unwrap();
        assert_eq!(paths.len(), m);
        let mut used = vec![false; m * m];
        let mut ends = vec![false; m];
        for (p, path) in paths.iter().enumerate() {
            assert_eq!(path[0], p, "m = {m}");
            let mut sorted = path.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..m).collect::<Vec<_>>());
            for w in path.windows(2) {
                assert!(
                    !used[w[0] * m + w[1]],
                    "m = {m}: arc {}->{} twice",
                    w[0],
                    w[1]
                );
                used[w[0] * m + w[1]] = true;
            }
            assert!(!ends[path[m - 1]]);
            ends[path[m - 1]] = true;
        }
        assert_eq!(used.iter().filter(|&&u| u).count(), m * (m - 1));
        if m % 2 == 0 {
            // The paper's rows: i, i+1, i-1, i+2, i-2, ...
            assert_eq!(paths[0][..3.min(m)], [0, 1, m - 1][..3.min(m)]);
        }
    }
}

/// Independent check of a multi-node schedule; returns the inter-node arcs.
fn check_multi_node(u: usize, m: usize, s: &RingSchedule) -> Vec<(usize, usize)> {
    let n = u * m;
    assert_eq!(s.n, n);
    assert_eq!(
        s.kind,
        ScheduleKind::MultiNode {
            nodes: u,
            per_node: m
        }
    );
    assert_eq!(s.rings.len(), m);
    let owner = check_rings(n, &s.rings, false).unwrap();
    // Every intra-node arc exactly once (arc-disjointness gives "at most").
    for k in 0..u {
        for a in k * m..(k + 1) * m {
            for b in k * m..(k + 1) * m {
                if a != b {
                    assert!(owner[a * n + b] != FREE, "intra arc {a}->{b} unused");
                }
            }
        }
    }
    // Composite structure: ring p is path p of node 0, then of node 1, ...
    let paths = topology::hamiltonian_paths(m).unwrap();
    for (p, ring) in s.rings.iter().enumerate() {
        for k in 0..u {
            let seg: Vec<usize> = ring[k * m..(k + 1) * m].iter().map(|r| r - k * m).collect();
            assert_eq!(seg, paths[p], "ring {p} node {k}");
        }
    }
    let mut inter = Vec::new();
    for a in 0..n {
        for b in 0..n {
            if a / m != b / m && owner[a * n + b] != FREE {
                assert_eq!(b / m, (a / m + 1) % u, "inter arc {a}->{b}");
                inter.push((a, b));
            }
        }
    }
    assert_eq!(inter.len(), u * m);
    inter
}

#[test]
fn multi_node_schedules() {
    for (u, m) in [
        (2, 1),
        (2, 2),
        (3, 2),
        (2, 4),
        (2, 6),
        (2, 7),
        (2, 8),
        (3, 8),
        (4, 8),
        (8, 8),
        (3, 9),
        (2, 10),
        (5, 11),
        (4, 16),
    ] {
        let s = topology::multi_node(u, m).unwrap();
        let inter = check_multi_node(u, m, &s);
        assert_eq!(s.inter_node_links(), inter);
        if m >= 2 {
            assert_eq!(s.intra_node_link_utilisation(), Some(1.0));
        }
        let n = u * m;
        let want = (u * m * (m - 1) + u * m) as f64 / (n * (n - 1)) as f64;
        assert!((s.link_utilisation() - want).abs() < 1e-12);
    }
    // A ring that jumps from node 0 to node 2 is rejected.
    let mut s = topology::multi_node(3, 2).unwrap();
    s.rings[0] = vec![0, 1, 4, 5, 2, 3];
    assert!(topology::validate(&s).is_err());
}

#[test]
fn routing_table_matches_rings() {
    let schedules = [
        topology::hamiltonian_decomposition(8).unwrap(),
        topology::hamiltonian_decomposition(9).unwrap(),
        topology::hamiltonian_decomposition(10).unwrap(),
        topology::hamiltonian_decomposition(4).unwrap(),
        topology::hamiltonian_decomposition(6).unwrap(),
        topology::single_ring(7).unwrap(),
        topology::multi_node(2, 8).unwrap(),
        topology::multi_node(3, 7).unwrap(),
    ];
    for s in &schedules {
        let n = s.n;
        let t = s.routing_table();
        assert_eq!(t.len(), n);
        let mut expect = vec![vec![None; n]; n];
        for (c, ring) in s.rings.iter().enumerate() {
            for i in 0..n {
                expect[ring[i]][ring[(i + 1) % n]] = Some(c);
            }
        }
        assert_eq!(t, expect, "{:?} n = {n}", s.kind);
        for (a, row) in t.iter().enumerate() {
            assert_eq!(row[a], None);
            if s.kind == ScheduleKind::Decomposition {
                assert_eq!(row.iter().filter(|e| e.is_some()).count(), n - 1);
            }
        }
        // Each rank sends on exactly one link per ring and receives on exactly one.
        for c in 0..s.rings.len() {
            for (a, row) in t.iter().enumerate() {
                assert_eq!(row.iter().filter(|&&e| e == Some(c)).count(), 1);
                assert_eq!(t.iter().filter(|r| r[a] == Some(c)).count(), 1);
            }
        }
    }
}

#[test]
fn validate_names_the_problem() {
    let s = topology::hamiltonian_decomposition(7).unwrap();
    let mut bad = s.clone();
    bad.rings[2][3] = bad.rings[2][4];
    let e = topology::validate(&bad).unwrap_err().to_string();
    assert!(e.contains("ring 2") && e.contains("twice"), "{e}");
    let mut bad = s.clone();
    bad.rings[1][0] = 7;
    let e = topology::validate(&bad).unwrap_err().to_string();
    assert!(e.contains("ring 1") && e.contains("rank 7"), "{e}");
    let mut bad = s.clone();
    bad.rings[4] = bad.rings[3].clone();
    let e = topology::validate(&bad).unwrap_err().to_string();
    assert!(
        e.contains("ring 3") && e.contains("ring 4") && e.contains("arc"),
        "{e}"
    );
    let mut bad = s.clone();
    bad.rings.pop();
    let e = topology::validate(&bad).unwrap_err().to_string();
    assert!(e.contains("found 5"), "{e}");
    let mut bad = s.clone();
    bad.rings[0].pop();
    let e = topology::validate(&bad).unwrap_err().to_string();
    assert!(e.contains("ring 0 has 6 ranks"), "{e}");
    // A decomposition labelled Fallback, and fallbacks of the wrong size.
    let mut bad = s.clone();
    bad.kind = ScheduleKind::Fallback;
    assert!(topology::validate(&bad).is_err());
    let mut bad = topology::hamiltonian_decomposition(6).unwrap();
    bad.rings.pop();
    assert!(topology::validate(&bad).is_err());
    // An arc-disjoint set that misses arcs is not a decomposition.
    let mut bad = topology::hamiltonian_decomposition(6).unwrap();
    bad.kind = ScheduleKind::Decomposition;
    assert!(topology::validate(&bad).is_err());
    let empty = RingSchedule {
        n: 5,
        kind: ScheduleKind::Decomposition,
        rings: vec![],
    };
    assert!(topology::validate(&empty).is_err());
}

proptest! {
    // No failure persistence: a failing case must not write into the source tree.
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random n and a random corruption of its schedule: `validate` rejects exactly when the
    /// independent checker does, and always for the corruptions that must break it.
    #[test]
    fn corrupted_schedules_are_rejected(
        n in 2usize..=64,
        which in 0usize..4,
        a in any::<usize>(),
        b in any::<usize>(),
        c in any::<usize>(),
        d in any::<usize>(),
    ) {
        let s = topology::hamiltonian_decomposition(n).unwrap();
        let mut bad = s.clone();
        let k = bad.rings.len();
        let must_fail = match which {
            // Swap two entries across two rings: each ring now repeats a rank.
            0 => {
                prop_assume!(k >= 2);
                let (r1, r2) = (a % k, b % k);
                prop_assume!(r1 != r2);
                let (p1, p2) = (c % n, d % n);
                let (x, y) = (bad.rings[r1][p1], bad.rings[r2][p2]);
                prop_assume!(x != y);
                bad.rings[r1][p1] = y;
                bad.rings[r2][p2] = x;
                true
            }
            // Reverse one ring: on a decomposition (n >= 3) its reversed arcs belong to other
            // rings; on a fallback it may or may not collide.
            1 => {
                prop_assume!(n >= 3);
                bad.rings[a % k].reverse();
                s.kind == ScheduleKind::Decomposition
            }
            // Drop a ring: too few rings for the kind.
            2 => {
                bad.rings.remove(a % k);
                true
            }
            // Swap two positions inside one ring: still Hamiltonian, arcs change.
            _ => {
                let r = a % k;
                let (p1, p2) = (c % n, d % n);
                prop_assume!(p1 != p2);
                bad.rings[r].swap(p1, p2);
                false
            }
        };
        let verdict = topology::validate(&bad);
        prop_assert_eq!(verdict.is_ok(), independent_ok(&bad), "{:?}", verdict);
        if must_fail {
            prop_assert!(verdict.is_err());
        }
    }
}

// ---- CLI ----

fn topo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .arg("topo")
        .arg("hamilton")
        .args(args)
        .output()
        .expect("run tessera")
}

fn json_of(args: &[&str]) -> serde_json::Value {
    let out = topo(args);
    assert!(
        out.status.success(),
        "tessera topo hamilton {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

fn rings_of(v: &serde_json::Value) -> Vec<Ring> {
    v["rings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect()
        })
        .collect()
}

/// The routing matrix in the JSON agrees with the JSON's rings.
fn check_routing_json(v: &serde_json::Value, n: usize, rings: &[Ring]) {
    let routing = v["routing"].as_array().unwrap();
    assert_eq!(routing.len(), n);
    for (a, row) in routing.iter().enumerate() {
        let row = row.as_array().unwrap();
        assert_eq!(row.len(), n);
        for (b, e) in row.iter().enumerate() {
            let on: Vec<usize> = (0..rings.len())
                .filter(|&c| (0..n).any(|i| rings[c][i] == a && rings[c][(i + 1) % n] == b))
                .collect();
            match e.as_u64() {
                Some(c) => assert_eq!(on, vec![c as usize], "{a}->{b}"),
                None => assert!(e.is_null() && on.is_empty(), "{a}->{b}"),
            }
        }
    }
}

#[test]
fn cli_json_is_independently_valid() {
    for n in [2usize, 3, 8, 10, 12, 15] {
        let v = json_of(&[&n.to_string(), "--json"]);
        assert_eq!(v["n"].as_u64(), Some(n as u64));
        assert_eq!(v["kind"], "Decomposition");
        let rings = rings_of(&v);
        assert_eq!(rings.len(), n - 1);
        check_rings(n, &rings, true).unwrap();
        assert_eq!(v["link_utilisation"].as_f64(), Some(1.0));
        check_routing_json(&v, n, &rings);
        assert!(v.get("inter_node_links").is_none());
    }
    for n in [4usize, 6] {
        let v = json_of(&[&n.to_string(), "--json"]);
        assert_eq!(v["kind"], "Fallback");
        let rings = rings_of(&v);
        assert_eq!(rings.len(), n - 2);
        check_rings(n, &rings, false).unwrap();
        let u = v["link_utilisation"].as_f64().unwrap();
        assert!((u - (n - 2) as f64 / (n - 1) as f64).abs() < 1e-12);
        check_routing_json(&v, n, &rings);
    }
    // --nodes: N is the total GPU count.
    for (n, u) in [(16usize, 2usize), (24, 3), (14, 2)] {
        let v = json_of(&[&n.to_string(), "--nodes", &u.to_string(), "--json"]);
        let m = n / u;
        assert_eq!(v["kind"]["MultiNode"]["nodes"].as_u64(), Some(u as u64));
        assert_eq!(v["kind"]["MultiNode"]["per_node"].as_u64(), Some(m as u64));
        let rings = rings_of(&v);
        assert_eq!(rings.len(), m);
        let owner = check_rings(n, &rings, false).unwrap();
        for a in 0..n {
            for b in 0..n {
                if a != b && a / m == b / m {
                    assert!(owner[a * n + b] != FREE, "intra {a}->{b}");
                }
            }
        }
        let inter: Vec<(usize, usize)> = v["inter_node_links"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let p = p.as_array().unwrap();
                (
                    p[0].as_u64().unwrap() as usize,
                    p[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        let mut expect: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (0..n).map(move |b| (a, b)))
            .filter(|&(a, b)| a / m != b / m && owner[a * n + b] != FREE)
            .collect();
        expect.sort_unstable();
        assert_eq!(inter, expect);
        assert_eq!(inter.len(), n);
        check_routing_json(&v, n, &rings);
    }
    // --nodes 1 is the plain decomposition.
    let v = json_of(&["9", "--nodes", "1", "--json"]);
    assert_eq!(v["kind"], "Decomposition");
}

#[test]
fn cli_text_and_errors() {
    let out = topo(&["8"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Hamiltonian decomposition"), "{text}");
    assert!(text.contains("link utilisation: 1.000"), "{text}");
    assert!(text.contains("ring   6:"), "{text}");
    let out = topo(&["6"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no Hamiltonian decomposition") && text.contains("0.800"),
        "{text}"
    );
    for bad in [
        &["1"][..],
        &["0"],
        &["5000"],
        &["12", "--nodes", "5"],
        &["12", "--nodes", "0"],
        &["12", "--nodes", "4"],
    ] {
        let out = topo(bad);
        assert!(!out.status.success(), "{bad:?} should fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("tessera:"), "{bad:?}: {err}");
    }
}
