//! Typed kernel declarations and the safe, crate-internal launch layer.
//!
//! Each family declares its kernels once, with [`kernels!`](crate::kernels): the module (the
//! kernel file under `cuda/`), the kernel's base name, its dtype (or other template) instances,
//! the block size it requires and its arguments as named, typed fields. The macro generates a
//! struct per kernel; a call site fills the fields by name and calls `launch`:
//!
//! ```ignore
//! crate::kernels! {
//!     module = "ckpt/bitmask";
//!     /// Change mask and per-block change counts.
//!     pub(crate) struct Mask<'a, T: Float> = "bitmask_mask" [(f32), (bf16), (f16)] block = BLOCK {
//!         base: &'a DeviceBuffer<T>,
//!         n: u64,
//!         mask: &'a mut DeviceBuffer<u32>,
//!     }
//! }
//! Mask { base: &b, n: 7, mask: &mut m }.launch(&dev, Grid::linear(blocks))?;
//! ```
//!
//! The kernel's name is the base name followed by `_<suffix>` for each type parameter
//! ([`KernelSuffix`]: the dtype name, `d64`, ...), so `Mask::<bf16>` launches `bitmask_mask_bf16`.
//! Arguments are passed in field order; no call site writes a kernel name or pushes an argument
//! by position. A `PhantomData<D>` field is a type-level variant (it names the instance, e.g.
//! the head dimension, and is not an argument). The instance list enumerates every instantiation
//! that exists in the kernel source, and `tests/declarations.rs` checks each one against the host
//! SIMT registry (name, argument sizes, the block the source exports), the PTX `.entry` parameter
//! lists and `.maxntid`, and the `.cu` source's parameter names.
//!
//! Launching is safe inside the crate only: a kernel trusts its lengths, so the op that fills a
//! declaration's fields must have validated them. Outside the crate raw launching is
//! [`Device::launch_raw`], an `unsafe fn`.

use crate::device::{Device, DeviceBuffer, KernelArgs, LaunchConfig};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A kernel argument type: its size in bytes at the kernel boundary and how it is pushed.
pub trait KernelArg {
    /// Size of the argument in the kernel's parameter list.
    const SIZE: usize;
    /// Whether the argument is a device pointer.
    const POINTER: bool;
    #[doc(hidden)]
    fn push_arg(&self, args: &mut KernelArgs);
}

impl<T: DType> KernelArg for &DeviceBuffer<T> {
    const SIZE: usize = 8;
    const POINTER: bool = true;
    fn push_arg(&self, args: &mut KernelArgs) {
        args.push(self.addr());
    }
}

impl<T: DType> KernelArg for &mut DeviceBuffer<T> {
    const SIZE: usize = 8;
    const POINTER: bool = true;
    fn push_arg(&self, args: &mut KernelArgs) {
        args.push(self.addr());
    }
}

/// An optional buffer: a null pointer when absent (the kernel tests for it).
impl<T: DType> KernelArg for Option<&DeviceBuffer<T>> {
    const SIZE: usize = 8;
    const POINTER: bool = true;
    fn push_arg(&self, args: &mut KernelArgs) {
        args.push(self.map_or(0u64, |b| b.addr()));
    }
}

/// An optional buffer the kernel writes: a null pointer when absent.
impl<T: DType> KernelArg for Option<&mut DeviceBuffer<T>> {
    const SIZE: usize = 8;
    const POINTER: bool = true;
    fn push_arg(&self, args: &mut KernelArgs) {
        args.push(self.as_ref().map_or(0u64, |b| b.addr()));
    }
}

/// A buffer's memory seen as elements of `E`, a type of the same size: for kernels that move bit
/// patterns, whose one instance per element size serves every type of that size.
pub struct BitsOf<'a, E> {
    addr: u64,
    _view: std::marker::PhantomData<&'a E>,
}

/// [`BitsOf`] for a buffer the kernel writes.
pub struct BitsOfMut<'a, E> {
    addr: u64,
    _view: std::marker::PhantomData<&'a mut E>,
}

impl<'a, E: DType> BitsOf<'a, E> {
    /// `None` when `T` and `E` differ in size.
    pub fn of<T: DType>(b: &'a DeviceBuffer<T>) -> Option<Self> {
        (std::mem::size_of::<T>() == std::mem::size_of::<E>()).then(|| BitsOf {
            addr: b.addr(),
            _view: std::marker::PhantomData,
        })
    }
}

impl<'a, E: DType> BitsOfMut<'a, E> {
    /// `None` when `T` and `E` differ in size.
    pub fn of<T: DType>(b: &'a mut DeviceBuffer<T>) -> Option<Self> {
        (std::mem::size_of::<T>() == std::mem::size_of::<E>()).then(|| BitsOfMut {
            addr: b.addr(),
            _view: std::marker::PhantomData,
        })
    }
}

impl<E> KernelArg for BitsOf<'_, E> {
    const SIZE: usize = 8;
    const POINTER: bool = true;
    fn push_arg(&self, args: &mut KernelArgs) {
        args.push(self.addr);
    }
}

