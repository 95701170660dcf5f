//! Input texts: a built-in corpus of 1024 sentences of 8–20 words, or a JSON file.

use std::path::Path;

const WORDS: [&str; 48] = [
    "the",
    "quick",
    "system",
    "answers",
    "every",
    "request",
    "with",
    "a",
    "vector",
    "while",
    "workers",
    "pull",
    "batches",
    "from",
    "queue",
    "and",
    "nothing",
    "is",
    "lost",
    "during",
    "heavy",
    "bursty",
    "traffic",
    "model",
    "embeddings",
    "capture",
    "meaning",
    "of",
    "short",
    "sentences",
    "users",
    "send",
    "questions",
    "about",
    "weather",
    "music",
    "sports",
    "cooking",
    "travel",
    "money",
    "news",
    "today",
    "tomorrow",
    "people",
    "love",
    "hate",
    "this",
    "city",
];

/// The built-in corpus: 1024 sentences of 8–20 words, the same on every run
/// (a fixed seed), so benchmarks compare like with like.
pub fn builtin() -> Vec<String> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(1024);
    (0..1024)
        .map(|_| {
            let len = rng.random_range(8..=20);
            let words: Vec<&str> = (0..len)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect();
            words.join(" ")
        })
        .collect()
}

/// The texts of `file`, or the built-in corpus when there is none.
pub fn load(file: Option<&Path>) -> Result<Vec<String>, CorpusError> {
    match file {
        Some(path) => from_file(path),
        None => Ok(builtin()),
    }
}

/// Why a corpus file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// Unreadable file.
    #[error("cannot read corpus {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a JSON list of strings, or empty.
    #[error("corpus {path} must be a non-empty JSON list of strings: {reason}")]
    Format {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Read a JSON list of strings.
pub fn from_file(path: &Path) -> Result<Vec<String>, CorpusError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| CorpusError::Read {
        path: shown.clone(),
        source,
    })?;
    let texts: Vec<String> = serde_json::from_slice(&bytes).map_err(|e| CorpusError::Format {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if texts.is_empty() {
        return Err(CorpusError::Format {
            path: shown,
            reason: "it is empty".into(),
        });
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_has_1024_sentences_of_8_to_20_words() {
        let c = super::builtin();
        assert_eq!(c.len(), 1024);
        assert!(c.iter().all(|s| (8..=20).contains(&s.split(' ').count())));
        let distinct: std::collections::HashSet<_> = c.iter().collect();
        assert!(distinct.len() > 1000, "mostly distinct sentences");
    }
}
