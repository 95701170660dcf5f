//! The real all-MiniLM-L6-v2 through both backends (the fast one we serve
//! with and the candle `BertModel` baseline): real numbers, batched or alone.

use jetinfer_testsupport::model_dir;
use jetinfer_worker::backend::{self, Embedder, Kind};

const EXAMPLE: &str = "This is an example sentence";
/// sentence-transformers 6.2 `encode(..., normalize_embeddings=True)`, first five values.
const EXAMPLE_REF: [f32; 5] = [0.0677, 0.0635, 0.0487, 0.0793, 0.0374];

const KINDS: [Kind; 2] = [Kind::Fast, Kind::Candle];

fn load(kind: Kind) -> Box<dyn Embedder> {
    backend::load(kind, &model_dir(), "all-MiniLM-L6-v2".into()).expect("load the real model")
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

/// The fast backend changes the arithmetic's order, never the answer: every
/// text of a mixed-length batch matches the baseline, batched or alone.
#[test]
fn fast_backend_agrees_with_the_baseline() {
    let fast = load(Kind::Fast);
    let baseline = load(Kind::Candle);
    let mut texts = jetinfer_shared::corpus::builtin();
    texts.truncate(96);
    texts.push("short".into());
    texts.push("x".repeat(3000)); // truncated at 256 tokens
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let got = fast.embed(&refs).unwrap();
    let want = baseline.embed(&refs).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let c = cosine(g, w);
        assert!(c >= 0.9999, "text {i}: cosine {c}");
    }
    for i in [0, 50, 96, 97] {
        let alone = fast.embed(&refs[i..=i]).unwrap().remove(0);
        assert!(cosine(&alone, &want[i]) >= 0.9999, "text {i} alone");
    }
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    for kind in KINDS {
        let err = backend::load(kind, std::path::Path::new("/nonexistent"), "x".into())
            .err()
            .expect("must fail");
        assert!(err.to_string().contains("config.json"), "{err}");
    }
}
