//! PLACEHOLDER executor, replaced by the real one.
use crate::device::*;
use crate::error::{Error, Result};

pub(crate) struct CudaExec;

impl CudaExec {
    #[allow(dead_code)]
    pub(crate) fn new(_: impl Sized) -> Result<Self> {
        Err(Error::Unsupported { what: "cuda".into(), msg: "not yet built".into() })
    }
}

impl Exec for CudaExec {
    fn backend(&self) -> Backend { Backend::Cpu }
    fn describe(&self) -> String { String::new() }
    fn alloc(&self, _: usize, _: &str) -> Result<Box<dyn RawMem>> { unimplemented!() }
    fn launch(&self, _: &str, _: &str, _: &LaunchConfig, _: &KernelArgs) -> Result<()> { unimplemented!() }
    fn synchronize(&self) -> Result<()> { Ok(()) }
    fn kernel_names(&self) -> Vec<String> { vec![] }
    fn record_event(&self) -> Result<Box<dyn RawEvent>> { unimplemented!() }
    fn copy(&self, _: &mut dyn RawMem, _: &dyn RawMem, _: usize) -> Result<()> { unimplemented!() }
}
