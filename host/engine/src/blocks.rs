//! GGML's 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) multiplied by unquantized f32
//! activations on the CPU.
//!
//! candle's quantized kernels, like llama.cpp's, round the activations to 8 bits a block
//! before the dot product. For a small model that rounding is enough to change answers:
//! SmolLM2-135M's Q4_1 file says the capital of France is "L'Étoile" under both, and "Paris"
//! when its exact weights meet exact activations. Here each weight row is expanded to f32 in
//! a buffer that stays in L1 and dotted with every input row, so memory holds and streams
//! only the blocks; many input rows (a prefill) go to candle's f32 matmul a tile of rows at a
//! time instead, where a blocked GEMM beats a row of dot products.

use std::sync::{Mutex, OnceLock};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{D, Device, Result, Tensor};
use half::f16;

/// Values per block, in every format here.
const BLOCK: usize = 32;
/// Up to this many input rows are dotted against expanded weight rows; more go to the GEMM.
const DOT_ROWS: usize = 8;
/// f32 values in one tile expanded for the GEMM (16 MiB).
const TILE_VALUES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

impl Format {
    fn of(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => Self::Q4_0,
            GgmlDType::Q4_1 => Self::Q4_1,
            GgmlDType::Q5_0 => Self::Q5_0,
            GgmlDType::Q5_1 => Self::Q5_1,
            GgmlDType::Q8_0 => Self::Q8_0,
            _ => return None,
        })
    }

    /// Bytes a block occupies, as GGML lays it out.
    fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
        }
    }
}

/// A block-quantized matrix of `rows` x `cols`, applied as `x Wᵀ` with `x` in f32.
#[derive(Clone)]
pub struct FloatInputMatrix {
    format: Format,
    rows: usize,
    cols: usize,
    blocks: Vec<u8>,
}

impl std::fmt::Debug for FloatInputMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FloatInputMatrix({:?}, {}x{})", self.format, self.rows, self.cols)
    }
}

impl FloatInputMatrix {
    /// The formats this multiplies.
    pub fn handles(dtype: GgmlDType) -> bool {
        Format::of(dtype).is_some()
    }

    /// `tensor`'s blocks, copied out of it; an error for a format, shape or device this does
    /// not handle.
    pub fn new(tensor: &QTensor) -> Result<Self> {
        let Some(format) = Format::of(tensor.dtype()) else {
            candle_core::bail!("no f32-activation kernel for {:?} matrices", tensor.dtype())
        };
        let (rows, cols) = tensor.shape().dims2()?;
        if cols % BLOCK != 0 {
            candle_core::bail!("a {rows}x{cols} matrix does not split into blocks of {BLOCK}")
        }
        if !tensor.device().is_cpu() {
            candle_core::bail!("the f32-activation kernels run on the CPU only")
        }
        let blocks = tensor.data()?.into_owned();
        let expected = rows * cols / BLOCK * format.block_bytes();
        if blocks.len() != expected {
            candle_core::bail!(
                "a {rows}x{cols} {format:?} matrix should hold {expected} bytes, found {}",
                blocks.len()
            )
        }
        Ok(Self { format, rows, cols, blocks })
    }

    /// `x Wᵀ` for `x` of shape `[.., cols]` (f32, on the CPU).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = x.dim(D::Minus1)?;
        if k != self.cols {
            candle_core::bail!("input of width {k} for a matrix of width {}", self.cols)
        }
        let mut shape = x.dims().to_vec();
        *shape.last_mut().expect("the input has a last dimension") = self.rows;
        let m = x.elem_count() / k;
        if m > DOT_ROWS {
            return self.forward_tiled(x);
        }
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        Tensor::from_vec(self.dot_rows(&input, m), shape, x.device())
    }

    /// Every weight row expanded once and dotted with each of the `m` input rows.
    fn dot_rows(&self, input: &[f32], m: usize) -> Vec<f32> {
        let row_bytes = self.row_bytes();
        // Output transposed (weight row, then input row), so each task writes one run.
        let transposed = in_parallel(self.rows, m, |first, out| {
            let mut row = vec![0f32; self.cols];
            for (n, out) in out.chunks_mut(m).enumerate() {
                let start = (first + n) * row_bytes;
                expand(self.format, &self.blocks[start..start + row_bytes], &mut row);
                for (j, y) in out.iter_mut().enumerate() {
                    *y = dot(&row, &input[j * self.cols..(j + 1) * self.cols]);
                }
            }
        });
        let mut output = vec![0f32; m * self.rows];
        for (n, ys) in transposed.chunks(m).enumerate() {
            for (j, y) in ys.iter().enumerate() {
                output[j * self.rows + n] = *y;
            }
        }
        output
    }

    /// The matrix expanded a tile of rows at a time, each tile multiplied by candle's GEMM.
    fn forward_tiled(&self, x: &Tensor) -> Result<Tensor> {
        let row_bytes = self.row_bytes();
        let tile_rows = (TILE_VALUES / self.cols).max(1);
        let x = x.contiguous()?;
        let mut outputs = Vec::new();
        for first in (0..self.rows).step_by(tile_rows) {
            let rows = tile_rows.min(self.rows - first);
            let tile = in_parallel(rows, self.cols, |start, out| {
                let bytes = &self.blocks[(first + start) * row_bytes..];
                for (row, out) in bytes.chunks(row_bytes).zip(out.chunks_mut(self.cols)) {
                    expand(self.format, row, out);
                }
            });
            let tile = Tensor::from_vec(tile, (rows, self.cols), &Device::Cpu)?;
            outputs.push(x.broadcast_matmul(&tile.t()?)?);
        }
        Tensor::cat(&outputs, D::Minus1)
    }

    fn row_bytes(&self) -> usize {
        self.cols / BLOCK * self.format.block_bytes()
    }
}

