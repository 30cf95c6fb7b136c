//! The `tessera` command line: `info`, `verify`, `bench`, `run`, `ckpt`, `tasp`, `topo`, `rexmoe`,
//! `specdiff`, `gs`, `dd2`, `spagent`, `rlinf`.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use half::{bf16, f16};
use serde_json::json;

use tessera::{bench, kernels, verify, Backend, Device};

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Hand-written CUDA/HIP kernels with a host SIMT executor and Rust references"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Cuda,
    Hip,
    Simt,
    Cpu,
}

impl BackendArg {
    fn name(self) -> &'static str {
        match self {
            BackendArg::Cuda => "cuda",
            BackendArg::Hip => "hip",
            BackendArg::Simt => "simt",
            BackendArg::Cpu => "cpu",
        }
    }
}

/// `tessera run --backend`: the executor families, with both SIMT wave widths.
#[derive(Clone, Copy, ValueEnum)]
enum RunBackend {
    Cuda,
    Hip,
    /// Host SIMT, wave32 (the CUDA sources).
    Simt,
    /// Host SIMT, wave64 (the HIP sources).
    Simt64,
    Cpu,
}

#[derive(Subcommand)]
enum Cmd {
    /// Devices found, compiled targets, and the kernels each executor can launch.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Run every op on every executor present (host SIMT always) against the reference.
    Verify {
        /// Only this executor family.
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long)]
        json: bool,
    },
    /// Time the ops; on a GPU also measure the copy ceiling and print achieved/ceiling.
    Bench {
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Elements per tensor.
        #[arg(long, default_value_t = 1 << 24)]
        elements: usize,
        /// Timed repetitions per op (median reported).
        #[arg(long, default_value_t = 20)]
        reps: usize,
        #[arg(long)]
        json: bool,
    },
    /// Run one op of the op table on tensors from a safetensors file and write its outputs to
    /// another (`tessera run OP --in X.safetensors [--param NAME=VALUE]... -o Y.safetensors`),
    /// or list the ops (`--list`).
    ///
    /// Inputs are taken from the file by their Rust names (`tessera run --list`, docs/ops.md); a
    /// tensor the op does not take is an error, not ignored. Outputs are written by their names.
    /// Exit status: 0, 2 for bad input (tensors, dtypes, shapes, parameters, unknown op), 1 for
    /// anything else (files, devices, kernels).
    Run {
        /// The op (`family.op`, e.g. `attention.forward`).
        #[arg(
            value_name = "OP",
            required_unless_present = "list",
            conflicts_with = "list"
        )]
        op: Option<String>,
        /// The input tensors: a safetensors file holding each input under its name.
        #[arg(long = "in", value_name = "INPUTS.safetensors")]
        input: Option<std::path::PathBuf>,
        /// A parameter (repeatable): `heads=8`, `scale=0.125`, `mode=causal`,
        /// `centroids=0.1,0.2`.
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Where to write the outputs (safetensors, each output under its name).
        #[arg(short, long, value_name = "OUT.safetensors")]
        output: Option<std::path::PathBuf>,
        /// The executor: cuda, hip, simt (the CUDA sources on the CPU, wave32), simt64 (the
        /// HIP sources, wave64) or cpu (the native CPU path). Default: the best present (CUDA,
        /// then HIP, then cpu).
        #[arg(long, value_enum)]
        backend: Option<RunBackend>,
        /// List the ops.
        #[arg(long)]
        list: bool,
        /// As JSON: the op list, or a summary of the run (outputs, host wall time).
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// As the Markdown op reference (docs/ops.md).
        #[arg(long)]
        markdown: bool,
    },
    /// Checkpoint compression (BitSnap): safetensors <-> .tsnap.
    Ckpt {
        #[command(subcommand)]
        cmd: CkptCmd,
    },
    /// TASP sequence parallelism.
    Tasp {
        #[command(subcommand)]
        cmd: TaspCmd,
    },
    /// TASP ring schedules (Hamiltonian decompositions of the complete digraph).
    Topo {
        #[command(subcommand)]
        cmd: TopoCmd,
    },
    /// ReXMoE: stacks of MoE layers whose routers choose among the experts of r adjacent layers.
    Rexmoe {
        #[command(subcommand)]
        cmd: RexmoeCmd,
    },
    /// SpecDiff: a DiT sampled with no cache, SpecDiff's feature cache, ToCa-style token caching
    /// and step skipping.
    Specdiff {
        #[command(subcommand)]
        cmd: SpecdiffCmd,
    },
    /// 3D Gaussian Splatting (BalanceGS): render a .ply, write the synthetic scene, train.
    Gs {
        #[command(subcommand)]
        cmd: GsCmd,
    },
    /// DD2: a one-step generator distilled from a Markov-chain teacher through the fused
    /// Gaussian-mixture score kernel.
    Dd2 {
        #[command(subcommand)]
        cmd: Dd2Cmd,
    },
    /// SPAgent: load-aware speculative tool calls for search agents (a discrete-event
    /// simulation; no inference engine runs).
    Spagent {
        #[command(subcommand)]
        cmd: SpagentCmd,
    },
    /// RLinf M2Flow: plan the placement of an RL workflow from a profile, run its pipeline.
    Rlinf {
        #[command(subcommand)]
        cmd: RlinfCmd,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RlinfPlacement {
    /// The fastest feasible placement.
    Best,
    /// The fastest feasible collocated placement.
    Collocated,
    /// The fastest feasible disaggregated placement.
    Disaggregated,
    /// The fastest feasible hybrid placement.
    Hybrid,
}

#[derive(Subcommand)]
enum RlinfCmd {
    /// Enumerate collocated, disaggregated and hybrid placements of a workflow profile on N
    /// GPUs and pick the fastest that fits in memory (docs/rlinf.md).
    Plan {
        /// The workflow profile (format: docs/rlinf.md, docs/rlinf-profile.example.json).
        profile: std::path::PathBuf,
        /// GPUs to place on (default: the profile's "gpus").
        #[arg(long)]
        gpus: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Plan, then stream the micro-batches through the chosen placement on CPU threads (stage
    /// work: sleeps of the profiled time, scaled) and compare the measured makespan with the
    /// prediction.
    Run {
        profile: std::path::PathBuf,
        #[arg(long)]
        gpus: Option<usize>,
        /// Which placement to run.
        #[arg(long, value_enum, default_value_t = RlinfPlacement::Best)]
        placement: RlinfPlacement,
        /// Scale profile seconds so the predicted makespan lasts this many wall milliseconds.
        #[arg(long, default_value_t = 300.0)]
        target_ms: f64,
        /// Stage work: sleeps of the profiled time, or tessera GEMMs on the CPU device
        /// (calibrated to last it when run alone).
        #[arg(long, value_enum, default_value_t = RlinfWork::Sleep)]
        work: RlinfWork,
        /// Square GEMM size with --work gemm.
        #[arg(long, default_value_t = 64)]
        gemm_size: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum RlinfWork {
    Sleep,
    Gemm,
}

#[derive(Subcommand)]
enum Dd2Cmd {
    /// Train the generator and report the KL of its sampled joint from the teacher's, before
    /// and after.
    Demo {
        /// Codebook size V.
        #[arg(long, default_value_t = 4)]
        vocab: usize,
        /// Embedding width d (8..=64).
        #[arg(long, default_value_t = 8)]
        dim: usize,
        /// Sequence length L.
        #[arg(long, default_value_t = 3)]
        len: usize,
        #[arg(long, default_value_t = 600)]
        steps: usize,
        #[arg(long, default_value_t = 256)]
        batch: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long)]
        json: bool,
    },
}

/// The synthetic scene's size on the command line.
#[derive(clap::Args, Clone, Copy)]
struct GsSceneArgs {
    /// Cameras (every 8th from the first is held out).
    #[arg(long, default_value_t = 24)]
    views: usize,
    /// Image width and height in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Gaussians in the dense cluster.
    #[arg(long, default_value_t = 400)]
    dense: usize,
    /// Gaussians in the sparse background.
    #[arg(long, default_value_t = 100)]
    sparse: usize,
    /// Seed of the scene.
    #[arg(long, default_value_t = 7)]
    scene_seed: u64,
}

impl GsSceneArgs {
    fn config(self) -> tessera::drivers::gs::scene::SceneConfig {
        tessera::drivers::gs::scene::SceneConfig {
            dense: self.dense,
            sparse: self.sparse,
            views: self.views,
            width: self.size,
            height: self.size,
            seed: self.scene_seed,
        }
    }
}

#[derive(Subcommand)]
enum GsCmd {
    /// Render one camera of an INRIA cameras.json from a 3DGS .ply to a PNG.
    Render {
        /// The .ply (INRIA 3DGS format).
        scene: std::path::PathBuf,
        /// INRIA cameras.json.
        #[arg(long)]
        camera: std::path::PathBuf,
        /// Which entry of cameras.json (position in the array).
        #[arg(long, default_value_t = 0)]
        index: usize,
        #[arg(short, long)]
        output: std::path::PathBuf,
        /// The BalanceGS layout (identical image).
        #[arg(long)]
        balanced: bool,
        /// Background colour r,g,b in [0, 1].
        #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [0.0, 0.0, 0.0])]
        background: Vec<f32>,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
    },
    /// Write the synthetic scene: a PNG per view, cameras.json, the ground truth
    /// (ground_truth.ply) and the initial points (points.ply).
    Synth {
        #[command(flatten)]
        scene: GsSceneArgs,
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
    /// Train on the synthetic scene (default) or a folder of PNGs + cameras.json; report
    /// held-out PSNR and time per step.
    Train {
        /// A folder with cameras.json and one PNG per entry (and optionally points.ply, the
        /// initial Gaussians); without it, the synthetic scene is generated in memory.
        #[arg(long)]
        scene: Option<std::path::PathBuf>,
        #[command(flatten)]
        synth: GsSceneArgs,
        /// BalanceGS: the reordered layout and similarity merging.
        #[arg(long)]
        balanced: bool,
        /// Train twice, baseline then --balanced, and report both.
        #[arg(long)]
        compare: bool,
        #[arg(long, default_value_t = 1000)]
        steps: usize,
        /// Random initial points when the folder has no points.ply.
        #[arg(long, default_value_t = 2000)]
        init_points: usize,
        /// Seed of the view order and the splits.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Background colour r,g,b in [0, 1].
        #[arg(long, value_delimiter = ',', num_args = 3, default_values_t = [0.0, 0.0, 0.0])]
        background: Vec<f32>,
        /// Write the trained Gaussians here (.ply; the last run's with --compare).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum SpecdiffShape {
    /// 256 tokens, d 128, 4 blocks, 12 steps.
    Small,
    /// 64 tokens, d 128, 1 block, 5 steps.
    Tiny,
}

#[derive(Subcommand)]
enum SpecdiffCmd {
    /// The quality/speed curve of every mode over several cache ratios (SpecDiff, ToCa-style)
    /// and thresholds (step-skip), each against no cache from the same noise; writes a PNG plot.
    Curve {
        /// The random model's shape (ignored with --weights).
        #[arg(long, value_enum, default_value = "small")]
        shape: SpecdiffShape,
        /// A model in safetensors (drivers::specdiff names); replaces the random one.
        #[arg(long)]
        weights: Option<std::path::PathBuf>,
        /// Cache ratios of SpecDiff and ToCa-style, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0.5,0.7,0.8,0.9")]
        cr: Vec<f64>,
        /// Step-skip thresholds, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0.05,0.1,0.2,0.4")]
        threshold: Vec<f64>,
        /// SpecDiff's C2 share of the total score.
        #[arg(long, default_value_t = 0.1)]
        low_mass: f64,
        /// Full steps first.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seed of the starting noise.
        #[arg(long, default_value_t = 2)]
        noise_seed: u64,
        /// Where to write the plot.
        #[arg(long, default_value = "specdiff-curve.png")]
        png: std::path::PathBuf,
        /// Do not write the plot.
        #[arg(long)]
        no_png: bool,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long)]
        json: bool,
    },
    /// Write a random model to safetensors (drivers::specdiff names, f32).
    Init {
        #[arg(long, value_enum, default_value = "small")]
        shape: SpecdiffShape,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
}

/// The shape of a ReXMoE stack on the command line.
#[derive(clap::Args, Clone, Copy)]
struct RexmoeShape {
    /// Layers L.
    #[arg(long, default_value_t = 8)]
    layers: usize,
    /// Experts per layer N.
    #[arg(long, default_value_t = 16)]
    experts: usize,
    /// Experts per token k.
    #[arg(long, default_value_t = 4)]
    top_k: usize,
    /// Model width d.
    #[arg(long, default_value_t = 128)]
    d: usize,
    /// Expert hidden size F.
    #[arg(long, default_value_t = 256)]
    f: usize,
    /// Do not renormalise the top-k weights.
    #[arg(long)]
    no_renormalize: bool,
}

#[derive(Subcommand)]
enum RexmoeCmd {
    /// Measure prefill and decode: expert bytes read per token (from the routing that ran) and
    /// wall time, for each group size (`--r 1` is the conventional-MoE baseline), on random
    /// weights, or on a model from --weights.
    Report {
        #[command(flatten)]
        shape: RexmoeShape,
        /// Group sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,4")]
        r: Vec<usize>,
        /// A model in safetensors (drivers::rexmoe names; bf16); replaces the random stacks.
        #[arg(long)]
        weights: Option<std::path::PathBuf>,
        /// Prompt tokens of the prefill call.
        #[arg(long, default_value_t = 1024)]
        prompt: usize,
        /// Tokens per decode call.
        #[arg(long, default_value_t = 4)]
        decode_batch: usize,
        /// Decode calls measured.
        #[arg(long, default_value_t = 16)]
        decode_steps: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long)]
        json: bool,
    },
    /// Write a random bf16 model to safetensors (drivers::rexmoe names).
    Init {
        #[command(flatten)]
        shape: RexmoeShape,
        /// Group size.
        #[arg(long, default_value_t = 4)]
        r: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(short, long)]
        output: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum TaspCmd {
    /// Predicted ring / zigzag-ring / TASP times and speedups: a model, not a measurement.
    Model {
        /// GPUs in the group.
        #[arg(long, default_value_t = 8)]
        gpus: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum CkptCmd {
    /// Compress NEW.safetensors (as a delta against --base when given) into a .tsnap file.
    Compress {
        new: std::path::PathBuf,
        /// The previous checkpoint: store NEW as a delta against it.
        #[arg(long)]
        base: Option<std::path::PathBuf>,
        /// Largest relative L2 error per tensor (against the delta with a base, the weights
        /// without); 0 = lossless.
        #[arg(long, default_value_t = 0.0)]
        error_budget: f64,
        /// Keep matching tensors exact: a glob (`*`, `?`) over the whole name, else a substring.
        /// Repeatable.
        #[arg(long)]
        keep_exact: Vec<String>,
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long)]
        json: bool,
    },
    /// Rebuild the safetensors file from a .tsnap (with the same --base it was made against).
    Decompress {
        input: std::path::PathBuf,
        #[arg(long)]
        base: Option<std::path::PathBuf>,
        #[arg(short, long)]
        output: std::path::PathBuf,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long)]
        json: bool,
    },
    /// Show each tensor's encoding, ratio and error.
    Inspect {
        input: std::path::PathBuf,
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Info { json } => info(json),
        Cmd::Verify { backend, json } => run_verify(backend, json),
        Cmd::Bench {
            backend,
            elements,
            reps,
            json,
        } => run_bench(backend, elements, reps, json),
        Cmd::Run {
            op,
            input,
            params,
            output,
            backend,
            list,
            json,
            markdown,
        } => match op {
            Some(op) if !list => run_op(&op, input, &params, output, backend, json),
            _ => run_ops(list, json, markdown),
        },
        Cmd::Ckpt { cmd } => run_ckpt(cmd),
        Cmd::Tasp { cmd } => run_tasp(cmd),
        Cmd::Topo { cmd } => run_topo(cmd),
        Cmd::Rexmoe { cmd } => run_rexmoe(cmd),
        Cmd::Specdiff { cmd } => run_specdiff(cmd),
        Cmd::Gs { cmd } => run_gs(cmd),
        Cmd::Dd2 { cmd } => run_dd2(cmd),
        Cmd::Spagent { cmd } => run_spagent(cmd),
        Cmd::Rlinf { cmd } => run_rlinf(cmd),
    }
}

fn specdiff_config(s: SpecdiffShape) -> tessera::drivers::specdiff::Config {
    match s {
        SpecdiffShape::Small => tessera::drivers::specdiff::Config::small(),
        SpecdiffShape::Tiny => tessera::drivers::specdiff::Config::tiny(),
    }
}

fn run_specdiff(cmd: SpecdiffCmd) -> ExitCode {
    use tessera::drivers::specdiff::{self, Mode, Model};
    match cmd {
        SpecdiffCmd::Curve {
            shape,
            weights,
            cr,
            threshold,
            low_mass,
            warmup,
            seed,
            noise_seed,
            png,
            no_png,
            backend,
            json,
        } => {
            let dev = pick_device(backend);
            let model = match weights {
                Some(path) => std::fs::read(&path)
                    .map_err(|e| tessera::Error::Io {
                        context: format!("reading {}", path.display()),
                        source: e,
                    })
                    .and_then(|b| Model::from_safetensors(&dev, &b)),
                None => Model::random(&dev, specdiff_config(shape), seed),
            }
            .unwrap_or_else(|e| exit_err(e));
            let mut modes: Vec<Mode> = cr
                .iter()
                .map(|&cr| Mode::SpecDiff { cr, low_mass })
                .collect();
            modes.extend(cr.iter().map(|&cr| Mode::Toca { cr }));
            modes.extend(
                threshold
                    .iter()
                    .map(|&threshold| Mode::StepSkip { threshold }),
            );
            let curve =
                specdiff::curve(&model, noise_seed, &modes, warmup).unwrap_or_else(|e| exit_err(e));
            if !no_png {
                specdiff::plot::png(&curve, &png).unwrap_or_else(|e| exit_err(e));
                eprintln!("wrote {}", png.display());
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&curve).expect("json"));
            } else {
                print!("{}", specdiff::markdown(&curve));
            }
            ExitCode::SUCCESS
        }
        SpecdiffCmd::Init {
            shape,
            seed,
            output,
        } => {
            let bytes = Model::random(&Device::cpu(), specdiff_config(shape), seed)
                .and_then(|m| m.to_safetensors())
                .unwrap_or_else(|e| exit_err(e));
            std::fs::write(&output, bytes).unwrap_or_else(|e| {
                exit_err(tessera::Error::Io {
                    context: format!("writing {}", output.display()),
                    source: e,
                })
            });
            ExitCode::SUCCESS
        }
    }
}

