//! The op table's shape rules (`[total_q, heads, head_dim]`, `[ceil(n / 32)]`, `[batch + 1]`,
//! `[>= src_off + n]`, ...), evaluated: checking given tensors binds the size names, and the
//! bindings give the outputs' shapes. A dimension whose size depends on data (`popcount(mask)`,
//! `packed_words(widths, n)`) evaluates to "unknown": any size is accepted there, and the output
//! takes the length the op produced.

use std::collections::BTreeMap;

/// Size names bound so far (parameters first, then the dimensions of the given tensors).
pub type Dims = BTreeMap<String, u64>;

/// One dimension of a rule.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    /// A size name: bound by its first tensor, checked by the others.
    Name(String),
    /// An expression of bound names.
    Expr(Expr),
    /// `>= expr`: at least that many.
    AtLeast(Expr),
}

/// A size expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Num(u64),
    Name(String),
    Add(Box<Expr>, Box<Expr>),
    /// `a - b` (unknown when negative).
    Sub(Box<Expr>, Box<Expr>),
    /// `a * b`.
    Mul(Box<Expr>, Box<Expr>),
    /// `ceil(a / b)`.
    CeilDiv(Box<Expr>, Box<Expr>),
    /// `2^e`.
    Pow2(Box<Expr>),
    /// A function of the data (`popcount(mask)`): unknown until the op has run.
    Data(String),
}

impl Expr {
    /// The value under `dims`, or `None` when a name is unbound or the size depends on data.
    pub fn eval(&self, dims: &Dims) -> Option<u64> {
        match self {
            Expr::Num(n) => Some(*n),
            Expr::Name(n) => dims.get(n).copied(),
            Expr::Add(a, b) => a.eval(dims)?.checked_add(b.eval(dims)?),
            Expr::Sub(a, b) => a.eval(dims)?.checked_sub(b.eval(dims)?),
            Expr::Mul(a, b) => a.eval(dims)?.checked_mul(b.eval(dims)?),
            Expr::CeilDiv(a, b) => {
                let b = b.eval(dims)?;
                (b > 0).then(|| a.eval(dims).map(|a| a.div_ceil(b)))?
            }
            Expr::Pow2(e) => 1u64.checked_shl(u32::try_from(e.eval(dims)?).ok()?),
            Expr::Data(_) => None,
        }
    }
}

/// A parsed rule: its dimensions, or `None` for rules without brackets.
pub fn parse(rule: &str) -> Vec<Dim> {
    // Drop the trailing note: `[n] (written in place)`, `[2^bits] (host)`.
    // The note follows the closing bracket; parentheses inside the brackets are the rule's own.
    let body = match rule.trim().find(']') {
        Some(i) if rule.trim().starts_with('[') => &rule.trim()[..=i],
        _ => rule.split(" (").next().unwrap_or(rule).trim(),
    };
    let inner = body
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .unwrap_or(body);
    split_top(inner)
        .into_iter()
        .map(|d| {
            let d = d.trim();
            if let Some(rest) = d.strip_prefix(">=") {
                Dim::AtLeast(expr(rest.trim()))
            } else if is_name(d) {
                Dim::Name(d.to_string())
            } else {
                Dim::Expr(expr(d))
            }
        })
        .collect()
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Split at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s[start..].trim().is_empty() {
        out.push(&s[start..]);
    }
    out
}

