//! The CNN's convolutions on the CPU as im2col + matrix products, forward and backward.
//!
//! burn's CPU backend (flex, 0.22) has no weight-gradient kernel: it computes the
//! gradient as a forward convolution with batch and channels swapped, a direct loop
//! with the batch as input channels and the output gradient as a 28×28 kernel, which
//! is most of a small batch's training time (docs/ARCHITECTURE.md, "Where burn's time
//! goes"). Here every pass is one patch copy and one matrix product per image, as
//! PyTorch does, wired into burn's autodiff as a backend extension with a handwritten
//! backward. Only valid (unpadded), stride-1 convolutions: the seed's model has no other.

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Flex};
use burn::prelude::*;
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

/// `x * weight + bias` for `x` `[batch, channels, h, w]`, `weight`
/// `[out, channels, k, k]`, `bias` `[out]`; the output is `[batch, out, h-k+1, w-k+1]`.
pub fn forward(s: &ConvShape, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let (p, q, o) = (s.pixels(), s.patch(), s.out_channels);
    let mut y = vec![0.0; s.batch * s.out_len()];
    y.par_chunks_mut(s.out_len())
        .zip(x.par_chunks(s.image_len()))
        .for_each_init(
            || vec![0.0; q * p],
            |col, (y, x)| {
                im2col(s, x, col);
                for (row, b) in y.chunks_exact_mut(p).zip(bias) {
                    row.fill(*b);
                }
                matmul(y, Mat::new(weight, o, q), Mat::new(col, q, p), true);
            },
        );
    y
}

/// Gradients of [`forward`] given the output's gradient `dy`: of the weight, of the bias,
/// and of the input when `want_dx` (the first layer's input is data: no gradient).
pub fn backward(
    s: &ConvShape,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    want_dx: bool,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let (p, q, o) = (s.pixels(), s.patch(), s.out_channels);
    let mut dx = vec![0.0; if want_dx { s.batch * s.image_len() } else { 0 }];
    let mut dx_chunks: Vec<&mut [f32]> = if want_dx {
        dx.chunks_mut(s.image_len()).collect()
    } else {
        (0..s.batch).map(|_| <&mut [f32]>::default()).collect()
    };
    // Per task: the weight and bias gradients summed over its images, and two scratch
    // matrices; the partial sums are added up at the end.
    let zero = || (vec![0.0; o * q], vec![0.0; o], vec![0.0; q * p], vec![]);
    let (dw, db, _, _) = dx_chunks
        .par_iter_mut()
        .zip(x.par_chunks(s.image_len()))
        .zip(dy.par_chunks(s.out_len()))
        .fold(
            zero,
            |(mut dw, mut db, mut col, mut dcol), ((dx, x), dy)| {
                im2col(s, x, &mut col);
                matmul(&mut dw, Mat::new(dy, o, p), Mat::t(&col, q, p), true);
                for (d, row) in db.iter_mut().zip(dy.chunks_exact(p)) {
                    *d += row.iter().sum::<f32>();
                }
                if want_dx {
                    dcol.resize(q * p, 0.0);
                    matmul(&mut dcol, Mat::t(weight, o, q), Mat::new(dy, o, p), false);
                    col2im(s, &dcol, dx);
                }
                (dw, db, col, dcol)
            },
        )
        .reduce(zero, |mut a, b| {
            a.0.iter_mut().zip(&b.0).for_each(|(x, y)| *x += y);
            a.1.iter_mut().zip(&b.1).for_each(|(x, y)| *x += y);
            a
        });
    (dw, db, want_dx.then_some(dx))
}

/// The convolution as a burn operation: the default body (burn's own convolution) serves
/// backends without a kernel here; Flex, with or without autodiff, runs [`forward`] and
/// [`backward`].
#[backend_extension(Flex, Autodiff)]
pub trait ConvGemm: Backend {
    fn conv2d_valid(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let options = burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        Self::conv2d(x, weight, Some(bias), options)
    }
}

fn shape_of(x: &FlexTensor, weight: &FlexTensor) -> ConvShape {
    let (xs, ws) = (x.layout().shape(), weight.layout().shape());
    assert_eq!(xs.num_dims(), 4, "conv2d_valid: input must be [n, c, h, w]");
    assert_eq!(
        ws.num_dims(),
        4,
        "conv2d_valid: weight must be [o, c, k, k]"
    );
    assert_eq!(
        xs[1], ws[1],
        "conv2d_valid: input and weight channels differ"
    );
    assert_eq!(ws[2], ws[3], "conv2d_valid: the kernel must be square");
    ConvShape {
        batch: xs[0],
        channels: xs[1],
        height: xs[2],
        width: xs[3],
        out_channels: ws[0],
        kernel: ws[2],
    }
}

