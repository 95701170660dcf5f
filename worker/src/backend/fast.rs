//! The serving backend: a BERT encoder written for CPU batches, on candle tensors.
//!
//! Same weights and the same maths as [`super::bert`] (outputs agree to
//! cosine ≥ 0.9999), organised so the time goes into large matrix products:
//!
//! - **No padding.** The tokens of every text in a batch are packed into one
//!   `(tokens, hidden)` matrix; all dense layers (QKV, attention output,
//!   feed-forward) and layer norms run on it once, so a batch costs the tokens
//!   it has, not `texts × longest`.
//! - **Attention by length group.** Texts are sorted by length, so texts of
//!   equal length sit next to each other; attention needs no mask, and runs
//!   straight on the QKV rows, one pool task per (text, head)
//!   ([`super::attention`]).
//! - **Fused QKV.** One `(hidden, 3·hidden)` projection instead of three.
//! - **Packed GEMM** ([`super::gemm`]) for every dense layer at every pass
//!   size: weights packed once at load for the micro-kernels of this CPU
//!   (AVX-512F, AVX2+FMA or portable, [`Kernels`]), with bias + GELU and
//!   bias + residual + layer norm fused into its output ([`super::kernels`]);
//!   candle's fused layer-norm for the embeddings.
//! - Mean pooling per group (exact, there is no padding) and L2 normalisation.

use super::attention::{Group, SelfAttention};
use super::files::ModelFiles;
use super::gemm::{Isa, Kernels, Weights};
use super::kernels::{Activation, LayerNorm, Linear, Project, ProjectNorm};
use super::{BackendError, Embedded, Embedder};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use std::path::Path;
use tokenizers::Tokenizer;

/// A dense layer's tensors, `(out, in)` weight as stored.
struct Dense {
    weight: Tensor,
    bias: Tensor,
}

impl Dense {
    fn load(vb: VarBuilder, inputs: usize, outputs: usize) -> candle_core::Result<Self> {
        let weight = vb.get((outputs, inputs), "weight")?;
        let bias = vb.get(outputs, "bias")?;
        Ok(Self { weight, bias })
    }

    /// Several projections of the same input side by side (fused QKV).
    fn concat(parts: &[Dense]) -> candle_core::Result<Self> {
        let weights: Vec<&Tensor> = parts.iter().map(|d| &d.weight).collect();
        let biases: Vec<&Tensor> = parts.iter().map(|d| &d.bias).collect();
        Ok(Self {
            weight: Tensor::cat(&weights, 0)?,
            bias: Tensor::cat(&biases, 0)?,
        })
    }

    fn pack(&self, isa: Isa, weights: Weights) -> candle_core::Result<Linear> {
        Linear::new(isa, weights, &self.weight, &self.bias)
    }
}

/// Layer norm parameters, for candle's fused kernel.
struct Norm {
    gamma: Tensor,
    beta: Tensor,
    eps: f32,
}

impl Norm {
    fn load(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            gamma: vb.get(size, "weight")?,
            beta: vb.get(size, "bias")?,
            eps: eps as f32,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.gamma, &self.beta, self.eps)
    }
}

struct Layer {
    qkv: Linear,
    /// Attention output projection, then the residual and the norm.
    attention_out: Linear,
    attention_norm: LayerNorm,
    /// Feed-forward up-projection, then GELU.
    up: Linear,
    /// Feed-forward down-projection, then the residual and the norm.
    down: Linear,
    output_norm: LayerNorm,
}

/// A norm's vectors, for the fused kernels.
fn layer_norm(vb: VarBuilder, size: usize, eps: f64) -> candle_core::Result<LayerNorm> {
    let norm = Norm::load(vb, size, eps)?;
    Ok(LayerNorm {
        gamma: norm.gamma.to_vec1()?,
        beta: norm.beta.to_vec1()?,
        eps: norm.eps,
    })
}

/// The fast BERT sentence embedder.
pub struct FastBert {
    tokenizer: Tokenizer,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    device: Device,
    isa: Isa,
    weights: Weights,
}

