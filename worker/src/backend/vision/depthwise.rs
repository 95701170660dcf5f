//! Depthwise convolution (one `k × k` filter per channel) with the folded
//! batch-norm bias and ReLU6 applied on the way out.
//!
//! candle runs a grouped convolution as one convolution per group, which for
//! EfficientNet's 32–1152 channels means as many tiny convolutions and
//! concatenations per layer. A depthwise layer is a few multiply-adds per
//! output, so a direct loop over each (image, channel) plane, the planes
//! spread over the rayon pool, is both simpler and faster.

use candle_core::{Result, Tensor};
use rayon::prelude::*;

/// TensorFlow's "same" padding along one axis: the output has
/// `ceil(input / stride)` positions and the padding that takes, when odd,
/// puts its extra row or column after (bottom, right), not before.
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// A depthwise layer's filters, as loaded.
pub struct Depthwise {
    /// `channels × kernel × kernel`, batch norm folded in.
    weight: Vec<f32>,
    /// One bias per channel (the batch norm's shift).
    bias: Vec<f32>,
    kernel: usize,
    stride: usize,
}

impl Depthwise {
    /// Filters of shape `(channels, 1, kernel, kernel)` and their biases.
    pub fn new(weight: &Tensor, bias: &Tensor, stride: usize) -> Result<Self> {
        let (channels, one, kernel, kernel_w) = weight.dims4()?;
        if one != 1 || kernel != kernel_w || bias.dims1()? != channels {
            candle_core::bail!(
                "depthwise filters {:?} with bias {:?}",
                weight.shape(),
                bias.shape()
            );
        }
        Ok(Self {
            weight: weight.flatten_all()?.to_vec1()?,
            bias: bias.to_vec1()?,
            kernel,
            stride,
        })
    }

    /// `relu6(depthwise(x) + bias)` for `x` of shape `(n, channels, h, w)`,
    /// with TensorFlow "same" padding.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, channels, h, w) = x.dims4()?;
        if channels != self.bias.len() {
            candle_core::bail!(
                "depthwise layer of {} channels given {channels}",
                self.bias.len()
            );
        }
        let (k, s) = (self.kernel, self.stride);
        let (top, _) = same_padding(h, k, s);
        let (left, _) = same_padding(w, k, s);
        let (oh, ow) = (h.div_ceil(s), w.div_ceil(s));
        let input = x.flatten_all()?.to_vec1::<f32>()?;
        let mut out = vec![0f32; n * channels * oh * ow];
        // Per tap, the output columns whose input column is inside the image
        // (the same for every plane): the loops below then run without a
        // bounds test, and at stride 1 over contiguous rows the compiler vectorises.
        let columns: Vec<(usize, usize)> = (0..k)
            .map(|kx| {
                let lo = left.saturating_sub(kx).div_ceil(s);
                let hi = (w + left)
                    .checked_sub(kx + 1)
                    .map_or(0, |last| last / s + 1)
                    .min(ow);
                (lo, hi.max(lo))
            })
            .collect();
        out.par_chunks_mut(oh * ow)
            .zip(input.par_chunks(h * w))
            .enumerate()
            .for_each(|(plane, (out, input))| {
                let c = plane % channels;
                let filter = &self.weight[c * k * k..(c + 1) * k * k];
                for (oy, row) in out.chunks_exact_mut(ow).enumerate() {
                    row.fill(self.bias[c]);
                    for ky in 0..k {
                        let Some(iy) = (oy * s + ky).checked_sub(top).filter(|&y| y < h) else {
                            continue;
                        };
                        let input = &input[iy * w..(iy + 1) * w];
                        for (kx, &(lo, hi)) in columns.iter().enumerate() {
                            if lo == hi {
                                continue; // this tap falls outside the image for every column
                            }
                            let tap = filter[ky * k + kx];
                            let first = lo * s + kx - left;
                            if s == 1 {
                                for (o, i) in row[lo..hi].iter_mut().zip(&input[first..]) {
                                    *o += tap * i;
                                }
                            } else {
                                for (o, i) in
                                    row[lo..hi].iter_mut().zip(input[first..].iter().step_by(s))
                                {
                                    *o += tap * i;
                                }
                            }
                        }
                    }
                    for o in row {
                        *o = o.clamp(0.0, 6.0);
                    }
                }
            });
        Tensor::from_vec(out, (n, channels, oh, ow), x.device())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        assert_eq!(same_padding(224, 3, 2), (0, 1));
        assert_eq!(same_padding(56, 5, 2), (1, 2));
        assert_eq!(same_padding(14, 5, 1), (2, 2));
        assert_eq!(same_padding(7, 3, 1), (1, 1));
    }

    /// Against candle's own grouped convolution on explicitly padded input.
    #[test]
    fn matches_a_grouped_convolution() -> Result<()> {
        let dev = Device::Cpu;
        for (h, w, k, s) in [
            (9, 7, 3, 1),
            (10, 11, 5, 2),
            (8, 8, 3, 2),
            (1, 2, 5, 1),
            (3, 1, 5, 2),
            (2, 3, 3, 2),
        ] {
            let channels = 5;
            let x = Tensor::randn(0f32, 1.0, (2, channels, h, w), &dev)?;
            let weight = Tensor::randn(0f32, 1.0, (channels, 1, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, channels, &dev)?;
            let got = Depthwise::new(&weight, &bias, s)?.forward(&x)?;
            let (top, bottom) = same_padding(h, k, s);
            let (left, right) = same_padding(w, k, s);
            let padded = x
                .pad_with_zeros(2, top, bottom)?
                .pad_with_zeros(3, left, right)?;
            let want = padded
                .conv2d(&weight, 0, s, 1, channels)?
                .broadcast_add(&bias.reshape((1, channels, 1, 1))?)?
                .clamp(0f32, 6f32)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-4, "{h}x{w} k{k} s{s}: max difference {diff}");
        }
        Ok(())
    }
}
