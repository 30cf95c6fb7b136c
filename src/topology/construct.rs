//! The explicit constructions behind [`super::hamiltonian_decomposition`] and
//! [`super::multi_node`]. Everything here is closed-form and O(n^2) (the size of the output); the
//! public constructors run [`super::validate`] on the result, so a slip here is an error, not a
//! wrong schedule.
//!
//! Notation: `K*_n` is the complete directed graph on `n` vertices (both arcs between every pair).
//! A *decomposition* is a set of `n - 1` arc-disjoint directed Hamiltonian cycles that together use
//! every arc once.

use super::Ring;

/// Is `n` prime (n >= 2)? Trial division; n <= MAX_RANKS.
pub(crate) fn is_prime(n: usize) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// Rotate a cyclic order so that it starts at rank 0 (same cycle, canonical listing).
pub(crate) fn start_at_zero(mut ring: Ring) -> Ring {
    if let Some(p) = ring.iter().position(|&r| r == 0) {
        ring.rotate_left(p);
    }
    ring
}

/// Prime p: ring k - 1 is the step-k cycle 0 -> k -> 2k -> ... (mod p), k = 1..p-1. The arc
/// a -> b lies on the ring of step b - a, so every arc is used exactly once.
pub(crate) fn step_cycles(p: usize) -> Vec<Ring> {
    (1..p)
        .map(|k| (0..p).map(|i| i * k % p).collect())
        .collect()
}

/// The zigzag 0, 1, -1, 2, -2, ... (mod nn), length nn (nn even). Its consecutive differences
/// 1, -2, 3, -4, ..., (nn-1) are the nn - 1 nonzero residues, each once: a *sequencing* of Z_nn.
pub(crate) fn zigzag(nn: usize) -> Vec<usize> {
    let mut z = Vec::with_capacity(nn);
    z.push(0);
    let mut k = 1;
    while z.len() < nn {
        z.push(k % nn);
        if z.len() < nn {
            z.push((nn - k % nn) % nn);
        }
        k += 1;
    }
    z
}

/// Odd m >= 3, the 1-rotational decomposition of K*_m: vertices Z_N and a fixed vertex "infinity"
/// (N = m - 1, infinity = rank m - 1). Ring i (i in Z_N) is [inf, z_0 + i, ..., z_{N-1} + i] for
/// the zigzag z. Arcs from and to infinity: once each (ring i starts with inf -> i and ends with
/// z_{N-1} + i -> inf). An arc a -> a + d of Z_N: d is the j-th zigzag difference for exactly one
/// j, and then it lies on ring i = a - z_j only. Returned as listed (starting at infinity).
pub(crate) fn rotational(m: usize) -> Vec<Ring> {
    let nn = m - 1;
    let z = zigzag(nn);
    (0..nn)
        .map(|i| {
            let mut ring = Vec::with_capacity(m);
            ring.push(nn);
            ring.extend(z.iter().map(|&v| (v + i) % nn));
            ring
        })
        .collect()
}

/// A rainbow Hamiltonian path of the 1-rotational decomposition of K*_{nn+1} (nn = n - 2 even):
/// nn arcs through all nn + 1 vertices (Z_nn and infinity = nn) that lie on nn *different* rings.
/// Closed form, found by a computer search over "runs of a rainbow base cycle" and then checked
/// for every even n in 8..=4096 (see docs/tasp.md, Topology). None for nn < 6 (n = 4, 6: no such
/// path exists, which is Tillson's theorem in this setting).
///
/// Colour (ring index) of an arc of the decomposition: inf -> a: a; a -> inf: a + nn/2;
/// a -> a + d with d odd: a + (d-1)/2; with d even: a + d/2 + nn/2 (all mod nn, d in 1..nn).
///
/// * nn = 2 mod 4 (n = 0 mod 4): base cycle b_t = t * g with g = nn/2 - 2 (a unit mod nn). All its
///   arcs have the same difference g, so their colours t*g + (g-1)/2 are all distinct. Cut it into
///   four runs R0..R3 of lengths (M, s, s, M) when nn = 10, 14 (mod 16), else (s, M, M, s), with
///   s = floor((nn+2)/8) and M = nn/2 - s; the path is inf, R0, R3, R2, R1.
/// * nn = 0 mod 4 (n = 2 mod 4): base cycle 0, 3, 2, 5, 4, 7, ... (steps +3, -1 alternating; its
///   colours are all distinct when nn = 0 mod 4). Starting at position 1 of it, cut five runs
///   R0..R4 of lengths (A, B, B, A-1, 1), with (A, B) = (nn/4+1, nn/4-1) when nn = 0 mod 8, else
///   (nn/4-1, nn/4+1); the path is R0, R3, R2, R1, R4, inf.
///
/// In both cases the arcs that leave a run (cut arcs of the base cycle) have exactly the colours of
/// the jumps between runs and of the arc to or from infinity.
pub(crate) fn rainbow_path(nn: usize) -> Option<Vec<usize>> {
    if nn % 2 != 0 {
        return None;
    }
    let inf = nn;
    let (base, lens, order, offset, inf_first): (Vec<usize>, Vec<usize>, Vec<usize>, usize, bool) =
        if nn % 4 == 2 {
            if nn < 6 {
                return None;
            }
            let g = nn / 2 - 2;
            let s = (nn + 2) / 8;
            let big = nn / 2 - s;
            let lens = if matches!(nn % 16, 10 | 14) {
                vec![big, s, s, big]
            } else {
                vec![s, big, big, s]
            };
            let base = (0..nn).map(|t| t * g % nn).collect();
            (base, lens, vec![0, 3, 2, 1], 0, true)
        } else {
            if nn < 8 {
                return None;
            }
            let (a, b) = if nn % 8 == 0 {
                (nn / 4 + 1, nn / 4 - 1)
            } else {
                (nn / 4 - 1, nn / 4 + 1)
            };
            let base = (0..nn)
                .map(|t| if t % 2 == 0 { t } else { (t + 2) % nn })
                .collect();
            (base, vec![a, b, b, a - 1, 1], vec![0, 3, 2, 1, 4], 1, false)
        };
    let mut starts = Vec::with_capacity(lens.len());
    let mut acc = 0;
    for &l in &lens {
        starts.push(acc);
        acc += l;
    }
    let mut path = Vec::with_capacity(nn + 1);
    if inf_first {
        path.push(inf);
    }
    for &r in &order {
        for t in starts[r]..starts[r] + lens[r] {
            path.push(base[(t + offset) % nn]);
        }
    }
    if !inf_first {
        path.push(inf);
    }
    Some(path)
}