impl<E> KernelArg for BitsOfMut<'_, E> {
    const SIZE: usize = 8;
    const POINTER: bool = true;
    fn push_arg(&self, args: &mut KernelArgs) {
        args.push(self.addr);
    }
}

/// A buffer of any element type the kernel writes through an untyped pointer (`void*`), with
/// a flag argument beside it saying which type (attention's `o` in f32 or the input type).
pub struct AnyBufMut<'a> {
    addr: u64,
    _view: std::marker::PhantomData<&'a mut ()>,
}

impl<'a> AnyBufMut<'a> {
    pub fn of<T: DType>(b: &'a mut DeviceBuffer<T>) -> Self {
        AnyBufMut {
            addr: b.addr(),
            _view: std::marker::PhantomData,
        }
    }
}

impl KernelArg for AnyBufMut<'_> {
    const SIZE: usize = 8;
    const POINTER: bool = true;
    fn push_arg(&self, args: &mut KernelArgs) {
        args.push(self.addr);
    }
}

/// A type-level variant (`PhantomData<D64>`): it names the kernel instance through its type
/// parameter and is not an argument (size 0: not pushed, not in the declared parameters).
impl<X> KernelArg for std::marker::PhantomData<X> {
    const SIZE: usize = 0;
    const POINTER: bool = false;
    fn push_arg(&self, _: &mut KernelArgs) {}
}

macro_rules! scalar_arg {
    ($($t:ty),*) => {$(
        impl KernelArg for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            const POINTER: bool = false;
            fn push_arg(&self, args: &mut KernelArgs) {
                args.push(*self);
            }
        }
    )*};
}
scalar_arg!(u8, u16, u32, u64, i32, i64, f32);

/// The name suffix a type parameter adds to a kernel name: the dtype name for element types,
/// `d64` / `d128` for head-dimension markers.
pub trait KernelSuffix {
    const SUFFIX: &'static str;
}

impl<T: DType> KernelSuffix for T {
    const SUFFIX: &'static str = T::KIND.name();
}

/// Element-width markers for kernels that move raw bits, one instance per width: the suffix is
/// `b8`, `b16` or `b32` and [`Width::Elem`] the unsigned type of that width.
pub trait Width {
    type Elem: DType;
}

/// 1-byte elements.
pub struct B8;
/// 2-byte elements.
pub struct B16;
/// 4-byte elements.
pub struct B32;

impl Width for B8 {
    type Elem = u8;
}
impl Width for B16 {
    type Elem = u16;
}
impl Width for B32 {
    type Elem = u32;
}
impl KernelSuffix for B8 {
    const SUFFIX: &'static str = "b8";
}
impl KernelSuffix for B16 {
    const SUFFIX: &'static str = "b16";
}
impl KernelSuffix for B32 {
    const SUFFIX: &'static str = "b32";
}

/// Where a kernel runs and how many blocks: the block is the declared one unless the kernel
/// accepts any block (`block = any`), in which case the launch must give it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub grid: [u32; 3],
    pub block: Option<[u32; 3]>,
    pub shared_bytes: u32,
}

impl Grid {
    /// `blocks` blocks along x.
    pub fn linear(blocks: u32) -> Grid {
        Grid {
            grid: [blocks, 1, 1],
            block: None,
            shared_bytes: 0,
        }
    }

    /// A 3-D grid.
    pub fn dims(grid: [u32; 3]) -> Grid {
        Grid {
            grid,
            block: None,
            shared_bytes: 0,
        }
    }

    /// Bytes of dynamic shared memory per block.
    pub fn shared(mut self, bytes: u32) -> Grid {
        self.shared_bytes = bytes;
        self
    }

    /// The block shape, for kernels declared `block = any`.
    pub fn block(mut self, block: [u32; 3]) -> Grid {
        self.block = Some(block);
        self
    }
}

/// One parameter of a declared kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamDecl {
    pub name: &'static str,
    pub size: usize,
    pub pointer: bool,
}

/// One concrete kernel (one instance of a declaration), as declared on the Rust side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelDecl {
    /// The kernel file stem under `cuda/`, e.g. `ckpt/bitmask`.
    pub module: &'static str,
    /// The exported kernel name, e.g. `bitmask_mask_bf16`.
    pub name: String,
    /// The block size (threads along x) the kernel requires; `None` when any block is accepted.
    pub block: Option<u32>,
    pub params: Vec<ParamDecl>,
}

/// The launch configuration for a kernel declared with `block`: the declared block unless the
/// grid names one, which must then agree.
pub(crate) fn config(
    backend: &'static str,
    name: &str,
    block: Option<u32>,
    grid: Grid,
) -> Result<LaunchConfig> {
    let block = match (block, grid.block) {
        (Some(b), None) => [b, 1, 1],
        (Some(b), Some(g)) if g == [b, 1, 1] => g,
        (Some(b), Some(g)) => {
            return Err(Error::kernel(
                backend,
                name,
                format!("requires block ({b}, 1, 1), the launch asked for {g:?}"),
            ))
        }
        (None, Some(g)) => g,
        (None, None) => {
            return Err(Error::kernel(
                backend,
                name,
                "accepts any block, so the launch must give one",
            ))
        }
    };
    Ok(LaunchConfig {
        grid: grid.grid,
        block,
        shared_bytes: grid.shared_bytes,
    })
}