impl FastBert {
    /// Load a Hugging Face BERT folder ([`ModelFiles`]), packing its weights
    /// for `kernels` (an error where this CPU cannot run them), stored as `stored`.
    pub fn load(dir: &Path, kernels: Kernels, stored: Weights) -> Result<Self, BackendError> {
        let isa = kernels.resolve().map_err(BackendError::Kernels)?;
        let ModelFiles {
            config,
            tokenizer,
            weights,
        } = ModelFiles::open(dir)?;
        // Some exports nest everything under `bert.`.
        let vb = if weights.contains_tensor("embeddings.word_embeddings.weight") {
            weights
        } else {
            weights.pp("bert")
        };
        let hidden = config.hidden_size;
        let eps = config.layer_norm_eps;
        let emb = vb.pp("embeddings");
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let l = vb.pp(format!("encoder.layer.{i}"));
                let attn = l.pp("attention");
                let [q, k, v] = ["query", "key", "value"]
                    .map(|p| Dense::load(attn.pp("self").pp(p), hidden, hidden));
                let ffn = config.intermediate_size;
                Ok(Layer {
                    qkv: Dense::concat(&[q?, k?, v?])?.pack(isa, stored)?,
                    attention_out: Dense::load(attn.pp("output.dense"), hidden, hidden)?
                        .pack(isa, stored)?,
                    attention_norm: layer_norm(attn.pp("output.LayerNorm"), hidden, eps)?,
                    up: Dense::load(l.pp("intermediate.dense"), hidden, ffn)?.pack(isa, stored)?,
                    down: Dense::load(l.pp("output.dense"), ffn, hidden)?.pack(isa, stored)?,
                    output_norm: layer_norm(l.pp("output.LayerNorm"), hidden, eps)?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            tokenizer,
            word: emb.get((config.vocab_size, hidden), "word_embeddings.weight")?,
            position: emb.get(
                (config.max_position_embeddings, hidden),
                "position_embeddings.weight",
            )?,
            token_type: emb.get(
                (config.type_vocab_size, hidden),
                "token_type_embeddings.weight",
            )?,
            embedding_norm: Norm::load(emb.pp("LayerNorm"), hidden, eps)?,
            layers,
            heads: config.num_attention_heads,
            hidden,
            device: vb.device().clone(),
            isa,
            weights: stored,
        })
    }

    /// The micro-kernels this model runs (`worker bench` reports them).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// How its packed weights are stored (`worker bench` reports it).
    pub fn weights(&self) -> Weights {
        self.weights
    }

    fn layer(&self, layer: &Layer, x: &Tensor, groups: &[Group]) -> candle_core::Result<Tensor> {
        let qkv = x.apply_op1_no_bwd(&Project {
            linear: &layer.qkv,
            activation: Activation::Identity,
        })?;
        let x = qkv
            .apply_op1_no_bwd(&SelfAttention {
                groups,
                heads: self.heads,
                isa: self.isa,
            })?
            .apply_op2_no_bwd(
                x,
                &ProjectNorm {
                    linear: &layer.attention_out,
                    norm: &layer.attention_norm,
                },
            )?;
        let up = x.apply_op1_no_bwd(&Project {
            linear: &layer.up,
            activation: Activation::Gelu,
        })?;
        up.apply_op2_no_bwd(
            &x,
            &ProjectNorm {
                linear: &layer.down,
                norm: &layer.output_norm,
            },
        )
    }
}

impl Embedder for FastBert {
    fn embed_counted(&self, texts: &[&str]) -> Result<Embedded, BackendError> {
        if texts.is_empty() {
            return Ok(Embedded::default());
        }
        super::awake::while_awake(|| self.forward(texts))
    }
}

impl FastBert {
    /// [`Embedder::embed_counted`] on a non-empty batch.
    fn forward(&self, texts: &[&str]) -> Result<Embedded, BackendError> {
        let encodings = super::encode(&self.tokenizer, texts)?;
        let counts = super::token_counts(&encodings);
        // Longest first, so equal lengths are neighbours.
        let mut order: Vec<usize> = (0..encodings.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(encodings[i].get_ids().len()));

        let mut ids = Vec::new();
        let mut types = Vec::new();
        let mut positions = Vec::new();
        let mut groups: Vec<Group> = Vec::new();
        for &i in &order {
            let e = &encodings[i];
            let len = e.get_ids().len();
            match groups.last_mut() {
                Some(g) if g.len == len => g.texts += 1,
                _ => groups.push(Group {
                    start: ids.len(),
                    texts: 1,
                    len,
                }),
            }
            ids.extend_from_slice(e.get_ids());
            types.extend_from_slice(e.get_type_ids());
            positions.extend(0..e.get_ids().len() as u32);
        }
        let tokens = ids.len();
        let ids = Tensor::from_vec(ids, tokens, &self.device)?;
        let types = Tensor::from_vec(types, tokens, &self.device)?;
        let positions = Tensor::from_vec(positions, tokens, &self.device)?;
        let embedded = (self.word.embedding(&ids)? + self.position.embedding(&positions)?)?
            .add(&self.token_type.embedding(&types)?)?;
        let mut x = self.embedding_norm.forward(&embedded)?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &groups)?;
        }

        // Mean over each text's tokens, then L2-normalise.
        let pooled: Vec<Tensor> = groups
            .iter()
            .map(|g| {
                x.narrow(0, g.start, g.texts * g.len)?
                    .reshape((g.texts, g.len, self.hidden))?
                    .mean(1)
            })
            .collect::<candle_core::Result<_>>()?;
        let pooled = Tensor::cat(&pooled, 0)?;
        let norms = pooled
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12, f64::MAX)?;
        let sorted = pooled
            .broadcast_div(&norms)?
            .to_dtype(DType::F32)?
            .to_vec2::<f32>()?;
        let mut vectors = vec![Vec::new(); sorted.len()];
        for (row, &i) in sorted.into_iter().zip(&order) {
            vectors[i] = row;
        }
        Ok(Embedded {
            vectors,
            tokens: counts,
        })
    }
}