fn read_file(path: &std::path::Path) -> tessera::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| tessera::Error::Io {
        context: format!("reading {}", path.display()),
        source: e,
    })
}

fn write_file(path: &std::path::Path, bytes: &[u8]) -> tessera::Result<()> {
    std::fs::write(path, bytes).map_err(|e| tessera::Error::Io {
        context: format!("writing {}", path.display()),
        source: e,
    })
}

fn background3(v: &[f32]) -> [f32; 3] {
    [v[0], v[1], v[2]]
}

fn run_gs(cmd: GsCmd) -> ExitCode {
    use tessera::drivers::gs::{cameras, ply, scene, train};
    use tessera::ops::gs::render::Layout;
    let r = (|| -> tessera::Result<()> {
        match cmd {
            GsCmd::Render {
                scene,
                camera,
                index,
                output,
                balanced,
                background,
                backend,
            } => {
                let dev = pick_device(backend);
                let splats = ply::read_ply(&read_file(&scene)?)?;
                let entries = cameras::read_cameras_json(&read_file(&camera)?, 0.01, 1e10)?;
                let e = entries.get(index).ok_or_else(|| {
                    tessera::Error::invalid(
                        "gs.render",
                        format!(
                            "--index {index}: {} has {} cameras",
                            camera.display(),
                            entries.len()
                        ),
                    )
                })?;
                let layout = if balanced {
                    Layout::Balanced
                } else {
                    Layout::Baseline
                };
                let img =
                    train::forward(&dev, &splats, &e.camera, background3(&background), layout)?
                        .image()?;
                write_file(
                    &output,
                    &cameras::encode_png(&img, e.camera.width, e.camera.height)?,
                )?;
                eprintln!(
                    "rendered {} ({}x{}, {} Gaussians) to {}",
                    e.img_name,
                    e.camera.width,
                    e.camera.height,
                    splats.len(),
                    output.display()
                );
                Ok(())
            }
            GsCmd::Synth { scene: sc, output } => {
                let dev = Device::best();
                let c = sc.config();
                let (gt, views) = train::synthetic(&dev, &c, [0.0; 3])?;
                cameras::save_scene_dir(&output, &views)?;
                write_file(&output.join("ground_truth.ply"), &ply::write_ply(&gt)?)?;
                let init = scene::initial_model(&gt, c.seed)?;
                write_file(&output.join("points.ply"), &ply::write_ply(&init)?)?;
                eprintln!(
                    "wrote {} views, cameras.json, ground_truth.ply ({} Gaussians) and points.ply                      ({} points) to {}",
                    views.len(),
                    gt.len(),
                    init.len(),
                    output.display()
                );
                Ok(())
            }
            GsCmd::Train {
                scene: dir,
                synth,
                balanced,
                compare,
                steps,
                init_points,
                seed,
                background,
                out,
                backend,
                json,
            } => {
                let dev = pick_device(backend);
                let bg = background3(&background);
                let (views, init) = match &dir {
                    Some(d) => {
                        let views = cameras::load_scene_dir(d, 0.01, 1e10)?;
                        let pts = d.join("points.ply");
                        let init = if pts.exists() {
                            ply::read_ply(&read_file(&pts)?)?
                        } else {
                            train::random_init(&views, init_points, seed)?
                        };
                        (views, init)
                    }
                    None => {
                        let c = synth.config();
                        let (gt, views) = train::synthetic(&dev, &c, bg)?;
                        (views, scene::initial_model(&gt, c.seed)?)
                    }
                };
                let (tr, te) = scene::split(views.len());
                let modes: Vec<bool> = if compare {
                    vec![false, true]
                } else {
                    vec![balanced]
                };
                let mut reports = Vec::new();
                let mut last = None;
                for b in modes {
                    let cfg = train::TrainConfig {
                        balanced: b,
                        background: bg,
                        seed,
                        ..train::TrainConfig::for_steps(steps)
                    };
                    let pb = gs_bar(steps as u64, if b { "balanced" } else { "baseline" }, json);
                    let (rep, s) =
                        train::train(&dev, &init, &views, &tr, &te, &cfg, |st, l, p, n| {
                            if let Some(pb) = &pb {
                                pb.set_position(st as u64);
                                pb.set_message(format!(
                                    "loss {l:.4}  PSNR {p:.2} dB  {n} Gaussians"
                                ));
                            }
                        })?;
                    if let Some(pb) = pb {
                        pb.finish_and_clear();
                    }
                    reports.push(rep);
                    last = Some(s);
                }
                if let (Some(path), Some(s)) = (&out, &last) {
                    write_file(path, &ply::write_ply(s)?)?;
                    eprintln!("wrote {}", path.display());
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&reports).expect("json"));
                } else {
                    print!("{}", train::markdown(&reports));
                }
                Ok(())
            }
        }
    })();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit_err(e),
    }
}

