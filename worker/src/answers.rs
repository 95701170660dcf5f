//! From a batch of requests to their answers, in one forward pass.
//!
//! Every text a batch needs (inputs, similarity candidates, classification
//! labels) is embedded in a single call; the task-specific part is cheap
//! vector maths on normalised embeddings, done here, away from the model.
//! A batch of images is one pass of the image model, answered with its
//! likeliest classes.

use crate::backend::{thread::BackendThread, BackendError};
use crate::models::Choice;
use jetinfer_shared::protocol::{
    BatchItem, ImageCrop, ItemOutcome, ScoredCandidate, Task, TaskInput, TaskOutput,
};

/// Dot product; equals cosine similarity for L2-normalised vectors. f32
/// rounding can carry it just past ±1 (a text with itself scored
/// 1.0000004), so it is clamped to the documented [-1, 1].
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    dot.clamp(-1.0, 1.0)
}

/// Softmax of `cos / temperature`: turns similarities into probabilities.
fn softmax(scores: &[f32], temperature: f32) -> Vec<f32> {
    let scaled: Vec<f32> = scores.iter().map(|s| s / temperature).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = scaled.iter().map(|s| (s - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// Build one request's output from the embeddings of its texts (main text first).
fn answer(input: &TaskInput, embeddings: &[Vec<f32>], temperature: f32) -> TaskOutput {
    if let TaskInput::Echo { text } = input {
        return TaskOutput::Echo { echo: text.clone() };
    }
    let (main, rest) = embeddings
        .split_first()
        .expect("every input has a main text");
    match input {
        TaskInput::Embed { .. } => TaskOutput::Embedding {
            embedding: main.clone(),
        },
        TaskInput::Similarity { candidates, .. } => {
            let mut scores: Vec<ScoredCandidate> = candidates
                .iter()
                .zip(rest)
                .enumerate()
                .map(|(index, (text, emb))| ScoredCandidate {
                    index,
                    text: text.clone(),
                    score: cosine(main, emb),
                })
                .collect();
            scores.sort_by(|a, b| b.score.total_cmp(&a.score));
            TaskOutput::Similarity { scores }
        }
        TaskInput::Classify { labels, .. } => {
            let cosines: Vec<f32> = rest.iter().map(|emb| cosine(main, emb)).collect();
            let probs = softmax(&cosines, temperature);
            let best = probs
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i);
            TaskOutput::Classification {
                label: labels[best].clone(),
                scores: labels.iter().cloned().zip(probs).collect(),
            }
        }
        TaskInput::Echo { .. } | TaskInput::ClassifyImage { .. } => {
            unreachable!("answered without embeddings")
        }
    }
}

/// One request's answer and the model tokens its texts took.
#[derive(Debug, Clone, PartialEq)]
pub struct Answered {
    /// Output or error.
    pub outcome: ItemOutcome,
    /// Tokens of its texts (0 for echo and photos).
    pub tokens: u32,
}

/// The models as a forward pass uses them: the compute thread, which model
/// serves which task, and the settings that turn embeddings into answers.
#[derive(Clone)]
pub struct Model {
    backend: BackendThread,
    choice: Choice,
    temperature: f32,
}

impl Model {
    /// Answers from `backend`, whose models `choice` names; `temperature`
    /// scales zero-shot classification (lower is more confident).
    pub fn new(backend: BackendThread, choice: Choice, temperature: f32) -> Self {
        Self {
            backend,
            choice,
            temperature,
        }
    }

    /// Name of the model that computes `task` here.
    pub fn name_for(&self, task: Task) -> String {
        self.choice.model_of(task).to_string()
    }

    /// Answer every item with one backend call per kind of model. A failing
    /// forward pass answers every item with its error: retrying the same
    /// inputs would fail again.
    pub async fn answer(&self, items: &[BatchItem]) -> Vec<Answered> {
        compute(&self.backend, items, self.temperature)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, requests = items.len(), "forward pass failed in the model");
                let failed = Answered {
                    outcome: ItemOutcome::Error(format!("model error: {e}")),
                    tokens: 0,
                };
                vec![failed; items.len()]
            })
    }
}

