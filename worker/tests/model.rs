//! The real all-MiniLM-L6-v2 through both backends (the fast one we serve
//! with and the candle `BertModel` baseline): real numbers, batched or alone.

use jetinfer_testsupport::model_dir;
use jetinfer_worker::backend::fast::FastBert;
use jetinfer_worker::backend::gemm::{Kernels, Weights};
use jetinfer_worker::backend::{self, Embedder, Kind};

const EXAMPLE: &str = "This is an example sentence";
/// sentence-transformers 6.2 `encode(..., normalize_embeddings=True)`, first five values.
const EXAMPLE_REF: [f32; 5] = [0.0677, 0.0635, 0.0487, 0.0793, 0.0374];

const KINDS: [Kind; 2] = [Kind::Fast, Kind::Candle];

fn load(kind: Kind) -> Box<dyn Embedder> {
    backend::load(kind, &model_dir()).expect("load the real model")
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn assert_close(got: &[f32], want: &[f32]) {
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() <= 1e-3,
            "got {:?}, want {:?}",
            &got[..want.len()],
            want
        );
    }
}

#[test]
fn matches_sentence_transformers_alone_and_padded_in_a_batch() {
    for kind in KINDS {
        matches_alone_and_batched(&*load(kind));
    }
}

fn matches_alone_and_batched(model: &dyn Embedder) {
    let alone = model.embed(&[EXAMPLE]).unwrap().remove(0);
    assert_eq!(alone.len(), 384);
    assert_close(&alone, &EXAMPLE_REF);
    let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "not normalised: {norm}");

    // The same sentence padded next to longer ones must not move.
    let long = "A much longer sentence that forces every shorter input in this batch to be padded with many tokens.";
    let batch = model.embed(&[long, EXAMPLE, "short", long]).unwrap();
    assert_close(&batch[1], &EXAMPLE_REF);
    assert!(cosine(&batch[1], &alone) >= 0.9999);
    let short_alone = model.embed(&["short"]).unwrap().remove(0);
    assert!(cosine(&batch[2], &short_alone) >= 0.9999);
    assert!(cosine(&batch[0], &batch[3]) >= 0.9999);
}

#[test]
fn truncates_at_256_tokens_like_sentence_transformers() {
    let long: Vec<String> = (0..400).map(|i| format!("word{i}")).collect();
    let long = long.join(" ");
    for kind in KINDS {
        let got = load(kind).embed(&[long.as_str()]).unwrap().remove(0);
        // sentence-transformers 6.2 on the same 400-word text (truncated to 256 tokens).
        assert_close(&got, &[0.0030, -0.0704, -0.0508, -0.0239, 0.0183]);
    }
}

#[test]
fn similar_sentences_score_higher() {
    for kind in KINDS {
        let e = load(kind)
            .embed(&[
                "A man is eating food.",
                "A man is eating pasta.",
                "A cheetah runs.",
            ])
            .unwrap();
        assert!(cosine(&e[0], &e[1]) > 0.6, "{kind:?}");
        assert!(cosine(&e[0], &e[2]) < 0.3, "{kind:?}");
    }
}

/// Every kernel path this CPU runs (AVX-512F, AVX2+FMA, portable).
fn paths() -> Vec<Kernels> {
    [Kernels::Avx512, Kernels::Avx2, Kernels::Portable]
        .into_iter()
        .filter(|k| k.resolve().is_ok())
        .collect()
}

/// The fast backend changes the arithmetic's order, never the answer: on
/// every kernel path and weight format (f16 weights included: cosine
/// ≥ 0.9999 holds for them too), every text of batches of 1, 3, 17 and 33 texts of
/// uneven lengths (partial micro-tiles in every layer), and of one long
/// mixed batch, matches the baseline.
#[test]
fn every_kernel_path_agrees_with_the_baseline() {
    let baseline = load(Kind::Candle);
    let mut texts = jetinfer_shared::corpus::builtin();
    texts.truncate(54);
    texts[5] = "short".into();
    texts[20] = "x".repeat(3000); // truncated at 256 tokens
    texts[40] = format!("{} {}", texts[40], texts[41]);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = baseline.embed(&refs).unwrap();
    let formats = [Weights::F32, Weights::F16];
    for (kernels, weights) in paths().into_iter().flat_map(|k| formats.map(|w| (k, w))) {
        let fast = FastBert::load(&model_dir(), kernels, weights).unwrap();
        // Consecutive windows: 1 + 3 + 17 + 33 = all 54 texts.
        let mut start = 0;
        for size in [1, 3, 17, 33] {
            let got = fast.embed(&refs[start..start + size]).unwrap();
            for (i, g) in got.iter().enumerate() {
                let c = cosine(g, &want[start + i]);
                assert!(
                    c >= 0.9999,
                    "{kernels:?} {weights:?}, batch {size}, text {}: cosine {c}",
                    start + i
                );
            }
            start += size;
        }
        let got = fast.embed(&refs).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let c = cosine(g, w);
            assert!(
                c >= 0.9999,
                "{kernels:?} {weights:?}, all {} texts, text {i}: cosine {c}",
                refs.len()
            );
        }
    }
}

#[test]
fn forcing_kernels_the_cpu_lacks_is_a_clear_error() {
    assert!(paths().contains(&Kernels::Portable));
    for kernels in [Kernels::Avx512, Kernels::Avx2] {
        if kernels.resolve().is_err() {
            let err = FastBert::load(&model_dir(), kernels, Weights::F32)
                .err()
                .expect("must fail");
            assert!(err.to_string().contains("this CPU lacks"), "{err}");
        }
    }
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    for kind in KINDS {
        let err = backend::load(kind, std::path::Path::new("/nonexistent"))
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
