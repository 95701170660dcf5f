//! Which models this worker serves, and so which tasks it pulls.
//!
//! `MODELS` names them (default: every model installed here: the text model
//! always, downloaded by `MODEL_ID` when `MODEL_DIR` is unset, and the image
//! model when `IMAGE_MODEL_DIR` is set). `TASKS` (default: every task of
//! those models, and echo) may narrow them; a task whose model the worker does
//! not serve is refused at start, naming the model, instead of pulling
//! batches it cannot compute.

use jetinfer_shared::protocol::{Modality, ServedModel, Task};
use std::path::PathBuf;

/// Name of the image model, as `MODELS`, answers and heartbeats spell it.
pub const IMAGE_MODEL: &str = "efficientnet-lite0";

/// The short name of a text model from its hub id: the last path segment,
/// lower case (`sentence-transformers/all-MiniLM-L6-v2` → `all-minilm-l6-v2`).
pub fn text_model_name(model_id: &str) -> String {
    model_id
        .rsplit('/')
        .next()
        .unwrap_or(model_id)
        .to_ascii_lowercase()
}

/// Why the models or tasks asked for cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    /// `MODELS` names a model this worker does not know.
    #[error("MODELS names {given:?}; this worker serves {known}")]
    Unknown {
        /// The name given.
        given: String,
        /// The names it knows.
        known: String,
    },
    /// The image model is asked for without its folder.
    #[error("MODELS names {IMAGE_MODEL} but IMAGE_MODEL_DIR is unset: point it at the folder `./jetinfer up` installs (.state/models/{IMAGE_MODEL})")]
    NoImageDir,
    /// `TASKS` names a task whose model is not served.
    #[error(
        "TASKS names {task}, which needs the {model} model; this worker serves {served} (MODELS)"
    )]
    TaskWithoutModel {
        /// The task.
        task: Task,
        /// The model it needs.
        model: String,
        /// What the worker serves.
        served: String,
    },
    /// Nothing would be served.
    #[error("MODELS is empty: name at least one of {known}")]
    Nothing {
        /// The names it knows.
        known: String,
    },
}

/// What a worker serves: its models and the tasks it pulls.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The text model's name, when served.
    pub text: Option<String>,
    /// The image model's folder, when served.
    pub image: Option<PathBuf>,
    /// Tasks to pull, in [`Task::ALL`]'s order.
    pub tasks: Vec<Task>,
}

impl Choice {
    /// Names of the models served, text first.
    pub fn names(&self) -> Vec<String> {
        self.text
            .iter()
            .cloned()
            .chain(self.image.as_ref().map(|_| IMAGE_MODEL.to_owned()))
            .collect()
    }

    /// Each model served with the tasks it computes here (echo runs on none).
    pub fn served(&self) -> Vec<ServedModel> {
        self.names()
            .into_iter()
            .map(|name| ServedModel {
                tasks: (self.tasks.iter().copied())
                    .filter(|t| t.modality().is_some() && self.model_of(*t) == name)
                    .collect(),
                name,
            })
            .collect()
    }

    /// The name of the model `task` runs on here (echo: the first model's,
    /// as it is the worker that answers; `none` without any).
    pub fn model_of(&self, task: Task) -> String {
        match task.modality() {
            Some(Modality::Text) => self.text.clone(),
            Some(Modality::Image) => self.image.as_ref().map(|_| IMAGE_MODEL.to_owned()),
            None => self.names().into_iter().next(),
        }
        .unwrap_or_else(|| "none".to_owned())
    }

    fn serves(&self, modality: Modality) -> bool {
        match modality {
            Modality::Text => self.text.is_some(),
            Modality::Image => self.image.is_some(),
        }
    }
}

