//! Valid (unpadded), stride-1 convolution as im2col + matrix products, forward and
//! backward, on plain slices: each pass copies a run of images' patches into a matrix
//! that fits the core's cache and makes one matrix product of it. The seed's model has
//! no other convolution.

use std::cell::RefCell;

use rayon::prelude::*;

/// Sizes of a valid, stride-1 convolution of `[batch, channels, height, width]` images
/// by `[out_channels, channels, kernel, kernel]` weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel: usize,
}

impl ConvShape {
    fn out_height(&self) -> usize {
        self.height + 1 - self.kernel
    }
    fn out_width(&self) -> usize {
        self.width + 1 - self.kernel
    }
    /// Output pixels of one image and channel.
    fn pixels(&self) -> usize {
        self.out_height() * self.out_width()
    }
    /// Inputs one output pixel sees: channels × kernel × kernel.
    fn patch(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }
    /// Length of one image's patch matrix (see [`im2col`]).
    fn cols_len(&self) -> usize {
        self.patch() * self.pixels()
    }
    fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    fn out_len(&self) -> usize {
        self.out_channels * self.pixels()
    }
    pub fn out_dims(&self) -> [usize; 4] {
        [
            self.batch,
            self.out_channels,
            self.out_height(),
            self.out_width(),
        ]
    }
}

/// Lays one image's patches out as the columns of a `[patch, pixels]` block of a matrix
/// whose rows are `ld` apart: row `(c, i, j)` holds, for every output pixel, the input
/// it sees through kernel tap `(i, j)` of channel `c`. A batch's images side by side
/// (`ld` = images × pixels) make one matrix, hence one matrix product for all of them.
fn im2col(s: &ConvShape, image: &[f32], col: &mut [f32], ld: usize) {
    // The CNN's two output widths get copies of a known length, inlined as a few vector
    // moves instead of a call to memcpy per 28 or 10 values: 5-10 % faster steps.
    match s.out_width() {
        28 => im2col_rows::<28>(s, image, col, ld),
        10 => im2col_rows::<10>(s, image, col, ld),
        _ => im2col_rows::<0>(s, image, col, ld),
    }
}

/// [`im2col`] for output rows `W` wide (0: any width).
fn im2col_rows<const W: usize>(s: &ConvShape, image: &[f32], col: &mut [f32], ld: usize) {
    let (k, w, ow, p) = (s.kernel, s.width, s.out_width(), s.pixels());
    for c in 0..s.channels {
        let plane = &image[c * s.height * w..][..s.height * w];
        for i in 0..k {
            for j in 0..k {
                let row = &mut col[((c * k + i) * k + j) * ld..][..p];
                for (y, out) in row.chunks_exact_mut(ow).enumerate() {
                    let from = &plane[(y + i) * w + j..][..ow];
                    if W > 0 {
                        out[..W].copy_from_slice(&from[..W]);
                    } else {
                        out.copy_from_slice(from);
                    }
                }
            }
        }
    }
}

/// Adds each entry of an image's `[patch, pixels]` block onto the input it came from:
/// the adjoint of [`im2col`], which turns patch gradients into the image's gradient.
fn col2im(s: &ConvShape, col: &[f32], ld: usize, image: &mut [f32]) {
    let (k, w, ow, p) = (s.kernel, s.width, s.out_width(), s.pixels());
    image.fill(0.0);
    for c in 0..s.channels {
        let plane = &mut image[c * s.height * w..][..s.height * w];
        for i in 0..k {
            for j in 0..k {
                let row = &col[((c * k + i) * k + j) * ld..][..p];
                for (y, from) in row.chunks_exact(ow).enumerate() {
                    let to = &mut plane[(y + i) * w + j..][..ow];
                    for (t, f) in to.iter_mut().zip(from) {
                        *t += f;
                    }
                }
            }
        }
    }
}

/// A row-major or transposed view of a matrix in a slice, for [`matmul`].
#[derive(Clone, Copy)]
struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    /// Stored as `[cols, rows]` and read transposed.
    transposed: bool,
}

impl<'a> Mat<'a> {
    fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows,
            cols,
            transposed: false,
        }
    }
    /// The transpose of a row-major `[rows, cols]` matrix (no copy).
    fn t(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat {
            data,
            rows: cols,
            cols: rows,
            transposed: true,
        }
    }
    /// Strides between columns and between rows.
    fn strides(&self) -> (isize, isize) {
        if self.transposed {
            (self.rows as isize, 1)
        } else {
            (1, self.cols as isize)
        }
    }
}

