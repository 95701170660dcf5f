"""ONNX Runtime baseline for `worker bench`, on the same machine and corpus.

Builds the all-MiniLM-L6-v2 encoder as an ONNX graph straight from the model
folder's safetensors (no PyTorch needed), then times tokenize -> forward ->
mean-pool -> normalise with ONNX Runtime (CPU) at the given batch sizes,
exactly as `worker bench` does (one warm-up batch, then the whole corpus in
chunks). Checks its embedding of "This is an example sentence" against the
sentence-transformers reference values first.

    pip install onnxruntime onnx tokenizers safetensors numpy
    python docs/ort_baseline.py MODEL_DIR CORPUS.json --threads 2 --batch-sizes 1,8,32,64
"""

import argparse
import json
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from tokenizers import Tokenizer

HEADS, HIDDEN, LAYERS, EPS = 12, 384, 6, 1e-12


def build(weights):
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def node(op, inputs, name, **attrs):
        nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def dense(x, prefix, name):
        w = const(prefix + ".weight.T", weights[prefix + ".weight"].T.copy())
        b = const(prefix + ".bias", weights[prefix + ".bias"])
        return node("Add", [node("MatMul", [x, w], name + "_mm"), b], name)

    def norm(x, prefix, name):
        g = const(prefix + ".weight", weights[prefix + ".weight"])
        b = const(prefix + ".bias", weights[prefix + ".bias"])
        return node("LayerNormalization", [x, g, b], name, axis=-1, epsilon=EPS)

    e = "embeddings."
    word = node("Gather", [const("word", weights[e + "word_embeddings.weight"]), "input_ids"], "word_e")
    pos = node("Gather", [const("pos", weights[e + "position_embeddings.weight"]), "position_ids"], "pos_e")
    typ = node("Gather", [const("typ", weights[e + "token_type_embeddings.weight"]), "token_type_ids"], "typ_e")
    x = norm(node("Add", [node("Add", [word, pos], "wp"), typ], "wpt"), e + "LayerNorm", "emb")

    # Additive mask (batch, 1, 1, seq): 0 for tokens, -1e4 for padding.
    maskf = node("Cast", ["attention_mask"], "maskf", to=TensorProto.FLOAT)
    mask = node("Mul", [node("Sub", [const("one", np.float32(1.0)), maskf], "inv"), const("big", np.float32(-1e4))], "madd")
    mask = node("Unsqueeze", [mask, const("ax12", np.array([1, 2], dtype=np.int64))], "mask4")
    heads_shape = const("heads_shape", np.array([0, 0, HEADS, HIDDEN // HEADS], dtype=np.int64))
    merge_shape = const("merge_shape", np.array([0, 0, HIDDEN], dtype=np.int64))
    scale = const("scale", np.float32(1.0 / np.sqrt(HIDDEN // HEADS)))
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        split = lambda t, n: node("Transpose", [node("Reshape", [t, heads_shape], n + "_r")], n, perm=[0, 2, 1, 3])
        q = split(dense(x, p + "attention.self.query", f"q{i}"), f"qh{i}")
        k = node("Transpose", [node("Reshape", [dense(x, p + "attention.self.key", f"k{i}"), heads_shape], f"kr{i}")], f"kh{i}", perm=[0, 2, 3, 1])
        v = split(dense(x, p + "attention.self.value", f"v{i}"), f"vh{i}")
        scores = node("Add", [node("Mul", [node("MatMul", [q, k], f"qk{i}"), scale], f"qks{i}"), mask], f"qkm{i}")
        ctx = node("MatMul", [node("Softmax", [scores], f"sm{i}", axis=-1), v], f"ctx{i}")
        ctx = node("Reshape", [node("Transpose", [ctx], f"ctxt{i}", perm=[0, 2, 1, 3]), merge_shape], f"ctxm{i}")
        attn = dense(ctx, p + "attention.output.dense", f"ao{i}")
        x = norm(node("Add", [attn, x], f"res1_{i}"), p + "attention.output.LayerNorm", f"ln1_{i}")
        up = dense(x, p + "intermediate.dense", f"up{i}")
        # Exact GELU: 0.5 x (1 + erf(x / sqrt 2)).
        erf = node("Erf", [node("Mul", [up, const(f"rs2_{i}", np.float32(1 / np.sqrt(2)))], f"ups{i}")], f"erf{i}")
        gelu = node("Mul", [node("Mul", [up, const(f"half{i}", np.float32(0.5))], f"uph{i}"), node("Add", [erf, const(f"one{i}", np.float32(1.0))], f"erf1{i}")], f"gelu{i}")
        down = dense(gelu, p + "output.dense", f"down{i}")
        x = norm(node("Add", [down, x], f"res2_{i}"), p + "output.LayerNorm", f"ln2_{i}")
    nodes.append(helper.make_node("Identity", [x], ["hidden"]))
    ints = lambda n: helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
    graph = helper.make_graph(
        nodes, "minilm", [ints("input_ids"), ints("token_type_ids"), ints("position_ids"), ints("attention_mask")],
        [helper.make_tensor_value_info("hidden", TensorProto.FLOAT, ["batch", "seq", HIDDEN])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("corpus")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,8,32,64")
    args = ap.parse_args()

    weights = load_file(f"{args.model_dir}/model.safetensors")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(build(weights).SerializeToString(), opts, providers=["CPUExecutionProvider"])
    tok = Tokenizer.from_file(f"{args.model_dir}/tokenizer.json")
    tok.enable_truncation(256)
    tok.enable_padding()

    def embed(texts):
        enc = tok.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        types = np.zeros_like(ids)
        pos = np.broadcast_to(np.arange(ids.shape[1], dtype=np.int64), ids.shape).copy()
        hidden = session.run(None, {"input_ids": ids, "token_type_ids": types, "position_ids": pos, "attention_mask": mask})[0]
        m = mask[:, :, None].astype(np.float32)
        mean = (hidden * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    ref = embed(["This is an example sentence"])[0][:5]
    assert np.allclose(ref, [0.0677, 0.0635, 0.0487, 0.0793, 0.0374], atol=1e-3), ref

    texts = json.load(open(args.corpus))
    rows = []
    for b in [int(s) for s in args.batch_sizes.split(",")]:
        embed(texts[:b])
        start = time.perf_counter()
        batches = 0
        for i in range(0, len(texts), b):
            embed(texts[i:i + b])
            batches += 1
        secs = time.perf_counter() - start
        rows.append({"batch_size": b, "sentences_per_s": len(texts) / secs, "ms_per_batch": secs * 1000 / batches})
        print(f"onnxruntime {ort.__version__}  batch {b:>3}: {len(texts) / secs:7.1f} sentences/s  {secs * 1000 / batches:8.2f} ms/batch", flush=True)
    print(json.dumps({"results": rows}))


if __name__ == "__main__":
    main()
