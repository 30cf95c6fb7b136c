// PLACEHOLDER: replaced by the host SIMT build step.
use std::path::Path;
pub fn build(_root: &Path, _out: &Path, _sources: &[crate::KernelSource]) {}
