//! Safetensors weights for the C2C (Cache-to-Cache) KV-cache fuser, and a mapping from the
//! parameter names of the public C2C checkpoints (`C2CProjector` in github.com/thu-nics/C2C).
//!
//! # tessera's names
//!
//! One file holds the projectors of every fused target layer `t`; all projectors share one
//! `ProjectorDims` (the caller passes it to `read`). Row-major, `[out, in]` for matrices:
//!
//! | name | shape |
//! |---|---|
//! | `layers.{t}.key.w_in` | `[hidden, hs*ds + ht*dt]` |
//! | `layers.{t}.key.b_in` | `[hidden]` |
//! | `layers.{t}.key.w1` | `[blocks, ffn, hidden]` |
//! | `layers.{t}.key.w2` | `[blocks, hidden, ffn]` |
//! | `layers.{t}.key.norm` | `[blocks, hidden]` |
//! | `layers.{t}.key.w_out` | `[ht*dt, hidden]` |
//! | `layers.{t}.key.w_s` | `[ht, hidden]` |
//! | `layers.{t}.value.*` | the same seven, for the value projector |
//! | `layers.{t}.gate_logit` | `[1]` |
//!
//! A layer is present when any of its tensors is; then all fifteen must be. Layers with no
//! tensor are not fused (`None`). F32, BF16 and F16 tensors are accepted and widened to f32;
//! `write` always stores F32. Any other name is rejected, so a typo cannot go unnoticed.
//!
//! # Public checkpoints
//!
//! The released checkpoints store one `C2CProjector` per target layer as `projector_{p}.pt`
//! (a torch pickle) next to `projector_config.json`, which maps target layer -> projector
//! index (the identity for the released fusers). `read_public` expects those state dicts
//! converted into one safetensors file with each key prefixed `projector_list.{p}.` (the
//! attribute name the public wrapper uses, so a whole-wrapper state dict has the same keys).
//! `public_name_map` lists the correspondence. The public projector is not exactly tessera's
//! network: its scalar head reads a separate one-block branch, its output and scalar heads
//! have biases, and it has separate key and value gate logits. `read_public` maps those only where
//! the result is exactly the same function (see its docs) and otherwise returns an error
//! naming the tensor that has no counterpart.

use std::collections::BTreeSet;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::reference::c2c::{ProjectorDims, ProjectorHost};

const OP: &str = "c2c.weights";

/// Key prefix of the public projectors in the converted file: `projector_list.{p}.<state dict key>`.
pub const PUBLIC_PREFIX: &str = "projector_list";

/// The fuser weights of one target layer: a key projector, a value projector and one gate.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// Projector applied to the key cache.
    pub key: ProjectorHost,
    /// Projector applied to the value cache.
    pub value: ProjectorHost,
    /// Gate logit: hard gate `logit > 0`, soft gate `sigmoid(logit / tau)`.
    pub gate_logit: f32,
}

/// The fuser weights of a whole target model.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct FuserWeights {
    /// One entry per target layer; `None`: no projector for that layer (not fused).
    pub layers: Vec<Option<LayerWeights>>,
}

/// The seven tensors of one projector.
#[derive(Clone, Copy, Debug)]
enum Part {
    WIn,
    BIn,
    W1,
    W2,
    Norm,
    WOut,
    WS,
}

const PARTS: [Part; 7] = [
    Part::WIn,
    Part::BIn,
    Part::W1,
    Part::W2,
    Part::Norm,
    Part::WOut,
    Part::WS,
];

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::WIn => "w_in",
            Part::BIn => "b_in",
            Part::W1 => "w1",
            Part::W2 => "w2",
            Part::Norm => "norm",
            Part::WOut => "w_out",
            Part::WS => "w_s",
        }
    }

    fn from_name(s: &str) -> Option<Part> {
        PARTS.iter().copied().find(|p| p.name() == s)
    }

    fn shape(self, d: &ProjectorDims) -> Vec<usize> {
        match self {
            Part::WIn => vec![d.hidden, d.k_in()],
            Part::BIn => vec![d.hidden],
            Part::W1 => vec![d.blocks, d.ffn, d.hidden],
            Part::W2 => vec![d.blocks, d.hidden, d.ffn],
            Part::Norm => vec![d.blocks, d.hidden],
            Part::WOut => vec![d.k_out(), d.hidden],
            Part::WS => vec![d.ht, d.hidden],
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Part::WIn => "[hidden, hs*ds + ht*dt]",
            Part::BIn => "[hidden]",
            Part::W1 => "[blocks, ffn, hidden]",
            Part::W2 => "[blocks, hidden, ffn]",
            Part::Norm => "[blocks, hidden]",
            Part::WOut => "[ht*dt, hidden]",
            Part::WS => "[ht, hidden]",
        }
    }

    fn data(self, p: &ProjectorHost) -> &[f32] {
        match self {
            Part::WIn => &p.w_in,
            Part::BIn => &p.b_in,
            Part::W1 => &p.w1,
            Part::W2 => &p.w2,
            Part::Norm => &p.norm,
            Part::WOut => &p.w_out,
            Part::WS => &p.w_s,
        }
    }
}

fn parse(bytes: &[u8]) -> Result<SafeTensors<'_>> {
    SafeTensors::deserialize(bytes)
        .map_err(|e| Error::invalid(OP, format!("unparseable safetensors bytes: {e}")))
}

/// Names in a stable order, so that the first error reported does not depend on hashing.
fn sorted_names(st: &SafeTensors<'_>) -> Vec<String> {
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    names
}

