//! Peak heap of compress and decompress on a synthetic checkpoint, measured with a counting
//! global allocator (inputs are memory-mapped, so they are not heap). The bound checked is the
//! design's: a few times the largest tensor plus buffers, not the checkpoint size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tessera::ckpt::{self, synth, CompressOptions};
use tessera::Device;

struct Counting;
static CUR: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let c = CUR.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(c, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CUR.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

fn reset() -> usize {
    let c = CUR.load(Ordering::Relaxed);
    PEAK.store(c, Ordering::Relaxed);
    c
}

#[test]
fn peak_heap_is_bounded_by_the_largest_tensor() {
    let dir = tempfile::tempdir().unwrap();
    // ~3.7M parameters in 27 tensors; the largest tensor is a 0.5M-element MLP matrix.
    let cfg = synth::SynthConfig {
        vocab: 2048,
        d_model: 256,
        layers: 4,
        d_ff: 1024,
        tokens_per_step: 2048,
        seed: 2,
    };
    let (b, n) = (
        dir.path().join("b.safetensors"),
        dir.path().join("n.safetensors"),
    );
    synth::write_pair(&cfg, synth::Stage::Late, &b, &n).unwrap();
    let file = std::fs::metadata(&n).unwrap().len() as usize;
    let largest = ckpt::st::StFile::open(&n)
        .unwrap()
        .tensors
        .iter()
        .map(|t| t.end - t.start)
        .max()
        .unwrap();
    let out = dir.path().join("m.tsnap");
    let dev = Device::cpu();
    let mut report = Vec::new();
    for (label, budget) in [("lossless", 0.0), ("budget 1e-2", 1e-2)] {
        let before = reset();
        let opts = CompressOptions {
            error_budget: budget,
            keep_exact: vec![],
        };
        ckpt::compress(&n, Some(&b), &out, &opts, &dev, &mut |_| {}).unwrap();
        let c = PEAK.load(Ordering::Relaxed) - before;
        let before = reset();
        let back = dir.path().join("back.safetensors");
        ckpt::decompress(&out, Some(&b), &back, &dev, &mut |_| {}).unwrap();
        let d = PEAK.load(Ordering::Relaxed) - before;
        report.push(format!(
            "{label}: file {file} B, largest tensor {largest} B; peak heap compress {c} B ({:.2}x largest), decompress {d} B ({:.2}x largest)",
            c as f64 / largest as f64,
            d as f64 / largest as f64
        ));
        // Fixed buffers: 1 MiB output BufWriter, manifest, safetensors header. Lossy
        // candidates add f32 deltas, k-means indices and one reconstruction.
        let buffers = 2 << 20;
        let factor = if budget == 0.0 { 4 } else { 8 };
        assert!(c < factor * largest + buffers, "compress peak {c}");
        assert!(d < 4 * largest + buffers, "decompress peak {d}");
    }
    for r in report {
        eprintln!("{r}");
    }
}