#[derive(Subcommand)]
enum SpagentCmd {
    /// Simulate agents × prediction accuracies with and without speculation: end-to-end
    /// speedup, wasted work and throttle rejections (drivers::spagent; docs/spagent.md).
    Sim {
        /// Concurrent agents (load levels), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,8,32,128")]
        agents: Vec<usize>,
        /// Prediction accuracies q in [0, 1], comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "0.3,0.6,0.9")]
        accuracy: Vec<f64>,
        /// Steps (reasoning + tool call) per episode.
        #[arg(long, default_value_t = 8)]
        steps: usize,
        /// Episodes each agent runs back to back.
        #[arg(long, default_value_t = 4)]
        episodes: usize,
        /// The global throttle: admit a speculation while engine requests in flight < this.
        #[arg(long, default_value_t = 32)]
        throttle: usize,
        /// Engine tokens of one prediction (0: free, taken from the previous step).
        #[arg(long, default_value_t = 16)]
        predict_tokens: u32,
        /// Early steps per episode that may skip verification (0: always verify).
        #[arg(long, default_value_t = 2)]
        skip_steps: usize,
        /// The engine's latency curve, JSON `[[batch, seconds per iteration], ...]`; default: the
        /// illustrative curve of docs/spagent.md.
        #[arg(long)]
        curve: Option<std::path::PathBuf>,
        /// Seed of every random draw.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
}

fn run_spagent(cmd: SpagentCmd) -> ExitCode {
    use tessera::drivers::spagent::{self, LatencyCurve, Policy, SimConfig, Throttle};
    let SpagentCmd::Sim {
        agents,
        accuracy,
        steps,
        episodes,
        throttle,
        predict_tokens,
        skip_steps,
        curve,
        seed,
        json,
    } = cmd;
    let r = (|| -> tessera::Result<(SimConfig, Vec<spagent::Report>)> {
        let curve = match curve {
            Some(path) => {
                let bytes = std::fs::read(&path).map_err(|e| tessera::Error::Io {
                    context: format!("reading {}", path.display()),
                    source: e,
                })?;
                LatencyCurve::from_json(&bytes).map_err(|e| match e {
                    tessera::Error::Format { msg, .. } => tessera::Error::Format {
                        context: format!("spagent latency curve {}", path.display()),
                        msg,
                    },
                    e => e,
                })?
            }
            None => LatencyCurve::illustrative(),
        };
        let base = SimConfig {
            steps,
            episodes_per_agent: episodes,
            predict_tokens,
            curve,
            throttle: Throttle {
                max_inflight: throttle,
            },
            policy: Policy {
                skip_verify_steps: skip_steps,
                ..Policy::default()
            },
            seed,
            ..SimConfig::default()
        };
        let reports = spagent::grid(&base, &agents, &accuracy)?;
        Ok((base, reports))
    })();
    let (base, reports) = r.unwrap_or_else(|e| exit_err(e));
    if json {
        let out = json!({
            "kind": "simulation: no inference engine or tool ran",
            "config": base,
            "reports": reports,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    } else {
        println!(
            "SPAgent simulation (no inference engine or tool ran): {} steps × {} episodes per agent, \
             throttle {} in-flight requests, {}-token predictions, {} early steps may skip \
             verification, seed {}",
            base.steps,
            base.episodes_per_agent,
            base.throttle.max_inflight,
            base.predict_tokens,
            base.policy.skip_verify_steps,
            base.seed
        );
        let pts: Vec<String> = base
            .curve
            .points()
            .iter()
            .map(|(b, s)| format!("{b}: {:.1} ms", s * 1e3))
            .collect();
        println!(
            "Engine curve (batch: s per iteration): {}\n",
            pts.join(", ")
        );
        print!("{}", spagent::markdown(&reports));
    }
    ExitCode::SUCCESS
}

fn run_dd2(cmd: Dd2Cmd) -> ExitCode {
    use tessera::drivers::dd2;
    let Dd2Cmd::Demo {
        vocab,
        dim,
        len,
        steps,
        batch,
        seed,
        backend,
        json,
    } = cmd;
    let dev = pick_device(backend);
    let c = dd2::Config {
        vocab,
        dim,
        len,
        steps,
        batch,
        seed,
        ..Default::default()
    };
    let pb = gs_bar(steps as u64, "dd2", json);
    let r = dd2::demo(&dev, &c, |st, l| {
        if let Some(pb) = &pb {
            pb.set_position(st as u64);
            pb.set_message(format!("loss {l:.4}"));
        }
    })
    .unwrap_or_else(|e| exit_err(e));
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&r).expect("json"));
    } else {
        print!("{}", dd2::markdown(&r));
    }
    ExitCode::SUCCESS
}