fn expr(s: &str) -> Expr {
    let s = s.trim();
    // Lowest precedence first: a + b and a - b, then a * b (outside parentheses; the last
    // operator of a level splits, so `a - b + c` is `(a - b) + c`).
    if let Some((i, op)) = last_top(s, &['+', '-']) {
        let (a, b) = (Box::new(expr(&s[..i])), Box::new(expr(&s[i + 1..])));
        return if op == '+' {
            Expr::Add(a, b)
        } else {
            Expr::Sub(a, b)
        };
    }
    if let Some((i, _)) = last_top(s, &['*']) {
        return Expr::Mul(Box::new(expr(&s[..i])), Box::new(expr(&s[i + 1..])));
    }
    // `(e)`: a parenthesised expression.
    if let Some(inner) = s.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        if balanced(inner) {
            return expr(inner);
        }
    }
    if let Some(e) = s.strip_prefix("2^") {
        return Expr::Pow2(Box::new(expr(e)));
    }
    if let Some(args) = s.strip_prefix("ceil(").and_then(|r| r.strip_suffix(')')) {
        if let Some((a, b)) = args.split_once('/') {
            return Expr::CeilDiv(Box::new(expr(a)), Box::new(expr(b)));
        }
    }
    if let Ok(n) = s.parse() {
        return Expr::Num(n);
    }
    if is_name(s) {
        return Expr::Name(s.to_string());
    }
    Expr::Data(s.to_string())
}

/// The byte offset and operator of the last of `ops` outside parentheses in `s`.
fn last_top(s: &str, ops: &[char]) -> Option<(usize, char)> {
    let mut depth = 0;
    let mut found = None;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 && ops.contains(&c) => found = Some((i, c)),
            _ => {}
        }
    }
    found
}

/// Whether the parentheses of `s` balance without the depth going negative.
fn balanced(s: &str) -> bool {
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0
}