fn decode(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>> {
    let data = view.data();
    let out: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32())
            .collect(),
        other => {
            return Err(Error::invalid(
                OP,
                format!("tensor {name}: unsupported dtype {other:?} (accepted: F32, BF16, F16)"),
            ))
        }
    };
    let want: usize = view.shape().iter().product();
    if out.len() != want {
        return Err(Error::invalid(
            OP,
            format!(
                "tensor {name}: {} values for shape {:?}",
                out.len(),
                view.shape()
            ),
        ));
    }
    Ok(out)
}

/// Reads tensor `name` with exactly shape `want` (`meaning` names the dims for the message).
fn get(
    st: &SafeTensors<'_>,
    name: &str,
    want: &[usize],
    meaning: &str,
    consumed: &mut BTreeSet<String>,
) -> Result<Vec<f32>> {
    let view = st
        .tensor(name)
        .map_err(|_| Error::invalid(OP, format!("missing tensor {name}")))?;
    if view.shape() != want {
        return Err(Error::invalid(
            OP,
            format!(
                "tensor {name}: shape {:?}, want {want:?} = {meaning}",
                view.shape()
            ),
        ));
    }
    consumed.insert(name.to_owned());
    decode(name, &view)
}

/// Reads a gate logit stored as shape `[1]` (or `[]` when `allow_scalar`), and checks it is finite.
fn get_gate(
    st: &SafeTensors<'_>,
    name: &str,
    allow_scalar: bool,
    consumed: &mut BTreeSet<String>,
) -> Result<f32> {
    let view = st
        .tensor(name)
        .map_err(|_| Error::invalid(OP, format!("missing tensor {name}")))?;
    let shape_ok = view.shape() == [1] || (allow_scalar && view.shape().is_empty());
    if !shape_ok {
        let want = if allow_scalar { "[] or [1]" } else { "[1]" };
        return Err(Error::invalid(
            OP,
            format!("tensor {name}: shape {:?}, want {want}", view.shape()),
        ));
    }
    consumed.insert(name.to_owned());
    let v = decode(name, &view)?;
    let g = v.first().copied().unwrap_or(f32::NAN);
    if !g.is_finite() {
        return Err(Error::invalid(
            OP,
            format!("tensor {name}: gate logit {g} is not finite"),
        ));
    }
    Ok(g)
}

/// Splits `layers.{t}.{rest}` into `(t, rest)`.
fn split_layer(name: &str) -> Option<(usize, &str)> {
    let rest = name.strip_prefix("layers.")?;
    let (idx, tail) = rest.split_once('.')?;
    if idx.is_empty() || !idx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((idx.parse().ok()?, tail))
}

fn is_known_tail(tail: &str) -> bool {
    if tail == "gate_logit" {
        return true;
    }
    match tail.split_once('.') {
        Some(("key" | "value", part)) => Part::from_name(part).is_some(),
        _ => false,
    }
}

fn read_projector(
    st: &SafeTensors<'_>,
    dims: ProjectorDims,
    prefix: &str,
    consumed: &mut BTreeSet<String>,
) -> Result<ProjectorHost> {
    let mut take = |part: Part| {
        get(
            st,
            &format!("{prefix}.{}", part.name()),
            &part.shape(&dims),
            part.meaning(),
            consumed,
        )
    };
    Ok(ProjectorHost {
        dims,
        w_in: take(Part::WIn)?,
        b_in: take(Part::BIn)?,
        w1: take(Part::W1)?,
        w2: take(Part::W2)?,
        norm: take(Part::Norm)?,
        w_out: take(Part::WOut)?,
        w_s: take(Part::WS)?,
    })
}

/// Reads fuser weights stored under tessera's names (see the module docs).
///
/// `dims` is the shape every projector must have; `target_layers` is the number of layers of
/// the target model (the length of the result). Errors name the tensor: missing, wrong shape,
/// unsupported dtype, unknown name, layer index `>= target_layers`, non-finite gate logit, or
/// bytes that are not a safetensors file.
pub fn read(bytes: &[u8], dims: ProjectorDims, target_layers: usize) -> Result<FuserWeights> {
    let st = parse(bytes)?;
    let mut present = BTreeSet::new();
    for name in sorted_names(&st) {
        let Some((t, _)) = split_layer(&name).filter(|(_, tail)| is_known_tail(tail)) else {
            return Err(Error::invalid(
                OP,
                format!(
                    "unexpected tensor {name}: expected layers.{{t}}.gate_logit or \
                     layers.{{t}}.(key|value).(w_in|b_in|w1|w2|norm|w_out|w_s)"
                ),
            ));
        };
        if t >= target_layers {
            return Err(Error::invalid(
                OP,
                format!("tensor {name}: layer index {t} >= target_layers {target_layers}"),
            ));
        }
        present.insert(t);
    }
    let mut layers: Vec<Option<LayerWeights>> = (0..target_layers).map(|_| None).collect();
    let mut consumed = BTreeSet::new();
    for t in present {
        let key = read_projector(&st, dims, &format!("layers.{t}.key"), &mut consumed)?;
        let value = read_projector(&st, dims, &format!("layers.{t}.value"), &mut consumed)?;
        let gate_logit = get_gate(&st, &format!("layers.{t}.gate_logit"), false, &mut consumed)?;
        layers[t] = Some(LayerWeights {
            key,
            value,
            gate_logit,
        });
    }
    Ok(FuserWeights { layers })
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Serializes `w` under tessera's names, all tensors F32.
///
/// Every present projector must have the same `ProjectorDims` (one file, one shape) and
/// vectors of the lengths its dims imply; gate logits must be finite. Trailing `None` layers
/// leave no trace: `read` takes the layer count from its caller.
pub fn write(w: &FuserWeights) -> Result<Vec<u8>> {
    let mut dims0: Option<(ProjectorDims, String)> = None;
    let mut entries: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (t, layer) in w.layers.iter().enumerate() {
        let Some(l) = layer else { continue };
        if !l.gate_logit.is_finite() {
            return Err(Error::invalid(
                OP,
                format!(
                    "layers.{t}.gate_logit: gate logit {} is not finite",
                    l.gate_logit
                ),
            ));
        }
        for (kv, p) in [("key", &l.key), ("value", &l.value)] {
            let here = format!("layers.{t}.{kv}");
            match &dims0 {
                None => dims0 = Some((p.dims, here.clone())),
                Some((d, first)) if *d != p.dims => {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "{here}: dims {:?} differ from {d:?} of {first}; one file holds one \
                             projector shape",
                            p.dims
                        ),
                    ))
                }
                Some(_) => {}
            }
            for part in PARTS {
                let name = format!("{here}.{}", part.name());
                let shape = part.shape(&p.dims);
                let want: usize = shape.iter().product();
                let data = part.data(p);
                if data.len() != want {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "{name}: {} values, want {want} for shape {shape:?} = {}",
                            data.len(),
                            part.meaning()
                        ),
                    ));
                }
                entries.push((name, shape, f32_bytes(data)));
            }
        }
        entries.push((
            format!("layers.{t}.gate_logit"),
            vec![1],
            f32_bytes(&[l.gate_logit]),
        ));
    }
    let views = entries
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::invalid(OP, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None)
        .map_err(|e| Error::invalid(OP, format!("serializing safetensors: {e}")))
}