fn run_rlinf(cmd: RlinfCmd) -> ExitCode {
    use tessera::drivers::rlinf::{pipeline, plan, Kind, Profile};
    let load = |path: &std::path::Path, gpus: Option<usize>| -> tessera::Result<(Profile, usize)> {
        let p = Profile::from_json(&read_file(path)?).map_err(|e| match e {
            tessera::Error::Format { context, msg } => tessera::Error::Format {
                context,
                msg: format!("{}: {msg}", path.display()),
            },
            e => e,
        })?;
        let n = gpus.or(p.gpus()).ok_or_else(|| {
            tessera::Error::invalid(
                "rlinf.plan",
                "no GPU count: pass --gpus N or give \"gpus\" in the profile",
            )
        })?;
        Ok((p, n))
    };
    let no_fit = |n: usize, what: &str| {
        tessera::Error::invalid(
            "rlinf.plan",
            format!("no {what} placement of {n} GPUs fits in memory"),
        )
    };
    let r = (|| -> tessera::Result<()> {
        match cmd {
            RlinfCmd::Plan {
                profile,
                gpus,
                json,
            } => {
                let (p, n) = load(&profile, gpus)?;
                let pl = plan::plan(&p, n)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&pl).expect("json"));
                } else {
                    print!("{}", plan::markdown(&p, &pl));
                }
                if pl.best.is_none() {
                    return Err(no_fit(n, "such"));
                }
                Ok(())
            }
            RlinfCmd::Run {
                profile,
                gpus,
                placement,
                target_ms,
                work,
                gemm_size,
                json,
            } => {
                let (p, n) = load(&profile, gpus)?;
                let pl = plan::plan(&p, n)?;
                let (c, what) = match placement {
                    RlinfPlacement::Best => (pl.best(), "such"),
                    RlinfPlacement::Collocated => (pl.best_of(Kind::Collocated), "collocated"),
                    RlinfPlacement::Disaggregated => {
                        (pl.best_of(Kind::Disaggregated), "disaggregated")
                    }
                    RlinfPlacement::Hybrid => (pl.best_of(Kind::Hybrid), "hybrid"),
                };
                let c = c.ok_or_else(|| no_fit(n, what))?;
                let scale = pipeline::scale_for(&p, &c.placement, target_ms)?;
                let work = match work {
                    RlinfWork::Sleep => pipeline::Work::Sleep,
                    RlinfWork::Gemm => pipeline::Work::Gemm {
                        device: Device::cpu(),
                        size: gemm_size,
                    },
                };
                let rep = pipeline::run_with(&p, &c.placement, scale, &work)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rep).expect("json"));
                } else {
                    print!("{}", pipeline::markdown(&rep));
                }
                Ok(())
            }
        }
    })();
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => exit_err(e),
    }
}

