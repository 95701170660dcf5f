//! From an uploaded photo (PNG or JPEG) to the crop an image model reads,
//! done once, at the gateway.
//!
//! Why at the gateway: a broken image must be refused with a 422 before it is
//! queued, and only a full decode tells (a truncated JPEG has a valid
//! header); once decoded, resizing is cheap next to decoding, and what then
//! travels is a fixed [`ImageCrop`] of 224 × 224 RGB bytes (147 KiB) however
//! large the upload was, so a batch of images stays under the NATS server's
//! `max_payload` whatever the photos, and the worker spends its cores on the
//! network only.
//!
//! The crop is what EfficientNet-Lite0's reference implementation
//! (`efficientnet-lite-pytorch` with torchvision's `Resize(224)` and
//! `CenterCrop(224)`) feeds its network before normalising: the shorter side
//! resized to 224 (bilinear, antialiased when shrinking, the longer side
//! truncated to keep the aspect ratio), then the centre 224 × 224 (offsets
//! rounded half to even, as Python's `round`). The worker normalises it.

use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

/// Side of the square crop every image model reads.
pub const CROP_SIDE: u32 = 224;

/// Longest side of an image that is decoded at all. A photo is shrunk to 224
/// anyway, and a few kilobytes of PNG can declare a canvas of gigapixels: the
/// header is checked before a single pixel is allocated.
pub const MAX_SIDE: u32 = 8192;

/// Longest side, in multiples of the shorter, kept before resizing; see [`prepare`].
const MAX_ASPECT: u32 = 4;

/// Most the decoder may allocate for one image (an RGBA 8192 × 8192 is 256 MiB).
const MAX_ALLOC: u64 = 256 << 20;

/// A photo as it travels in a task batch: `side × side` RGB pixels, row by
/// row, 8 bits a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageCrop {
    /// Width and height in pixels ([`CROP_SIDE`] from the gateway).
    pub side: u32,
    /// `3 × side × side` bytes, `R G B` per pixel.
    #[serde(with = "serde_bytes")]
    pub rgb: Vec<u8>,
}

impl ImageCrop {
    /// Is this what [`prepare`] makes: a [`CROP_SIDE`] square with every
    /// pixel's three bytes? A hand-made batch may carry anything.
    pub fn is_well_formed(&self) -> bool {
        self.side == CROP_SIDE && self.rgb.len() == 3 * (CROP_SIDE * CROP_SIDE) as usize
    }
}

/// Why a payload is not an image a model can take.
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

/// The PNG and JPEG files directly in `dir` (by extension, case-insensitive),
/// sorted: the photos `worker bench --images` and `loadgen --images` read.
pub fn photo_files(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Decode `bytes`, resize the shorter side to [`CROP_SIDE`] and cut out the centre.
pub fn prepare(bytes: &[u8]) -> Result<ImageCrop, ImageError> {
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
    // The shorter side becomes CROP_SIDE, the other keeps the aspect ratio.
    let side = CROP_SIDE;
    let (w, h) = if width <= height {
        (
            side,
            ((height as u64 * side as u64) / width as u64).max(1) as u32,
        )
    } else {
        (
            ((width as u64 * side as u64) / height as u64).max(1) as u32,
            side,
        )
    };
    let resized = image::imageops::resize(&rgb, w, h, FilterType::Triangle);
    let (left, top) = (centre_offset(w - side), centre_offset(h - side));
    let crop = image::imageops::crop_imm(&resized, left, top, side, side).to_image();
    Ok(ImageCrop {
        side,
        rgb: crop.into_raw(),
    })
}

/// Half of `spare` rounded half to even, as torchvision's
/// `int(round(spare / 2))`.
fn centre_offset(spare: u32) -> u32 {
    let half = spare / 2;
    half + (spare % 2 == 1 && half % 2 == 1) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use jetinfer_testsupport::png_header;

    #[test]
    fn centre_offsets_round_half_to_even() {
        // Python: round(0.5) = 0, round(1.5) = 2, round(2.5) = 2, round(3.5) = 4.
        assert_eq!(
            [1, 3, 5, 7, 4].map(centre_offset),
            [0, 2, 2, 4, 2],
            "spare 1, 3, 5, 7, 4"
        );
    }

    #[test]
    fn a_crop_is_well_formed_only_at_its_size() {
        let crop = ImageCrop {
            side: CROP_SIDE,
            rgb: vec![0; 3 * 224 * 224],
        };
        assert!(crop.is_well_formed());
        let short = ImageCrop {
            rgb: vec![0; 10],
            ..crop.clone()
        };
        assert!(!short.is_well_formed());
        let other = ImageCrop { side: 10, ..crop };
        assert!(!other.is_well_formed());
    }

    /// Bytes that are no image are refused with a reason, not a panic.
    #[test]
    fn a_non_image_is_refused() {
        for bytes in [
            &b"not an image"[..],
            &[],
            &[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0],
        ] {
            let refused = prepare(bytes).unwrap_err();
            assert!(refused.to_string().contains("not a decodable"), "{refused}");
        }
    }

    /// A few bytes declaring a canvas of billions of pixels are refused from the
    /// header, before anything is allocated for it; a header of a sane size gets
    /// as far as its (missing) pixels.
    #[test]
    fn a_huge_canvas_is_refused_before_decoding() {
        let refused = prepare(&png_header(60_000, 50_000)).unwrap_err();
        assert!(
            matches!(
                refused,
                ImageError::TooLarge {
                    width: 60_000,
                    height: 50_000
                }
            ),
            "{refused}"
        );
        assert!(
            refused.to_string().contains("at most 8192 on a side"),
            "{refused}"
        );
        let truncated = prepare(&png_header(640, 480)).unwrap_err();
        assert!(
            matches!(truncated, ImageError::Undecodable(_)),
            "{truncated}"
        );
    }

    /// Strips and single pixels are images too: each is cropped to the right
    /// shape and colour (strips beyond 4 : 1 through the centre cut that keeps
    /// their resized copy small).
    #[test]
    fn odd_shapes_are_cropped() {
        for (width, height) in [(1, 1), (1, 8192), (8192, 3), (225, 224), (300, 1200)] {
            let mut png = Vec::new();
            image::RgbImage::from_pixel(width, height, image::Rgb([200, 30, 90]))
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .unwrap();
            let crop = prepare(&png).unwrap();
            assert!(crop.is_well_formed(), "{width} x {height}");
            // A flat colour stays flat.
            assert_eq!(&crop.rgb[..3], [200, 30, 90], "{width} x {height}");
            assert_eq!(&crop.rgb[crop.rgb.len() - 3..], [200, 30, 90]);
        }
    }
}
