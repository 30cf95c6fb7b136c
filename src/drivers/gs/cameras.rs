//! Training views of `tessera gs`: the INRIA 3DGS `cameras.json`, PNG images, a look-at camera,
//! and a scene folder of both.
//!
//! # `cameras.json`
//!
//! The file the INRIA code writes next to a trained model (`camera_to_JSON` in
//! `utils/camera_utils.py`): a JSON array with one object per view,
//!
//! ```text
//! { "id": 0, "img_name": "00001", "width": 800, "height": 600,
//!   "position": [x, y, z],
//!   "rotation": [[r00, r01, r02], [r10, r11, r12], [r20, r21, r22]],
//!   "fy": 1111.0, "fx": 1111.0 }
//! ```
//!
//! INRIA keeps each view as a world-to-camera rigid transform (COLMAP's `R_wc`, `t`); to write
//! the JSON it inverts that transform and stores the camera-to-world one: `position` is the
//! translation of the inverse, i.e. the camera centre in world coordinates, and `rotation` is
//! its 3×3 rotation, written row by row, so that its columns are the camera's x (right), y
//! (down) and z (forward) axes expressed in the world frame. The camera frame is OpenCV's, as
//! in `ops::gs::project::Camera`. Reading therefore inverts once more:
//!
//! ```text
//! viewmat = [ Rᵀ | −Rᵀ·position ]      (R = rotation)
//!           [ 0 0 0 |      1      ]
//! ```
//!
//! and writing takes `rotation = Rᵀ` and `position = −Rᵀ·t` of the view matrix `[R | t]`. The
//! focal lengths are in pixels; the principal point is not stored, and INRIA's rasteriser puts it
//! at the image centre, so `cx = width/2`, `cy = height/2`. Near and far planes are not in the
//! file either: the reader takes them as arguments, the writer drops them.
//!
//! The reader ignores unknown fields. It rejects (an `Error::Format` with context
//! `"gs.cameras"` naming the entry and field): malformed JSON or a missing field (serde's
//! message, with line and column), a value that is not finite in f32, a rotation whose `RᵀR`
//! differs from the identity by more than 1e-3 in some entry or whose determinant is negative
//! (a reflection), a zero width or height, and `fx` or `fy` ≤ 0. An invalid `near`/`far`
//! argument, or a camera that [`write_cameras_json`] cannot store, is an
//! `Error::InvalidArgument` of `"gs.cameras"`.
//!
//! # PNG
//!
//! [`encode_png`] writes 8-bit RGB (each value clamped to `[0, 1]`, times 255, rounded);
//! [`decode_png`] reads 8-bit or 16-bit grey, grey + alpha, RGB or RGBA (alpha dropped, grey
//! copied to the three channels), scaled to `[0, 1]` by 1/255 or 1/65535. Images are `[H, W, 3]`
//! f32, row-major (`(j·W + i)·3 + c`). Errors have op (context) `"gs.png"`.
//!
//! # Scene folders
//!
//! [`load_scene_dir`] reads `DIR/cameras.json`, then the image of each entry: `DIR/<img_name>.png`
//! if that file exists, else `DIR/images/<img_name>.png`. [`save_scene_dir`] writes
//! `DIR/cameras.json` and `DIR/<name>.png`. Errors name the file (context `"gs.scene"`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ops::gs::project::Camera;

/// The op name (error context) of the `cameras.json` functions and [`look_at`].
const OP: &str = "gs.cameras";
/// The op name (error context) of the PNG functions.
const PNG_OP: &str = "gs.png";
/// The op name (error context) of the scene-folder functions.
const SCENE_OP: &str = "gs.scene";
/// Largest allowed deviation of `RᵀR` from the identity, per entry.
pub const ROTATION_TOLERANCE: f64 = 1e-3;

/// One view of a `cameras.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraEntry {
    /// The `id` field (INRIA: the index of the view).
    pub id: u32,
    /// The image name, without extension.
    pub img_name: String,
    /// The camera (principal point at the image centre; `near`/`far` as given to the reader).
    pub camera: Camera,
}

/// A training or test view: a named camera and its image, `[H, W, 3]` f32 in `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The image name (file stem), `img_name` in `cameras.json`.
    pub name: String,
    /// The camera.
    pub camera: Camera,
    /// The image, `camera.height × camera.width × 3`, row-major.
    pub image: Vec<f32>,
}

/// One object of INRIA's `cameras.json`, field order as INRIA writes it.
#[derive(Debug, Serialize, Deserialize)]
struct JsonCamera {
    id: u32,
    img_name: String,
    width: u32,
    height: u32,
    position: [f64; 3],
    rotation: [[f64; 3]; 3],
    fy: f64,
    fx: f64,
}

/// `Error::Format` of `"gs.cameras"`.
fn format_err(msg: impl std::fmt::Display) -> Error {
    Error::Format {
        context: OP.to_string(),
        msg: msg.to_string(),
    }
}

/// `near` finite and > 0, `far > near` (`+inf` allowed), as `ops::gs::project::Camera` wants.
fn check_planes(near: f32, far: f32) -> Result<()> {
    if !(near.is_finite() && near > 0.0) {
        return Err(Error::invalid(
            OP,
            format!("near must be finite and > 0, got {near}"),
        ));
    }
    if far.is_nan() || far <= near {
        return Err(Error::invalid(
            OP,
            format!("far must be > near = {near}, got {far}"),
        ));
    }
    Ok(())
}

