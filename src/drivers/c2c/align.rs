//! Host-side token alignment and the layer map of the Cache-to-Cache (C2C) KV-cache fuser.
//!
//! A receiver model and a sharer model tokenise the same text differently. Each tokenisation is
//! given as one [`Span`] per token: the token's `[start, end)` byte offsets into the shared text,
//! as HuggingFace tokenizers report them (`offsets`). [`align`] maps every receiver token to one
//! sharer token, whose KV entries the fuser then projects into the receiver's cache.
//!
//! # Alignment rules
//!
//! For a receiver token `r = (a, b)` the *candidates* are the sharer tokens whose span overlaps
//! `r`:
//!
//! - for a non-empty receiver span (`a < b`), sharer spans `(s, e)` with overlap length
//!   `min(b, e) - max(a, s) > 0` (so an empty sharer span is never a candidate of a non-empty
//!   receiver span);
//! - for an empty receiver span (`a == b`), sharer spans with `s <= a < e`.
//!
//! Among the candidates, [`MatchRule`] picks one:
//!
//! - [`MatchRule::First`]: the candidate with the smallest start, that is the lowest index
//!   (starts are non-decreasing, and ties go to the lower index);
//! - [`MatchRule::Longest`]: the candidate with the largest overlap length, ties to the lower
//!   index. An empty receiver span overlaps every candidate by zero, so there `Longest` picks the
//!   same token as `First`.
//!
//! **Fallback.** A receiver token with no candidate (special tokens with span `(0, 0)` at the
//! start of a sequence, tokens over gaps that the sharer does not cover, spans past the sharer's
//! last token) maps to the last sharer token whose start is `<= a`, or to sharer token 0 if there
//! is none.
//!
//! **Input requirements.** Every span has `start <= end`, and the starts of each side are
//! non-decreasing (token order). Ends need not be monotonic: spans may nest or overlap. A
//! non-empty receiver needs a non-empty sharer. Violations are `InvalidArgument` errors of op
//! `c2c.align`.
//!
//! **Cost.** `O((R + S) log(R + S))` time and `O(R + S)` memory for `R` receiver and `S` sharer
//! tokens, for any valid input (nested spans included): `First` is a two-pointer sweep plus a
//! binary search per token; `Longest` splits the candidates of each token by whether they start
//! before it and end after it, and answers the four groups with prefix maxima, binary searches
//! and two offline sweeps over small segment trees.
//!
//! # Layer map
//!
//! [`LayerMap`] says which sharer (source) layer feeds each receiver (target) layer:
//! [`LayerMap::LastAligned`] aligns the last layers of both models, [`LayerMap::Table`] is an
//! explicit table. Errors are of op `c2c.layer_map`.
//!
//! # Tokenizers (feature `tokenizers`)
//!
//! With the optional `tokenizers` feature, `spans_from_tokenizer_json` reads a HuggingFace
//! `tokenizer.json` and returns the byte spans of a text (special tokens not added), and
//! `align_texts` aligns the two tokenisations of one text directly.

use std::cmp::Reverse;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A token's `[start, end)` byte offsets into the shared text.
pub type Span = (usize, usize);

const OP: &str = "c2c.align";
const OP_LAYERS: &str = "c2c.layer_map";

/// Which overlapping sharer token a receiver token maps to (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchRule {
    /// The overlapping sharer token with the smallest start (the lowest index).
    First,
    /// The overlapping sharer token with the largest overlap length, ties to the lower index.
    Longest,
}

impl MatchRule {
    /// The rule's name as [`FromStr`] accepts it: `"first"` or `"longest"`.
    pub fn name(self) -> &'static str {
        match self {
            MatchRule::First => "first",
            MatchRule::Longest => "longest",
        }
    }
}

impl FromStr for MatchRule {
    type Err = Error;

    /// Parses `"first"` or `"longest"` (ASCII case-insensitive, surrounding whitespace ignored).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("first") {
            Ok(MatchRule::First)
        } else if t.eq_ignore_ascii_case("longest") {
            Ok(MatchRule::Longest)
        } else {
            Err(Error::invalid(
                OP,
                format!("unknown match rule {s:?} (expected \"first\" or \"longest\")"),
            ))
        }
    }
}

