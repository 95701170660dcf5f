//! From the crop the gateway prepared ([`jetinfer_shared::image::prepare`]:
//! shorter side resized to 224, centre 224 × 224, RGB bytes) to the tensor
//! EfficientNet-Lite0 was trained on, as its reference implementation
//! (torchvision's `ToTensor`, `Normalize`) finishes it: each channel scaled
//! to [0, 1] and normalised with ImageNet's mean and standard deviation.

use super::efficientnet::IMAGE_SIZE;
use candle_core::{Device, Tensor};
use jetinfer_shared::image::ImageCrop;

/// ImageNet's per-channel mean (RGB, on [0, 1]).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];

/// ImageNet's per-channel standard deviation (RGB, on [0, 1]).
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// `(n, 3, 224, 224)` normalised planes of `crops`, in order. A crop of
/// another size is an error (the worker's admission refuses such batches first).
pub fn batch(crops: &[&ImageCrop], device: &Device) -> candle_core::Result<Tensor> {
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    let mut flat = vec![0f32; crops.len() * 3 * plane];
    for (crop, out) in crops.iter().zip(flat.chunks_exact_mut(3 * plane)) {
        if crop.side as usize != IMAGE_SIZE || crop.rgb.len() != 3 * plane {
            candle_core::bail!(
                "an image crop of side {} and {} bytes; the model reads {IMAGE_SIZE} x {IMAGE_SIZE} RGB",
                crop.side,
                crop.rgb.len()
            );
        }
        for (at, pixel) in crop.rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + at] = (pixel[c] as f32 / 255.0 - MEAN[c]) / STD[c];
            }
        }
    }
    Tensor::from_vec(flat, (crops.len(), 3, IMAGE_SIZE, IMAGE_SIZE), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each channel is scaled to [0, 1] and normalised with ImageNet's mean
    /// and standard deviation, into its own plane.
    #[test]
    fn a_flat_colour_is_normalised_per_plane() {
        let side = IMAGE_SIZE as u32;
        let crop = ImageCrop {
            side,
            rgb: [200u8, 30, 90].repeat(IMAGE_SIZE * IMAGE_SIZE),
        };
        let x = batch(&[&crop, &crop], &Device::Cpu).unwrap();
        assert_eq!(x.dims(), [2, 3, IMAGE_SIZE, IMAGE_SIZE]);
        let planes = x.get(1).unwrap().flatten_from(1).unwrap();
        let planes = planes.to_vec2::<f32>().unwrap();
        for (c, value) in [200.0f32, 30.0, 90.0].into_iter().enumerate() {
            let want = (value / 255.0 - MEAN[c]) / STD[c];
            assert!(
                planes[c].iter().all(|v| (v - want).abs() < 1e-6),
                "channel {c}"
            );
        }
        let wrong = ImageCrop { side: 10, ..crop };
        assert!(batch(&[&wrong], &Device::Cpu).is_err());
    }
}
