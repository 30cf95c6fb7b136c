//! The `tessera` command line: `info`, `verify`, `bench`.

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
    }
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
    println!("  host SIMT: wave32 (cuda/ sources), wave64 (hip/ sources)");
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