/// Compute every item of a batch: one embedding pass over all its texts, one
/// image pass over all its images (a batch has one task, so one of the two).
async fn compute(
    backend: &BackendThread,
    items: &[BatchItem],
    temperature: f32,
) -> Result<Vec<Answered>, BackendError> {
    // Echo needs no model: its items contribute no texts to the forward pass.
    let per_item: Vec<Vec<&str>> = items
        .iter()
        .map(|i| match i.input {
            TaskInput::Echo { .. } => Vec::new(),
            _ => i.input.texts(),
        })
        .collect();
    let texts: Vec<String> = per_item.iter().flatten().map(|t| t.to_string()).collect();
    let embedded = if texts.is_empty() {
        Default::default()
    } else {
        backend.embed(texts).await?
    };
    let images: Vec<ImageCrop> = items
        .iter()
        .filter_map(|i| match &i.input {
            TaskInput::ClassifyImage { image } => Some(image.clone()),
            _ => None,
        })
        .collect();
    let mut classes = if images.is_empty() {
        Vec::new()
    } else {
        backend.classify(images).await?
    }
    .into_iter();
    let mut offset = 0;
    Ok(items
        .iter()
        .zip(&per_item)
        .map(|(item, texts)| {
            if let TaskInput::ClassifyImage { .. } = item.input {
                let top = classes.next().unwrap_or_default();
                let outcome = ItemOutcome::Ok(TaskOutput::ImageClassification {
                    label: top.first().map(|c| c.label.clone()).unwrap_or_default(),
                    top,
                });
                return Answered { outcome, tokens: 0 };
            }
            let own = offset..offset + texts.len();
            offset += texts.len();
            let tokens: usize = embedded.tokens[own.clone()].iter().sum();
            Answered {
                outcome: ItemOutcome::Ok(answer(&item.input, &embedded.vectors[own], temperature)),
                tokens: u32::try_from(tokens).unwrap_or(u32::MAX),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_needs_no_embedding() {
        let input = TaskInput::Echo { text: "hi".into() };
        assert_eq!(
            answer(&input, &[], 0.05),
            TaskOutput::Echo { echo: "hi".into() }
        );
    }

    #[test]
    fn similarity_is_sorted_and_keeps_indices() {
        let input = TaskInput::Similarity {
            query: "q".into(),
            candidates: vec!["far".into(), "near".into()],
        };
        let embs = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.8, 0.6]];
        let TaskOutput::Similarity { scores } = answer(&input, &embs, 0.05) else {
            panic!("wrong output shape")
        };
        assert_eq!(scores[0].index, 1);
        assert_eq!(scores[0].text, "near");
        assert!((scores[0].score - 0.8).abs() < 1e-6);
        assert_eq!(scores[1].score, 0.0);
    }

    /// f32 rounding makes a unit vector's dot product with itself exceed 1.
    #[test]
    fn similarity_scores_stay_within_minus_one_and_one() {
        let input = TaskInput::Similarity {
            query: "q".into(),
            candidates: vec!["same".into(), "opposite".into()],
        };
        let v = vec![0.6000001_f32, 0.8000001];
        let w: Vec<f32> = v.iter().map(|x| -x).collect();
        let dot: f32 = v.iter().map(|x| x * x).sum();
        assert!(dot > 1.0, "the rounding this test is about");
        let TaskOutput::Similarity { scores } = answer(&input, &[v.clone(), v, w], 0.05) else {
            panic!("wrong output shape")
        };
        assert_eq!(scores[0].score, 1.0);
        assert_eq!(scores[1].score, -1.0);
    }

    #[test]
    fn classify_picks_the_closest_label_with_probabilities() {
        let input = TaskInput::Classify {
            text: "t".into(),
            labels: vec!["a".into(), "b".into()],
        };
        let embs = vec![vec![1.0, 0.0], vec![0.6, 0.8], vec![0.9, 0.43589]];
        let TaskOutput::Classification { label, scores } = answer(&input, &embs, 0.05) else {
            panic!("wrong output shape")
        };
        assert_eq!(label, "b");
        assert!((scores.values().sum::<f32>() - 1.0).abs() < 1e-5);
        assert!(scores["b"] > scores["a"]);
    }
}