/// The largest `|(RᵀR − I)ᵢⱼ|` and the determinant of `r`.
fn orthonormality(r: &[[f64; 3]; 3]) -> (f64, f64) {
    let mut dev: f64 = 0.0;
    for i in 0..3 {
        for j in 0..3 {
            let dot: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
            let id = if i == j { 1.0 } else { 0.0 };
            dev = dev.max((dot - id).abs());
        }
    }
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    (dev, det)
}

/// `Err(problem)` unless `r` is a rotation within [`ROTATION_TOLERANCE`].
fn check_rotation(r: &[[f64; 3]; 3]) -> std::result::Result<(), String> {
    let (dev, det) = orthonormality(r);
    if dev.is_nan() || dev > ROTATION_TOLERANCE {
        return Err(format!(
            "is not orthonormal: |RᵀR − I| reaches {dev:e} (tolerance {ROTATION_TOLERANCE:e})"
        ));
    }
    if det < 0.0 {
        return Err(format!(
            "is a reflection, not a rotation (determinant {det})"
        ));
    }
    Ok(())
}

/// `v` as f32, or `Err` when it is not finite there.
fn finite_f32(v: f64, what: impl FnOnce() -> String) -> Result<f32> {
    let f = v as f32;
    if f.is_finite() {
        Ok(f)
    } else {
        Err(format_err(format!("{} is not finite in f32 ({v})", what())))
    }
}

/// The shortest decimal of an f32, as the f64 nearest to it (keeps the JSON readable).
fn json_number(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(f64::from(v))
}

/// The camera of INRIA's camera-to-world `rotation` and `position` (see the module docs).
fn camera_from_pose(
    rotation: &[[f64; 3]; 3],
    position: &[f64; 3],
    [fx, fy]: [f32; 2],
    (width, height): (u32, u32),
    (near, far): (f32, f32),
) -> Camera {
    let mut viewmat = [0.0f32; 16];
    for r in 0..3 {
        // Row r of Rᵀ is column r of R.
        let mut t = 0.0;
        for c in 0..3 {
            viewmat[r * 4 + c] = rotation[c][r] as f32;
            t -= rotation[c][r] * position[c];
        }
        viewmat[r * 4 + 3] = t as f32;
    }
    viewmat[15] = 1.0;
    centred(viewmat, [fx, fy], (width, height), (near, far))
}

/// A camera with principal point at the image centre (the only one `cameras.json` can hold).
fn centred(
    viewmat: [f32; 16],
    [fx, fy]: [f32; 2],
    (width, height): (u32, u32),
    (near, far): (f32, f32),
) -> Camera {
    Camera {
        viewmat,
        k: [
            fx,
            0.0,
            width as f32 / 2.0,
            0.0,
            fy,
            height as f32 / 2.0,
            0.0,
            0.0,
            1.0,
        ],
        width,
        height,
        near,
        far,
    }
}

/// Parses an INRIA `cameras.json` (see the module docs for the convention and the checks);
/// every camera gets the given `near` and `far` planes. Entries keep the file's order.
pub fn read_cameras_json(bytes: &[u8], near: f32, far: f32) -> Result<Vec<CameraEntry>> {
    check_planes(near, far)?;
    let raw: Vec<JsonCamera> = serde_json::from_slice(bytes)
        .map_err(|e| format_err(format!("not a valid cameras.json: {e}")))?;
    let mut out = Vec::with_capacity(raw.len());
    for (n, j) in raw.into_iter().enumerate() {
        let name = &j.img_name;
        let at = |field: &str| format!("camera {n} ('{name}'): {field}");
        if j.width == 0 || j.height == 0 {
            return Err(format_err(format!(
                "{} must be at least 1x1, got {}x{}",
                at("the size"),
                j.width,
                j.height
            )));
        }
        for (i, &v) in j.position.iter().enumerate() {
            finite_f32(v, || at(&format!("position[{i}]")))?;
        }
        for (r, row) in j.rotation.iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                finite_f32(v, || at(&format!("rotation[{r}][{c}]")))?;
            }
        }
        let fx = finite_f32(j.fx, || at("fx"))?;
        let fy = finite_f32(j.fy, || at("fy"))?;
        if !(fx > 0.0 && fy > 0.0) {
            return Err(format_err(format!(
                "{} must be > 0 (fx = {fx}, fy = {fy})",
                at("the focal lengths")
            )));
        }
        check_rotation(&j.rotation).map_err(|m| format_err(format!("{} {m}", at("rotation"))))?;
        let camera = camera_from_pose(
            &j.rotation,
            &j.position,
            [fx, fy],
            (j.width, j.height),
            (near, far),
        );
        if let Some(i) = camera.viewmat.iter().position(|v| !v.is_finite()) {
            return Err(format_err(format!(
                "{} is not finite in f32",
                at(&format!("the view matrix entry {i}"))
            )));
        }
        out.push(CameraEntry {
            id: j.id,
            img_name: j.img_name,
            camera,
        });
    }
    Ok(out)
}

