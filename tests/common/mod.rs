//! Shared by the runtime tests that launch the self-test kernels by name
//! (tests/simt_runtime.rs, tests/fault_suite.rs, tests/mma.rs).

use tessera::device::KernelArgs;
use tessera::{Device, LaunchConfig};

/// The raw launch of the self-test kernels, by name with hand-built arguments: what these files
/// test. `Device::launch_raw` is `unsafe`; the one unsafe block is here.
pub trait SelftestLaunch {
    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &KernelArgs,
    ) -> tessera::Result<()>;
}

impl SelftestLaunch for Device {
    fn launch(
        &self,
        module: &str,
        kernel: &str,
        cfg: &LaunchConfig,
        args: &KernelArgs,
    ) -> tessera::Result<()> {
        // SAFETY: every launch in those files passes a self-test kernel the argument list of its
        // signature (the host SIMT executor also checks count and sizes), with buffers sized for
        // the grid; the planted out-of-bounds accesses of the fault kernels run only on the
        // host SIMT executor, where they land in red zones or guard pages and are reported.
        unsafe { self.launch_raw(module, kernel, cfg, args) }
    }
}
