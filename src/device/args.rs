//! Kernel argument packing: an array of pointers to argument values, as `cuLaunchKernel`,
//! `hipModuleLaunchKernel` and the host SIMT runtime all take it.

use std::ffi::c_void;

use crate::device::DeviceBuffer;
use crate::dtype::DType;

/// One argument value: up to 16 bytes, 16-byte aligned storage.
#[derive(Clone, Copy)]
#[repr(C, align(16))]
struct Slot([u8; 16]);

/// Kernel arguments in order. Each value is stored in its own boxed slot so the pointer array
/// stays valid while the builder lives (a `Vec<Slot>` would move its slots when it grows).
#[derive(Default)]
pub struct KernelArgs {
    #[allow(clippy::vec_box)] // boxing is the point: each slot's address must be stable
    slots: Vec<Box<Slot>>,
    sizes: Vec<usize>,
}

impl KernelArgs {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a plain value (a scalar or a small POD struct of at most 16 bytes).
    pub fn push<V: bytemuck::Pod>(&mut self, v: V) -> &mut Self {
        let bytes = bytemuck::bytes_of(&v);
        assert!(bytes.len() <= 16, "kernel argument larger than 16 bytes");
        let mut slot = Box::new(Slot([0; 16]));
        slot.0[..bytes.len()].copy_from_slice(bytes);
        self.slots.push(slot);
        self.sizes.push(bytes.len());
        self
    }

    /// Append a device pointer to `buf`'s first element.
    pub fn buf<T: DType>(&mut self, buf: &DeviceBuffer<T>) -> &mut Self {
        self.push(buf.addr())
    }

    /// Append a device pointer to a mutable buffer (the same address; the `&mut` documents and
    /// enforces, at the call site, that the kernel writes it).
    pub fn buf_mut<T: DType>(&mut self, buf: &mut DeviceBuffer<T>) -> &mut Self {
        self.push(buf.addr())
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Size in bytes of each argument, in order.
    pub fn sizes(&self) -> &[usize] {
        &self.sizes
    }

    /// The pointer array. The pointers stay valid while `self` is alive and unmodified.
    pub fn pointers(&self) -> Vec<*mut c_void> {
        self.slots
            .iter()
            .map(|s| s.0.as_ptr() as *mut c_void)
            .collect()
    }

    /// The bytes of argument `i` (for tests and for executors that pack a flat buffer).
    pub fn bytes(&self, i: usize) -> &[u8] {
        &self.slots[i].0[..self.sizes[i]]
    }

    /// The arguments packed into one buffer with C struct layout (each value aligned to its
    /// size, the natural alignment of the scalar kernel parameters tessera uses). This is the
    /// `HIP_LAUNCH_PARAM_BUFFER_POINTER` form.
    pub fn packed(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..self.len() {
            let size = self.sizes[i];
            let align = size.next_power_of_two().min(16);
            while out.len() % align != 0 {
                out.push(0);
            }
            out.extend_from_slice(self.bytes(i));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_point_at_values() {
        let mut a = KernelArgs::new();
        a.push(7u32).push(0x1122_3344_5566_7788u64).push(1.5f32);
        let p = a.pointers();
        assert_eq!(p.len(), 3);
        assert_eq!(a.sizes(), &[4, 8, 4]);
        assert_eq!(a.bytes(0), &7u32.to_ne_bytes());
        assert_eq!(a.bytes(1), &0x1122_3344_5566_7788u64.to_ne_bytes());
        assert_eq!(a.bytes(2), &1.5f32.to_ne_bytes());
        assert_eq!(p[0] as usize % 16, 0);
    }

    #[test]
    fn packed_layout_aligns_each_value() {
        let mut a = KernelArgs::new();
        a.push(1u32).push(2u64).push(3u16).push(4u32);
        let b = a.packed();
        assert_eq!(b.len(), 24);
        assert_eq!(&b[0..4], &1u32.to_ne_bytes());
        assert_eq!(&b[8..16], &2u64.to_ne_bytes());
        assert_eq!(&b[16..18], &3u16.to_ne_bytes());
        // 4u32 is aligned to 4 after the u16 at 16..18.
        assert_eq!(&b[20..24], &4u32.to_ne_bytes());
    }
}
