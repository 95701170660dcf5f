//! Image models: the network, its weights and the pixels it expects.
//!
//! # Layout
//! - [`efficientnet`]: EfficientNet-Lite0, ImageNet-1k classification, on
//!   candle convolutions with batch norm folded in at load.
//! - [`depthwise`]: the depthwise convolution, by hand (candle runs a grouped
//!   convolution as one convolution per channel).
//! - [`preprocess`]: an encoded photo to the normalised 224 × 224 tensor.

pub mod depthwise;
pub mod efficientnet;
pub mod preprocess;
