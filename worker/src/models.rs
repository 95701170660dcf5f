//! Which models this worker serves, and so which tasks it pulls.
//!
//! `MODELS` names them (default: every model installed here: the text model
//! always, downloaded by `MODEL_ID` when `MODEL_DIR` is unset, and the image
//! model when `IMAGE_MODEL_DIR` is set). `TASKS` (default: every task of
//! those models, and echo) may narrow them; a task whose model the worker does
//! not serve is refused at start, naming the model, instead of pulling
//! batches it cannot compute. Each task is pulled from the queues of the
//! model it runs on here ([`Choice::queues`]): capability routing is that a
//! worker only ever pulls its own models' batches.

use jetinfer_shared::protocol::{Modality, ModelName, ServedModel, Task, IMAGE_MODEL};
use std::path::PathBuf;

/// The short name of a text model from its hub id: the last path segment,
/// lower case, as a [`ModelName`] (`sentence-transformers/all-MiniLM-L6-v2`
/// → `all-minilm-l6-v2`, `BAAI/bge-small-en-v1.5` → `bge-small-en-v1-5`).
pub fn text_model_name(model_id: &str) -> Result<ModelName, ChoiceError> {
    let last = model_id.rsplit('/').next().unwrap_or(model_id);
    ModelName::sanitised(last).ok_or_else(|| ChoiceError::Unnamed(model_id.to_owned()))
}

/// Why the models or tasks asked for cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    /// `MODEL_ID` has nothing a model name can be made of.
    #[error(
        "MODEL_ID {0:?} gives the text model no name: its last segment needs a letter or digit"
    )]
    Unnamed(String),
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
    pub text: Option<ModelName>,
    /// The image model's folder, when served.
    pub image: Option<PathBuf>,
    /// Tasks to pull, in [`Task::ALL`]'s order.
    pub tasks: Vec<Task>,
}

impl Choice {
    /// Names of the models loaded, text first (echo's pseudo-model is none).
    pub fn names(&self) -> Vec<ModelName> {
        self.text
            .iter()
            .cloned()
            .chain(self.image.as_ref().map(|_| image_model()))
            .collect()
    }

    /// Each model served with the tasks it computes here, the echo
    /// pseudo-model last when echo is pulled: what heartbeats announce, so
    /// gateways know where each request can go.
    pub fn served(&self) -> Vec<ServedModel> {
        let echo = ModelName::default_for(Task::Echo);
        let echo_pulled = self.tasks.contains(&Task::Echo);
        self.names()
            .into_iter()
            .chain(echo_pulled.then_some(echo))
            .map(|name| ServedModel {
                tasks: (self.tasks.iter().copied())
                    .filter(|t| self.model_of(*t) == name)
                    .collect(),
                name: name.to_string(),
            })
            .collect()
    }

    /// The queues pulled: each task with the model it runs on here.
    pub fn queues(&self) -> Vec<(ModelName, Task)> {
        self.tasks.iter().map(|t| (self.model_of(*t), *t)).collect()
    }

    /// The model `task` runs on here: echo's is the echo pseudo-model, a
    /// task whose model is not loaded (never pulled) its default.
    pub fn model_of(&self, task: Task) -> ModelName {
        match task.modality() {
            Some(Modality::Text) => self.text.clone(),
            _ => None,
        }
        .unwrap_or_else(|| ModelName::default_for(task))
    }

    fn serves(&self, modality: Modality) -> bool {
        match modality {
            Modality::Text => self.text.is_some(),
            Modality::Image => self.image.is_some(),
        }
    }
}

fn image_model() -> ModelName {
    ModelName::default_for(Task::ClassifyImage)
}

/// Decide from `MODELS` (`models`, empty: all installed), the text model's
/// `model_id`, `IMAGE_MODEL_DIR` and `TASKS` (`tasks`, empty: all of the models').
pub fn choose(
    models: &[String],
    model_id: &str,
    image_dir: Option<&PathBuf>,
    tasks: &[Task],
) -> Result<Choice, ChoiceError> {
    let text_name = text_model_name(model_id)?;
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
        if name == text_name.as_str() {
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
                _ => text_name.to_string(),
            },
            served: (choice.names().iter().map(ModelName::to_string))
                .collect::<Vec<_>>()
                .join(", "),
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
    use jetinfer_shared::protocol::ECHO_MODEL;

    const HUB_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";

    fn models(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn names(choice: &Choice) -> Vec<String> {
        choice.names().iter().map(ModelName::to_string).collect()
    }

    #[test]
    fn by_default_every_installed_model_and_all_its_tasks() {
        let dir = PathBuf::from("/m/effnet");
        let text_only = choose(&[], HUB_ID, None, &[]).unwrap();
        assert_eq!(names(&text_only), ["all-minilm-l6-v2"]);
        assert_eq!(
            text_only.tasks,
            [Task::Embed, Task::Similarity, Task::Classify, Task::Echo]
        );
        let both = choose(&[], HUB_ID, Some(&dir), &[]).unwrap();
        assert_eq!(names(&both), ["all-minilm-l6-v2", IMAGE_MODEL]);
        assert_eq!(both.tasks, Task::ALL);
        assert_eq!(both.model_of(Task::ClassifyImage).as_str(), IMAGE_MODEL);
        assert_eq!(both.model_of(Task::Echo).as_str(), ECHO_MODEL);
        let served = both.served();
        let served: Vec<(&str, &[Task])> = served
            .iter()
            .map(|m| (m.name.as_str(), m.tasks.as_slice()))
            .collect();
        assert_eq!(
            served,
            [
                (
                    "all-minilm-l6-v2",
                    &[Task::Embed, Task::Similarity, Task::Classify][..]
                ),
                (IMAGE_MODEL, &[Task::ClassifyImage]),
                (ECHO_MODEL, &[Task::Echo]),
            ]
        );
        let queues: Vec<String> = (both.queues().iter())
            .map(|(m, t)| format!("{m}.{t}"))
            .collect();
        assert_eq!(
            queues,
            [
                "all-minilm-l6-v2.embed",
                "all-minilm-l6-v2.similarity",
                "all-minilm-l6-v2.classify",
                "echo.echo",
                "efficientnet-lite0.classify_image"
            ]
        );
    }

    #[test]
    fn named_models_narrow_the_tasks() {
        let dir = PathBuf::from("/m/effnet");
        let image = choose(&models(&["efficientnet-lite0"]), HUB_ID, Some(&dir), &[]).unwrap();
        assert_eq!(image.text, None);
        assert_eq!(image.tasks, [Task::Echo, Task::ClassifyImage]);
        assert_eq!(names(&image), [IMAGE_MODEL]);
        assert_eq!(
            text_model_name("BAAI/bge-small-en-v1.5").unwrap().as_str(),
            "bge-small-en-v1-5"
        );
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