/// The tensor's values as a contiguous `f32` slice (copied only when strided).
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => v.into(),
        None => t.to_contiguous().as_slice::<f32>().unwrap().to_vec().into(),
    }
}

fn tensor(values: Vec<f32>, dims: impl Into<burn::tensor::Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}

impl ConvGemm for Flex {
    fn conv2d_valid(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let s = shape_of(&x, &weight);
        let y = forward(&s, &values(&x), &values(&weight), &values(&bias));
        tensor(y, s.out_dims())
    }
}

/// The backward step: input and weight are kept from the forward pass.
#[derive(Debug)]
struct ConvGemmBackward;

impl Backward<Flex, 3> for ConvGemmBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let (x, weight) = ops.state;
        let s = shape_of(&x, &weight);
        let (dw, db, dx) = backward(
            &s,
            &values(&x),
            &values(&weight),
            &values(&dy),
            node_x.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor(dx, x.layout().shape().clone()));
        }
        if let Some(node) = node_weight {
            grads.register::<Flex>(node.id, tensor(dw, weight.layout().shape().clone()));
        }
        if let Some(node) = node_bias {
            grads.register::<Flex>(node.id, tensor(db, [s.out_channels]));
        }
    }
}

impl<C: CheckpointStrategy> ConvGemm for Autodiff<Flex, C> {
    fn conv2d_valid(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [x.node(), weight.node(), bias.node()];
        let (x, weight, bias) = (
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
        );
        let y = Flex::conv2d_valid(x.clone(), weight.clone(), bias);
        match ConvGemmBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((x, weight), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

/// `conv2d_valid` on high-level tensors.
pub fn conv2d_valid(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(burn::backend::Dispatch::conv2d_valid(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// burn's convolution and this one, on the same random input, weights and output
    /// gradient: the outputs and the three gradients must agree.
    fn compare(s: ConvShape) {
        let device = Device::flex().autodiff();
        device.seed(7);
        let dims = [s.batch, s.channels, s.height, s.width];
        let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let w = Tensor::<4>::random(
            [s.out_channels, s.channels, s.kernel, s.kernel],
            Distribution::Normal(0.0, 0.3),
            &device,
        );
        let b = Tensor::<1>::random([s.out_channels], Distribution::Normal(0.0, 1.0), &device);
        let r = Tensor::<4>::random(s.out_dims(), Distribution::Normal(0.0, 1.0), &device);
        let run = |ours: bool| {
            let (x, w, b) = (
                x.clone().require_grad(),
                w.clone().require_grad(),
                b.clone().require_grad(),
            );
            let y = if ours {
                conv2d_valid(x.clone(), w.clone(), b.clone())
            } else {
                let options = burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
                burn::tensor::module::conv2d(x.clone(), w.clone(), Some(b.clone()), options)
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            let g = |t: &Tensor<4>| t.grad(&grads).unwrap().into_data();
            (
                y.into_data(),
                g(&x),
                g(&w),
                b.grad(&grads).unwrap().into_data(),
            )
        };
        let (ours, burns) = (run(true), run(false));
        let tol = burn::tensor::Tolerance::<f32>::absolute(1e-3);
        ours.0.assert_approx_eq(&burns.0, tol);
        ours.1.assert_approx_eq(&burns.1, tol);
        ours.2.assert_approx_eq(&burns.2, tol);
        ours.3.assert_approx_eq(&burns.3, tol);
    }

    #[test]
    fn matches_burns_convolution_and_gradients() {
        // The CNN's two layers, an odd batch, and a non-square image.
        for (batch, channels, height, width, out_channels, kernel) in [
            (4, 3, 32, 32, 6, 5),
            (3, 6, 14, 14, 16, 5),
            (1, 2, 7, 9, 3, 3),
        ] {
            compare(ConvShape {
                batch,
                channels,
                height,
                width,
                out_channels,
                kernel,
            });
        }
    }

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
        let c: Vec<f32> = (0..s.patch() * s.pixels())
            .map(|i| (i as f32 * 0.11).cos())
            .collect();
        let mut col = vec![0.0; c.len()];
        im2col(&s, &x, &mut col);
        let mut img = vec![1.0; x.len()];
        col2im(&s, &c, &mut img);
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
        assert!((dot(&col, &c) - dot(&x, &img)).abs() < 1e-3);
    }
}
