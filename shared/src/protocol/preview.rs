//! One-line text previews for logs, request records and the dashboard, so a
//! 200 KiB input or a 384-float embedding never floods a table or a log line.

use super::task::TaskOutput;

/// Characters of a text kept in a preview.
const PREVIEW_CHARS: usize = 120;

/// `text` cut to 120 characters (with an ellipsis), for logs and the dashboard.
pub fn preview(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(PREVIEW_CHARS).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

impl TaskOutput {
    /// A one-line summary a person can scan in a table.
    pub fn preview(&self) -> String {
        match self {
            TaskOutput::Embedding { embedding } => {
                let head: Vec<String> = embedding
                    .iter()
                    .take(3)
                    .map(|x| format!("{x:.4}"))
                    .collect();
                format!("[{}, …] ({} floats)", head.join(", "), embedding.len())
            }
            TaskOutput::Classification { label, scores } => {
                format!(
                    "{label} ({:.2})",
                    scores.get(label).copied().unwrap_or_default()
                )
            }
            TaskOutput::Echo { echo } => preview(echo),
            TaskOutput::Similarity { scores } => match scores.first() {
                Some(best) => preview(&format!("#{} {:.3} {}", best.index, best.score, best.text)),
                None => "no candidates".to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_short_and_readable() {
        assert_eq!(preview(&"x".repeat(200)).chars().count(), PREVIEW_CHARS + 1);
        assert_eq!(preview("short"), "short");
        let e = TaskOutput::Embedding {
            embedding: vec![0.5; 384],
        };
        assert_eq!(e.preview(), "[0.5000, 0.5000, 0.5000, …] (384 floats)");
        let c = TaskOutput::Classification {
            label: "positive".into(),
            scores: [("positive".to_string(), 0.8)].into(),
        };
        assert_eq!(c.preview(), "positive (0.80)");
    }
}