/// Check `shape` against `rule`, binding new names into `dims`. `Err` says what differs.
pub fn bind(rule: &str, shape: &[u64], dims: &mut Dims) -> Result<(), String> {
    let want = parse(rule);
    if want.len() != shape.len() {
        return Err(format!(
            "has {} dimensions {shape:?}, the op expects {} {rule}",
            shape.len(),
            want.len()
        ));
    }
    for (i, (d, &have)) in want.iter().zip(shape).enumerate() {
        match d {
            Dim::Name(n) => match dims.get(n) {
                Some(&v) if v != have => {
                    return Err(format!(
                        "dimension {i} ({n}) is {have}, but {n} = {v} {}",
                        "(from an earlier tensor or parameter)"
                    ));
                }
                Some(_) => {}
                None => {
                    dims.insert(n.clone(), have);
                }
            },
            Dim::Expr(e) => match e.eval(dims) {
                Some(v) if v != have => {
                    return Err(format!("dimension {i} is {have}, {} = {v}", show(e)));
                }
                Some(_) => {}
                // `name + c` with `name` unbound: bind it.
                None => {
                    if let Expr::Add(a, b) = e {
                        if let (Expr::Name(n), Some(c)) = (&**a, b.eval(dims)) {
                            if !dims.contains_key(n) {
                                let v = have.checked_sub(c).ok_or_else(|| {
                                    format!("dimension {i} is {have}, less than {c}")
                                })?;
                                dims.insert(n.clone(), v);
                            }
                        }
                    }
                }
            },
            Dim::AtLeast(e) => {
                if let Some(v) = e.eval(dims) {
                    if have < v {
                        return Err(format!(
                            "dimension {i} is {have}, the op needs at least {} = {v}",
                            show(e)
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The shape `rule` gives under `dims`, or `None` when a dimension is unknown (data-dependent,
/// unbound, or a lower bound).
pub fn eval(rule: &str, dims: &Dims) -> Option<Vec<u64>> {
    parse(rule)
        .iter()
        .map(|d| match d {
            Dim::Name(n) => dims.get(n).copied(),
            Dim::Expr(e) => e.eval(dims),
            Dim::AtLeast(_) => None,
        })
        .collect()
}

fn show(e: &Expr) -> String {
    match e {
        Expr::Num(n) => n.to_string(),
        Expr::Name(n) | Expr::Data(n) => n.clone(),
        Expr::Add(a, b) => format!("{} + {}", show(a), show(b)),
        Expr::Sub(a, b) => format!("{} - {}", show(a), show_factor(b)),
        Expr::Mul(a, b) => format!("{} * {}", show_factor(a), show_factor(b)),
        Expr::CeilDiv(a, b) => format!("ceil({} / {})", show(a), show(b)),
        Expr::Pow2(e) => format!("2^{}", show(e)),
    }
}

/// `e` as an operand of `*` (or the right side of `-`): parenthesised when it is a sum.
fn show_factor(e: &Expr) -> String {
    match e {
        Expr::Add(..) | Expr::Sub(..) => format!("({})", show(e)),
        _ => show(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(kv: &[(&str, u64)]) -> Dims {
        kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn binds_checks_and_evaluates() {
        let mut d = dims(&[("heads", 4), ("head_dim", 64)]);
        bind("[total_q, heads, head_dim]", &[10, 4, 64], &mut d).unwrap();
        assert_eq!(d["total_q"], 10);
        let e = bind("[total_q, heads, head_dim]", &[10, 2, 64], &mut d).unwrap_err();
        assert!(e.contains("heads"), "{e}");
        let e = bind("[total_q, heads, head_dim]", &[640, 4], &mut d).unwrap_err();
        assert!(e.contains("2 dimensions"), "{e}");
        bind("[batch + 1]", &[3], &mut d).unwrap();
        assert_eq!(d["batch"], 2);
        assert_eq!(eval("[heads, total_q]", &d), Some(vec![4, 10]));

        let mut d = Dims::new();
        bind("[n]", &[100], &mut d).unwrap();
        bind("[ceil(n / 32)]", &[4], &mut d).unwrap();
        assert!(bind("[ceil(n / 32)]", &[3], &mut d).is_err());
        // Data-dependent: anything goes, and the output shape is unknown.
        bind("[popcount(mask)]", &[7], &mut d).unwrap();
        assert_eq!(eval("[popcount(mask)]", &d), None);
        assert_eq!(eval("[n] (written in place)", &d), Some(vec![100]));

        let mut d = dims(&[("src_off", 5), ("n", 10)]);
        bind("[>= src_off + n]", &[15], &mut d).unwrap();
        assert!(bind("[>= src_off + n]", &[14], &mut d).is_err());
        let d = dims(&[("bits", 3)]);
        assert_eq!(eval("[2^bits] (host)", &d), Some(vec![8]));
    }

    #[test]
    fn products_differences_and_parentheses() {
        // moe.align's output lengths.
        let mut d = dims(&[("k", 8), ("num_experts", 256), ("block_size", 64)]);
        bind("[T, k]", &[4096, 8], &mut d).unwrap();
        let sorted = "[T * k + num_experts * (block_size - 1)]";
        assert_eq!(eval(sorted, &d), Some(vec![4096 * 8 + 256 * 63]));
        let blocks = "[ceil((T * k + num_experts * (block_size - 1)) / block_size)]";
        assert_eq!(
            eval(blocks, &d),
            Some(vec![(4096u64 * 8 + 256 * 63).div_ceil(64)])
        );
        bind(sorted, &[4096 * 8 + 256 * 63], &mut d).unwrap();
        assert_eq!(
            eval("[T * k + num_experts * (block_size - 1)] (note)", &d),
            eval(sorted, &d)
        );
        assert!(bind(sorted, &[4096 * 8], &mut d).is_err());
        // Left to right within a level; * before + and -; a negative difference is unknown.
        let d = dims(&[("a", 10), ("b", 3), ("c", 2)]);
        assert_eq!(eval("[a - b + c]", &d), Some(vec![9]));
        assert_eq!(eval("[a - b - c]", &d), Some(vec![5]));
        assert_eq!(eval("[a * b - c * c]", &d), Some(vec![26]));
        assert_eq!(eval("[(a - b) * (c + 1)]", &d), Some(vec![21]));
        assert_eq!(eval("[b - a]", &d), None);
        assert_eq!(eval("[b - a]", &Dims::new()), None);
        assert_eq!(
            show(&expr("T * k + num_experts * (block_size - 1)")),
            "T * k + num_experts * (block_size - 1)"
        );
        assert_eq!(show(&expr("(a - b) * c")), "(a - b) * c");
    }
}