/// Decide from `MODELS` (`models`, empty: all installed), the text model's
/// `model_id`, `IMAGE_MODEL_DIR` and `TASKS` (`tasks`, empty: all of the models').
pub fn choose(
    models: &[String],
    model_id: &str,
    image_dir: Option<&PathBuf>,
    tasks: &[Task],
) -> Result<Choice, ChoiceError> {
    let text_name = text_model_name(model_id);
    let known = format!("{text_name}, {IMAGE_MODEL}");
    let named: Vec<&str> = models
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .collect();
    let mut choice = Choice {
        text: None,
        image: None,
        tasks: Vec::new(),
    };
    if named.is_empty() && !models.is_empty() {
        return Err(ChoiceError::Nothing { known });
    }
    if named.is_empty() {
        choice.text = Some(text_name.clone());
        choice.image = image_dir.cloned();
    }
    for name in named {
        let name = name.to_ascii_lowercase();
        if name == text_name {
            choice.text = Some(text_name.clone());
        } else if name == IMAGE_MODEL {
            choice.image = Some(image_dir.cloned().ok_or(ChoiceError::NoImageDir)?);
        } else {
            return Err(ChoiceError::Unknown { given: name, known });
        }
    }
    let runs_here = |task: &Task| task.modality().is_none_or(|m| choice.serves(m));
    if let Some(task) = tasks.iter().find(|t| !runs_here(t)) {
        return Err(ChoiceError::TaskWithoutModel {
            task: *task,
            model: match task.modality() {
                Some(Modality::Image) => IMAGE_MODEL.to_owned(),
                _ => text_name,
            },
            served: choice.names().join(", "),
        });
    }
    choice.tasks = Task::ALL
        .into_iter()
        .filter(|t| {
            if tasks.is_empty() {
                runs_here(t)
            } else {
                tasks.contains(t)
            }
        })
        .collect();
    Ok(choice)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HUB_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

    fn models(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn by_default_every_installed_model_and_all_its_tasks() {
        let dir = PathBuf::from("/m/effnet");
        let text_only = choose(&[], HUB_ID, None, &[]).unwrap();
        assert_eq!(text_only.names(), ["all-minilm-l6-v2"]);
        assert_eq!(
            text_only.tasks,
            [Task::Embed, Task::Similarity, Task::Classify, Task::Echo]
        );
        let both = choose(&[], HUB_ID, Some(&dir), &[]).unwrap();
        assert_eq!(both.names(), ["all-minilm-l6-v2", IMAGE_MODEL]);
        assert_eq!(both.tasks, Task::ALL);
        assert_eq!(both.model_of(Task::ClassifyImage), IMAGE_MODEL);
        assert_eq!(both.model_of(Task::Echo), "all-minilm-l6-v2");
        let served = both.served();
        assert_eq!(
            served[0].tasks,
            [Task::Embed, Task::Similarity, Task::Classify]
        );
        assert_eq!(served[1].tasks, [Task::ClassifyImage]);
    }

    #[test]
    fn named_models_narrow_the_tasks() {
        let dir = PathBuf::from("/m/effnet");
        let image = choose(&models(&["efficientnet-lite0"]), HUB_ID, Some(&dir), &[]).unwrap();
        assert_eq!(image.text, None);
        assert_eq!(image.tasks, [Task::Echo, Task::ClassifyImage]);
        assert_eq!(image.model_of(Task::Echo), IMAGE_MODEL);
        let text = choose(&models(&["All-MiniLM-L6-v2"]), HUB_ID, Some(&dir), &[]).unwrap();
        assert_eq!(text.image, None);
        let embed_only = choose(&[], HUB_ID, Some(&dir), &[Task::Embed]).unwrap();
        assert_eq!(embed_only.tasks, [Task::Embed]);
    }

    #[test]
    fn impossible_choices_are_refused_naming_the_fix() {
        let refused = |m: &[&str], dir: Option<&PathBuf>, tasks: &[Task]| {
            choose(&models(m), HUB_ID, dir, tasks)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            refused(&["resnet"], None, &[]),
            "MODELS names \"resnet\"; this worker serves all-minilm-l6-v2, efficientnet-lite0"
        );
        assert!(refused(&["efficientnet-lite0"], None, &[]).contains("IMAGE_MODEL_DIR is unset"));
        assert_eq!(
            refused(&[], None, &[Task::ClassifyImage]),
            "TASKS names classify_image, which needs the efficientnet-lite0 model; this worker serves all-minilm-l6-v2 (MODELS)"
        );
        assert!(refused(&[" "], None, &[]).starts_with("MODELS is empty"));
    }
}