/// Writes `entries` as an INRIA `cameras.json` (pretty-printed; see the module docs).
///
/// Errors (`Error::InvalidArgument` of `"gs.cameras"`): a camera with a non-finite view matrix
/// or intrinsics, a view rotation that is not a rotation within [`ROTATION_TOLERANCE`],
/// `fx`/`fy` ≤ 0, a zero size, or a principal point more than 1e-3 px from the image centre
/// (the format cannot store it).
pub fn write_cameras_json(entries: &[CameraEntry]) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(entries.len());
    for (n, e) in entries.iter().enumerate() {
        let cam = &e.camera;
        let bad = |msg: String| Error::invalid(OP, format!("camera {n} ('{}'): {msg}", e.img_name));
        if let Some(i) = cam.viewmat.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("viewmat[{i}] is not finite")));
        }
        if let Some(i) = cam.k.iter().position(|v| !v.is_finite()) {
            return Err(bad(format!("k[{i}] is not finite")));
        }
        if cam.width == 0 || cam.height == 0 {
            return Err(bad(format!(
                "the size must be at least 1x1, got {}x{}",
                cam.width, cam.height
            )));
        }
        let (fx, fy, cx, cy) = (cam.k[0], cam.k[4], cam.k[2], cam.k[5]);
        if !(fx > 0.0 && fy > 0.0) {
            return Err(bad(format!(
                "the focal lengths must be > 0 (fx = {fx}, fy = {fy})"
            )));
        }
        let (w2, h2) = (f64::from(cam.width) / 2.0, f64::from(cam.height) / 2.0);
        if (f64::from(cx) - w2).abs() > 1e-3 || (f64::from(cy) - h2).abs() > 1e-3 {
            return Err(bad(format!(
                "the principal point ({cx}, {cy}) is not the image centre ({w2}, {h2}), \
                 which is all cameras.json can hold"
            )));
        }
        // rotation = Rᵀ (camera to world), position = −Rᵀ·t.
        let rotation: [[f64; 3]; 3] =
            std::array::from_fn(|r| std::array::from_fn(|c| json_number(cam.viewmat[c * 4 + r])));
        let mut position = [0.0f64; 3];
        check_rotation(&rotation).map_err(|m| bad(format!("the view rotation {m}")))?;
        for (r, p) in position.iter_mut().enumerate() {
            *p = -(0..3)
                .map(|c| f64::from(cam.viewmat[c * 4 + r]) * f64::from(cam.viewmat[c * 4 + 3]))
                .sum::<f64>();
        }
        raw.push(JsonCamera {
            id: e.id,
            img_name: e.img_name.clone(),
            width: cam.width,
            height: cam.height,
            position,
            rotation,
            fy: json_number(fy),
            fx: json_number(fx),
        });
    }
    serde_json::to_vec_pretty(&raw)
        .map_err(|e| Error::invalid(OP, format!("cannot serialise cameras.json: {e}")))
}

/// A pinhole camera at `eye` looking at `target`, in the OpenCV frame of
/// `ops::gs::project::Camera`: z forward (toward `target`), y down (minus the component of the
/// world `up` perpendicular to the view direction), x right (`y × z`). `fx = fy = fx`, the
/// principal point is the image centre.
///
/// Errors (`Error::InvalidArgument` of `"gs.cameras"`): non-finite vectors, `eye == target`,
/// `up` zero or parallel to the view direction, `fx` ≤ 0 or not finite, a zero size, or bad
/// `near`/`far` (`near` finite > 0, `far > near`).
#[allow(clippy::too_many_arguments)]
pub fn look_at(
    eye: [f32; 3],
    target: [f32; 3],
    up: [f32; 3],
    width: u32,
    height: u32,
    fx: f32,
    near: f32,
    far: f32,
) -> Result<Camera> {
    check_planes(near, far)?;
    for (name, v) in [("eye", eye), ("target", target), ("up", up)] {
        if let Some(i) = v.iter().position(|a| !a.is_finite()) {
            return Err(Error::invalid(
                OP,
                format!("look_at: {name}[{i}] is not finite"),
            ));
        }
    }
    if !(fx.is_finite() && fx > 0.0) {
        return Err(Error::invalid(
            OP,
            format!("look_at: fx must be finite and > 0, got {fx}"),
        ));
    }
    if width == 0 || height == 0 {
        return Err(Error::invalid(
            OP,
            format!("look_at: the size must be at least 1x1, got {width}x{height}"),
        ));
    }
    let e = eye.map(f64::from);
    let d: Vec<f64> = (0..3).map(|i| f64::from(target[i]) - e[i]).collect();
    let dn = d.iter().map(|v| v * v).sum::<f64>().sqrt();
    if dn == 0.0 {
        return Err(Error::invalid(OP, "look_at: eye and target coincide"));
    }
    let z = [d[0] / dn, d[1] / dn, d[2] / dn];
    let u = up.map(f64::from);
    let un = u.iter().map(|v| v * v).sum::<f64>().sqrt();
    let uz = u[0] * z[0] + u[1] * z[1] + u[2] * z[2];
    // y = −(up − (up·z) z), normalised.
    let yv = [
        -(u[0] - uz * z[0]),
        -(u[1] - uz * z[1]),
        -(u[2] - uz * z[2]),
    ];
    let yn = yv.iter().map(|v| v * v).sum::<f64>().sqrt();
    if !(un > 0.0 && yn > 1e-6 * un) {
        return Err(Error::invalid(
            OP,
            "look_at: up is zero or parallel to the view direction",
        ));
    }
    let y = [yv[0] / yn, yv[1] / yn, yv[2] / yn];
    let x = [
        y[1] * z[2] - y[2] * z[1],
        y[2] * z[0] - y[0] * z[2],
        y[0] * z[1] - y[1] * z[0],
    ];
    let mut viewmat = [0.0f32; 16];
    for (r, axis) in [x, y, z].iter().enumerate() {
        let t = -(axis[0] * e[0] + axis[1] * e[1] + axis[2] * e[2]);
        viewmat[r * 4] = axis[0] as f32;
        viewmat[r * 4 + 1] = axis[1] as f32;
        viewmat[r * 4 + 2] = axis[2] as f32;
        viewmat[r * 4 + 3] = t as f32;
    }
    viewmat[15] = 1.0;
    if viewmat.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(OP, "look_at: the view matrix overflows f32"));
    }
    Ok(centred(viewmat, [fx, fx], (width, height), (near, far)))
}

