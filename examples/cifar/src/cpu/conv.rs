//! Valid (unpadded), stride-1 convolution as im2col + matrix products, forward and
//! backward, on plain slices: every pass is one patch copy and one matrix product per
//! image, as PyTorch does. The seed's model has no other convolution.

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

/// Lays one image's patches out as a `[patch, pixels]` matrix: row `(c, i, j)` holds,
/// for every output pixel, the input it sees through kernel tap `(i, j)` of channel `c`.
fn im2col(s: &ConvShape, image: &[f32], col: &mut [f32]) {
    let (k, w, ow, p) = (s.kernel, s.width, s.out_width(), s.pixels());
    for c in 0..s.channels {
        let plane = &image[c * s.height * w..][..s.height * w];
        for i in 0..k {
            for j in 0..k {
                let row = &mut col[((c * k + i) * k + j) * p..][..p];
                for (y, out) in row.chunks_exact_mut(ow).enumerate() {
                    out.copy_from_slice(&plane[(y + i) * w + j..][..ow]);
                }
            }
        }
    }
}

/// Adds each entry of a `[patch, pixels]` matrix onto the input it came from: the
/// adjoint of [`im2col`], which turns patch gradients into the image's gradient.
fn col2im(s: &ConvShape, col: &[f32], image: &mut [f32]) {
    let (k, w, ow, p) = (s.kernel, s.width, s.out_width(), s.pixels());
    image.fill(0.0);
    for c in 0..s.channels {
        let plane = &mut image[c * s.height * w..][..s.height * w];
        for i in 0..k {
            for j in 0..k {
                let row = &col[((c * k + i) * k + j) * p..][..p];
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
/// `[a.rows, b.cols]`. One thread: the callers run one image per task.
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

thread_local! {
    /// A worker thread's scratch matrix, reused from call to call: a fresh one each time
    /// costs a page fault per 4 KiB.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's scratch buffer of `len` values (contents unspecified).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        f(&mut buf[..len])
    })
}

/// `x * weight + bias` for `x` `[batch, channels, h, w]`, `weight`
/// `[out, channels, k, k]`, `bias` `[out]`; the output is `[batch, out, h-k+1, w-k+1]`.
/// With `keep_cols`, also the images' patch matrices, which [`backward`] needs.
pub fn forward(
    s: &ConvShape,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    keep_cols: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let (p, q, o) = (s.pixels(), s.patch(), s.out_channels);
    let one = |y: &mut [f32], x: &[f32], col: &mut [f32]| {
        im2col(s, x, col);
        for (row, b) in y.chunks_exact_mut(p).zip(bias) {
            row.fill(*b);
        }
        matmul(y, Mat::new(weight, o, q), Mat::new(col, q, p), true);
    };
    let mut y = vec![0.0; s.batch * s.out_len()];
    let images = y
        .par_chunks_mut(s.out_len())
        .zip(x.par_chunks(s.image_len()));
    if keep_cols {
        let mut cols = vec![0.0; s.batch * s.cols_len()];
        images
            .zip(cols.par_chunks_mut(s.cols_len()))
            .for_each(|((y, x), col)| one(y, x, col));
        (y, Some(cols))
    } else {
        images.for_each(|(y, x)| with_scratch(s.cols_len(), |col| one(y, x, col)));
        (y, None)
    }
}

/// Gradients of [`forward`] given the output's gradient `dy` and the patch matrices the
/// forward pass kept: of the weight, of the bias, and of the input when `want_dx` (the
/// first layer's input is data: it needs none).
pub fn backward(
    s: &ConvShape,
    cols: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_dx: bool,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (p, q, o) = (s.pixels(), s.patch(), s.out_channels);
    let mut dx = vec![0.0; if want_dx { s.batch * s.image_len() } else { 0 }];
    let mut dx_images: Vec<&mut [f32]> = if want_dx {
        dx.chunks_mut(s.image_len()).collect()
    } else {
        (0..s.batch).map(|_| <&mut [f32]>::default()).collect()
    };
    // Each task sums the weight and bias gradients of its images; the sums are added up.
    let zero = || (vec![0.0; o * q], vec![0.0; o]);
    let (dw, db) = dx_images
        .par_iter_mut()
        .zip(cols.par_chunks(s.cols_len()))
        .zip(dy.par_chunks(s.out_len()))
        .fold(zero, |(mut dw, mut db), ((dx, col), dy)| {
            matmul(&mut dw, Mat::new(dy, o, p), Mat::t(col, q, p), true);
            for (d, row) in db.iter_mut().zip(dy.chunks_exact(p)) {
                *d += row.iter().sum::<f32>();
            }
            if want_dx {
                with_scratch(q * p, |dcol| {
                    matmul(dcol, Mat::t(weight, o, q), Mat::new(dy, o, p), false);
                    col2im(s, dcol, dx);
                });
            }
            (dw, db)
        })
        .reduce(zero, |mut a, b| {
            a.0.iter_mut().zip(&b.0).for_each(|(x, y)| *x += y);
            a.1.iter_mut().zip(&b.1).for_each(|(x, y)| *x += y);
            a
        });
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
        im2col(&s, &x, &mut col);
        let mut img = vec![1.0; x.len()];
        col2im(&s, &c, &mut img);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
        assert!((dot(&col, &c) - dot(&x, &img)).abs() < 1e-3);
    }

    #[test]
    fn forward_matches_the_definition() {
        let s = ConvShape {
            batch: 2,
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
        for keep_cols in [false, true] {
            let (y, cols) = forward(&s, &x, &w, &b, keep_cols);
            assert_eq!(cols.is_some(), keep_cols);
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
}
