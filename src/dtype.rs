//! Element types that can live in a [`crate::DeviceBuffer`].

use half::{bf16, f16};

/// Runtime tag of an element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DTypeKind {
    F32,
    F16,
    BF16,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
}

impl DTypeKind {
    /// Short lower-case name, as used in kernel names (`bitmask_sparsify_bf16`).
    pub const fn name(self) -> &'static str {
        match self {
            DTypeKind::F32 => "f32",
            DTypeKind::F16 => "f16",
            DTypeKind::BF16 => "bf16",
            DTypeKind::U8 => "u8",
            DTypeKind::U16 => "u16",
            DTypeKind::U32 => "u32",
            DTypeKind::U64 => "u64",
            DTypeKind::I8 => "i8",
            DTypeKind::I16 => "i16",
            DTypeKind::I32 => "i32",
            DTypeKind::I64 => "i64",
        }
    }

    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DTypeKind::U8 | DTypeKind::I8 => 1,
            DTypeKind::F16 | DTypeKind::BF16 | DTypeKind::U16 | DTypeKind::I16 => 2,
            DTypeKind::F32 | DTypeKind::U32 | DTypeKind::I32 => 4,
            DTypeKind::U64 | DTypeKind::I64 => 8,
        }
    }
}

impl std::fmt::Display for DTypeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A plain-old-data element type with a runtime tag.
pub trait DType: bytemuck::Pod + Send + Sync + std::fmt::Debug + 'static {
    const KIND: DTypeKind;
}

/// Floating-point element types the numeric kernels accept, with lossless conversion to f64 and
/// access to the raw bit pattern (used where "changed" means "bits differ").
pub trait Float: DType + PartialEq {
    /// Unsigned integer type of the same width as the float.
    type Bits: bytemuck::Pod + Eq + Copy + std::fmt::Debug + Send + Sync;
    fn to_f64(self) -> f64;
    /// Exact widening to f32 (every f16 and bf16 value is an f32 value).
    fn to_f32(self) -> f32;
    fn from_f64(x: f64) -> Self;
    fn to_bits(self) -> Self::Bits;
}

macro_rules! dtype {
    ($t:ty, $k:ident) => {
        impl DType for $t {
            const KIND: DTypeKind = DTypeKind::$k;
        }
    };
}
dtype!(f32, F32);
dtype!(f16, F16);
dtype!(bf16, BF16);
dtype!(u8, U8);
dtype!(u16, U16);
dtype!(u32, U32);
dtype!(u64, U64);
dtype!(i8, I8);
dtype!(i16, I16);
dtype!(i32, I32);
dtype!(i64, I64);

impl Float for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    type Bits = u32;
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_bits(self) -> u32 {
        f32::to_bits(self)
    }
}
impl Float for f16 {
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    type Bits = u16;
    fn to_f64(self) -> f64 {
        f16::to_f64(self)
    }
    fn from_f64(x: f64) -> Self {
        f16::from_f64(x)
    }
    fn to_bits(self) -> u16 {
        f16::to_bits(self)
    }
}
impl Float for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    type Bits = u16;
    fn to_f64(self) -> f64 {
        bf16::to_f64(self)
    }
    fn from_f64(x: f64) -> Self {
        bf16::from_f64(x)
    }
    fn to_bits(self) -> u16 {
        bf16::to_bits(self)
    }
}
