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
//!   equal length sit next to each other; each group's attention is one
//!   batched matmul over `(texts, heads, len, head_dim)` with no mask.
//! - **Fused QKV.** One `(hidden, 3·hidden)` projection instead of three.
//! - **Fused kernels** ([`super::kernels`]): bias + GELU, bias + residual +
//!   layer norm, and for small passes an AVX-512 matmul on packed f16 weights;
//!   candle's fused layer-norm and softmax elsewhere.
//! - Mean pooling per group (exact, there is no padding) and L2 normalisation.

use super::files::ModelFiles;
use super::kernels::{
    pack_weight, small_matmul_supported, BiasGelu, BiasResidualNorm, SmallMatmul, BLOCK,
};
use super::{BackendError, Embedder};
use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_nn::VarBuilder;
use std::path::Path;
use tokenizers::Tokenizer;

/// A projection's weight, `(out, in)`: f32 for gemm, and a packed f16 copy
/// for [`SmallMatmul`] when the CPU runs it.
struct Weight {
    full: Tensor,
    half: Option<Tensor>,
}

impl Weight {
    fn new(full: Tensor) -> candle_core::Result<Self> {
        let (n, k) = full.dims2()?;
        let half = if small_matmul_supported() && n % BLOCK == 0 {
            let packed = pack_weight(&full.flatten_all()?.to_vec1()?, n, k);
            Some(Tensor::from_vec(
                packed,
                (n / BLOCK, k, BLOCK),
                full.device(),
            )?)
        } else {
            None
        };
        Ok(Self { full, half })
    }

    /// `x · Wᵀ`, with the kernel that suits the token count.
    fn project(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.half {
            Some(half) if x.dim(0)? <= SMALL_BATCH_TOKENS => x.apply_op2_no_bwd(half, &SmallMatmul),
            _ => x.matmul(&self.full.t()?),
        }
    }
}

/// Batches with at most this many tokens use [`SmallMatmul`]; larger ones gemm.
const SMALL_BATCH_TOKENS: usize = 96;

/// A dense layer, weight `(out, in)` as stored.
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
    qkv: Weight,
    qkv_bias: Tensor,
    /// Attention output projection; its bias, the residual and the norm are fused.
    attention_out: Weight,
    attention_end: BiasResidualNorm,
    /// Feed-forward up-projection; its bias and GELU are fused.
    up: Weight,
    up_act: BiasGelu,
    /// Feed-forward down-projection; its bias, the residual and the norm are fused.
    down: Weight,
    output_end: BiasResidualNorm,
}

/// A projection whose bias is applied by a fused kernel, and that kernel's vectors.
fn fused_end(
    vb: VarBuilder,
    inputs: usize,
    outputs: usize,
    norm: VarBuilder,
    eps: f64,
) -> candle_core::Result<(Weight, BiasResidualNorm)> {
    let dense = Dense::load(vb, inputs, outputs)?;
    let norm = Norm::load(norm, outputs, eps)?;
    Ok((
        Weight::new(dense.weight)?,
        BiasResidualNorm {
            bias: dense.bias.to_vec1()?,
            gamma: norm.gamma.to_vec1()?,
            beta: norm.beta.to_vec1()?,
            eps: norm.eps,
        },
    ))
}

/// Consecutive texts of one token length, in the packed matrix.
struct Group {
    /// First token row.
    start: usize,
    /// Texts in the group.
    texts: usize,
    /// Tokens per text.
    len: usize,
}

/// The fast BERT sentence embedder.
pub struct FastBert {
    name: String,
    tokenizer: Tokenizer,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embedding_norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    device: Device,
}

impl FastBert {
    /// Load a Hugging Face BERT folder ([`ModelFiles`]).
    pub fn load(dir: &Path, name: String) -> Result<Self, BackendError> {
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
                let qkv = ["query", "key", "value"]
                    .map(|p| Dense::load(attn.pp("self").pp(p), hidden, hidden));
                let [q, k, v] = qkv;
                let (attention_out, attention_end) = fused_end(
                    attn.pp("output.dense"),
                    hidden,
                    hidden,
                    attn.pp("output.LayerNorm"),
                    eps,
                )?;
                let up = Dense::load(l.pp("intermediate.dense"), hidden, config.intermediate_size)?;
                let (down, output_end) = fused_end(
                    l.pp("output.dense"),
                    config.intermediate_size,
                    hidden,
                    l.pp("output.LayerNorm"),
                    eps,
                )?;
                let qkv = Dense::concat(&[q?, k?, v?])?;
                Ok(Layer {
                    qkv: Weight::new(qkv.weight)?,
                    qkv_bias: qkv.bias,
                    attention_out,
                    attention_end,
                    up_act: BiasGelu {
                        bias: up.bias.to_vec1()?,
                    },
                    up: Weight::new(up.weight)?,
                    down,
                    output_end,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            name,
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
        })
    }

    /// Self-attention of one length group: `(texts·len, 3·hidden)` → `(texts·len, hidden)`.
    fn attend(&self, qkv: &Tensor, g: &Group) -> candle_core::Result<Tensor> {
        let head_dim = self.hidden / self.heads;
        let block = qkv
            .narrow(0, g.start, g.texts * g.len)?
            .reshape((g.texts, g.len, 3, self.heads, head_dim))?;
        // (texts, heads, len, head_dim) each.
        let q = block.i((.., .., 0))?.transpose(1, 2)?.contiguous()?;
        let k = block.i((.., .., 1))?.transpose(1, 2)?.contiguous()?;
        let v = block.i((.., .., 2))?.transpose(1, 2)?.contiguous()?;
        let scale = 1.0 / (head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        probs
            .matmul(&v)?
            .transpose(1, 2)?
            .reshape((g.texts * g.len, self.hidden))
    }

    fn layer(&self, layer: &Layer, x: &Tensor, groups: &[Group]) -> candle_core::Result<Tensor> {
        let qkv = layer.qkv.project(x)?.broadcast_add(&layer.qkv_bias)?;
        let context: Vec<Tensor> = groups
            .iter()
            .map(|g| self.attend(&qkv, g))
            .collect::<candle_core::Result<_>>()?;
        let context = Tensor::cat(&context, 0)?;
        let x = layer
            .attention_out
            .project(&context)?
            .apply_op2_no_bwd(x, &layer.attention_end)?;
        let up = layer.up.project(&x)?.apply_op1_no_bwd(&layer.up_act)?;
        layer
            .down
            .project(&up)?
            .apply_op2_no_bwd(&x, &layer.output_end)
    }
}

impl Embedder for FastBert {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, BackendError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings = super::encode(&self.tokenizer, texts)?;
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
        let mut out = vec![Vec::new(); sorted.len()];
        for (row, &i) in sorted.into_iter().zip(&order) {
            out[i] = row;
        }
        Ok(out)
    }
}
