//! GGML's 32-value block formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) multiplied by unquantized f32
//! activations on the CPU.
//!
//! candle's quantized kernels, like llama.cpp's, round the activations to 8 bits a block
//! before the dot product. For a small model that rounding is enough to change answers:
//! SmolLM2-135M's Q4_1 file says the capital of France is "L'Étoile" under both, and "Paris"
//! when its exact weights meet exact activations. Here a few input rows (decoding) meet each
//! weight block as it is unpacked in registers, so memory holds and streams only the blocks;
//! many input rows (a prefill) go to candle's f32 GEMM a tile of unpacked rows at a time,
//! where a blocked GEMM beats rows of dot products.

use std::sync::{Mutex, OnceLock};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{D, DType, Device, Result, Tensor};
use half::f16;

/// Values per block, in every format here.
const BLOCK: usize = 32;
/// Up to this many input rows meet the blocks directly; more go to the GEMM. Measured on the
/// 1B bench shape (Q4_0): 32 rows take 0.8 s directly and 1.0 s through the GEMM, 64 rows
/// 1.5 s directly, 200 rows 18 ms a row through the GEMM.
const DOT_ROWS: usize = 32;
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
    const fn block_bytes(self) -> usize {
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
        if m == 0 {
            return Tensor::zeros(shape, DType::F32, x.device());
        }
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
            let mut scratch = vec![0f32; self.cols];
            for (n, out) in out.chunks_mut(m).enumerate() {
                let start = (first + n) * row_bytes;
                let blocks = &self.blocks[start..start + row_bytes];
                row_dots(self.format, blocks, input, &mut scratch, out);
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

/// Whether this CPU has AVX2, FMA and F16C, asked once.
fn wide() -> bool {
    static WIDE: OnceLock<bool> = OnceLock::new();
    *WIDE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
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
        return unsafe { avx2::expand(format, blocks, out) };
    }
    expand_portable(format, blocks, out)
}

/// The dot products of one weight row (`blocks`) with each input row of `input` (`m` rows
/// of the row's width), into `out`; `scratch` holds the row's width.
fn row_dots(format: Format, blocks: &[u8], input: &[f32], scratch: &mut [f32], out: &mut [f32]) {
    let cols = scratch.len();
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // Four input rows a pass with two partial sums each, or fewer with four: either way
        // the sums and four weight vectors fit the sixteen vector registers, and each
        // block is unpacked once for all the rows of the pass.
        let (mut input, mut out) = (input, out);
        while !out.is_empty() {
            let rows = if out.len() >= 4 { 4 } else { out.len().min(2) };
            let (x, rest) = input.split_at(rows * cols);
            let (y, more) = out.split_at_mut(rows);
            let mut xs = x.chunks_exact(cols);
            let mut next = || xs.next().expect("a row for each output");
            // SAFETY: as for `expand`.
            unsafe {
                match y {
                    [y0, y1, y2, y3] => {
                        [*y0, *y1, *y2, *y3] =
                            avx2::row_dots::<4, 2>(format, blocks, [next(), next(), next(), next()])
                    }
                    [y0, y1] => {
                        [*y0, *y1] = avx2::row_dots::<2, 4>(format, blocks, [next(), next()])
                    }
                    [y0] => [*y0] = avx2::row_dots::<1, 4>(format, blocks, [next()]),
                    _ => unreachable!("passes of 4, 2 or 1 rows"),
                }
            }
            (input, out) = (rest, more);
        }
        return;
    }
    row_dots_portable(format, blocks, input, scratch, out)
}

fn row_dots_portable(
    format: Format,
    blocks: &[u8],
    input: &[f32],
    scratch: &mut [f32],
    out: &mut [f32],
) {
    expand_portable(format, blocks, scratch);
    for (x, y) in input.chunks_exact(scratch.len()).zip(out) {
        *y = dot_portable(scratch, x);
    }
}

