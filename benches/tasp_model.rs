//! TASP communication model: predicted ring / zigzag-ring / TASP times and speedups.
//!
//! **A model, not a measurement.** Nothing here is timed: the numbers are arithmetic on the
//! assumptions of `tessera::parallel::model` (bandwidths, latency, achieved flop rate), printed as
//! the tables recorded in docs/performance.md. `cargo bench --bench tasp_model` (or
//! `tessera tasp model`) prints them.

use tessera::parallel::model::{
    self, compare, markdown, row, scenarios, speedup_grid, tasp_rings, Compute, Machine, Workload,
};

fn main() {
    // `cargo bench` passes --bench; a filter argument is accepted and ignored.
    println!("# TASP communication model (a model, not a measurement: nothing is timed)\n");
    println!(
        "Assumptions: bf16, batch 1, forward; achieved attention rate {:.0} TFLOP/s; {:.0} µs \
         per step; overlap: total = (n-1)·max(compute, comm) + compute.\n",
        model::ASSUMED_FLOPS / 1e12,
        model::ASSUMED_LATENCY * 1e6
    );
    let rows = model::table(8).expect("model table");
    println!("## Speedup of TASP over the ring (zigzag ring when causal), 8 GPUs\n");
    println!("{}", speedup_grid(&rows));

    println!("## Per-step times, mesh scenario, GQA 32/8/128\n");
    let mesh: Vec<_> = rows
        .iter()
        .filter(|r| r.scenario == "mesh" && r.kv_heads == 8)
        .cloned()
        .collect();
    println!("{}", markdown(&mesh));

    println!(
        "## Group size (mesh, 64 GB/s links, 32/32/64, 32k tokens; n = 4, 6: fallback rings)\n"
    );
    println!("| n | rings | full: speedup | causal: speedup | comm-bound ceiling |");
    println!("|---|---|---|---|---|");
    for n in [2usize, 3, 4, 5, 6, 7, 8, 12, 16] {
        let sc = &scenarios(n)[0];
        let full = row(sc, 32 << 10, 32, 32, 64, false).expect("row");
        let causal = row(sc, 32 << 10, 32, 32, 64, true).expect("row");
        println!(
            "| {n} | {} | {:.2}x | {:.2}x | {:.0}x |",
            tasp_rings(n),
            full.speedup,
            causal.speedup,
            tasp_rings(n)
        );
    }

    println!("\n## Sensitivity to the compute rate (mesh, 8 GPUs, 32/32/64, causal)\n");
    print!("| TFLOP/s |");
    for l in model::SEQ_LENS {
        print!(" {} |", model::tokens(l));
    }
    println!();
    print!("|---|");
    for _ in model::SEQ_LENS {
        print!("---|");
    }
    println!();
    for tflops in [200.0, 400.0, 800.0] {
        let m = Machine {
            compute: Compute::FlopRate(tflops * 1e12),
            ..scenarios(8)[0].machine
        };
        print!("| {tflops:.0} |");
        for l in model::SEQ_LENS {
            let w = Workload {
                seq_len: l,
                batch: 1,
                heads: 32,
                kv_heads: 32,
                head_dim: 64,
                elem_bytes: 2,
                causal: true,
            };
            print!(" {:.2}x |", compare(&m, &w, 7.0).expect("model").speedup);
        }
        println!();
    }
}
