//! safetensors input through the `safetensors` crate over a memory map (nothing is loaded
//! whole): the header bytes verbatim, the tensors in data-offset order, and the base identity.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors};
use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};

/// One tensor of a safetensors file.
#[derive(Clone, Debug)]
pub struct StTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range within the data area.
    pub start: usize,
    pub end: usize,
}

impl StTensor {
    /// safetensors dtype name (`BF16`, ...).
    pub fn dtype_name(&self) -> String {
        self.dtype.to_string()
    }
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A memory-mapped, validated safetensors file.
pub struct StFile {
    map: Mmap,
    data_start: usize,
    pub tensors: Vec<StTensor>,
}

impl StFile {
    pub fn open(path: &Path) -> Result<StFile> {
        let f = File::open(path).map_err(|e| Error::Io {
            context: format!("opening {}", path.display()),
            source: e,
        })?;
        // A file changed underneath by another process can give inconsistent bytes, which the
        // checksums and output hash then report.
        let map = crate::device::map_file(&f).map_err(|e| Error::Io {
            context: format!("mapping {}", path.display()),
            source: e,
        })?;
        let (n, meta) = SafeTensors::read_metadata(&map).map_err(|e| Error::Format {
            context: format!("safetensors {}", path.display()),
            msg: e.to_string(),
        })?;
        let mut tensors: Vec<StTensor> = meta
            .offset_keys()
            .into_iter()
            .filter_map(|name| {
                let info = meta.info(&name)?;
                Some(StTensor {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: info.data_offsets.0,
                    end: info.data_offsets.1,
                    name,
                })
            })
            .collect();
        tensors.sort_by(|a, b| (a.start, a.end, &a.name).cmp(&(b.start, b.end, &b.name)));
        Ok(StFile {
            map,
            data_start: 8 + n,
            tensors,
        })
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The 8-byte header length and the JSON header, exactly as in the file.
    pub fn header_bytes(&self) -> &[u8] {
        &self.map[..self.data_start]
    }

    /// A tensor's bytes.
    pub fn data(&self, t: &StTensor) -> &[u8] {
        &self.map[self.data_start + t.start..self.data_start + t.end]
    }

    pub fn get(&self, name: &str) -> Option<&StTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Content identity: xxh3-128 over each tensor's name, dtype, shape and bytes, in
    /// data-offset order (hex). Independent of header formatting and `__metadata__`.
    pub fn content_hash(&self) -> String {
        let mut h = Xxh3::new();
        h.update(&(self.tensors.len() as u64).to_le_bytes());
        for t in &self.tensors {
            h.update(&(t.name.len() as u64).to_le_bytes());
            h.update(t.name.as_bytes());
            let d = t.dtype_name();
            h.update(&(d.len() as u64).to_le_bytes());
            h.update(d.as_bytes());
            h.update(&(t.shape.len() as u64).to_le_bytes());
            for &s in &t.shape {
                h.update(&(s as u64).to_le_bytes());
            }
            let b = self.data(t);
            h.update(&(b.len() as u64).to_le_bytes());
            h.update(b);
        }
        format!("{:032x}", h.digest128())
    }
}