/// The same arithmetic with AVX2, FMA and F16C, which every x86-64 CPU of the last decade has.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, Format, expand_portable};

    // `decode` and `half` are inlined by force, which a function with target features
    // cannot ask for: as separate calls they cost more than the arithmetic. Once inside
    // the callers below, which enable the features, the intrinsics inline too.

    /// # Safety
    /// The CPU has F16C.
    #[inline(always)]
    unsafe fn half(bits: &[u8]) -> f32 {
        let bits = u16::from_le_bytes([bits[0], bits[1]]);
        // SAFETY: the caller's promise.
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))) }
    }

    /// The low eight bytes of `q` (values 0 to 15) as `q * scale + offset`.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[inline(always)]
    unsafe fn nibbles(q: __m128i, scale: __m256, offset: __m256) -> __m256 {
        // SAFETY: the caller's promise.
        unsafe { _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q)), scale, offset) }
    }

    /// One block's 32 values as four vectors of eight.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[inline(always)]
    unsafe fn decode(format: Format, block: &[u8]) -> [__m256; 4] {
        // SAFETY: the caller's promise for the features; every load reads inside `block`,
        // whose length `chunks_exact` fixed to the format's block size.
        unsafe {
            let d = half(&block[0..2]);
            match format {
                Format::Q8_0 => {
                    let scale = _mm256_set1_ps(d);
                    std::array::from_fn(|i| {
                        let q = _mm_loadl_epi64(block[2 + 8 * i..].as_ptr().cast());
                        _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), scale)
                    })
                }
                Format::Q4_0 | Format::Q4_1 => {
                    let (offset, qs) = match format {
                        Format::Q4_0 => (-8.0 * d, &block[2..18]),
                        _ => (half(&block[2..4]), &block[4..20]),
                    };
                    let (scale, offset) = (_mm256_set1_ps(d), _mm256_set1_ps(offset));
                    let q = _mm_loadu_si128(qs.as_ptr().cast());
                    let mask = _mm_set1_epi8(0x0F);
                    let low = _mm_and_si128(q, mask);
                    let high = _mm_and_si128(_mm_srli_epi16(q, 4), mask);
                    [
                        nibbles(low, scale, offset),
                        nibbles(_mm_srli_si128(low, 8), scale, offset),
                        nibbles(high, scale, offset),
                        nibbles(_mm_srli_si128(high, 8), scale, offset),
                    ]
                }
                Format::Q5_0 | Format::Q5_1 => {
                    let mut values = [0f32; BLOCK];
                    expand_portable(format, block, &mut values);
                    std::array::from_fn(|i| _mm256_loadu_ps(values[8 * i..].as_ptr()))
                }
            }
        }
    }

    /// `$body` with `$name` a constant, once per format: each copy of a loop over blocks is
    /// compiled for one format, with no branch on the format inside.
    macro_rules! per_format {
        ($format:expr, $name:ident => $body:block) => {
            match $format {
                Format::Q4_0 => {
                    const $name: Format = Format::Q4_0;
                    $body
                }
                Format::Q4_1 => {
                    const $name: Format = Format::Q4_1;
                    $body
                }
                Format::Q5_0 => {
                    const $name: Format = Format::Q5_0;
                    $body
                }
                Format::Q5_1 => {
                    const $name: Format = Format::Q5_1;
                    $body
                }
                Format::Q8_0 => {
                    const $name: Format = Format::Q8_0;
                    $body
                }
            }
        };
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn expand(format: Format, blocks: &[u8], out: &mut [f32]) {
        per_format!(format, FORMAT => {
            let size = FORMAT.block_bytes();
            for (block, out) in blocks.chunks_exact(size).zip(out.chunks_exact_mut(BLOCK)) {
                // SAFETY: this function runs only with the features `decode` needs.
                let values = unsafe { decode(FORMAT, block) };
                for (values, out) in values.into_iter().zip(out.chunks_exact_mut(8)) {
                    // SAFETY: `out` is eight floats.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), values) }
                }
            }
        })
    }

    /// The dot products of one weight row with `G` input rows, each summed in `A` parts.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn row_dots<const G: usize, const A: usize>(
        format: Format,
        blocks: &[u8],
        inputs: [&[f32]; G],
    ) -> [f32; G] {
        // Several partial sums per input row, so consecutive multiply-adds do not wait on
        // each other.
        let mut sums = [[_mm256_setzero_ps(); A]; G];
        per_format!(format, FORMAT => {
            for (b, block) in blocks.chunks_exact(FORMAT.block_bytes()).enumerate() {
                // SAFETY: as in `expand`.
                let weights = unsafe { decode(FORMAT, block) };
                for (sums, input) in sums.iter_mut().zip(inputs) {
                    let x = &input[b * BLOCK..(b + 1) * BLOCK];
                    for (i, weights) in weights.iter().enumerate() {
                        // SAFETY: `x` is 32 floats and `i` is below 4.
                        let x = unsafe { _mm256_loadu_ps(x[8 * i..].as_ptr()) };
                        sums[i % A] = _mm256_fmadd_ps(*weights, x, sums[i % A]);
                    }
                }
            }
        });
        sums.map(|parts| {
            let v = parts.into_iter().fold(_mm256_setzero_ps(), |a, b| _mm256_add_ps(a, b));
            let v = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let v = _mm_add_ps(v, _mm_movehl_ps(v, v));
            _mm_cvtss_f32(_mm_add_ss(v, _mm_shuffle_ps(v, v, 1)))
        })
    }
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
            for shape in [vec![1, 96], vec![3, 96], vec![1, 5, 96], vec![2, 3, 96], vec![1, 40, 96]]
            {
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

    /// The vector code computes what the portable code does, which the test above checks
    /// only on a CPU without AVX2.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn vector_code_matches_the_portable_code() -> Result<()> {
        assert!(wide(), "the test machines have AVX2, FMA and F16C");
        let w = Tensor::randn(0f32, 1.0, (3, 96), &Device::Cpu)?;
        let x: Vec<f32> =
            Tensor::randn(0f32, 1.0, (3, 96), &Device::Cpu)?.flatten_all()?.to_vec1()?;
        for dtype in
            [GgmlDType::Q4_0, GgmlDType::Q4_1, GgmlDType::Q5_0, GgmlDType::Q5_1, GgmlDType::Q8_0]
        {
            let q = FloatInputMatrix::new(&QTensor::quantize(&w, dtype)?)?;
            let row = &q.blocks[..q.row_bytes()];
            let (mut portable, mut vector) = ([0f32; 96], [0f32; 96]);
            expand_portable(q.format, row, &mut portable);
            // SAFETY: `wide` was asserted above.
            unsafe { avx2::expand(q.format, row, &mut vector) };
            assert_eq!(portable, vector, "{dtype:?}");
            let (mut portable, mut vector) = ([0f32; 3], [0f32; 3]);
            row_dots_portable(q.format, row, &x, &mut [0f32; 96], &mut portable);
            row_dots(q.format, row, &x, &mut [0f32; 96], &mut vector);
            for (p, v) in portable.iter().zip(vector) {
                assert!((p - v).abs() <= 1e-4 * p.abs().max(1.0), "{dtype:?}: {p} vs {v}");
            }
        }
        Ok(())
    }

    #[test]
    fn refuses_what_it_cannot_multiply() -> Result<()> {
        let w = Tensor::zeros((4, 256), DType::F32, &Device::Cpu)?;
        let err = FloatInputMatrix::new(&QTensor::quantize(&w, GgmlDType::Q4K)?).unwrap_err();
        assert!(err.to_string().contains("Q4K"), "{err}");
        let q = FloatInputMatrix::new(&QTensor::quantize(&w, GgmlDType::Q8_0)?)?;
        let err = q.forward(&Tensor::zeros((1, 64), DType::F32, &Device::Cpu)?);
        assert!(err.unwrap_err().to_string().contains("width 64"));
        Ok(())
    }
}
