//! The seed's CNN: conv 3→6 5×5, ReLU, max-pool 2, conv 6→16 5×5, ReLU, max-pool 2,
//! linear 400→l1, ReLU, linear l1→l2, ReLU, linear l2→10.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

use crate::cpu;

#[derive(Module, Debug)]
pub struct Net {
    conv1: Conv2d,
    pool: MaxPool2d,
    conv2: Conv2d,
    fc1: Linear,
    fc2: Linear,
    fc3: Linear,
}

impl Net {
    pub fn new(l1: usize, l2: usize, device: &Device) -> Self {
        Net {
            conv1: Conv2dConfig::new([3, 6], [5, 5]).init(device),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            conv2: Conv2dConfig::new([6, 16], [5, 5]).init(device),
            fc1: LinearConfig::new(16 * 5 * 5, l1).init(device),
            fc2: LinearConfig::new(l1, l2).init(device),
            fc3: LinearConfig::new(l2, 10).init(device),
        }
    }

    /// Logits `[batch, 10]` of images `[batch, 3, 32, 32]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.conv_relu_pool(&self.conv1, x);
        let x = self.conv_relu_pool(&self.conv2, x);
        let x: Tensor<2> = x.flatten(1, 3);
        let x = relu(self.fc1.forward(x));
        let x = relu(self.fc2.forward(x));
        self.fc3.forward(x)
    }

    /// Convolution, ReLU, max-pool: on the CPU by the kernels of [`crate::cpu`] (same
    /// parameters, same results, several times faster to train), else by burn's.
    fn conv_relu_pool(&self, conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
        let on_cpu = matches!(
            x.device().as_dispatch().clone().inner(),
            burn::backend::DispatchDevice::Flex(_)
        );
        // The kernels do valid, stride-1 convolutions: the model's, as built in `new`.
        let plain = conv.stride == [1, 1]
            && conv.dilation == [1, 1]
            && conv.groups == 1
            && matches!(conv.padding, PaddingConfig2d::Valid);
        match &conv.bias {
            Some(bias) if on_cpu && plain => {
                cpu::relu_max_pool2(cpu::conv2d_valid(x, conv.weight.val(), bias.val()))
            }
            _ => self.pool.forward(relu(conv.forward(x))),
        }
    }
}
