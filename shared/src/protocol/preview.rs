//! One-line text previews for request records and the dashboard, so a
//! 200 KiB input or a 384-float embedding never floods a table, and their
//! private counterparts: a fingerprint instead of a text, a summary that names
//! neither text nor vector values. Previews of content are shown only where an
//! operator turned them on (`DASHBOARD_SHOW_INPUTS`).

use super::task::TaskOutput;
use sha2::{Digest, Sha256};

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

/// Hex characters of an input fingerprint.
const FINGERPRINT_HEX: usize = 12;

/// Fingerprints texts with a secret salt, so a table can show that two
/// requests carried the same text without showing it. The salt is random per
/// process: without it, a short or guessable text (a card number, a name)
/// could be recovered by hashing candidates.
pub struct Fingerprint {
    salt: [u8; 16],
}

impl Default for Fingerprint {
    fn default() -> Self {
        Self {
            salt: rand::random(),
        }
    }
}

impl Fingerprint {
    /// 12 hex characters of SHA-256 over the salt and `text`.
    pub fn of(&self, text: &str) -> String {
        let digest = Sha256::new()
            .chain_update(self.salt)
            .chain_update(text.as_bytes())
            .finalize();
        digest
            .iter()
            .take(FINGERPRINT_HEX / 2)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl TaskOutput {
    /// A one-line summary for a table: the [`TaskOutput::preview`] with
    /// `show_content`, else one that names no text (labels and candidates are
    /// request text too) and no vector values.
    pub fn summary(&self, show_content: bool) -> String {
        if show_content {
            return self.preview();
        }
        match self {
            TaskOutput::Embedding { embedding } => format!("{} floats", embedding.len()),
            TaskOutput::Classification { label, scores } => format!(
                "top score {:.2} of {}",
                scores.get(label).copied().unwrap_or_default(),
                scores.len()
            ),
            TaskOutput::Echo { echo } => format!("{} chars", echo.chars().count()),
            TaskOutput::Similarity { scores } => match scores.first() {
                Some(best) => format!("#{} {:.3} of {}", best.index, best.score, scores.len()),
                None => "no candidates".to_owned(),
            },
            // The class says what the photo shows: content, like a text.
            TaskOutput::ImageClassification { top, .. } => format!(
                "top score {:.2}",
                top.first().map(|c| c.score).unwrap_or_default()
            ),
        }
    }

    /// A one-line summary a person can scan in a table, content included.
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
            TaskOutput::ImageClassification { label, top } => format!(
                "{label} ({:.2})",
                top.first().map(|c| c.score).unwrap_or_default()
            ),
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

    #[test]
    fn private_summaries_name_no_text_and_no_values() {
        let c = TaskOutput::Classification {
            label: "secret label".into(),
            scores: [("secret label".to_string(), 0.8), ("other".into(), 0.2)].into(),
        };
        assert_eq!(c.summary(false), "top score 0.80 of 2");
        let e = TaskOutput::Embedding {
            embedding: vec![0.123; 384],
        };
        assert_eq!(e.summary(false), "384 floats");
        let echo = TaskOutput::Echo {
            echo: "my card 4111".into(),
        };
        assert_eq!(echo.summary(false), "12 chars");
        assert_eq!(echo.summary(true), "my card 4111");
        let image = TaskOutput::ImageClassification {
            label: "tabby".into(),
            top: vec![crate::protocol::ScoredClass {
                label: "tabby".into(),
                index: 281,
                score: 0.734,
            }],
        };
        assert_eq!(image.summary(false), "top score 0.73");
        assert_eq!(image.summary(true), "tabby (0.73)");
    }

    #[test]
    fn fingerprints_match_for_equal_texts_only_under_one_salt() {
        let f = Fingerprint::default();
        let a = f.of("my credit card is 4111 1111 1111 1111");
        assert_eq!(a.len(), FINGERPRINT_HEX);
        assert_eq!(a, f.of("my credit card is 4111 1111 1111 1111"));
        assert_ne!(a, f.of("my credit card is 4111 1111 1111 1112"));
        assert_ne!(
            a,
            Fingerprint::default().of("my credit card is 4111 1111 1111 1111")
        );
    }
}
