//! CPU kernels for the CNN's convolutions and ReLU + max-pools, wired into burn as a
//! backend extension with handwritten backward passes.
//!
//! Why: burn's CPU backend (flex, 0.22) has no weight-gradient kernel for convolutions:
//! it runs the gradient as a forward convolution with batch and channels swapped, a
//! direct loop with the batch as input channels and the output gradient as a 28×28
//! kernel, which was most of a small batch's training time; and its max-pool with
//! indices was a fifth of a batch of 16 (docs/ARCHITECTURE.md, "Where burn's time
//! goes"). The kernels are in [`conv`] and [`pool`] (plain slices); this module only
//! moves tensors in and out and records the backward steps. On other devices (CUDA)
//! the model runs burn's own layers.

pub mod conv;
pub mod pool;

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::{base::Checkpointer, strategy::CheckpointStrategy};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{backend_extension, Autodiff, Backend, Dispatch, Flex};
use burn::prelude::*;

use conv::ConvShape;

/// The operations, on the flex backend with and without autodiff. Called on another
/// backend they panic: the model calls them only on the CPU (`model.rs`).
#[backend_extension(Flex, Autodiff)]
pub trait CnnOps: Backend {
    /// Valid (unpadded), stride-1 convolution of `x` `[n, c, h, w]` by `weight`
    /// `[o, c, k, k]` plus `bias` `[o]`.
    fn conv2d_valid(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self>;

    /// ReLU then 2×2 max-pool with stride 2 of `x` `[n, c, h, w]`.
    fn relu_max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// [`CnnOps::conv2d_valid`] on high-level tensors.
pub fn conv2d_valid(x: Tensor<4>, weight: Tensor<4>, bias: Tensor<1>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::conv2d_valid(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
    ))
}

/// [`CnnOps::relu_max_pool2`] on high-level tensors.
pub fn relu_max_pool2(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::relu_max_pool2(x.into_dispatch()))
}

fn conv_shape(x: &FlexTensor, weight: &FlexTensor) -> ConvShape {
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

/// The tensor's values as one contiguous `f32` slice (copied only when strided).
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    assert_eq!(
        t.dtype(),
        burn::tensor::DType::F32,
        "the CPU kernels take f32 tensors"
    );
    match t.as_slice::<f32>() {
        Some(v) => v.into(),
        None => t.to_contiguous().as_slice::<f32>().unwrap().to_vec().into(),
    }
}

fn tensor(values: Vec<f32>, dims: impl Into<burn::tensor::Shape>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, dims))
}

/// `[planes, h, w]` of an `[n, c, h, w]` tensor.
fn planes(x: &FlexTensor) -> [usize; 3] {
    let s = x.layout().shape();
    assert_eq!(
        s.num_dims(),
        4,
        "relu_max_pool2: input must be [n, c, h, w]"
    );
    [s[0] * s[1], s[2], s[3]]
}

/// The convolution on Flex.
fn conv_forward(x: &FlexTensor, weight: &FlexTensor, bias: &FlexTensor) -> FlexTensor {
    let s = conv_shape(x, weight);
    let y = conv::forward(&s, &values(x), &values(weight), &values(bias));
    tensor(y, s.out_dims())
}

fn pool_forward(x: &FlexTensor) -> (FlexTensor, Vec<u8>) {
    let [p, h, w] = planes(x);
    let (y, from) = pool::forward(p, h, w, &values(x));
    let s = x.layout().shape();
    (tensor(y, [s[0], s[1], h / 2, w / 2]), from)
}

impl CnnOps for Flex {
    fn conv2d_valid(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        conv_forward(&x, &weight, &bias)
    }

    fn relu_max_pool2(x: FlexTensor) -> FlexTensor {
        pool_forward(&x).0
    }
}

/// The convolution's backward step.
#[derive(Debug)]
struct ConvBackward;

#[derive(Clone, Debug)]
struct ConvState {
    shape: ConvShape,
    x: FlexTensor,
    weight: FlexTensor,
}

impl Backward<Flex, 3> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        let ConvState {
            shape: s,
            x,
            weight,
        } = ops.state;
        let (dw, db, dx) = conv::backward(
            &s,
            &values(&x),
            &values(&weight),
            &values(&dy),
            node_x.is_some(),
        );
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(
                node.id,
                tensor(dx, [s.batch, s.channels, s.height, s.width]),
            );
        }
        if let Some(node) = node_weight {
            grads.register::<Flex>(node.id, tensor(dw, weight.layout().shape().clone()));
        }
        if let Some(node) = node_bias {
            grads.register::<Flex>(node.id, tensor(db, [s.out_channels]));
        }
    }
}