/// The training progress bar (stderr, terminals only, not with --json).
fn gs_bar(steps: u64, what: &str, json: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(steps);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    Some(pb)
}

fn rexmoe_config(s: RexmoeShape, r: usize) -> tessera::drivers::rexmoe::Config {
    tessera::drivers::rexmoe::Config {
        layers: s.layers,
        r,
        experts: s.experts,
        top_k: s.top_k,
        d: s.d,
        f: s.f,
        renormalize: !s.no_renormalize,
    }
}

fn run_rexmoe(cmd: RexmoeCmd) -> ExitCode {
    use tessera::drivers::rexmoe;
    match cmd {
        RexmoeCmd::Report {
            shape,
            r,
            weights,
            prompt,
            decode_batch,
            decode_steps,
            seed,
            backend,
            json,
        } => {
            let dev = pick_device(backend);
            let rep = match weights {
                Some(path) => (|| {
                    let bytes = std::fs::read(&path).map_err(|e| tessera::Error::Io {
                        context: format!("reading {}", path.display()),
                        source: e,
                    })?;
                    let model = rexmoe::Model::<bf16>::from_safetensors(&dev, &bytes)?;
                    let rows = rexmoe::measure(&model, prompt, decode_batch, decode_steps, seed)?;
                    Ok::<_, tessera::Error>(rexmoe::Report {
                        device: dev.describe(),
                        gpu: matches!(dev.backend(), Backend::Cuda(_) | Backend::Hip(_)),
                        config: *model.config(),
                        rows,
                    })
                })(),
                None => rexmoe::report::<bf16>(
                    &dev,
                    rexmoe_config(shape, 1),
                    &r,
                    prompt,
                    decode_batch,
                    decode_steps,
                    seed,
                ),
            }
            .unwrap_or_else(|e| exit_err(e));
            if json {
                println!("{}", serde_json::to_string_pretty(&rep).expect("json"));
            } else {
                print!("{}", rexmoe::markdown(&rep));
            }
            ExitCode::SUCCESS
        }
        RexmoeCmd::Init {
            shape,
            r,
            seed,
            output,
        } => {
            let dev = Device::cpu();
            let bytes = rexmoe::Model::<bf16>::random(&dev, rexmoe_config(shape, r), seed)
                .and_then(|m| m.to_safetensors())
                .unwrap_or_else(|e| exit_err(e));
            std::fs::write(&output, bytes).unwrap_or_else(|e| {
                exit_err(tessera::Error::Io {
                    context: format!("writing {}", output.display()),
                    source: e,
                })
            });
            ExitCode::SUCCESS
        }
    }
}