/// `w·h·3`, or `Err` naming `op` for a zero size or a wrong length.
fn image_len(op: &'static str, len: usize, width: u32, height: u32) -> Result<usize> {
    if width == 0 || height == 0 {
        return Err(Error::invalid(
            op,
            format!("the image size must be at least 1x1, got {width}x{height}"),
        ));
    }
    let n = (width as usize)
        .checked_mul(height as usize)
        .and_then(|p| p.checked_mul(3))
        .ok_or_else(|| Error::invalid(op, format!("the image size {width}x{height} overflows")))?;
    if len != n {
        return Err(Error::invalid(
            op,
            format!("the image has {len} values, expected {width}x{height}x3 = {n}"),
        ));
    }
    Ok(n)
}

/// Encodes an `[H, W, 3]` f32 image as an 8-bit RGB PNG: each value clamped to `[0, 1]`, times
/// 255, rounded to nearest.
///
/// Errors (`Error::InvalidArgument` of `"gs.png"`): a zero size, a length other than `w·h·3`, a
/// non-finite value (naming the first index), or an encoder failure.
pub fn encode_png(rgb: &[f32], width: u32, height: u32) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    image_len(PNG_OP, rgb.len(), width, height)?;
    if let Some(i) = rgb.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(
            PNG_OP,
            format!("rgb[{i}] is not finite ({})", rgb[i]),
        ));
    }
    let bytes: Vec<u8> = rgb
        .iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    let mut out = Vec::new();
    image::codecs::png::PngEncoder::new(&mut out)
        .write_image(&bytes, width, height, image::ColorType::Rgb8)
        .map_err(|e| Error::invalid(PNG_OP, format!("cannot encode the PNG: {e}")))?;
    Ok(out)
}

/// Decodes a PNG to an `[H, W, 3]` f32 image in `[0, 1]` and its `(width, height)`: 8- or
/// 16-bit grey, grey + alpha, RGB or RGBA (alpha dropped, grey copied to R, G and B).
///
/// Errors (`Error::Format` with context `"gs.png"`): not a PNG, a truncated or corrupt one, or
/// another pixel type.
pub fn decode_png(bytes: &[u8]) -> Result<(Vec<f32>, u32, u32)> {
    use image::DynamicImage as D;
    let fail = |msg: String| Error::Format {
        context: PNG_OP.to_string(),
        msg,
    };
    let img = image::load_from_memory_with_format(bytes, image::ImageFormat::Png)
        .map_err(|e| fail(format!("not a valid PNG ({} bytes): {e}", bytes.len())))?;
    let (w, h) = (img.width(), img.height());
    let s8 = |v: u8| f32::from(v) / 255.0;
    let s16 = |v: u16| f32::from(v) / 65535.0;
    let grey = |v: f32| [v, v, v];
    let data: Vec<f32> = match &img {
        D::ImageLuma8(b) => b.pixels().flat_map(|p| grey(s8(p[0]))).collect(),
        D::ImageLumaA8(b) => b.pixels().flat_map(|p| grey(s8(p[0]))).collect(),
        D::ImageRgb8(b) => b.as_raw().iter().map(|&v| s8(v)).collect(),
        D::ImageRgba8(b) => b
            .pixels()
            .flat_map(|p| [s8(p[0]), s8(p[1]), s8(p[2])])
            .collect(),
        D::ImageLuma16(b) => b.pixels().flat_map(|p| grey(s16(p[0]))).collect(),
        D::ImageLumaA16(b) => b.pixels().flat_map(|p| grey(s16(p[0]))).collect(),
        D::ImageRgb16(b) => b.as_raw().iter().map(|&v| s16(v)).collect(),
        D::ImageRgba16(b) => b
            .pixels()
            .flat_map(|p| [s16(p[0]), s16(p[1]), s16(p[2])])
            .collect(),
        other => return Err(fail(format!("unsupported pixel type {:?}", other.color()))),
    };
    Ok((data, w, h))
}

/// `Err` unless `name` is usable as a file stem inside the scene folder.
fn check_name(name: &str, n: usize) -> Result<()> {
    let bad = name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']);
    if bad {
        return Err(Error::invalid(
            SCENE_OP,
            format!("view {n}: the name '{name}' is not a plain file name"),
        ));
    }
    Ok(())
}

/// `Error::Io` naming what was done to `path`.
fn io_err(what: &str, path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        context: format!("{SCENE_OP}: {what} {}", path.display()),
        source,
    }
}