/// The pool's backward step.
#[derive(Debug)]
struct PoolBackward;

#[derive(Clone, Debug)]
struct PoolState {
    /// The input's `[n, c, h, w]`.
    dims: [usize; 4],
    /// Which input of each window won (see [`pool::forward`]).
    from: Arc<Vec<u8>>,
}

impl Backward<Flex, 1> for PoolBackward {
    type State = PoolState;

    fn backward(self, ops: Ops<PoolState, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            let [n, c, h, w] = ops.state.dims;
            let dx = pool::backward(n * c, h, w, &ops.state.from, &values(&dy));
            grads.register::<Flex>(node.id, tensor(dx, ops.state.dims));
        }
    }
}

impl<C: CheckpointStrategy> CnnOps for Autodiff<Flex, C> {
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
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = conv_forward(&x, &weight, &bias);
                let shape = conv_shape(&x, &weight);
                prep.finish(ConvState { shape, x, weight }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(conv_forward(&x, &weight, &bias)),
        }
    }

    fn relu_max_pool2(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let nodes = [x.node()];
        let x = x.into_primitive();
        let (y, from) = pool_forward(&x);
        match PoolBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let s = x.layout().shape();
                let dims = [s[0], s[1], s[2], s[3]];
                let from = Arc::new(from);
                prep.finish(PoolState { dims, from }, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, Tolerance};

    fn random<const D: usize>(dims: [usize; D], std: f64, device: &Device) -> Tensor<D> {
        Tensor::random(dims, Distribution::Normal(0.0, std), device)
    }

    /// The same layers by burn's own operations.
    fn reference(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
        let options = burn::tensor::ops::ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
        let y = burn::tensor::module::conv2d(x, w, Some(b), options);
        let pool = burn::nn::pool::MaxPool2dConfig::new([2, 2]).init();
        pool.forward(burn::tensor::activation::relu(y))
    }

    /// burn's operations and these, on the same random input, parameters and output
    /// gradient: the outputs and every gradient must agree.
    fn compare(s: ConvShape) {
        let device = Device::flex().autodiff();
        device.seed(7);
        let x = random([s.batch, s.channels, s.height, s.width], 1.0, &device);
        let w = random(
            [s.out_channels, s.channels, s.kernel, s.kernel],
            0.3,
            &device,
        );
        let b = random([s.out_channels], 1.0, &device);
        let [n, o, oh, ow] = s.out_dims();
        let r = random([n, o, oh / 2, ow / 2], 1.0, &device);
        let run = |ours: bool| {
            let (x, w, b) = (
                x.clone().require_grad(),
                w.clone().require_grad(),
                b.clone().require_grad(),
            );
            let y = if ours {
                relu_max_pool2(conv2d_valid(x.clone(), w.clone(), b.clone()))
            } else {
                reference(x.clone(), w.clone(), b.clone())
            };
            let grads = (y.clone() * r.clone()).sum().backward();
            let g = |t: &Tensor<4>| t.grad(&grads).unwrap().into_data();
            let db = b.grad(&grads).unwrap().into_data();
            [y.into_data(), g(&x), g(&w), db]
        };
        let tol = Tolerance::<f32>::absolute(1e-3);
        for (ours, burns) in run(true).iter().zip(&run(false)) {
            ours.assert_approx_eq(burns, tol);
        }
    }

    #[test]
    fn match_burns_operations_and_gradients() {
        // The CNN's two layers, an odd batch, and a non-square image with an odd width.
        for (batch, channels, height, width, out_channels, kernel) in [
            (4, 3, 32, 32, 6, 5),
            (3, 6, 14, 14, 16, 5),
            (1, 2, 7, 10, 3, 3),
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
    fn without_autodiff_give_the_same_outputs() {
        let device = Device::flex();
        let x = random([2, 3, 12, 12], 1.0, &device);
        let w = random([4, 3, 5, 5], 0.3, &device);
        let b = random([4], 1.0, &device);
        let ours = relu_max_pool2(conv2d_valid(x.clone(), w.clone(), b.clone()));
        let want = reference(x, w, b).into_data();
        ours.into_data()
            .assert_approx_eq(&want, Tolerance::<f32>::absolute(1e-4));
    }
}