/// `items` runs of `width` values, filled by `fill(first item, its runs)` on candle's CPU
/// workers. candle's pool spins between operations, so work on any other pool would
/// compete with it for the cores.
fn in_parallel(items: usize, width: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let output = Mutex::new(vec![0f32; items * width]);
    candle_core::utils::barrier_pool().execute_chunked(items, |range| {
        let mut part = vec![0f32; range.len() * width];
        fill(range.start, &mut part);
        let mut output = output.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        output[range.start * width..range.end * width].copy_from_slice(&part);
    });
    output.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether this CPU has AVX2 and FMA, asked once.
fn wide() -> bool {
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// `blocks` (one row) written out as f32 values into `out`.
fn expand(format: Format, blocks: &[u8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: `wide` checked that the CPU has the features the function is built for.
        return unsafe { expand_wide(format, blocks, out) };
    }
    expand_portable(format, blocks, out)
}

/// The sum of `a[i] * b[i]`.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: as for `expand`.
        return unsafe { dot_wide(a, b) };
    }
    dot_portable(a, b)
}

// The same loops compiled twice: once for the baseline target and once with AVX2 and FMA
// enabled, where the compiler turns them into 8-wide vector code.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn expand_wide(format: Format, blocks: &[u8], out: &mut [f32]) {
    expand_portable(format, blocks, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_wide(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

#[inline(always)]
fn expand_portable(format: Format, blocks: &[u8], out: &mut [f32]) {
    let size = format.block_bytes();
    for (block, out) in blocks.chunks_exact(size).zip(out.chunks_exact_mut(BLOCK)) {
        let half = |at: usize| f16::from_le_bytes([block[at], block[at + 1]]).to_f32();
        let d = half(0);
        match format {
            Format::Q8_0 => {
                for (y, &q) in out.iter_mut().zip(&block[2..]) {
                    *y = q as i8 as f32 * d;
                }
            }
            Format::Q4_0 | Format::Q4_1 => {
                let (offset, qs) = match format {
                    Format::Q4_0 => (-8.0 * d, &block[2..18]),
                    _ => (half(2), &block[4..20]),
                };
                let (low, high) = out.split_at_mut(BLOCK / 2);
                for ((l, h), &q) in low.iter_mut().zip(high).zip(qs) {
                    *l = (q & 0xF) as f32 * d + offset;
                    *h = (q >> 4) as f32 * d + offset;
                }
            }
            Format::Q5_0 | Format::Q5_1 => {
                let (offset, rest) = match format {
                    Format::Q5_0 => (-16.0 * d, &block[2..22]),
                    _ => (half(2), &block[4..24]),
                };
                let qh = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
                let (low, high) = out.split_at_mut(BLOCK / 2);
                for (j, ((l, h), &q)) in low.iter_mut().zip(high).zip(&rest[4..]).enumerate() {
                    let l5 = (q & 0xF) as u32 | ((qh >> j) & 1) << 4;
                    let h5 = (q >> 4) as u32 | ((qh >> (j + 16)) & 1) << 4;
                    *l = l5 as f32 * d + offset;
                    *h = h5 as f32 * d + offset;
                }
            }
        }
    }
}

#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    // Sixteen partial sums in flight: the additions need no reordering to vectorize.
    let mut lanes = [0f32; 16];
    let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = a16.remainder().iter().zip(b16.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a16.zip(b16) {
        for i in 0..16 {
            lanes[i] = x[i].mul_add(y[i], lanes[i]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against candle's own dequantization followed by a dense matmul, for every format, a
    /// single input row, a few, and enough for the tiled GEMM.
    #[test]
    fn matches_dequantized_matmul() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (70, 96), &dev)?;
        for dtype in
            [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q8_0]
        {
            let q = QTensor::quantize(&w, dtype)?;
            let dense = q.dequantize(&dev)?;
            let ours = FloatInputMatrix::new(&q)?;
            for shape in [vec![1, 96], vec![2, 3, 96], vec![1, 40, 96]] {
                let x = Tensor::randn(0f32, 1.0, shape, &dev)?;
                let expected = x.broadcast_matmul(&dense.t()?)?;
                let got = ours.forward(&x)?;
                assert_eq!(got.dims(), expected.dims());
                let err = (got - expected)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(err < 1e-4, "{dtype:?} {:?}: max error {err}", x.dims());
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_multiply() -> Result<()> {
        let w = Tensor::zeros((4, 256), candle_core::DType::F32, &Device::Cpu)?;
        let err = FloatInputMatrix::new(&QTensor::quantize(&w, GgmlDType::Q4K)?).unwrap_err();
        assert!(err.to_string().contains("Q4K"), "{err}");
        let q = FloatInputMatrix::new(&QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
        let err = q.forward(&Tensor::zeros((1, 64), candle_core::DType::F32, &Device::Cpu)?);
        assert!(err.unwrap_err().to_string().contains("width 64"));
        Ok(())
    }
}