/// Loads a scene folder: `DIR/cameras.json` (with `near`, `far` for every camera), then for each
/// entry its image, looked up first as `DIR/<img_name>.png` and then as
/// `DIR/images/<img_name>.png`. Views keep the file's order; the `id`s are not kept.
///
/// Errors: those of [`read_cameras_json`] and [`decode_png`] (the latter with the file named),
/// an `Error::Io` naming the file that cannot be read (for a missing image, both places
/// tried), an `img_name` that is not a plain file name, a `cameras.json` with no cameras, and
/// an image whose size differs from its camera's (an `Error::Format` of `"gs.scene"` naming the
/// file and both sizes).
pub fn load_scene_dir(dir: &Path, near: f32, far: f32) -> Result<Vec<View>> {
    let json_path = dir.join("cameras.json");
    let bytes = std::fs::read(&json_path).map_err(|e| io_err("reading", &json_path, e))?;
    let entries = read_cameras_json(&bytes, near, far).map_err(|e| match e {
        Error::Format { context, msg } => Error::Format {
            context,
            msg: format!("{}: {msg}", json_path.display()),
        },
        other => other,
    })?;
    if entries.is_empty() {
        return Err(Error::Format {
            context: SCENE_OP.to_string(),
            msg: format!("{} lists no cameras", json_path.display()),
        });
    }
    let mut views = Vec::with_capacity(entries.len());
    for (n, entry) in entries.into_iter().enumerate() {
        check_name(&entry.img_name, n)?;
        let file = format!("{}.png", entry.img_name);
        let first = dir.join(&file);
        let second: PathBuf = dir.join("images").join(&file);
        let path = if first.is_file() {
            first
        } else if second.is_file() {
            second
        } else {
            return Err(io_err(
                &format!("no image for camera {n}: tried {} and", first.display()),
                &second,
                std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
            ));
        };
        let png = std::fs::read(&path).map_err(|e| io_err("reading", &path, e))?;
        let (image, w, h) = decode_png(&png).map_err(|e| match e {
            Error::Format { context, msg } => Error::Format {
                context,
                msg: format!("{}: {msg}", path.display()),
            },
            other => other,
        })?;
        let cam = &entry.camera;
        if (w, h) != (cam.width, cam.height) {
            return Err(Error::Format {
                context: SCENE_OP.to_string(),
                msg: format!(
                    "{} is {w}x{h}, but camera {n} ('{}') in cameras.json is {}x{}",
                    path.display(),
                    entry.img_name,
                    cam.width,
                    cam.height
                ),
            });
        }
        views.push(View {
            name: entry.img_name,
            camera: entry.camera,
            image,
        });
    }
    Ok(views)
}