/// One op as `tessera run --list` prints it: name and summary, inputs, parameters, outputs.
fn op_lines(op: &tessera::ops::table::OpSpec) -> String {
    use tessera::ops::table::ParamType;
    let names = |ts: &[tessera::ops::table::TensorSpec]| {
        ts.iter()
            .map(|t| {
                let q = if t.optional { "?" } else { "" };
                format!("{}{q}: {}{}", t.name, t.dtypes.names().join("|"), t.shape)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let params = op
        .params
        .iter()
        .map(|p| {
            let ty = match p.ty {
                ParamType::Enum(w) => w.join("|"),
                other => format!("{other:?}").to_lowercase(),
            };
            match p.default {
                Some(d) => format!("{}: {ty} = {d}", p.name),
                None => format!("{}: {ty}", p.name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut s = format!("{}  ({})\n", op.name, op.summary);
    s += &format!("    in:     {}\n", names(op.inputs));
    if !params.is_empty() {
        s += &format!("    params: {params}\n");
    }
    s += &format!("    out:    {}\n", names(op.outputs));
    s
}

fn run_ops(list: bool, json: bool, markdown: bool) -> ExitCode {
    use tessera::ops::table::OPS;
    if !list {
        eprintln!(
            "error: give an op (`tessera run OP --in X.safetensors -o Y.safetensors`) or --list"
        );
        return ExitCode::from(2);
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(OPS).expect("the op table serialises")
        );
    } else if markdown {
        print!("{}", tessera::ops::table::markdown());
    } else {
        for op in OPS {
            print!("{}", op_lines(op));
        }
    }
    ExitCode::SUCCESS
}

/// `tessera run OP --in X -o Y`: see `Cmd::Run`. Errors go to stderr as `error: <message>`
/// (with the op's inputs, parameters and outputs for bad input); exit status 2 for bad input,
/// 1 otherwise.
fn run_op(
    op: &str,
    input: Option<std::path::PathBuf>,
    params: &[String],
    output: Option<std::path::PathBuf>,
    backend: Option<RunBackend>,
    json: bool,
) -> ExitCode {
    match run_op_inner(op, input, params, output, backend) {
        Ok(summary) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&summary).unwrap_or_default()
                );
            } else {
                println!(
                    "{} on {}: {} output{} -> {} ({:.3} ms host wall time)",
                    summary["op"].as_str().unwrap_or(op),
                    summary["backend"].as_str().unwrap_or(""),
                    summary["outputs"].as_array().map_or(0, Vec::len),
                    if summary["outputs"].as_array().map_or(0, Vec::len) == 1 {
                        ""
                    } else {
                        "s"
                    },
                    summary["output_file"].as_str().unwrap_or(""),
                    summary["host_wall_ms"].as_f64().unwrap_or(0.0),
                );
                for o in summary["outputs"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<10} {:<5} {}{}",
                        o["name"].as_str().unwrap_or(""),
                        o["dtype"].as_str().unwrap_or(""),
                        o["shape"],
                        if o["in_place"].as_bool() == Some(true) {
                            "  (input updated in place)"
                        } else {
                            ""
                        }
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            let bad_input = matches!(e, tessera::Error::InvalidArgument { .. });
            if bad_input {
                if let Some(spec) = tessera::ops::table::find(op) {
                    eprint!("\n{}", op_lines(spec));
                }
            }
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}

fn run_op_inner(
    op: &str,
    input: Option<std::path::PathBuf>,
    params: &[String],
    output: Option<std::path::PathBuf>,
    backend: Option<RunBackend>,
) -> tessera::Result<serde_json::Value> {
    use tessera::interop::{file, Call, Scalar};
    use tessera::Error;
    let bad = |msg: String| Error::invalid("run", msg);
    // Command-line checks first: no device is opened for a call that cannot run.
    if tessera::ops::table::find(op).is_none() {
        return Call::new(op, &Device::cpu()).map(|_| serde_json::Value::Null);
    }
    let input =
        input.ok_or_else(|| bad("give the input tensors with --in INPUTS.safetensors".into()))?;
    let output =
        output.ok_or_else(|| bad("give the output file with -o OUT.safetensors".into()))?;
    let mut parsed: Vec<(&str, &str)> = Vec::new();
    for p in params {
        let (name, value) = p
            .split_once('=')
            .ok_or_else(|| bad(format!("--param {p}: expected NAME=VALUE")))?;
        let name = name.trim();
        if parsed.iter().any(|(n, _)| *n == name) {
            return Err(bad(format!("--param {name} given twice")));
        }
        parsed.push((name, value));
    }
    let dev = match backend {
        None => Device::best(),
        Some(RunBackend::Cuda) => Device::cuda(0)?,
        Some(RunBackend::Hip) => Device::hip(0)?,
        Some(RunBackend::Simt) => Device::simt(),
        Some(RunBackend::Simt64) => Device::simt_with(tessera::SimtConfig {
            wave: 64,
            ..Default::default()
        })?,
        Some(RunBackend::Cpu) => Device::cpu(),
    };
    let mut call = Call::new(op, &dev)?;
    for (name, value) in &parsed {
        call.param_scalar(name, &Scalar::parse(value))?;
    }
    let bytes = std::fs::read(&input).map_err(|e| Error::Io {
        context: format!("reading {}", input.display()),
        source: e,
    })?;
    file::inputs_from_safetensors(&mut call, &bytes, &input.display().to_string())?;
    drop(bytes);
    // The outputs are downloaded next anyway: read the checks of input contents on a GPU too.
    call.check_contents(true);
    let spec = call.op();
    let t0 = std::time::Instant::now();
    let outs = call.run()?;
    dev.synchronize()?;
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    let meta = std::collections::HashMap::from([(
        "tessera".to_string(),
        format!(
            "{} on {} (tessera {})",
            spec.name,
            dev.backend(),
            env!("CARGO_PKG_VERSION")
        ),
    )]);
    let data = file::outputs_to_safetensors(&outs, Some(meta))?;
    std::fs::write(&output, data).map_err(|e| Error::Io {
        context: format!("writing {}", output.display()),
        source: e,
    })?;
    Ok(json!({
        "op": spec.name,
        "backend": dev.backend().to_string(),
        "device": dev.describe(),
        "input_file": input.display().to_string(),
        "output_file": output.display().to_string(),
        "outputs": outs.tensors.iter().map(|o| json!({
            "name": o.name,
            "dtype": o.buf.dtype().name(),
            "shape": o.shape,
            "in_place": o.in_place,
        })).collect::<Vec<_>>(),
        "host_wall_ms": ms,
        "timing": "host wall time of one call and a device synchronise (uploads, downloads and \
                   file I/O excluded; the first call on a GPU includes loading its kernels): \
                   not a GPU kernel time",
    }))
}

fn pick_device(backend: Option<BackendArg>) -> Device {
    match backend {
        None => Device::best(),
        Some(BackendArg::Cuda) => Device::cuda(0).unwrap_or_else(|e| exit_err(e)),
        Some(BackendArg::Hip) => Device::hip(0).unwrap_or_else(|e| exit_err(e)),
        Some(BackendArg::Simt) => Device::simt(),
        Some(BackendArg::Cpu) => Device::cpu(),
    }
}

/// A progress bar on stderr when it is a terminal, nothing otherwise.
fn progress_bar(what: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {bytes}/{total_bytes} {wide_msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_prefix(what.to_string());
    Some(pb)
}

fn run_ckpt(cmd: CkptCmd) -> ExitCode {
    use tessera::ckpt;
    let report = |pb: &Option<indicatif::ProgressBar>| {
        let pb = pb.clone();
        move |p: ckpt::Progress| {
            if let Some(pb) = &pb {
                pb.set_length(p.total_bytes);
                pb.set_position(p.done_bytes);
                pb.set_message(p.tensor.to_string());
            }
        }
    };
    match cmd {
        CkptCmd::Compress {
            new,
            base,
            error_budget,
            keep_exact,
            output,
            backend,
            json,
        } => {
            let dev = pick_device(backend);
            let pb = progress_bar("compress");
            let opts = ckpt::CompressOptions {
                error_budget,
                keep_exact,
            };
            let r = ckpt::compress(
                &new,
                base.as_deref(),
                &output,
                &opts,
                &dev,
                &mut report(&pb),
            );
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let r = r.unwrap_or_else(|e| exit_err(e));
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!(
                    "{} -> {}: {} -> {} bytes, {:.2}x, {} tensors, {} ({:.2} s on {})",
                    new.display(),
                    output.display(),
                    r.input_bytes,
                    r.output_bytes,
                    r.ratio,
                    r.tensors,
                    if r.lossless {
                        "lossless"
                    } else {
                        "lossy within the budget"
                    },
                    r.seconds,
                    r.backend
                );
            }
        }
        CkptCmd::Decompress {
            input,
            base,
            output,
            backend,
            json,
        } => {
            let dev = pick_device(backend);
            let pb = progress_bar("decompress");
            let r = ckpt::decompress(&input, base.as_deref(), &output, &dev, &mut report(&pb));
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let r = r.unwrap_or_else(|e| exit_err(e));
            if json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                println!(
                    "{} -> {}: {} bytes, {} tensors, verified ({:.2} s on {})",
                    input.display(),
                    output.display(),
                    r.output_bytes,
                    r.tensors,
                    r.seconds,
                    r.backend
                );
            }
        }
        CkptCmd::Inspect {
            input,
            backend: _,
            json,
        } => {
            let m = ckpt::inspect(&input).unwrap_or_else(|e| exit_err(e));
            if json {
                println!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
            } else {
                print!("{}", ckpt::inspect_table(&m));
            }
        }
    }
    ExitCode::SUCCESS
}

fn probe(name: &str, r: tessera::Result<Device>) -> serde_json::Value {
    match r {
        Ok(d) => {
            json!({"executor": name, "present": true, "device": d.describe(), "kernels": d.kernel_names()})
        }
        Err(e) => json!({"executor": name, "present": false, "reason": e.to_string()}),
    }
}

fn info(as_json: bool) -> ExitCode {
    let devices = vec![
        probe("cuda", Device::cuda(0)),
        probe("hip", Device::hip(0)),
        probe(
            "simt-w32",
            Device::simt_with(tessera::SimtConfig {
                wave: 32,
                ..Default::default()
            }),
        ),
        probe(
            "simt-w64",
            Device::simt_with(tessera::SimtConfig {
                wave: 64,
                ..Default::default()
            }),
        ),
        json!({"executor": "cpu", "present": true, "device": Device::cpu().describe()}),
    ];
    let ptx: Vec<String> = kernels::PTX
        .iter()
        .map(|e| format!("{} {}", e.module, e.arch))
        .collect();
    let hsaco: Vec<String> = kernels::HSACO
        .iter()
        .map(|e| format!("{} {}", e.module, e.arch))
        .collect();
    let best = Device::best().backend().to_string();
    if as_json {
        let v = json!({
            "best": best,
            "devices": devices,
            "ptx_origin": kernels::PTX_ORIGIN,
            "ptx": ptx,
            "hip_built": kernels::HIP_BUILT,
            "code_objects": hsaco,
            "modules": kernels::MODULES,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    println!("tessera {}", env!("CARGO_PKG_VERSION"));
    println!("best device: {best}");
    println!("\nexecutors:");
    for d in &devices {
        let name = d["executor"].as_str().unwrap_or("?");
        if d["present"].as_bool() == Some(true) {
            println!("  {name:<9} {}", d["device"].as_str().unwrap_or(""));
        } else {
            println!("  {name:<9} absent: {}", d["reason"].as_str().unwrap_or(""));
        }
    }
    println!("\ncompiled targets:");
    println!(
        "  PTX ({}): {}",
        kernels::PTX_ORIGIN,
        if ptx.is_empty() {
            "none".into()
        } else {
            ptx.join(", ")
        }
    );
    if kernels::HIP_BUILT {
        println!("  AMDGPU code objects: {}", hsaco.join(", "));
    } else {
        println!("  AMDGPU code objects: not built (build with --features hip)");
    }
    println!("  host SIMT: wave32 (cuda/ sources), wave64 (the same sources through the HIP entries: generated, or hip/<module>.hip where one exists)");
    println!("\nkernels:");
    for d in &devices {
        if let Some(k) = d["kernels"].as_array() {
            let names: Vec<&str> = k.iter().filter_map(|x| x.as_str()).collect();
            println!(
                "  {:<9} {}",
                d["executor"].as_str().unwrap_or("?"),
                names.join(" ")
            );
        }
    }
    ExitCode::SUCCESS
}

fn run_verify(backend: Option<BackendArg>, as_json: bool) -> ExitCode {
    let devices = verify::executors(backend.map(BackendArg::name));
    if devices.is_empty() {
        eprintln!(
            "verify: no executor of family {} is present",
            backend.map(BackendArg::name).unwrap_or("?")
        );
        return ExitCode::FAILURE;
    }
    let rows = verify::run(&devices);
    let failed = rows.iter().filter(|r| !r.pass).count();
    if as_json {
        let v = json!({"rows": rows, "passed": rows.len() - failed, "failed": failed});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!(
            "{:<18} {:<5} {:<22} {:<24} {:<8} result",
            "op", "dtype", "executor", "sizes", "error"
        );
        for r in &rows {
            let res = if r.pass {
                "pass".to_string()
            } else {
                format!("FAIL: {}", r.detail)
            };
            println!(
                "{:<18} {:<5} {:<22} {:<24} {:<8} {res}",
                r.op, r.dtype, r.executor, r.sizes, r.error
            );
        }
        let execs: Vec<String> = devices
            .iter()
            .map(|(d, _)| d.backend().to_string())
            .collect();
        println!("\nexecutors: {}", execs.join(", "));
        println!("verify: {} passed, {} failed", rows.len() - failed, failed);
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn run_bench(backend: Option<BackendArg>, elements: usize, reps: usize, as_json: bool) -> ExitCode {
    let dev = match backend {
        None => Device::best(),
        Some(BackendArg::Cuda) => Device::cuda(0).unwrap_or_else(|e| exit_err(e)),
        Some(BackendArg::Hip) => Device::hip(0).unwrap_or_else(|e| exit_err(e)),
        Some(BackendArg::Simt) => Device::simt(),
        Some(BackendArg::Cpu) => Device::cpu(),
    };
    let gpu = matches!(dev.backend(), Backend::Cuda(_) | Backend::Hip(_));
    if !gpu {
        eprintln!(
            "bench: {} is not a GPU. These are CPU wall-clock times of the {}; they are not GPU performance.",
            dev.backend(),
            if dev.backend() == Backend::Cpu { "native CPU path" } else { "host SIMT executor" }
        );
    }
    let result = (|| -> tessera::Result<(Option<f64>, Vec<bench::Measurement>)> {
        let ceiling = if gpu {
            Some(bench::copy_ceiling_gbps(&dev, 1 << 30, reps)?)
        } else {
            None
        };
        let mut all = bench::bitmask_ops::<f32>(&dev, elements, reps, ceiling)?;
        all.extend(bench::bitmask_ops::<f16>(&dev, elements, reps, ceiling)?);
        all.extend(bench::bitmask_ops::<bf16>(&dev, elements, reps, ceiling)?);
        Ok((ceiling, all))
    })();
    let (ceiling, rows) = match result {
        Ok(x) => x,
        Err(e) => exit_err(e),
    };
    if as_json {
        let v = json!({"device": dev.describe(), "gpu": gpu, "copy_ceiling_gbps": ceiling, "rows": rows});
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    println!("device: {}", dev.describe());
    if let Some(c) = ceiling {
        println!("ceiling: device-to-device copy {c:.1} GB/s (read + write, measured in this run)");
    }
    println!(
        "{:<18} {:<5} {:>12} {:>10} {:>10} {:>9} clock",
        "op", "dtype", "elements", "ms", "GB/s", "ceiling"
    );
    for m in &rows {
        let frac = m
            .fraction_of_ceiling
            .map(|f| format!("{:.0}%", f * 100.0))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<18} {:<5} {:>12} {:>10.3} {:>10.2} {:>9} {}",
            m.op, m.dtype, m.elements, m.ms, m.gbps, frac, m.clock
        );
    }
    ExitCode::SUCCESS
}

fn exit_err(e: tessera::Error) -> ! {
    eprintln!("tessera: {e}");
    std::process::exit(1)
}

fn run_tasp(cmd: TaspCmd) -> ExitCode {
    use tessera::parallel::model;
    let TaspCmd::Model { gpus, json } = cmd;
    let rows = model::table(gpus).unwrap_or_else(|e| exit_err(e));
    if json {
        let out = json!({
            "kind": "model, not a measurement",
            "assumptions": {
                "flops_per_s": model::ASSUMED_FLOPS,
                "latency_s": model::ASSUMED_LATENCY,
                "elem_bytes": 2,
                "batch": 1,
                "scenarios": model::scenarios(gpus),
                "tasp_rings": model::tasp_rings(gpus),
            },
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out).expect("json"));
    } else {
        println!("TASP communication model on {gpus} GPUs (a model, not a measurement)\n");
        println!("{}", model::speedup_grid(&rows));
        println!("{}", model::markdown(&rows));
    }
    ExitCode::SUCCESS
}

#[derive(Subcommand)]
enum TopoCmd {
    /// The TASP ring schedule over N ranks: N-1 arc-disjoint Hamiltonian rings that use every
    /// directed link (for N = 4 and 6, which have none, the largest arc-disjoint set), or with
    /// --nodes the multi-node composite rings.
    Hamilton {
        /// Total number of GPUs (ranks), over all nodes when --nodes is given.
        n: usize,
        /// Number of nodes U: N must be divisible by U, each node holds N/U GPUs, and the m = N/U
        /// composite rings chain one Hamiltonian path per node. --nodes 1 is the single-node
        /// decomposition.
        #[arg(long)]
        nodes: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

fn run_topo(cmd: TopoCmd) -> ExitCode {
    use std::io::Write as _;
    use tessera::topology::{self, ScheduleKind};
    let TopoCmd::Hamilton { n, nodes, json } = cmd;
    let s = match nodes {
        None | Some(1) => topology::hamiltonian_decomposition(n),
        Some(0) => Err(tessera::Error::invalid(
            "topo",
            "--nodes 0: need at least one node",
        )),
        Some(u) if n % u != 0 => Err(tessera::Error::invalid(
            "topo",
            format!("{n} GPUs do not split evenly over {u} nodes"),
        )),
        Some(u) => topology::multi_node(u, n / u),
    }
    .unwrap_or_else(|e| exit_err(e));
    let routing = s.routing_table();
    let util = s.link_utilisation();
    // Built as one string and written once; a closed pipe (`| head`) is not an error.
    let mut out = String::new();
    if json {
        let mut v = json!({
            "n": s.n,
            "kind": s.kind,
            "rings": s.rings,
            "link_utilisation": util,
            "routing": routing,
        });
        if let ScheduleKind::MultiNode { .. } = s.kind {
            v["inter_node_links"] = json!(s.inter_node_links());
            v["intra_node_link_utilisation"] = json!(s.intra_node_link_utilisation());
        }
        out = serde_json::to_string_pretty(&v).unwrap_or_default();
        out.push('\n');
    } else {
        topo_text(&s, &routing, util, &mut out).unwrap_or_default();
    }
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    ExitCode::SUCCESS
}

fn topo_text(
    s: &tessera::topology::RingSchedule,
    routing: &[Vec<Option<usize>>],
    util: f64,
    out: &mut String,
) -> std::fmt::Result {
    use std::fmt::Write as _;
    use tessera::topology::ScheduleKind;
    let n = s.n;
    let links = n * (n - 1);
    match s.kind {
        ScheduleKind::Decomposition => writeln!(
            out,
            "n = {n}: Hamiltonian decomposition of K*_{n}: {} arc-disjoint rings, every ordered pair once",
            s.rings.len()
        )?,
        ScheduleKind::Fallback => writeln!(
            out,
            "n = {n}: K*_{n} has no Hamiltonian decomposition (Tillson); fallback: the largest \
             arc-disjoint set, {} rings (ideal would be {})",
            s.rings.len(),
            n - 1
        )?,
        ScheduleKind::SingleRing => writeln!(out, "n = {n}: single ring")?,
        ScheduleKind::MultiNode { nodes, per_node } => {
            let chain: Vec<String> = if nodes <= 4 {
                (0..nodes).map(|k| format!("node {k}")).collect()
            } else {
                vec!["node 0".into(), "node 1".into(), "...".into(), format!("node {}", nodes - 1)]
            };
            writeln!(
                out,
                "n = {n}: {nodes} nodes x {per_node} GPUs, {per_node} composite rings (ring p: \
                 path p on {} -> back to node 0)",
                chain.join(" -> ")
            )?
        }
    }
    let busy = (util * links as f64).round() as usize;
    if let ScheduleKind::MultiNode { .. } = s.kind {
        writeln!(
            out,
            "link utilisation: {util:.3} ({busy} of all {links} ordered pairs, inter-node pairs included)"
        )?;
    } else {
        writeln!(
            out,
            "link utilisation: {util:.3} ({busy} of {links} directed links busy at every step; ideal 1.000, single ring {:.3})",
            1.0 / (n - 1) as f64
        )?;
    }
    if let Some(intra) = s.intra_node_link_utilisation() {
        let inter = s.inter_node_links();
        writeln!(
            out,
            "intra-node link utilisation: {intra:.3}; inter-node links used: {} ({})",
            inter.len(),
            inter
                .iter()
                .map(|(a, b)| format!("{a}->{b}"))
                .collect::<Vec<_>>()
                .join(" ")
        )?;
    }
    writeln!(
        out,
        "rings (each rank's block is split into {} sub-chunks; sub-chunk c travels along ring c):",
        s.rings.len()
    )?;
    for (c, ring) in s.rings.iter().enumerate() {
        let path: Vec<String> = ring.iter().map(|r| r.to_string()).collect();
        writeln!(out, "  ring {c:>3}: {} -> {}", path.join(" -> "), ring[0])?;
    }
    if n > 32 {
        return writeln!(out, "routing table omitted for n > 32 (use --json)");
    }
    writeln!(
        out,
        "routing (row = sender, column = receiver, entry = ring carrying that link, . = unused):"
    )?;
    let w = s.rings.len().max(n).to_string().len().max(2) + 1;
    write!(out, "{:>w$}", "")?;
    for b in 0..n {
        write!(out, "{b:>w$}")?;
    }
    writeln!(out)?;
    for (a, row) in routing.iter().enumerate() {
        write!(out, "{a:>w$}")?;
        for (b, e) in row.iter().enumerate() {
            let cell = match e {
                _ if a == b => "-".to_string(),
                Some(c) => c.to_string(),
                None => ".".to_string(),
            };
            write!(out, "{cell:>w$}")?;
        }
        writeln!(out)?;
    }
    Ok(())
}