/// The identity layer -> projector table of the released checkpoints: target layer `t` uses
/// `projector_{t}`, for `t` in `0..target_layers`.
pub fn identity_projector_map(target_layers: usize) -> Vec<Option<usize>> {
    (0..target_layers).map(Some).collect()
}

/// Public state-dict prefix of trunk block `j` (0-based) of the `kv` ("key" / "value") projector.
fn public_block(p: usize, kv: &str, j: usize) -> String {
    if j == 0 {
        format!("{PUBLIC_PREFIX}.{p}.{kv}_mlp1.blocks.0")
    } else {
        format!("{PUBLIC_PREFIX}.{p}.{kv}_proj_mlp2.blocks.{}", j - 1)
    }
}

/// `(our name, their name)` pairs for every tensor that maps one to one.
///
/// `projector_of_layer[t]` is the public projector index of target layer `t` (`None`: not
/// fused); `blocks` is tessera's trunk depth, the public `num_layers - 1`. Slices of our
/// stacked tensors are written `w1[j]`, `w2[j]`, `norm[j]`. The gate appears twice, paired
/// with the public key and value gate logits. Public tensors with no counterpart (the scalar
/// branch `*_scalar_mlp2`, the biases `*_proj_out.bias` and `*_scalar_head.bias`, the buffer
/// `gate_temperature`) are not listed; `read_public` documents when it accepts them.
pub fn public_name_map(
    projector_of_layer: &[Option<usize>],
    blocks: usize,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (t, p) in projector_of_layer.iter().enumerate() {
        let Some(p) = *p else { continue };
        for kv in ["key", "value"] {
            let ours = format!("layers.{t}.{kv}");
            let theirs = format!("{PUBLIC_PREFIX}.{p}.{kv}");
            out.push((format!("{ours}.w_in"), format!("{theirs}_in.weight")));
            out.push((format!("{ours}.b_in"), format!("{theirs}_in.bias")));
            for j in 0..blocks {
                let b = public_block(p, kv, j);
                out.push((format!("{ours}.norm[{j}]"), format!("{b}.norm.weight")));
                out.push((format!("{ours}.w1[{j}]"), format!("{b}.w1.weight")));
                out.push((format!("{ours}.w2[{j}]"), format!("{b}.w2.weight")));
            }
            out.push((format!("{ours}.w_out"), format!("{theirs}_proj_out.weight")));
            out.push((
                format!("{ours}.w_s"),
                format!("{theirs}_scalar_head.weight"),
            ));
        }
        for kv in ["key", "value"] {
            out.push((
                format!("layers.{t}.gate_logit"),
                format!("{PUBLIC_PREFIX}.{p}.{kv}_gate_logit"),
            ));
        }
    }
    out
}

fn require_zero(name: &str, v: &[f32], why: &str) -> Result<()> {
    if v.iter().all(|x| *x == 0.0) {
        Ok(())
    } else {
        Err(Error::invalid(
            OP,
            format!("unsupported tensor {name}: it is nonzero and {why}"),
        ))
    }
}

