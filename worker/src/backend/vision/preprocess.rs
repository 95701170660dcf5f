//! From an encoded photo (PNG or JPEG) to the tensor EfficientNet-Lite0 was
//! trained on, as its reference implementation (`efficientnet-lite-pytorch`,
//! torchvision's `Resize(224)`, `CenterCrop(224)`, `ToTensor`, `Normalize`)
//! prepares it: the shorter side resized to 224 (bilinear, antialiased when
//! shrinking, the longer side truncated to keep the aspect ratio), the centre
//! 224 × 224 cropped (offsets rounded half to even, as Python's `round`), RGB
//! scaled to [0, 1] and normalised with ImageNet's per-channel mean and
//! standard deviation.

use super::efficientnet::IMAGE_SIZE;
use candle_core::{Device, Tensor};
use image::imageops::FilterType;

/// The shorter side after resizing, before the centre crop.
const RESIZE: u32 = IMAGE_SIZE as u32;

/// ImageNet's per-channel mean (RGB, on [0, 1]).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// ImageNet's per-channel standard deviation (RGB, on [0, 1]).
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Longest side of an image that is decoded at all. A photo is shrunk to 224
/// anyway, and a few kilobytes of PNG can declare a canvas of gigapixels: the
/// header is checked before a single pixel is allocated.
pub const MAX_SIDE: u32 = 8192;

/// Longest side, in multiples of the shorter, kept before resizing; see [`pixels`].
const MAX_ASPECT: u32 = 4;

/// Most the decoder may allocate for one image (an RGBA 8192 × 8192 is 256 MiB).
const MAX_ALLOC: u64 = 256 << 20;

/// Why a payload is not an image the model can take.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not a PNG or JPEG, or a broken one.
    #[error("not a decodable PNG or JPEG image: {0}")]
    Undecodable(String),
    /// Wider or taller than [`MAX_SIDE`] (refused from its header, before
    /// decoding), or needing more than 256 MiB to decode.
    #[error("the image is {width} x {height} pixels; at most {MAX_SIDE} on a side (and 256 MiB decoded)")]
    TooLarge {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
    /// Decoded, but with a side of zero pixels.
    #[error("the image is empty ({width} x {height} pixels)")]
    Empty {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
    },
}

/// Decode `bytes`, resize, crop and normalise: `3 × 224 × 224` values, RGB
/// planes in that order.
pub fn pixels(bytes: &[u8]) -> Result<Vec<f32>, ImageError> {
    use image::ImageDecoder;
    let undecodable = |e: image::ImageError| ImageError::Undecodable(e.to_string());
    // The header once: its size is judged before the decoder may allocate.
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Undecodable(e.to_string()))?;
    reader.no_limits();
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(ImageError::TooLarge { width, height });
    }
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    let too_large = |e| match e {
        image::ImageError::Limits(_) => ImageError::TooLarge { width, height },
        e => undecodable(e),
    };
    decoder.set_limits(limits).map_err(too_large)?;
    let rgb = image::DynamicImage::from_decoder(decoder)
        .map_err(too_large)?
        .into_rgb8();
    // Only the centre survives the crop: a strip of extreme aspect (1 × 8192)
    // is first cut to its central MAX_ASPECT : 1, or its resized copy would
    // run to millions of pixels on the long side.
    let (kept_w, kept_h) = (
        width.min(MAX_ASPECT * height),
        height.min(MAX_ASPECT * width),
    );
    let (rgb, width, height) = if (kept_w, kept_h) == (width, height) {
        (rgb, width, height)
    } else {
        let (x, y) = ((width - kept_w) / 2, (height - kept_h) / 2);
        let cut = image::imageops::crop_imm(&rgb, x, y, kept_w, kept_h).to_image();
        (cut, kept_w, kept_h)
    };
    // The shorter side becomes RESIZE, the other keeps the aspect ratio.
    let (w, h) = if width <= height {
        (
            RESIZE,
            ((height as u64 * RESIZE as u64) / width as u64).max(1) as u32,
        )
    } else {
        (
            ((width as u64 * RESIZE as u64) / height as u64).max(1) as u32,
            RESIZE,
        )
    };
    let resized = image::imageops::resize(&rgb, w, h, FilterType::Triangle);
    let side = IMAGE_SIZE as u32;
    let (left, top) = (centre_offset(w - side), centre_offset(h - side));
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    let mut out = vec![0f32; 3 * plane];
    for y in 0..side {
        for x in 0..side {
            let pixel = resized.get_pixel(left + x, top + y).0;
            let at = (y * side + x) as usize;
            for c in 0..3 {
                out[c * plane + at] = (pixel[c] as f32 / 255.0 - MEAN[c]) / STD[c];
            }
        }
    }
    Ok(out)
}

/// Half of `spare` rounded half to even, as torchvision's
/// `int(round(spare / 2))`.
fn centre_offset(spare: u32) -> u32 {
    let half = spare / 2;
    half + (spare % 2 == 1 && half % 2 == 1) as u32
}

/// A batch of preprocessed images as the `(n, 3, 224, 224)` tensor the network takes.
pub fn batch(images: &[Vec<f32>], device: &Device) -> candle_core::Result<Tensor> {
    let flat: Vec<f32> = images.iter().flatten().copied().collect();
    Tensor::from_vec(flat, (images.len(), 3, IMAGE_SIZE, IMAGE_SIZE), device)
}