/// Launch a declared kernel. Crate-internal and safe by contract: the generated `launch`
/// methods are the only callers, and the ops that fill the declarations validate every length
/// and index the kernel trusts.
pub(crate) fn launch(
    dev: &Device,
    module: &'static str,
    name: &str,
    block: Option<u32>,
    grid: Grid,
    args: &KernelArgs,
) -> Result<()> {
    let cfg = config(dev.backend().family(), name, block, grid)?;
    dev.launch(module, name, &cfg, args)
}

/// Declare a family's kernels: see the [module documentation](crate::device::kernel).
#[macro_export]
#[doc(hidden)]
macro_rules! kernels {
    (
        module = $module:literal;
        $(
            $(#[$meta:meta])*
            $vis:vis struct $name:ident <$lt:lifetime $(, $g:ident : $bound:path)*> = $kname:literal
                $([ $($inst:tt)* ])?
                block = $block:tt
            { $( $(#[$fmeta:meta])* $field:ident : $fty:ty ),* $(,)? }
        )*
    ) => {
        $(
            $(#[$meta])*
            $vis struct $name<$lt $(, $g: $bound)*> {
                $( $(#[$fmeta])* pub $field: $fty, )*
            }

            #[allow(dead_code)]
            impl<$lt $(, $g: $bound + $crate::device::kernel::KernelSuffix)*> $name<$lt $(, $g)*> {
                /// The kernel file stem under `cuda/`.
                pub const MODULE: &'static str = $module;
                /// The block size the kernel requires (`None`: any).
                pub const BLOCK: Option<u32> = $crate::kernels!(@block $block);

                /// The exported name of this instance.
                pub fn kernel_name() -> String {
                    #[allow(unused_mut)]
                    let mut s = String::from($kname);
                    $(
                        s.push('_');
                        s.push_str(<$g as $crate::device::kernel::KernelSuffix>::SUFFIX);
                    )*
                    s
                }

                /// This instance as declared.
                pub fn decl() -> $crate::device::kernel::KernelDecl {
                    $crate::device::kernel::KernelDecl {
                        module: $module,
                        name: Self::kernel_name(),
                        block: Self::BLOCK,
                        params: [$(
                            $crate::device::kernel::ParamDecl {
                                name: stringify!($field),
                                size: <$fty as $crate::device::kernel::KernelArg>::SIZE,
                                pointer: <$fty as $crate::device::kernel::KernelArg>::POINTER,
                            }
                        ),*]
                        .into_iter()
                        // Type-level variants (`PhantomData`) are not arguments.
                        .filter(|p| p.size > 0)
                        .collect(),
                    }
                }

                /// Launch on `dev`, arguments in declaration order.
                pub(crate) fn launch(
                    self,
                    dev: &$crate::device::Device,
                    grid: $crate::device::kernel::Grid,
                ) -> $crate::error::Result<()> {
                    let mut args = $crate::device::KernelArgs::new();
                    $( $crate::device::kernel::KernelArg::push_arg(&self.$field, &mut args); )*
                    $crate::device::kernel::launch(
                        dev,
                        $module,
                        &Self::kernel_name(),
                        Self::BLOCK,
                        grid,
                        &args,
                    )
                }
            }
        )*

        /// Every kernel instance this family declares (checked by `tests/declarations.rs`).
        pub fn declarations() -> Vec<$crate::device::kernel::KernelDecl> {
            let mut all = Vec::new();
            $( all.extend($crate::kernels!(@decls $name $([$($inst)*])?)); )*
            all
        }
    };
    (@block any) => { None };
    (@block $b:expr) => { Some($b) };
    (@decls $name:ident) => { vec![$name::<'static>::decl()] };
    (@decls $name:ident [ $( ( $($inst:ty),+ ) ),+ $(,)? ]) => {
        vec![ $( $name::<'static, $($inst),+>::decl() ),+ ]
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_declared_block_is_used_and_enforced() {
        let c = config("simt", "k", Some(256), Grid::linear(3).shared(64)).unwrap();
        assert_eq!(
            (c.grid, c.block, c.shared_bytes),
            ([3, 1, 1], [256, 1, 1], 64)
        );
        assert!(config("simt", "k", Some(256), Grid::linear(3).block([256, 1, 1])).is_ok());
        let e = config("simt", "k", Some(256), Grid::linear(3).block([128, 1, 1])).unwrap_err();
        assert!(e.to_string().contains("requires block (256, 1, 1)"), "{e}");
        let e = config("simt", "k", None, Grid::linear(1)).unwrap_err();
        assert!(e.to_string().contains("must give one"), "{e}");
        let c = config("simt", "k", None, Grid::dims([2, 3, 4]).block([32, 2, 1])).unwrap();
        assert_eq!((c.grid, c.block), ([2, 3, 4], [32, 2, 1]));
    }
}