fn read_public_projector(
    st: &SafeTensors<'_>,
    dims: ProjectorDims,
    p: usize,
    kv: &str,
    consumed: &mut BTreeSet<String>,
) -> Result<ProjectorHost> {
    let pre = format!("{PUBLIC_PREFIX}.{p}.{kv}");
    let (h, f) = (dims.hidden, dims.ffn);
    let w_in = get(
        st,
        &format!("{pre}_in.weight"),
        &[h, dims.k_in()],
        "[hidden, hs*ds + ht*dt]",
        consumed,
    )?;
    let b_in = get(st, &format!("{pre}_in.bias"), &[h], "[hidden]", consumed)?;
    let mut w1 = Vec::with_capacity(dims.blocks * f * h);
    let mut w2 = Vec::with_capacity(dims.blocks * h * f);
    let mut norm = Vec::with_capacity(dims.blocks * h);
    for j in 0..dims.blocks {
        let b = public_block(p, kv, j);
        norm.extend(get(
            st,
            &format!("{b}.norm.weight"),
            &[h],
            "[hidden]",
            consumed,
        )?);
        w1.extend(get(
            st,
            &format!("{b}.w1.weight"),
            &[f, h],
            "[ffn, hidden]",
            consumed,
        )?);
        w2.extend(get(
            st,
            &format!("{b}.w2.weight"),
            &[h, f],
            "[hidden, ffn]",
            consumed,
        )?);
    }
    let w_out = get(
        st,
        &format!("{pre}_proj_out.weight"),
        &[dims.k_out(), h],
        "[ht*dt, hidden]",
        consumed,
    )?;
    let name = format!("{pre}_proj_out.bias");
    let b_out = get(st, &name, &[dims.k_out()], "[ht*dt]", consumed)?;
    require_zero(&name, &b_out, "tessera's w_out has no bias")?;
    let w_s = get(
        st,
        &format!("{pre}_scalar_head.weight"),
        &[dims.ht, h],
        "[ht, hidden]",
        consumed,
    )?;
    let name = format!("{pre}_scalar_head.bias");
    let b_s = get(st, &name, &[dims.ht], "[ht]", consumed)?;
    require_zero(&name, &b_s, "tessera's w_s has no bias")?;

    // The public scalar head reads its own one-block branch fed by trunk block 0; tessera's
    // reads the end of the trunk. Same function only if that branch equals the rest of the
    // trunk: one remaining block with identical weights, or all of them identities (w2 = 0).
    let sb = format!("{pre}_scalar_mlp2.blocks.0");
    let s_norm = get(st, &format!("{sb}.norm.weight"), &[h], "[hidden]", consumed)?;
    let s_w1 = get(
        st,
        &format!("{sb}.w1.weight"),
        &[h, h],
        "[hidden, hidden]",
        consumed,
    )?;
    let s_w2 = get(
        st,
        &format!("{sb}.w2.weight"),
        &[h, h],
        "[hidden, hidden]",
        consumed,
    )?;
    let same_as_trunk = dims.blocks == 2
        && f == h
        && s_norm[..] == norm[h..]
        && s_w1[..] == w1[f * h..]
        && s_w2[..] == w2[h * f..];
    let both_identity = s_w2.iter().all(|x| *x == 0.0) && w2[h * f..].iter().all(|x| *x == 0.0);
    if !(same_as_trunk || both_identity) {
        return Err(Error::invalid(
            OP,
            format!(
                "unsupported tensors {sb}.(norm|w1|w2).weight: the public scalar head has its own \
                 block after trunk block 0, tessera's reads the end of the trunk; this maps only \
                 when that block equals {PUBLIC_PREFIX}.{p}.{kv}_proj_mlp2.blocks.0 (num_layers 3, \
                 intermediate_dim = hidden_dim) or it and every {kv}_proj_mlp2 block have w2 = 0"
            ),
        ));
    }
    Ok(ProjectorHost {
        dims,
        w_in,
        b_in,
        w1,
        w2,
        norm,
        w_out,
        w_s,
    })
}