impl std::fmt::Display for MatchRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks `start <= end` for every span and non-decreasing starts.
fn validate(side: &str, spans: &[Span]) -> Result<()> {
    for (i, &(s, e)) in spans.iter().enumerate() {
        if s > e {
            return Err(Error::invalid(
                OP,
                format!("{side} span {i} is ({s}, {e}): start > end"),
            ));
        }
        if i > 0 {
            let prev = spans[i - 1].0;
            if s < prev {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "{side} span starts are not non-decreasing: span {} starts at {prev}, \
                         span {i} at {s}",
                        i - 1
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Maps each receiver token to one sharer token (see the module docs for the rules and the
/// fallback).
///
/// Returns one sharer index per receiver token (empty for an empty receiver). Errors (op
/// `c2c.align`) on an empty sharer with a non-empty receiver, a span with `start > end`, or
/// decreasing starts on either side.
pub fn align(receiver: &[Span], sharer: &[Span], rule: MatchRule) -> Result<Vec<usize>> {
    validate("receiver", receiver)?;
    validate("sharer", sharer)?;
    if receiver.is_empty() {
        return Ok(Vec::new());
    }
    if sharer.is_empty() {
        return Err(Error::invalid(
            OP,
            format!(
                "the sharer has no tokens but the receiver has {}",
                receiver.len()
            ),
        ));
    }
    match rule {
        MatchRule::First => Ok(align_first(receiver, sharer)),
        MatchRule::Longest => Ok(align_longest(receiver, sharer)),
    }
}

/// End of a sharer span for the candidate tests: 0 for an empty span, which is never a candidate.
fn eff_end((s, e): Span) -> usize {
    if e > s {
        e
    } else {
        0
    }
}

/// Number of sharer spans with start `< b` (`strict`) or `<= b`.
fn count_starts(sharer: &[Span], b: usize, strict: bool) -> usize {
    if strict {
        sharer.partition_point(|&(s, _)| s < b)
    } else {
        sharer.partition_point(|&(s, _)| s <= b)
    }
}

/// Fallback: the last sharer token with start `<= a`, or 0.
fn fallback(sharer: &[Span], a: usize) -> usize {
    count_starts(sharer, a, false).saturating_sub(1)
}

/// Number of sharer spans that may be candidates of `(a, b)`: the prefix with start `< b` for a
/// non-empty span, with start `<= a` for an empty one.
fn prefix_len(sharer: &[Span], (a, b): Span) -> usize {
    if a < b {
        count_starts(sharer, b, true)
    } else {
        count_starts(sharer, a, false)
    }
}

/// `First`: the candidates of `(a, b)` are the sharer tokens `j < prefix_len` with
/// `eff_end(j) > a`. The lowest index with `eff_end > a` only moves forward as `a` grows (the
/// receiver starts are non-decreasing), so one pointer sweeps the sharer once.
fn align_first(receiver: &[Span], sharer: &[Span]) -> Vec<usize> {
    let mut f = 0usize;
    receiver
        .iter()
        .map(|&(a, b)| {
            while f < sharer.len() && eff_end(sharer[f]) <= a {
                f += 1;
            }
            if f < prefix_len(sharer, (a, b)) {
                f
            } else {
                fallback(sharer, a)
            }
        })
        .collect()
}

/// A bottom-up segment tree answering range maxima of `Option<T>` (`None` is the identity).
struct MaxTree<T> {
    n: usize,
    data: Vec<Option<T>>,
}

impl<T: Ord + Copy> MaxTree<T> {
    fn new(n: usize) -> Self {
        MaxTree {
            n,
            data: vec![None; 2 * n],
        }
    }

    fn set(&mut self, i: usize, v: T) {
        let mut p = i + self.n;
        self.data[p] = Some(v);
        while p > 1 {
            p /= 2;
            self.data[p] = self.data[2 * p].max(self.data[2 * p + 1]);
        }
    }

    /// Maximum over `[lo, hi)`.
    fn query(&self, lo: usize, hi: usize) -> Option<T> {
        let (mut l, mut r) = (lo + self.n, hi + self.n);
        let mut best = None;
        while l < r {
            if l & 1 == 1 {
                best = best.max(self.data[l]);
                l += 1;
            }
            if r & 1 == 1 {
                r -= 1;
                best = best.max(self.data[r]);
            }
            l /= 2;
            r /= 2;
        }
        best
    }
}

/// `Longest`. For a non-empty receiver span `(a, b)` the candidates lie in the prefix `[0, p)`
/// of sharer tokens with start `< b`; split it at `q` = the number of sharer starts `<= a`:
///
/// - A, `j < q` (starts at or before `a`): overlap `min(b, e) - a`. The best is the lowest `j`
///   with `e >= min(M, b)`, `M` the maximum end over `[0, q)`: a binary search on prefix maxima.
/// - B, `q <= j < p`, `e >= b` (starts inside, reaches `b`): overlap `b - s`, largest for the
///   lowest such `j`. Offline: receivers by decreasing `b`, sharers inserted by decreasing end,
///   range minimum of the index.
/// - C, `q <= j < p`, `e < b` (inside): overlap `e - s`, the span's length. Offline: receivers by
///   increasing `b`, sharers inserted by increasing end, range maximum of `(length, -index)`.
///
/// Each group's best is its lowest index with its largest overlap, so the overall best is the
/// largest overlap among the three, ties to the lowest index. Empty receiver spans take `First`.
fn align_longest(receiver: &[Span], sharer: &[Span]) -> Vec<usize> {
    let n = sharer.len();
    let first = align_first(receiver, sharer);
    // Best (overlap, index) found so far per receiver token; overlap 0 means none.
    let mut best: Vec<(usize, usize)> = vec![(0, 0); receiver.len()];
    let consider = |cur: &mut (usize, usize), ov: usize, j: usize| {
        if ov > cur.0 || (ov == cur.0 && ov > 0 && j < cur.1) {
            *cur = (ov, j);
        }
    };

    // Prefix maxima of the ends (non-decreasing), for group A.
    let mut prefix_max = Vec::with_capacity(n);
    let mut m = 0usize;
    for &(_, e) in sharer {
        m = m.max(e);
        prefix_max.push(m);
    }

    let nonempty: Vec<usize> = (0..receiver.len())
        .filter(|&i| receiver[i].0 < receiver[i].1)
        .collect();
    let bounds: Vec<(usize, usize)> = receiver
        .iter()
        .map(|&(a, b)| {
            (
                count_starts(sharer, a, false),
                count_starts(sharer, b, true),
            )
        })
        .collect();

    // Group A.
    for &i in &nonempty {
        let (a, b) = receiver[i];
        let q = bounds[i].0;
        if q == 0 {
            continue;
        }
        let t = prefix_max[q - 1].min(b);
        if t > a {
            let j = prefix_max.partition_point(|&pm| pm < t);
            consider(&mut best[i], t - a, j);
        }
    }

    // Group B: receivers by decreasing end, sharers inserted once their end >= b.
    let mut by_b = nonempty.clone();
    by_b.sort_by_key(|&i| Reverse(receiver[i].1));
    let mut by_e: Vec<usize> = (0..n).collect();
    by_e.sort_by_key(|&j| Reverse(sharer[j].1));
    let mut tree = MaxTree::<Reverse<usize>>::new(n);
    let mut k = 0;
    for &i in &by_b {
        let b = receiver[i].1;
        while k < n && sharer[by_e[k]].1 >= b {
            tree.set(by_e[k], Reverse(by_e[k]));
            k += 1;
        }
        let (q, p) = bounds[i];
        if q < p {
            if let Some(Reverse(j)) = tree.query(q, p) {
                // a < s_j < b here, so the overlap is positive.
                consider(&mut best[i], b - sharer[j].0, j);
            }
        }
    }

    // Group C: receivers by increasing end, sharers inserted once their end < b.
    by_b.reverse();
    by_e.reverse();
    let mut tree = MaxTree::<(usize, Reverse<usize>)>::new(n);
    let mut k = 0;
    for &i in &by_b {
        let b = receiver[i].1;
        while k < n && sharer[by_e[k]].1 < b {
            let j = by_e[k];
            tree.set(j, (sharer[j].1 - sharer[j].0, Reverse(j)));
            k += 1;
        }
        let (q, p) = bounds[i];
        if q < p {
            if let Some((len, Reverse(j))) = tree.query(q, p) {
                consider(&mut best[i], len, j);
            }
        }
    }

    best.iter()
        .zip(receiver)
        .zip(first)
        .map(|((&(ov, j), &(a, b)), f)| if a < b && ov > 0 { j } else { f })
        .collect()
}

/// Which source (sharer) layer feeds each target (receiver) layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerMap {
    /// Align the last layers: target layer `t` takes source layer
    /// `clamp(t + (S - T), 0, S - 1)` (signed arithmetic), for `S` source and `T` target layers.
    /// With `S > T` the first `S - T` source layers are unused; with `S < T` the first
    /// `T - S + 1` target layers all take source layer 0.
    LastAligned,
    /// An explicit table: entry `t` is the source layer of target layer `t`.
    Table(Vec<usize>),
}

impl LayerMap {
    /// The source layer of each of the `target` layers, for `source` source layers.
    ///
    /// Errors (op `c2c.layer_map`): `source == 0` with `target > 0`; a table whose length is not
    /// `target` or with an entry `>= source`.
    pub fn resolve(&self, source: usize, target: usize) -> Result<Vec<usize>> {
        if source == 0 && target > 0 {
            return Err(Error::invalid(
                OP_LAYERS,
                format!("no source layers to map {target} target layers from"),
            ));
        }
        match self {
            LayerMap::LastAligned => {
                let shift = source as i128 - target as i128;
                let last = source as i128 - 1;
                Ok((0..target)
                    .map(|t| (t as i128 + shift).clamp(0, last) as usize)
                    .collect())
            }
            LayerMap::Table(table) => {
                if table.len() != target {
                    return Err(Error::invalid(
                        OP_LAYERS,
                        format!(
                            "the table has {} entries but there are {target} target layers",
                            table.len()
                        ),
                    ));
                }
                if let Some((t, &s)) = table.iter().enumerate().find(|&(_, &s)| s >= source) {
                    return Err(Error::invalid(
                        OP_LAYERS,
                        format!(
                            "table entry {t} is source layer {s}, but there are {source} source \
                             layers"
                        ),
                    ));
                }
                Ok(table.clone())
            }
        }
    }
}

/// The byte spans of `text` under the HuggingFace tokenizer serialised in `tokenizer_json`
/// (a `tokenizer.json` document), encoded without special tokens.
///
/// Errors (op `c2c.tokenizer`) if the document cannot be loaded or the text cannot be encoded.
#[cfg(feature = "tokenizers")]
pub fn spans_from_tokenizer_json(tokenizer_json: &[u8], text: &str) -> Result<Vec<Span>> {
    const OP_TOK: &str = "c2c.tokenizer";
    let tok = tokenizers::Tokenizer::from_bytes(tokenizer_json)
        .map_err(|e| Error::invalid(OP_TOK, format!("cannot load tokenizer.json: {e}")))?;
    let enc = tok
        .encode(text, false)
        .map_err(|e| Error::invalid(OP_TOK, format!("cannot encode the text: {e}")))?;
    Ok(enc.get_offsets().to_vec())
}

/// Tokenises `text` with both tokenizers (see `spans_from_tokenizer_json`) and aligns the
/// receiver's tokens to the sharer's with [`align`].
#[cfg(feature = "tokenizers")]
pub fn align_texts(
    receiver_json: &[u8],
    sharer_json: &[u8],
    text: &str,
    rule: MatchRule,
) -> Result<Vec<usize>> {
    let receiver = spans_from_tokenizer_json(receiver_json, text)?;
    let sharer = spans_from_tokenizer_json(sharer_json, text)?;
    align(&receiver, &sharer, rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, in O(R·S).
    fn naive(receiver: &[Span], sharer: &[Span], rule: MatchRule) -> Vec<usize> {
        receiver
            .iter()
            .map(|&(a, b)| {
                let mut best: Option<(usize, usize)> = None; // (overlap, index)
                for (j, &(s, e)) in sharer.iter().enumerate() {
                    let (hit, ov) = if a == b {
                        (s <= a && a < e, 0)
                    } else {
                        let lo = a.max(s);
                        let hi = b.min(e);
                        (hi > lo, hi.saturating_sub(lo))
                    };
                    if !hit {
                        continue;
                    }
                    best = match (best, rule) {
                        (None, _) => Some((ov, j)),
                        (Some(cur), MatchRule::First) => Some(cur),
                        (Some(cur), MatchRule::Longest) => {
                            if ov > cur.0 {
                                Some((ov, j))
                            } else {
                                Some(cur)
                            }
                        }
                    };
                }
                match best {
                    Some((_, j)) => j,
                    None => sharer.iter().rposition(|&(s, _)| s <= a).unwrap_or(0),
                }
            })
            .collect()
    }

    fn both(receiver: &[Span], sharer: &[Span]) -> (Vec<usize>, Vec<usize>) {
        (
            align(receiver, sharer, MatchRule::First).unwrap(),
            align(receiver, sharer, MatchRule::Longest).unwrap(),
        )
    }

    fn msg(e: Error) -> String {
        e.to_string()
    }

    #[test]
    fn identical_tokenisations_map_to_themselves() {
        // "the cat sat": the, " cat", " sat"
        let spans = [(0, 3), (3, 7), (7, 11)];
        let (f, l) = both(&spans, &spans);
        assert_eq!(f, vec![0, 1, 2]);
        assert_eq!(l, vec![0, 1, 2]);
    }

    #[test]
    fn receiver_word_split_in_two() {
        // Text "unhappy day". Receiver: "un" "happy" " day"; sharer: "unhappy" " day".
        let receiver = [(0, 2), (2, 7), (7, 11)];
        let sharer = [(0, 7), (7, 11)];
        let (f, l) = both(&receiver, &sharer);
        assert_eq!(f, vec![0, 0, 1]);
        assert_eq!(l, vec![0, 0, 1]);
        // And the other way round: the sharer's one token overlaps both halves.
        let (f, l) = both(&sharer, &receiver);
        assert_eq!(f, vec![0, 2]);
        // "unhappy" overlaps "un" by 2 and "happy" by 5.
        assert_eq!(l, vec![1, 2]);
    }

    #[test]
    fn sharer_word_split_in_three_first_and_longest_differ() {
        // Text "a tokenization x". Receiver: "a" " tokenization" " x" = (0,1) (1,14) (14,16).
        // Sharer: "a" " tok" "eniz" "ation" " x" = (0,1) (1,5) (5,9) (9,14) (14,16).
        // Overlaps of (1,14): 4, 4, 5 -> First 1, Longest 3.
        let receiver = [(0, 1), (1, 14), (14, 16)];
        let sharer = [(0, 1), (1, 5), (5, 9), (9, 14), (14, 16)];
        let (f, l) = both(&receiver, &sharer);
        assert_eq!(f, vec![0, 1, 4]);
        assert_eq!(l, vec![0, 3, 4]);
        // Equal overlaps tie to the lower index: (1,5) (5,9) (9,13) (13,14): 4, 4, 4, 1.
        let sharer = [(0, 1), (1, 5), (5, 9), (9, 13), (13, 14), (14, 16)];
        let (f, l) = both(&receiver, &sharer);
        assert_eq!(f, vec![0, 1, 5]);
        assert_eq!(l, vec![0, 1, 5]);
        // A receiver token straddling two sharer tokens: (3,8) overlaps (1,5) by 2, (5,9) by 3.
        let (f, l) = both(&[(3, 8)], &sharer);
        assert_eq!((f, l), (vec![1], vec![2]));
    }

    #[test]
    fn special_tokens_empty_spans_and_gaps_fall_back() {
        // Receiver: <bos> (0,0), "ab" (0,2), "cd" (3,5) [gap at 2], <eos> (5,5), (9,12) past the
        // sharer's end. Sharer: <s> (0,0), "a" (0,1), "b" (1,2), "c" (3,4), "d" (4,5), "e" (5,6).
        let receiver = [(0, 0), (0, 2), (3, 5), (5, 5), (9, 12)];
        let sharer = [(0, 0), (0, 1), (1, 2), (3, 4), (4, 5), (5, 6)];
        let (f, l) = both(&receiver, &sharer);
        // (0,0): empty receiver, candidates with s <= 0 < e: "a" (1). Not the empty <s>.
        // (0,2): "a" "b" both overlap 1: First 1, Longest 1. (3,5): "c" "d" -> 3, 3.
        // (5,5): "e" contains 5 -> 5. (9,12): no candidate, last start <= 9 is "e" -> 5.
        assert_eq!(f, vec![1, 1, 3, 5, 5]);
        assert_eq!(l, vec![1, 1, 3, 5, 5]);

        // A receiver token in a sharer gap: sharer "ab" (0,2), "cd" (4,6); receiver (2,4) has no
        // candidate -> last sharer start <= 2 is 0. Receiver (3,3) likewise -> 0.
        let sharer = [(0, 2), (4, 6)];
        let (f, l) = both(&[(0, 2), (2, 4), (3, 3), (4, 6)], &sharer);
        assert_eq!(f, vec![0, 0, 0, 1]);
        assert_eq!(l, vec![0, 0, 0, 1]);

        // Receiver special token before the sharer's first start -> sharer token 0.
        let sharer = [(2, 4), (4, 6)];
        let (f, l) = both(&[(0, 0), (0, 1), (2, 6)], &sharer);
        assert_eq!(f, vec![0, 0, 0]);
        assert_eq!(l, vec![0, 0, 0]);

        // Only empty sharer spans: nothing ever overlaps; fallback picks the last start <= a.
        let sharer = [(0, 0), (0, 0), (3, 3)];
        let (f, l) = both(&[(0, 0), (1, 4), (3, 3), (5, 6)], &sharer);
        assert_eq!(f, vec![1, 1, 2, 2]);
        assert_eq!(l, vec![1, 1, 2, 2]);
    }

    #[test]
    fn nested_sharer_spans() {
        // Sharer: a long span (0,10) and small ones inside it.
        let sharer = [(0, 10), (2, 3), (3, 9), (9, 10)];
        let receiver = [(2, 9), (3, 4), (9, 12)];
        let (f, l) = both(&receiver, &sharer);
        // (2,9): overlaps 7, 1, 6, 0 -> First 0, Longest 0. (3,4): 1, -, 1 -> 0, 0.
        // (9,12): 1 (0), 1 (3) -> 0, 0.
        assert_eq!(f, vec![0, 0, 0]);
        assert_eq!(l, vec![0, 0, 0]);
        let sharer = [(0, 4), (2, 3), (3, 9), (9, 10)];
        let (f, l) = both(&receiver, &sharer);
        // (2,9): 2, 1, 6 -> 0, 2. (3,4): 1, -, 1 -> 0, 0. (9,12): only (9,10) -> 3, 3.
        assert_eq!(f, vec![0, 0, 3]);
        assert_eq!(l, vec![2, 0, 3]);
    }

    #[test]
    fn empty_inputs() {
        assert_eq!(
            align(&[], &[], MatchRule::First).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(
            align(&[], &[(0, 1)], MatchRule::Longest).unwrap(),
            Vec::<usize>::new()
        );
    }

    #[test]
    fn errors() {
        let e = msg(align(&[(0, 1)], &[], MatchRule::First).unwrap_err());
        assert!(
            e.starts_with("c2c.align:") && e.contains("sharer has no tokens"),
            "{e}"
        );

        let e = msg(align(&[(0, 1), (3, 2)], &[(0, 3)], MatchRule::First).unwrap_err());
        assert!(
            e.contains("receiver span 1") && e.contains("start > end"),
            "{e}"
        );
        let e = msg(align(&[(0, 1)], &[(0, 1), (5, 4)], MatchRule::Longest).unwrap_err());
        assert!(
            e.contains("sharer span 1") && e.contains("start > end"),
            "{e}"
        );

        let e = msg(align(&[(2, 3), (1, 4)], &[(0, 3)], MatchRule::First).unwrap_err());
        assert!(
            e.contains("receiver span starts are not non-decreasing") && e.contains("span 1"),
            "{e}"
        );
        let e = msg(align(&[(0, 1)], &[(0, 1), (4, 5), (3, 6)], MatchRule::First).unwrap_err());
        assert!(
            e.contains("sharer span starts are not non-decreasing") && e.contains("span 2"),
            "{e}"
        );
        // Validation runs even when the receiver is empty.
        assert!(align(&[], &[(2, 1)], MatchRule::First).is_err());

        let e = msg("middle".parse::<MatchRule>().unwrap_err());
        assert!(e.starts_with("c2c.align:") && e.contains("middle"), "{e}");
    }

    #[test]
    fn match_rule_names_round_trip() {
        for r in [MatchRule::First, MatchRule::Longest] {
            assert_eq!(r.name().parse::<MatchRule>().unwrap(), r);
            assert_eq!(r.to_string(), r.name());
        }
        assert_eq!(
            " Longest ".parse::<MatchRule>().unwrap(),
            MatchRule::Longest
        );
    }

    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// A random tokenisation of `len` bytes: consecutive cuts, with occasional special tokens
    /// (empty spans), gaps and repeated spans (byte-fallback pieces of one character).
    fn tokenise(rng: &mut XorShift, len: usize) -> Vec<Span> {
        let mut spans = Vec::new();
        if rng.below(3) == 0 {
            spans.push((0, 0));
        }
        let mut pos = 0;
        while pos < len {
            let step = 1 + rng.below(5).min(len - pos - 1);
            match rng.below(10) {
                0 => {} // a gap (e.g. stripped whitespace)
                1 => {
                    for _ in 0..1 + rng.below(3) {
                        spans.push((pos, pos + step));
                    }
                }
                2 => spans.push((pos, pos)),
                _ => spans.push((pos, pos + step)),
            }
            pos += step;
        }
        if rng.below(3) == 0 {
            spans.push((len, len));
        }
        spans
    }

    /// Arbitrary valid spans: sorted starts, any ends (nesting and overlaps).
    fn arbitrary(rng: &mut XorShift, len: usize, n: usize) -> Vec<Span> {
        let mut starts: Vec<usize> = (0..n).map(|_| rng.below(len + 1)).collect();
        starts.sort_unstable();
        starts
            .into_iter()
            .map(|s| {
                let e = if rng.below(4) == 0 {
                    s
                } else {
                    s + rng.below(len + 1 - s)
                };
                (s, e)
            })
            .collect()
    }

    #[test]
    fn fast_sweep_matches_naive() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..4000 {
            let len = 1 + rng.below(60);
            let (r, s) = if round % 2 == 0 {
                (tokenise(&mut rng, len), tokenise(&mut rng, len))
            } else {
                let (nr, ns) = (rng.below(25), 1 + rng.below(25));
                (arbitrary(&mut rng, len, nr), arbitrary(&mut rng, len, ns))
            };
            if s.is_empty() {
                continue;
            }
            for rule in [MatchRule::First, MatchRule::Longest] {
                let fast = align(&r, &s, rule).unwrap();
                assert_eq!(
                    fast,
                    naive(&r, &s, rule),
                    "round {round}, {rule:?}, receiver {r:?}, sharer {s:?}"
                );
                assert!(fast.iter().all(|&j| j < s.len()));
            }
        }
    }

    #[test]
    fn long_nested_inputs_are_not_quadratic() {
        // One sharer span covers everything, unit spans follow; every receiver token (0, n) and
        // (i, i + 2) overlaps O(n) or O(1) sharer tokens. A per-candidate scan of the first kind
        // would take n^2 = 10^10 steps.
        let n = 100_000;
        let mut sharer = vec![(0, n)];
        sharer.extend((0..n).map(|i| (i, i + 1)));
        let mut receiver = vec![(0, n); 1000];
        receiver.extend((0..n - 1).map(|i| (i, i + 2)));
        let (f, l) = both(&receiver, &sharer);
        assert!(f.iter().all(|&j| j == 0));
        assert!(l.iter().all(|&j| j == 0));
        // Without the covering span: (0, n) overlaps every unit span by 1 and takes unit span
        // 0; (i, i + 2) overlaps units i and i + 1 by 1 each and takes unit i under both rules.
        let (f, l) = both(&receiver, &sharer[1..]);
        assert_eq!(f[..1000], vec![0; 1000][..]);
        assert_eq!(l[1000..], (0..n - 1).collect::<Vec<_>>()[..]);
        assert_eq!(f[1000..], l[1000..]);
    }

    #[test]
    fn layer_map_last_aligned() {
        // S > T: S = 6, T = 4 -> t + 2.
        assert_eq!(
            LayerMap::LastAligned.resolve(6, 4).unwrap(),
            vec![2, 3, 4, 5]
        );
        // S == T: identity.
        assert_eq!(LayerMap::LastAligned.resolve(3, 3).unwrap(), vec![0, 1, 2]);
        // S < T: S = 24, T = 28 -> t - 4 clamped at 0.
        let mut want = vec![0; 5];
        want.extend(1..24);
        assert_eq!(want.len(), 28);
        assert_eq!(LayerMap::LastAligned.resolve(24, 28).unwrap(), want);
        // S = 1: everything from layer 0.
        assert_eq!(LayerMap::LastAligned.resolve(1, 3).unwrap(), vec![0, 0, 0]);
        // T = 0: nothing to map, even with S = 0.
        assert_eq!(
            LayerMap::LastAligned.resolve(0, 0).unwrap(),
            Vec::<usize>::new()
        );
        assert_eq!(
            LayerMap::LastAligned.resolve(5, 0).unwrap(),
            Vec::<usize>::new()
        );
        let e = msg(LayerMap::LastAligned.resolve(0, 2).unwrap_err());
        assert!(
            e.starts_with("c2c.layer_map:") && e.contains("no source layers"),
            "{e}"
        );
    }

    #[test]
    fn layer_map_table() {
        let map = LayerMap::Table(vec![0, 2, 2, 5]);
        assert_eq!(map.resolve(6, 4).unwrap(), vec![0, 2, 2, 5]);
        let e = msg(map.resolve(6, 3).unwrap_err());
        assert!(
            e.starts_with("c2c.layer_map:") && e.contains("4 entries"),
            "{e}"
        );
        let e = msg(map.resolve(5, 4).unwrap_err());
        assert!(e.contains("entry 3") && e.contains("source layer 5"), "{e}");
        assert!(map.resolve(0, 4).is_err());
        assert_eq!(
            LayerMap::Table(vec![]).resolve(0, 0).unwrap(),
            Vec::<usize>::new()
        );
    }

    #[cfg(feature = "tokenizers")]
    mod tokenizers_feature {
        use super::super::*;

        /// Word level, split on whitespace and punctuation (the `Whitespace` pre-tokenizer,
        /// which runs a regex: this exercises the pure-Rust regex backend).
        const WORDS: &str = r#"{
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "WordLevel", "unk_token": "[UNK]",
                      "vocab": {"[UNK]": 0, "hello": 1, "world": 2, "!": 3}}
        }"#;

        /// BPE over characters with merges h+e, l+l, ll+o: "hello" -> "he" "llo", other words
        /// stay characters.
        const PIECES: &str = r#"{
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
            "post_processor": null, "decoder": null,
            "model": {"type": "BPE", "dropout": null, "unk_token": "[UNK]",
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false,
                      "vocab": {"[UNK]": 0, "h": 1, "e": 2, "l": 3, "o": 4, "w": 5, "r": 6,
                                "d": 7, "!": 8, "he": 9, "ll": 10, "llo": 11},
                      "merges": ["h e", "l l", "ll o"]}
        }"#;

        const TEXT: &str = "hello  world!";

        #[test]
        fn spans_of_both_tokenizers() {
            let words = spans_from_tokenizer_json(WORDS.as_bytes(), TEXT).unwrap();
            assert_eq!(words, vec![(0, 5), (7, 12), (12, 13)]);
            let pieces = spans_from_tokenizer_json(PIECES.as_bytes(), TEXT).unwrap();
            assert_eq!(
                pieces,
                vec![
                    (0, 2),
                    (2, 5),
                    (7, 8),
                    (8, 9),
                    (9, 10),
                    (10, 11),
                    (11, 12),
                    (12, 13)
                ]
            );
        }

        #[test]
        fn align_texts_both_ways() {
            let (w, p) = (WORDS.as_bytes(), PIECES.as_bytes());
            // "hello" overlaps "he" (2) and "llo" (3); "world" overlaps w o r l d (1 each).
            assert_eq!(
                align_texts(w, p, TEXT, MatchRule::First).unwrap(),
                vec![0, 2, 7]
            );
            assert_eq!(
                align_texts(w, p, TEXT, MatchRule::Longest).unwrap(),
                vec![1, 2, 7]
            );
            // Each piece maps to the word containing it.
            let want = vec![0, 0, 1, 1, 1, 1, 1, 2];
            assert_eq!(align_texts(p, w, TEXT, MatchRule::First).unwrap(), want);
            assert_eq!(align_texts(p, w, TEXT, MatchRule::Longest).unwrap(), want);
        }

        #[test]
        fn bad_tokenizer_json_is_an_error() {
            let e = spans_from_tokenizer_json(b"{not json", TEXT).unwrap_err();
            assert!(e.to_string().starts_with("c2c.tokenizer:"), "{e}");
            assert!(align_texts(b"{}", WORDS.as_bytes(), TEXT, MatchRule::First).is_err());
        }
    }
}