/// Even n >= 8. Take the 1-rotational decomposition of K*_{n-1} (n - 2 rings over ranks
/// 0..n-1, infinity = rank n - 2) and a rainbow Hamiltonian path P = v_0 -> ... -> v_{n-2} of it.
/// The new rank x = n - 1 is put into every old ring c between the ends a_c -> b_c of the path arc
/// that ring c carries (that arc moves out of ring c); the last ring is P followed by x, closing
/// v_{n-2} -> x -> v_0. Arcs into x: from a_c on ring c and from v_{n-2} on the last ring; out of
/// x: to b_c and to v_0; every old arc is used once (the path arcs now on the last ring).
/// Err(message) only if the closed form were wrong (it is checked for every even n <= 4096).
pub(crate) fn even(n: usize) -> Result<Vec<Ring>, String> {
    let nn = n - 2;
    let inf = nn;
    let x = n - 1;
    let path = rainbow_path(nn).ok_or_else(|| format!("no rainbow path for n = {n}"))?;
    let z = zigzag(nn);
    // dpos[d] = j such that z_{j+1} - z_j = d (mod nn).
    let mut dpos = vec![usize::MAX; nn];
    for j in 0..nn - 1 {
        dpos[(z[j + 1] + nn - z[j]) % nn] = j;
    }
    // (ring, index of the arc's tail in the listing [inf, z_0 + i, ..., z_{nn-1} + i]).
    let locate = |a: usize, b: usize| -> (usize, usize) {
        if a == inf {
            (b, 0)
        } else if b == inf {
            ((a + nn - z[nn - 1]) % nn, nn)
        } else {
            let j = dpos[(b + nn - a) % nn];
            ((a + nn - z[j]) % nn, j + 1)
        }
    };
    let mut cut = vec![usize::MAX; nn];
    for w in path.windows(2) {
        let (ring, tail) = locate(w[0], w[1]);
        if cut[ring] != usize::MAX {
            return Err(format!(
                "n = {n}: the path uses two arcs of ring {ring} (internal error)"
            ));
        }
        cut[ring] = tail;
    }
    let mut rings: Vec<Ring> = rotational(n - 1)
        .into_iter()
        .zip(&cut)
        .map(|(mut ring, &tail)| {
            ring.insert(tail + 1, x);
            ring
        })
        .collect();
    let mut last = path;
    last.push(x);
    rings.push(last);
    Ok(rings)
}

/// Even m: the m translates of the zigzag, row i = i, i+1, i-1, i+2, i-2, ... (mod m). Each is a
/// Hamiltonian path of K*_m and, the zigzag being a sequencing, together they use every arc once.
/// Path i starts at i and ends at i + m/2.
pub(crate) fn zigzag_paths(m: usize) -> Vec<Ring> {
    let z = zigzag(m);
    (0..m)
        .map(|i| z.iter().map(|&v| (v + i) % m).collect())
        .collect()
}

/// Odd m >= 7: Z_m has no sequencing, so no set of translates works. Instead delete rank m from
/// the decomposition of K*_{m+1} (m + 1 even, >= 8): each of its m rings passes rank m once, and
/// what is left of it is a Hamiltonian path of K*_m; the m paths use every arc of K*_m once, and
/// every rank is the start of exactly one path and the end of exactly one. Sorted so that path p
/// starts at rank p.
pub(crate) fn odd_paths(m: usize) -> Result<Vec<Ring>, String> {
    let rings = even(m + 1)?;
    let mut paths: Vec<Ring> = rings
        .into_iter()
        .map(|mut ring| {
            if let Some(p) = ring.iter().position(|&r| r == m) {
                ring.rotate_left(p);
                ring.remove(0);
            }
            ring
        })
        .collect();
    paths.sort_by_key(|p| p.first().copied());
    Ok(paths)
}