/// Reads a converted public C2C checkpoint (keys `projector_list.{p}.<C2CProjector state dict
/// key>`, see the module docs) into tessera's weights.
///
/// `projector_of_layer` (length `target_layers`) gives the projector index of each target
/// layer, `None` for a layer that is not fused; the released fusers use
/// `identity_projector_map`. `dims.blocks` must be the public `num_layers - 1` (at least 2)
/// and `dims.ffn` the public `intermediate_dim`.
///
/// Maps exactly or fails: `*_proj_out.bias` and `*_scalar_head.bias` must be zero, the key
/// and value gate logits must be equal and finite, and the scalar branch
/// `*_scalar_mlp2.blocks.0` must compute what the rest of tessera's trunk computes: either it
/// equals `*_proj_mlp2.blocks.0` bit for bit (`dims.blocks == 2`, `dims.ffn == dims.hidden`,
/// the released configuration), or it and every `*_proj_mlp2` block have `w2 = 0` (identity
/// blocks). Otherwise the error names the tensor. Any other tensor under a used `projector_list.{p}.` prefix is an error, except the
/// training buffer `gate_temperature`, which is ignored. Tensors under other prefixes are
/// ignored.
pub fn read_public(
    bytes: &[u8],
    dims: ProjectorDims,
    target_layers: usize,
    projector_of_layer: &[Option<usize>],
) -> Result<FuserWeights> {
    if projector_of_layer.len() != target_layers {
        return Err(Error::invalid(
            OP,
            format!(
                "projector_of_layer has {} entries, want target_layers = {target_layers}",
                projector_of_layer.len()
            ),
        ));
    }
    if dims.blocks < 2 {
        return Err(Error::invalid(
            OP,
            format!(
                "dims.blocks = {}: a public C2CProjector has num_layers - 1 >= 2 trunk blocks",
                dims.blocks
            ),
        ));
    }
    let st = parse(bytes)?;
    let mut consumed = BTreeSet::new();
    let mut layers: Vec<Option<LayerWeights>> = (0..target_layers).map(|_| None).collect();
    let mut used = BTreeSet::new();
    for (t, p) in projector_of_layer.iter().enumerate() {
        let Some(p) = *p else { continue };
        used.insert(p);
        let key = read_public_projector(&st, dims, p, "key", &mut consumed)?;
        let value = read_public_projector(&st, dims, p, "value", &mut consumed)?;
        let kname = format!("{PUBLIC_PREFIX}.{p}.key_gate_logit");
        let vname = format!("{PUBLIC_PREFIX}.{p}.value_gate_logit");
        let kg = get_gate(&st, &kname, true, &mut consumed)?;
        let vg = get_gate(&st, &vname, true, &mut consumed)?;
        if kg != vg {
            return Err(Error::invalid(
                OP,
                format!(
                    "unsupported tensor {vname}: value gate logit {vg} differs from {kname} = \
                     {kg}; tessera has one gate logit per layer"
                ),
            ));
        }
        layers[t] = Some(LayerWeights {
            key,
            value,
            gate_logit: kg,
        });
    }
    for name in sorted_names(&st) {
        let Some(rest) = name
            .strip_prefix(PUBLIC_PREFIX)
            .and_then(|r| r.strip_prefix('.'))
        else {
            continue;
        };
        let Some((idx, tail)) = rest.split_once('.') else {
            continue;
        };
        let Ok(p) = idx.parse::<usize>() else {
            continue;
        };
        if used.contains(&p) && tail != "gate_temperature" && !consumed.contains(&name) {
            return Err(Error::invalid(
                OP,
                format!("unsupported tensor {name}: no counterpart in tessera's C2C fuser"),
            ));
        }
    }
    Ok(FuserWeights { layers })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn dims(blocks: usize, ffn: usize) -> ProjectorDims {
        ProjectorDims {
            hs: 2,
            ds: 2,
            ht: 1,
            dt: 3,
            hidden: 4,
            ffn,
            blocks,
        }
    }

    /// Deterministic values, all exact multiples of 1/8 (exact in f32, bf16 and f16).
    fn fill(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + seed * 13) % 17) as f32 * 0.125 - 1.0)
            .collect()
    }

    fn projector(d: ProjectorDims, seed: usize) -> ProjectorHost {
        let n = |part: Part| part.shape(&d).iter().product::<usize>();
        ProjectorHost {
            dims: d,
            w_in: fill(n(Part::WIn), seed),
            b_in: fill(n(Part::BIn), seed + 1),
            w1: fill(n(Part::W1), seed + 2),
            w2: fill(n(Part::W2), seed + 3),
            norm: fill(n(Part::Norm), seed + 4),
            w_out: fill(n(Part::WOut), seed + 5),
            w_s: fill(n(Part::WS), seed + 6),
        }
    }

    fn sample(d: ProjectorDims) -> FuserWeights {
        FuserWeights {
            layers: vec![
                Some(LayerWeights {
                    key: projector(d, 0),
                    value: projector(d, 10),
                    gate_logit: 0.75,
                }),
                None,
                Some(LayerWeights {
                    key: projector(d, 20),
                    value: projector(d, 30),
                    gate_logit: -1.5,
                }),
            ],
        }
    }

    type Entries = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

    /// Our names -> (shape, values), built independently of `write`.
    fn our_entries(w: &FuserWeights) -> Entries {
        let mut m = Entries::new();
        for (t, l) in w.layers.iter().enumerate() {
            let Some(l) = l else { continue };
            for (kv, p) in [("key", &l.key), ("value", &l.value)] {
                for part in PARTS {
                    m.insert(
                        format!("layers.{t}.{kv}.{}", part.name()),
                        (part.shape(&p.dims), part.data(p).to_vec()),
                    );
                }
            }
            m.insert(
                format!("layers.{t}.gate_logit"),
                (vec![1], vec![l.gate_logit]),
            );
        }
        m
    }

    fn encode(v: &[f32], dtype: Dtype) -> Vec<u8> {
        match dtype {
            Dtype::BF16 => v
                .iter()
                .flat_map(|x| half::bf16::from_f32(*x).to_bits().to_le_bytes())
                .collect(),
            Dtype::F16 => v
                .iter()
                .flat_map(|x| half::f16::from_f32(*x).to_bits().to_le_bytes())
                .collect(),
            _ => f32_bytes(v),
        }
    }

    fn pack_with(m: &Entries, dtype_of: impl Fn(&str) -> Dtype) -> Vec<u8> {
        let bufs: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = m
            .iter()
            .map(|(n, (s, v))| {
                let dt = dtype_of(n);
                (n.clone(), s.clone(), dt, encode(v, dt))
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bufs
            .iter()
            .map(|(n, s, dt, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    fn pack(m: &Entries) -> Vec<u8> {
        pack_with(m, |_| Dtype::F32)
    }

    fn err_text(r: Result<FuserWeights>) -> String {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn write_read_round_trip() {
        let d = dims(2, 5);
        let w = sample(d);
        let bytes = write(&w).unwrap();
        let back = read(&bytes, d, 3).unwrap();
        assert_eq!(back, w);
        // More target layers than stored: the extra ones are unfused.
        let back5 = read(&bytes, d, 5).unwrap();
        assert_eq!(back5.layers.len(), 5);
        assert_eq!(back5.layers[..3], w.layers[..]);
        assert!(back5.layers[3].is_none() && back5.layers[4].is_none());
        // The file holds exactly our names, F32.
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.names().len(), 2 * 15);
        let t = st.tensor("layers.2.gate_logit").unwrap();
        assert_eq!((t.dtype(), t.shape()), (Dtype::F32, &[1usize][..]));
        assert_eq!(t.data(), (-1.5f32).to_le_bytes());
        let t = st.tensor("layers.0.value.w2").unwrap();
        assert_eq!(t.shape(), &[2, 4, 5]);
    }

    #[test]
    fn empty_round_trip() {
        let d = dims(2, 5);
        let bytes = write(&FuserWeights::default()).unwrap();
        assert_eq!(read(&bytes, d, 2).unwrap().layers, vec![None, None]);
    }

    #[test]
    fn reads_bf16_and_f16() {
        let d = dims(2, 5);
        let w = sample(d);
        let m = our_entries(&w);
        let bytes = pack_with(&m, |n| {
            if n.contains(".key.") {
                Dtype::BF16
            } else if n.contains(".value.") {
                Dtype::F16
            } else {
                Dtype::F32
            }
        });
        assert_eq!(read(&bytes, d, 3).unwrap(), w);
    }

    #[test]
    fn decodes_half_bits_by_hand() {
        // bf16 0x3F80 = 1.0, 0xC000 = -2.0; f16 0x3C00 = 1.0, 0x3800 = 0.5.
        let b = [0x80u8, 0x3F, 0x00, 0xC0];
        let v = TensorView::new(Dtype::BF16, vec![2], &b).unwrap();
        assert_eq!(decode("x", &v).unwrap(), vec![1.0, -2.0]);
        let h = [0x00u8, 0x3C, 0x00, 0x38];
        let v = TensorView::new(Dtype::F16, vec![2], &h).unwrap();
        assert_eq!(decode("x", &v).unwrap(), vec![1.0, 0.5]);
    }

    #[test]
    fn missing_tensor_is_named() {
        let d = dims(2, 5);
        let mut m = our_entries(&sample(d));
        m.remove("layers.2.value.w2");
        let e = err_text(read(&pack(&m), d, 3));
        assert!(
            e.contains("c2c.weights") && e.contains("missing tensor layers.2.value.w2"),
            "{e}"
        );
        let mut m = our_entries(&sample(d));
        m.remove("layers.0.gate_logit");
        let e = err_text(read(&pack(&m), d, 3));
        assert!(e.contains("missing tensor layers.0.gate_logit"), "{e}");
    }

    #[test]
    fn wrong_shape_is_named() {
        let d = dims(2, 5);
        let mut m = our_entries(&sample(d));
        // Transposed per block: [blocks, hidden, ffn] instead of [blocks, ffn, hidden].
        m.get_mut("layers.0.key.w1").unwrap().0 = vec![2, 4, 5];
        let e = err_text(read(&pack(&m), d, 3));
        assert!(
            e.contains("layers.0.key.w1")
                && e.contains("[2, 4, 5]")
                && e.contains("want [2, 5, 4] = [blocks, ffn, hidden]"),
            "{e}"
        );
        // Reading with other dims than written.
        let bytes = write(&sample(d)).unwrap();
        let e = err_text(read(&bytes, dims(3, 5), 3));
        assert!(e.contains("shape") && e.contains("want [3,"), "{e}");
    }

    #[test]
    fn unsupported_dtype_is_named() {
        let d = dims(2, 5);
        let m = our_entries(&sample(d));
        let bufs: Vec<(String, Vec<usize>, Dtype, Vec<u8>)> = m
            .iter()
            .map(|(n, (s, v))| {
                if n == "layers.0.key.b_in" {
                    let b = v.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect();
                    (n.clone(), s.clone(), Dtype::F64, b)
                } else {
                    (n.clone(), s.clone(), Dtype::F32, f32_bytes(v))
                }
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bufs
            .iter()
            .map(|(n, s, dt, b)| (n.clone(), TensorView::new(*dt, s.clone(), b).unwrap()))
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        let e = err_text(read(&bytes, d, 3));
        assert!(
            e.contains("layers.0.key.b_in") && e.contains("unsupported dtype F64"),
            "{e}"
        );
    }

    #[test]
    fn layer_index_out_of_range() {
        let d = dims(2, 5);
        let bytes = write(&sample(d)).unwrap();
        let e = err_text(read(&bytes, d, 2));
        assert!(e.contains("layer index 2 >= target_layers 2"), "{e}");
    }

    #[test]
    fn non_finite_gate() {
        let d = dims(2, 5);
        let mut m = our_entries(&sample(d));
        m.get_mut("layers.2.gate_logit").unwrap().1 = vec![f32::NAN];
        let e = err_text(read(&pack(&m), d, 3));
        assert!(
            e.contains("layers.2.gate_logit") && e.contains("not finite"),
            "{e}"
        );
        let mut w = sample(d);
        if let Some(l) = w.layers[0].as_mut() {
            l.gate_logit = f32::INFINITY;
        }
        let e = write(&w).unwrap_err().to_string();
        assert!(
            e.contains("layers.0.gate_logit") && e.contains("not finite"),
            "{e}"
        );
    }

    #[test]
    fn unparseable_and_unknown_names() {
        let d = dims(2, 5);
        let e = err_text(read(b"definitely not safetensors", d, 3));
        assert!(
            e.contains("c2c.weights") && e.contains("unparseable"),
            "{e}"
        );
        let mut m = our_entries(&sample(d));
        m.insert("layers.0.key.bias".into(), (vec![1], vec![0.0]));
        let e = err_text(read(&pack(&m), d, 3));
        assert!(e.contains("unexpected tensor layers.0.key.bias"), "{e}");
    }

    #[test]
    fn write_rejects_inconsistent_projectors() {
        let d = dims(2, 5);
        let mut w = sample(d);
        if let Some(l) = w.layers[2].as_mut() {
            l.value.w_s.pop();
        }
        let e = write(&w).unwrap_err().to_string();
        assert!(
            e.contains("layers.2.value.w_s") && e.contains("3 values, want 4"),
            "{e}"
        );
        let mut w = sample(d);
        w.layers[2] = Some(LayerWeights {
            key: projector(dims(3, 5), 0),
            value: projector(dims(3, 5), 1),
            gate_logit: 0.0,
        });
        let e = write(&w).unwrap_err().to_string();
        assert!(e.contains("layers.2.key: dims"), "{e}");
    }

    #[test]
    fn public_name_map_excerpt() {
        let m = public_name_map(&[None, Some(0), Some(7)], 2);
        // Per projector: w_in, b_in, 3 per block, w_out, w_s; two projectors; two gate pairs.
        assert_eq!(m.len(), 2 * (2 * (4 + 3 * 2) + 2));
        let has = |a: &str, b: &str| m.iter().any(|(x, y)| x == a && y == b);
        assert!(has("layers.1.key.w_in", "projector_list.0.key_in.weight"));
        assert!(has("layers.1.key.b_in", "projector_list.0.key_in.bias"));
        assert!(has(
            "layers.1.key.norm[0]",
            "projector_list.0.key_mlp1.blocks.0.norm.weight"
        ));
        assert!(has(
            "layers.1.value.w1[0]",
            "projector_list.0.value_mlp1.blocks.0.w1.weight"
        ));
        assert!(has(
            "layers.2.value.w2[1]",
            "projector_list.7.value_proj_mlp2.blocks.0.w2.weight"
        ));
        assert!(has(
            "layers.2.key.w_out",
            "projector_list.7.key_proj_out.weight"
        ));
        assert!(has(
            "layers.2.key.w_s",
            "projector_list.7.key_scalar_head.weight"
        ));
        assert!(has(
            "layers.2.gate_logit",
            "projector_list.7.key_gate_logit"
        ));
        assert!(has(
            "layers.2.gate_logit",
            "projector_list.7.value_gate_logit"
        ));
        assert!(m.iter().all(|(ours, _)| !ours.starts_with("layers.0.")));
        assert!(m.iter().all(|(_, theirs)| !theirs.contains("scalar_mlp2")));
    }

    /// Builds a public-named checkpoint equal in function to `w` (scalar branch neutral per
    /// `scalar_mode`), plus the training buffer and an unrelated tensor.
    fn public_entries(w: &FuserWeights, map: &[Option<usize>], copy_trunk: bool) -> Entries {
        let mut m = Entries::new();
        m.insert(
            "model_list.0.lm_head.weight".into(),
            (vec![2], vec![1.0, 2.0]),
        );
        for (t, l) in w.layers.iter().enumerate() {
            let (Some(l), Some(p)) = (l, map[t]) else {
                continue;
            };
            let d = l.key.dims;
            let (h, f) = (d.hidden, d.ffn);
            for (kv, pr) in [("key", &l.key), ("value", &l.value)] {
                let pre = format!("projector_list.{p}.{kv}");
                m.insert(
                    format!("{pre}_in.weight"),
                    (vec![h, d.k_in()], pr.w_in.clone()),
                );
                m.insert(format!("{pre}_in.bias"), (vec![h], pr.b_in.clone()));
                for j in 0..d.blocks {
                    let b = if j == 0 {
                        format!("{pre}_mlp1.blocks.0")
                    } else {
                        format!("{pre}_proj_mlp2.blocks.{}", j - 1)
                    };
                    let n = pr.norm[j * h..(j + 1) * h].to_vec();
                    let a = pr.w1[j * f * h..(j + 1) * f * h].to_vec();
                    let c = pr.w2[j * h * f..(j + 1) * h * f].to_vec();
                    m.insert(format!("{b}.norm.weight"), (vec![h], n));
                    m.insert(format!("{b}.w1.weight"), (vec![f, h], a));
                    m.insert(format!("{b}.w2.weight"), (vec![h, f], c));
                }
                let sb = format!("{pre}_scalar_mlp2.blocks.0");
                if copy_trunk {
                    m.insert(
                        format!("{sb}.norm.weight"),
                        (vec![h], pr.norm[h..].to_vec()),
                    );
                    m.insert(
                        format!("{sb}.w1.weight"),
                        (vec![h, h], pr.w1[f * h..].to_vec()),
                    );
                    m.insert(
                        format!("{sb}.w2.weight"),
                        (vec![h, h], pr.w2[h * f..].to_vec()),
                    );
                } else {
                    m.insert(format!("{sb}.norm.weight"), (vec![h], fill(h, 3)));
                    m.insert(format!("{sb}.w1.weight"), (vec![h, h], fill(h * h, 4)));
                    m.insert(format!("{sb}.w2.weight"), (vec![h, h], vec![0.0; h * h]));
                }
                m.insert(
                    format!("{pre}_proj_out.weight"),
                    (vec![d.k_out(), h], pr.w_out.clone()),
                );
                m.insert(
                    format!("{pre}_proj_out.bias"),
                    (vec![d.k_out()], vec![0.0; d.k_out()]),
                );
                m.insert(
                    format!("{pre}_scalar_head.weight"),
                    (vec![d.ht, h], pr.w_s.clone()),
                );
                m.insert(
                    format!("{pre}_scalar_head.bias"),
                    (vec![d.ht], vec![0.0; d.ht]),
                );
                m.insert(format!("{pre}_gate_logit"), (vec![], vec![l.gate_logit]));
            }
            m.insert(
                format!("projector_list.{p}.gate_temperature"),
                (vec![], vec![0.001]),
            );
        }
        m
    }

    #[test]
    fn read_public_matches_our_names() {
        // Released shape: num_layers 3 (blocks 2), intermediate_dim = hidden_dim; scalar
        // branch identical to the proj branch block.
        let d = dims(2, 4);
        let w = sample(d);
        let map = [Some(4), None, Some(1)];
        let bytes = pack_with(&public_entries(&w, &map, true), |_| Dtype::BF16);
        assert_eq!(read_public(&bytes, d, 3, &map).unwrap(), w);
        let ours = read(&write(&w).unwrap(), d, 3).unwrap();
        assert_eq!(read_public(&bytes, d, 3, &map).unwrap(), ours);
        // Every mapped public name exists in the file and holds our tensor's values.
        let ents = public_entries(&w, &map, true);
        let names = our_entries(&w);
        for (o, p) in public_name_map(&map, 2) {
            let theirs = &ents.get(&p).unwrap().1;
            let (base, j) = match o.split_once('[') {
                Some((b, j)) => (
                    b.to_string(),
                    Some(j.trim_end_matches(']').parse::<usize>().unwrap()),
                ),
                None => (o.clone(), None),
            };
            let all = &names.get(&base).unwrap().1;
            let ours = match j {
                Some(j) => &all[j * theirs.len()..(j + 1) * theirs.len()],
                None => &all[..],
            };
            assert_eq!(ours, &theirs[..], "{o} vs {p}");
        }
    }

    #[test]
    fn read_public_identity_branches() {
        // Deeper trunk (blocks 3) with ffn != hidden: maps when the blocks after block 0 and
        // the scalar block are identities (w2 = 0).
        let d = dims(3, 5);
        let mut w = sample(d);
        for l in w.layers.iter_mut().flatten() {
            for p in [&mut l.key, &mut l.value] {
                p.w2[4 * 5..].iter_mut().for_each(|x| *x = 0.0);
            }
        }
        assert_eq!(identity_projector_map(3), vec![Some(0), Some(1), Some(2)]);
        let map = [Some(0), None, Some(2)];
        let bytes = pack(&public_entries(&w, &map, false));
        assert_eq!(read_public(&bytes, d, 3, &map).unwrap(), w);
        // Same file, but a non-identity proj block: the scalar branch no longer maps.
        let mut m = public_entries(&w, &map, false);
        m.get_mut("projector_list.2.value_proj_mlp2.blocks.1.w2.weight")
            .unwrap()
            .1[3] = 0.5;
        let e = err_text(read_public(&pack(&m), d, 3, &map));
        assert!(
            e.contains("unsupported tensors projector_list.2.value_scalar_mlp2.blocks.0"),
            "{e}"
        );
    }

    #[test]
    fn read_public_errors() {
        let d = dims(2, 4);
        let w = sample(d);
        let map = [Some(0), None, Some(2)];
        let base = public_entries(&w, &map, true);

        let mut m = base.clone();
        m.get_mut("projector_list.2.key_proj_out.bias").unwrap().1[1] = 0.25;
        let e = err_text(read_public(&pack(&m), d, 3, &map));
        assert!(
            e.contains("unsupported tensor projector_list.2.key_proj_out.bias"),
            "{e}"
        );

        let mut m = base.clone();
        m.get_mut("projector_list.0.value_scalar_head.bias")
            .unwrap()
            .1[0] = -1.0;
        let e = err_text(read_public(&pack(&m), d, 3, &map));
        assert!(
            e.contains("unsupported tensor projector_list.0.value_scalar_head.bias"),
            "{e}"
        );

        let mut m = base.clone();
        m.get_mut("projector_list.0.value_gate_logit").unwrap().1[0] = 2.0;
        let e = err_text(read_public(&pack(&m), d, 3, &map));
        assert!(
            e.contains("unsupported tensor projector_list.0.value_gate_logit"),
            "{e}"
        );

        let mut m = base.clone();
        m.get_mut("projector_list.0.key_scalar_mlp2.blocks.0.w1.weight")
            .unwrap()
            .1[0] = 9.0;
        let e = err_text(read_public(&pack(&m), d, 3, &map));
        assert!(
            e.contains("unsupported tensors projector_list.0.key_scalar_mlp2.blocks.0"),
            "{e}"
        );

        let mut m = base.clone();
        m.insert(
            "projector_list.2.key_proj_mlp2.blocks.1.w1.weight".into(),
            (vec![4, 4], vec![0.0; 16]),
        );
        let e = err_text(read_public(&pack(&m), d, 3, &map));
        assert!(
            e.contains("unsupported tensor projector_list.2.key_proj_mlp2.blocks.1.w1.weight"),
            "{e}"
        );

        let mut m = base.clone();
        m.remove("projector_list.2.value_mlp1.blocks.0.norm.weight");
        let e = err_text(read_public(&pack(&m), d, 3, &map));
        assert!(
            e.contains("missing tensor projector_list.2.value_mlp1.blocks.0.norm.weight"),
            "{e}"
        );

        let mut m = base.clone();
        m.get_mut("projector_list.0.key_gate_logit").unwrap().1[0] = f32::INFINITY;
        let e = err_text(read_public(&pack(&m), d, 3, &map));
        assert!(
            e.contains("projector_list.0.key_gate_logit") && e.contains("not finite"),
            "{e}"
        );

        let e = err_text(read_public(&pack(&base), d, 2, &map));
        assert!(e.contains("projector_of_layer has 3 entries"), "{e}");
        let e = err_text(read_public(&pack(&base), dims(1, 4), 3, &map));
        assert!(e.contains("dims.blocks = 1"), "{e}");
        let e = err_text(read_public(b"\x00\x01", d, 3, &map));
        assert!(e.contains("unparseable"), "{e}");
    }
}