/// Writes a scene folder that [`load_scene_dir`] reads back: creates `dir` (and its parents),
/// then writes `dir/cameras.json` (ids `0..n` in order) and `dir/<name>.png` for each view.
///
/// Errors: a name that is not a plain file name or that repeats (`"gs.scene"`), an image whose
/// length is not its camera's `w·h·3` ([`encode_png`]'s errors), the errors of
/// [`write_cameras_json`], and `Error::Io` naming the path that cannot be written.
pub fn save_scene_dir(dir: &Path, views: &[View]) -> Result<()> {
    let mut entries = Vec::with_capacity(views.len());
    let mut pngs = Vec::with_capacity(views.len());
    for (n, v) in views.iter().enumerate() {
        check_name(&v.name, n)?;
        if views[..n].iter().any(|o| o.name == v.name) {
            return Err(Error::invalid(
                SCENE_OP,
                format!("view {n}: the name '{}' is used twice", v.name),
            ));
        }
        let id =
            u32::try_from(n).map_err(|_| Error::invalid(SCENE_OP, "too many views for u32 ids"))?;
        pngs.push(encode_png(&v.image, v.camera.width, v.camera.height)?);
        entries.push(CameraEntry {
            id,
            img_name: v.name.clone(),
            camera: v.camera.clone(),
        });
    }
    let json = write_cameras_json(&entries)?;
    std::fs::create_dir_all(dir).map_err(|e| io_err("creating", dir, e))?;
    let json_path = dir.join("cameras.json");
    std::fs::write(&json_path, json).map_err(|e| io_err("writing", &json_path, e))?;
    for (v, png) in views.iter().zip(pngs) {
        let path = dir.join(format!("{}.png", v.name));
        std::fs::write(&path, png).map_err(|e| io_err("writing", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies `viewmat` to a world point: camera coordinates.
    fn to_cam(c: &Camera, p: [f64; 3]) -> [f64; 3] {
        let m = c.viewmat.map(f64::from);
        let mut out = [0.0; 3];
        for (r, o) in out.iter_mut().enumerate() {
            *o = m[r * 4] * p[0] + m[r * 4 + 1] * p[1] + m[r * 4 + 2] * p[2] + m[r * 4 + 3];
        }
        out
    }

    /// Pixel coordinates and depth of a world point.
    fn project(c: &Camera, p: [f64; 3]) -> (f64, f64, f64) {
        let q = to_cam(c, p);
        let k = c.k.map(f64::from);
        (k[0] * q[0] / q[2] + k[2], k[4] * q[1] / q[2] + k[5], q[2])
    }

    /// A temporary folder removed on drop (also when a test fails).
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let p = std::env::temp_dir().join(format!(
                "tessera-gs-cameras-{tag}-{}-{nanos}",
                std::process::id()
            ));
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// An INRIA entry: a camera at (1, 2, 3) rotated 90° about world z; its columns (x right, y
    /// down, z forward in world terms) are (0, 1, 0), (−1, 0, 0), (0, 0, 1).
    const ONE: &str = r#"[
      {"id": 7, "img_name": "frame_001", "width": 64, "height": 48,
       "position": [1.0, 2.0, 3.0],
       "rotation": [[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]],
       "fy": 55.5, "fx": 50.0, "extra": "ignored"}
    ]"#;

    #[test]
    fn reads_the_inria_convention() {
        let e = read_cameras_json(ONE.as_bytes(), 0.01, 100.0).unwrap();
        assert_eq!(e.len(), 1);
        let c = &e[0].camera;
        assert_eq!(e[0].id, 7);
        assert_eq!(e[0].img_name, "frame_001");
        assert_eq!((c.width, c.height, c.near, c.far), (64, 48, 0.01, 100.0));
        assert_eq!(c.k, [50.0, 0.0, 32.0, 0.0, 55.5, 24.0, 0.0, 0.0, 1.0]);
        // Rᵀ = [[0,1,0],[-1,0,0],[0,0,1]]; t = −Rᵀ·(1,2,3) = (−2, 1, −3).
        let want = [
            0.0, 1.0, 0.0, -2.0, //
            -1.0, 0.0, 0.0, 1.0, //
            0.0, 0.0, 1.0, -3.0, //
            0.0, 0.0, 0.0, 1.0,
        ];
        assert_eq!(c.viewmat, want);
        // The centre maps to the camera origin; a step along the camera's x axis (world +y)
        // lands on camera +x, one along its forward axis (world +z) straight ahead.
        assert_eq!(to_cam(c, [1.0, 2.0, 3.0]), [0.0, 0.0, 0.0]);
        assert_eq!(to_cam(c, [1.0, 3.0, 3.0]), [1.0, 0.0, 0.0]);
        assert_eq!(to_cam(c, [0.0, 2.0, 3.0]), [0.0, 1.0, 0.0]);
        let (u, v, z) = project(c, [1.0, 2.0, 5.0]);
        assert_eq!((u, v, z), (32.0, 24.0, 2.0));
    }

    #[test]
    fn json_round_trip() {
        let a = look_at(
            [3.0, -2.0, 4.0],
            [0.1, 0.2, -0.3],
            [0.0, 0.0, 1.0],
            80,
            60,
            70.0,
            0.01,
            50.0,
        )
        .unwrap();
        let b = read_cameras_json(ONE.as_bytes(), 0.01, 50.0).unwrap()[0]
            .camera
            .clone();
        let entries = vec![
            CameraEntry {
                id: 0,
                img_name: "a".into(),
                camera: a,
            },
            CameraEntry {
                id: 5,
                img_name: "b b".into(),
                camera: b,
            },
        ];
        let json = write_cameras_json(&entries).unwrap();
        // The INRIA keys are there, and the file is an array of two objects.
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let arr = v.as_array().unwrap();
        assert_eq!(arr.len(), 2);
        for key in [
            "id", "img_name", "width", "height", "position", "rotation", "fx", "fy",
        ] {
            assert!(arr[0].get(key).is_some(), "{key}");
        }
        // The look-at camera's centre is written as its position.
        let pos = arr[0]["position"].as_array().unwrap();
        for (p, want) in pos.iter().zip([3.0, -2.0, 4.0]) {
            assert!((p.as_f64().unwrap() - want).abs() < 1e-5, "{pos:?}");
        }
        let back = read_cameras_json(&json, 0.01, 50.0).unwrap();
        assert_eq!(back.len(), 2);
        for (x, y) in entries.iter().zip(&back) {
            assert_eq!(x.id, y.id);
            assert_eq!(x.img_name, y.img_name);
            assert_eq!(x.camera.k, y.camera.k);
            assert_eq!(
                (x.camera.width, x.camera.height),
                (y.camera.width, y.camera.height)
            );
            for (p, q) in x.camera.viewmat.iter().zip(&y.camera.viewmat) {
                assert!(
                    (p - q).abs() < 1e-6,
                    "{:?} vs {:?}",
                    x.camera.viewmat,
                    y.camera.viewmat
                );
            }
        }
        // The exactly representable one comes back bit for bit.
        assert_eq!(entries[1].camera, back[1].camera);
    }

    #[test]
    fn look_at_geometry() {
        let (eye, target, up) = ([2.0, 1.0, 5.0], [0.5, -0.5, 0.0], [0.0, 1.0, 0.0]);
        let c = look_at(eye, target, up, 100, 80, 90.0, 0.01, 100.0).unwrap();
        let t = target.map(f64::from);
        let (u, v, z) = project(&c, t);
        let dist = (1.5f64 * 1.5 + 1.5 * 1.5 + 25.0).sqrt();
        assert!(
            (u - 50.0).abs() < 1e-4 && (v - 40.0).abs() < 1e-4,
            "({u}, {v})"
        );
        assert!((z - dist).abs() < 1e-5, "{z} vs {dist}");
        // Up in the world is up in the image (smaller y), and about the centre column.
        let (u2, v2, z2) = project(&c, [t[0], t[1] + 0.5, t[2]]);
        assert!(v2 < v - 1.0 && z2 > 0.0, "{v2} vs {v}");
        assert!((u2 - u).abs() < 3.0);
        // Looking down −z with y up: world +x is to the right (larger pixel x).
        let c = look_at([0.0, 0.0, 5.0], [0.0; 3], up, 100, 80, 90.0, 0.01, 100.0).unwrap();
        let (u, v, _) = project(&c, [1.0, 0.0, 0.0]);
        assert!(
            (u - 68.0).abs() < 1e-4 && (v - 40.0).abs() < 1e-4,
            "({u}, {v})"
        );
        // The rotation part is orthonormal with determinant +1.
        let r: [[f64; 3]; 3] =
            std::array::from_fn(|i| std::array::from_fn(|j| f64::from(c.viewmat[i * 4 + j])));
        let (dev, det) = orthonormality(&r);
        assert!(dev < 1e-6 && (det - 1.0).abs() < 1e-6);
    }

    #[test]
    fn look_at_errors() {
        let up = [0.0, 1.0, 0.0];
        let e = look_at([0.0; 3], [0.0; 3], up, 8, 8, 10.0, 0.01, 10.0).unwrap_err();
        assert!(e.to_string().contains("coincide"), "{e}");
        let e = look_at([0.0, 5.0, 0.0], [0.0; 3], up, 8, 8, 10.0, 0.01, 10.0).unwrap_err();
        assert!(e.to_string().contains("parallel"), "{e}");
        let e = look_at([1.0, 5.0, 0.0], [0.0; 3], up, 0, 8, 10.0, 0.01, 10.0).unwrap_err();
        assert!(e.to_string().contains("1x1"), "{e}");
        let e = look_at([1.0, 5.0, 0.0], [0.0; 3], up, 8, 8, 0.0, 0.01, 10.0).unwrap_err();
        assert!(e.to_string().contains("fx"), "{e}");
        let e = look_at([f32::NAN, 5.0, 0.0], [0.0; 3], up, 8, 8, 1.0, 0.01, 10.0).unwrap_err();
        assert!(e.to_string().contains("eye[0]"), "{e}");
        let e = look_at([1.0, 5.0, 0.0], [0.0; 3], up, 8, 8, 1.0, 0.0, 10.0).unwrap_err();
        assert!(e.to_string().contains("near"), "{e}");
    }

    #[test]
    fn json_errors() {
        let read = |s: &str| {
            read_cameras_json(s.as_bytes(), 0.01, 100.0)
                .unwrap_err()
                .to_string()
        };
        let e = read("not json");
        assert!(
            e.contains("gs.cameras") && e.contains("not a valid cameras.json"),
            "{e}"
        );
        let e = read(&ONE.replace(r#""fx": 50.0,"#, ""));
        assert!(e.contains("missing field `fx`"), "{e}");
        let e = read(&ONE.replace("\"img_name\": \"frame_001\",", ""));
        assert!(e.contains("missing field `img_name`"), "{e}");
        let e = read(&ONE.replace("[1.0, 2.0, 3.0]", "[1.0, 2.0]"));
        assert!(e.contains("gs.cameras"), "{e}");
        let e = read(&ONE.replace("1.0, 2.0, 3.0", "1.0, 1e300, 3.0"));
        assert!(e.contains("position[1] is not finite"), "{e}");
        let e = read(&ONE.replace("[0.0, 0.0, 1.0]]", "[0.0, 0.0, 1.01]]"));
        assert!(e.contains("rotation is not orthonormal"), "{e}");
        // Within the tolerance it is accepted.
        read_cameras_json(
            ONE.replace("[0.0, 0.0, 1.0]]", "[0.0, 0.0, 1.0004]]")
                .as_bytes(),
            0.01,
            1.0,
        )
        .unwrap();
        let e = read(&ONE.replace("[0.0, 0.0, 1.0]]", "[0.0, 0.0, -1.0]]"));
        assert!(e.contains("reflection"), "{e}");
        let e = read(&ONE.replace("\"width\": 64", "\"width\": 0"));
        assert!(e.contains("at least 1x1"), "{e}");
        let e = read(&ONE.replace("\"width\": 64", "\"width\": -3"));
        assert!(e.contains("gs.cameras"), "{e}");
        let e = read(&ONE.replace("55.5", "-1.0"));
        assert!(e.contains("focal lengths must be > 0"), "{e}");
        assert!(matches!(
            read_cameras_json(b"[]", 0.01, 0.005),
            Err(Error::InvalidArgument {
                op: "gs.cameras",
                ..
            })
        ));
        assert!(read_cameras_json(b"[]", 0.01, 1.0).unwrap().is_empty());
        // A principal point off centre cannot be written.
        let mut cam = read_cameras_json(ONE.as_bytes(), 0.01, 1.0).unwrap();
        cam[0].camera.k[2] = 10.0;
        let e = write_cameras_json(&cam).unwrap_err().to_string();
        assert!(e.contains("principal point"), "{e}");
    }

    #[test]
    fn png_round_trip() {
        let (w, h) = (7u32, 5u32);
        let img: Vec<f32> = (0..w * h * 3)
            .map(|i| (i as f32 * 0.37).sin() * 0.6 + 0.5)
            .collect();
        let png = encode_png(&img, w, h).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let (back, bw, bh) = decode_png(&png).unwrap();
        assert_eq!((bw, bh), (w, h));
        for (a, b) in img.iter().zip(&back) {
            // Clamped, then rounded to the nearest of 256 levels.
            let want = (a.clamp(0.0, 1.0) * 255.0).round() / 255.0;
            assert!((b - want).abs() < 1e-7, "{a} -> {b}");
            assert!((b - a.clamp(0.0, 1.0)).abs() <= 0.5 / 255.0 + 1e-6);
        }
        // Out-of-range values are clamped.
        let png = encode_png(&[-0.5, 0.25, 1.7], 1, 1).unwrap();
        let (back, _, _) = decode_png(&png).unwrap();
        assert_eq!(back, vec![0.0, 64.0 / 255.0, 1.0]);
    }

    #[test]
    fn png_decodes_grey_and_rgba() {
        use image::ImageEncoder;
        let enc = |data: &[u8], ct: image::ColorType| {
            let mut out = Vec::new();
            image::codecs::png::PngEncoder::new(&mut out)
                .write_image(data, 2, 1, ct)
                .unwrap();
            out
        };
        let (g, w, h) = decode_png(&enc(&[0, 255], image::ColorType::L8)).unwrap();
        assert_eq!((w, h), (2, 1));
        assert_eq!(g, vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let rgba = enc(&[255, 0, 51, 7, 0, 102, 255, 200], image::ColorType::Rgba8);
        let (c, _, _) = decode_png(&rgba).unwrap();
        assert_eq!(c, vec![1.0, 0.0, 0.2, 0.0, 0.4, 1.0]);
    }

    #[test]
    fn png_errors() {
        let e = decode_png(b"").unwrap_err().to_string();
        assert!(e.contains("gs.png") && e.contains("not a valid PNG"), "{e}");
        let e = decode_png(b"GIF89a garbage").unwrap_err().to_string();
        assert!(e.contains("not a valid PNG"), "{e}");
        let good = encode_png(&[0.5; 4 * 4 * 3], 4, 4).unwrap();
        let e = decode_png(&good[..good.len() / 2]).unwrap_err().to_string();
        assert!(e.contains("not a valid PNG"), "{e}");
        let e = encode_png(&[0.5; 11], 2, 2).unwrap_err().to_string();
        assert!(e.contains("gs.png") && e.contains("11 values"), "{e}");
        let e = encode_png(&[], 0, 2).unwrap_err().to_string();
        assert!(e.contains("at least 1x1"), "{e}");
        let e = encode_png(&[0.5, f32::NAN, 0.5], 1, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rgb[1] is not finite"), "{e}");
    }

    fn test_views() -> Vec<View> {
        let up = [0.0, 0.0, 1.0];
        (0..3u32)
            .map(|n| {
                let a = n as f32 * 2.0;
                let (w, h) = (6 + n, 4 + 2 * n);
                let camera = look_at(
                    [4.0 * a.cos(), 4.0 * a.sin(), 1.0],
                    [0.0; 3],
                    up,
                    w,
                    h,
                    5.0,
                    0.01,
                    20.0,
                )
                .unwrap();
                let image = (0..w * h * 3)
                    .map(|i| ((i * 37 + n * 11) % 256) as f32 / 255.0)
                    .collect();
                View {
                    name: format!("view_{n:03}"),
                    camera,
                    image,
                }
            })
            .collect()
    }

    #[test]
    fn scene_dir_round_trip() {
        let tmp = TempDir::new("round-trip");
        let dir = tmp.0.join("scene");
        let views = test_views();
        save_scene_dir(&dir, &views).unwrap();
        assert!(dir.join("cameras.json").is_file() && dir.join("view_002.png").is_file());
        let back = load_scene_dir(&dir, 0.01, 20.0).unwrap();
        assert_eq!(back.len(), views.len());
        for (a, b) in views.iter().zip(&back) {
            assert_eq!(a.name, b.name);
            assert_eq!(a.camera.k, b.camera.k);
            assert_eq!((a.camera.near, a.camera.far), (b.camera.near, b.camera.far));
            for (p, q) in a.camera.viewmat.iter().zip(&b.camera.viewmat) {
                assert!((p - q).abs() < 1e-6);
            }
            // The test images are multiples of 1/255: exact after quantisation.
            assert_eq!(a.image, b.image);
        }
        // The images/ subfolder is the second place looked at.
        let sub = dir.join("images");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::rename(dir.join("view_001.png"), sub.join("view_001.png")).unwrap();
        let again = load_scene_dir(&dir, 0.01, 20.0).unwrap();
        assert_eq!(again[1].image, views[1].image);
    }

    #[test]
    fn scene_dir_errors() {
        let tmp = TempDir::new("errors");
        let dir = tmp.0.clone();
        // No folder at all: the missing cameras.json is named.
        let e = load_scene_dir(&dir, 0.01, 20.0).unwrap_err();
        assert!(
            matches!(e, Error::Io { .. }) && e.to_string().contains("cameras.json"),
            "{e}"
        );
        let views = test_views();
        save_scene_dir(&dir, &views).unwrap();
        // An image of the wrong size.
        let wrong = encode_png(&[0.5; 3 * 3 * 3], 3, 3).unwrap();
        std::fs::write(dir.join("view_001.png"), wrong).unwrap();
        let e = load_scene_dir(&dir, 0.01, 20.0).unwrap_err().to_string();
        assert!(
            e.contains("view_001.png is 3x3") && e.contains("7x6"),
            "{e}"
        );
        // A garbage image: the decoder's error names the file.
        std::fs::write(dir.join("view_001.png"), b"\x89PNG\r\n\x1a\nshort").unwrap();
        let e = load_scene_dir(&dir, 0.01, 20.0).unwrap_err().to_string();
        assert!(e.contains("gs.png") && e.contains("view_001.png"), "{e}");
        // A missing image: both places are named.
        std::fs::remove_file(dir.join("view_001.png")).unwrap();
        let e = load_scene_dir(&dir, 0.01, 20.0).unwrap_err().to_string();
        assert!(e.contains("view_001.png") && e.contains("images"), "{e}");
        // A bad cameras.json names the file.
        std::fs::write(dir.join("cameras.json"), b"[{\"id\": 0}]").unwrap();
        let e = load_scene_dir(&dir, 0.01, 20.0).unwrap_err().to_string();
        assert!(
            e.contains("cameras.json") && e.contains("missing field"),
            "{e}"
        );
        std::fs::write(dir.join("cameras.json"), b"[]").unwrap();
        let e = load_scene_dir(&dir, 0.01, 20.0).unwrap_err().to_string();
        assert!(e.contains("no cameras"), "{e}");
        // Saving: bad and repeated names, and an image of the wrong length.
        let mut v = test_views();
        v[1].name = "../evil".into();
        let e = save_scene_dir(&dir, &v).unwrap_err().to_string();
        assert!(e.contains("not a plain file name"), "{e}");
        let mut v = test_views();
        v[2].name = v[0].name.clone();
        let e = save_scene_dir(&dir, &v).unwrap_err().to_string();
        assert!(e.contains("used twice"), "{e}");
        let mut v = test_views();
        v[0].image.pop();
        let e = save_scene_dir(&dir, &v).unwrap_err().to_string();
        assert!(e.contains("gs.png"), "{e}");
    }
}