/// `dst = a × b`, or `dst += a × b` with `accumulate`; `dst` is row-major
/// `[a.rows, b.cols]`. One thread: the callers run one task per thread.
fn matmul(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool) {
    assert_eq!(a.cols, b.rows, "inner dimensions differ");
    assert!(a.data.len() >= a.rows * a.cols && b.data.len() >= b.rows * b.cols);
    assert!(dst.len() >= a.rows * b.cols);
    let (a_cs, a_rs) = a.strides();
    let (b_cs, b_rs) = b.strides();
    // SAFETY: the asserts above keep every index gemm reads or writes inside the slices
    // (a `[rows, cols]` matrix with these strides spans exactly rows × cols elements),
    // and `dst` is borrowed mutably, so it overlaps neither operand.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr(),
            1,
            b.cols as isize,
            accumulate,
            a.data.as_ptr(),
            a_cs,
            a_rs,
            b.data.as_ptr(),
            b_cs,
            b_rs,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Patch matrices of one task stay under this size, so that they are still in the
/// core's L2 cache when the matrix product reads them.
const BLOCK_BYTES: usize = 512 << 10;

/// Images per task: as many as fit [`BLOCK_BYTES`] (each task is one matrix product
/// per pass: small products waste most of their time around the arithmetic), but no
/// fewer tasks than threads.
fn images_per_task(s: &ConvShape) -> usize {
    let fit = BLOCK_BYTES / (s.cols_len() * 4);
    let spread = s.batch.div_ceil(rayon::current_num_threads().max(1));
    fit.min(spread).max(1)
}

thread_local! {
    /// A worker thread's scratch matrices, reused from call to call: fresh ones would
    /// cost a page fault per 4 KiB.
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

/// Runs `f` on this thread's three scratch matrices of the given lengths (contents
/// unspecified).
fn with_scratch<R>(lens: [usize; 3], f: impl FnOnce([&mut [f32]; 3]) -> R) -> R {
    SCRATCH.with_borrow_mut(|bufs| {
        for (buf, &len) in bufs.iter_mut().zip(&lens) {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
        let [a, b, c] = bufs;
        f([&mut a[..lens[0]], &mut b[..lens[1]], &mut c[..lens[2]]])
    })
}

/// The patch matrix `[patch, images × pixels]` of a run of images (`x`), into `col`.
fn im2col_run(s: &ConvShape, x: &[f32], col: &mut [f32]) -> usize {
    let ld = x.len() / s.image_len() * s.pixels();
    for (m, image) in x.chunks_exact(s.image_len()).enumerate() {
        im2col(s, image, &mut col[m * s.pixels()..], ld);
    }
    ld
}

/// `x * weight + bias` for `x` `[batch, channels, h, w]`, `weight`
/// `[out, channels, k, k]`, `bias` `[out]`; the output is `[batch, out, h-k+1, w-k+1]`.
pub fn forward(s: &ConvShape, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let (p, q, o) = (s.pixels(), s.patch(), s.out_channels);
    let per = images_per_task(s);
    let mut y = vec![0.0; s.batch * s.out_len()];
    y.par_chunks_mut(per * s.out_len())
        .zip(x.par_chunks(per * s.image_len()))
        .for_each(|(y, x)| {
            let n = x.len() / s.image_len();
            with_scratch([q * n * p, o * n * p, 0], |[col, out, _]| {
                let ld = im2col_run(s, x, col);
                // [out, images × pixels], then each image's rows plus the bias.
                matmul(out, Mat::new(weight, o, q), Mat::new(col, q, ld), false);
                for (m, y) in y.chunks_exact_mut(s.out_len()).enumerate() {
                    let rows = y.chunks_exact_mut(p).zip(out.chunks_exact(ld));
                    for ((y, out), b) in rows.zip(bias) {
                        for (y, v) in y.iter_mut().zip(&out[m * p..][..p]) {
                            *y = v + b;
                        }
                    }
                }
            })
        });
    y
}

/// Gradients of [`forward`] given its input `x` and the output's gradient `dy`: of the
/// weight, of the bias, and of the input when `want_dx` (the first layer's input is
/// data: it needs none). The patch matrices are made again, block by block: keeping
/// them from the forward pass would stream 30 MB through memory twice more at batch 128.
pub fn backward(
    s: &ConvShape,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_dx: bool,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (p, q, o) = (s.pixels(), s.patch(), s.out_channels);
    let per = images_per_task(s);
    let tasks = s.batch.div_ceil(per);
    let mut dx = vec![0.0; if want_dx { s.batch * s.image_len() } else { 0 }];
    let dx_runs: Vec<&mut [f32]> = if want_dx {
        dx.chunks_mut(per * s.image_len()).collect()
    } else {
        (0..tasks).map(|_| <&mut [f32]>::default()).collect()
    };
    // Each task adds its images' gradients (the weight's transposed) into the sums of its
    // thread's earlier tasks; then the threads' sums are added up.
    let zero = || (vec![0.0; q * o], vec![0.0; o]);
    let (dwt, db) = dx_runs
        .into_par_iter()
        .zip(x.par_chunks(per * s.image_len()))
        .zip(dy.par_chunks(per * s.out_len()))
        .fold(zero, |(mut dwt, mut db), ((dx, x), dy)| {
            let n = x.len() / s.image_len();
            let dcol_len = if want_dx { q * n * p } else { 0 };
            with_scratch([q * n * p, o * n * p, dcol_len], |[col, dy_t, dcol]| {
                let ld = im2col_run(s, x, col);
                // dy as [out, images × pixels], as the forward pass's product made it.
                for (m, dy) in dy.chunks_exact(s.out_len()).enumerate() {
                    for (row, dy) in dy_t.chunks_exact_mut(ld).zip(dy.chunks_exact(p)) {
                        row[m * p..][..p].copy_from_slice(dy);
                    }
                }
                for (d, row) in db.iter_mut().zip(dy_t.chunks_exact(ld)) {
                    *d += row.iter().sum::<f32>();
                }
                // dwᵀ += col × dyᵀ: gemm then streams the patch matrix as it lies, where
                // dw = dy × colᵀ would have it repack the whole matrix first.
                matmul(&mut dwt, Mat::new(col, q, ld), Mat::t(dy_t, o, ld), true);
                if want_dx {
                    matmul(dcol, Mat::t(weight, o, q), Mat::new(dy_t, o, ld), false);
                    for (m, dx) in dx.chunks_exact_mut(s.image_len()).enumerate() {
                        col2im(s, &dcol[m * p..], ld, dx);
                    }
                }
            });
            (dwt, db)
        })
        .reduce(zero, |mut a, b| {
            a.0.iter_mut().zip(&b.0).for_each(|(x, y)| *x += y);
            a.1.iter_mut().zip(&b.1).for_each(|(x, y)| *x += y);
            a
        });
    let mut dw = vec![0.0; o * q];
    for (i, row) in dwt.chunks_exact(o).enumerate() {
        for (j, v) in row.iter().enumerate() {
            dw[j * q + i] = *v;
        }
    }
    (dw, db, want_dx.then_some(dx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for any x and c.
        let s = ConvShape {
            batch: 1,
            channels: 2,
            height: 6,
            width: 5,
            out_channels: 1,
            kernel: 3,
        };
        let x: Vec<f32> = (0..s.image_len())
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let c: Vec<f32> = (0..s.cols_len()).map(|i| (i as f32 * 0.11).cos()).collect();
        let mut col = vec![0.0; c.len()];
        im2col(&s, &x, &mut col, s.pixels());
        let mut img = vec![1.0; x.len()];
        col2im(&s, &c, s.pixels(), &mut img);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
        assert!((dot(&col, &c) - dot(&x, &img)).abs() < 1e-3);
    }

    #[test]
    fn forward_matches_the_definition() {
        // Five images: runs of several images per task, of unequal lengths.
        let s = ConvShape {
            batch: 5,
            channels: 2,
            height: 5,
            width: 6,
            out_channels: 3,
            kernel: 2,
        };
        let x: Vec<f32> = (0..s.batch * s.image_len())
            .map(|i| (i as f32 * 0.3).sin())
            .collect();
        let w: Vec<f32> = (0..s.out_channels * s.patch())
            .map(|i| (i as f32 * 0.7).cos())
            .collect();
        let b = [0.5, -1.0, 2.0];
        let y = forward(&s, &x, &w, &b);
        let [_, _, oh, ow] = s.out_dims();
        for n in 0..s.batch {
            for o in 0..s.out_channels {
                for (r, c) in (0..oh).flat_map(|r| (0..ow).map(move |c| (r, c))) {
                    let mut want = b[o];
                    for ch in 0..s.channels {
                        for (i, j) in (0..2).flat_map(|i| (0..2).map(move |j| (i, j))) {
                            want += w[((o * s.channels + ch) * 2 + i) * 2 + j]
                                * x[n * s.image_len() + (ch * 5 + r + i) * 6 + c + j];
                        }
                    }
                    let got = y[((n * s.out_channels + o) * oh + r) * ow + c];
                    assert!((got - want).abs() < 1e-4, "{got} vs {want}");
                }
            }
        }
    }
}
