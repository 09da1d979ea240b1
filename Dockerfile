# syntax=docker/dockerfile:1
# The promptad image: the binary and the exact libtorch it was built against.
#
# libtorch is PyPI's torch==2.11.0 (CUDA 13.0 build, with its nvidia-* wheels), the release that
# tch/torch-sys 0.24.0 bind (DESIGN §2); another release computes wrong results or crashes, it does
# not fail cleanly. build.rs gives the binary a RUNPATH to the torch lib folder of the venv it is
# built against, so the runtime stage installs the same torch into a venv at the same path with
# the same Python: the libraries are found without LD_LIBRARY_PATH, and `promptad doctor` checks
# the version and computes a known result before the image is done.
#
#   docker build -t registry.example.com/inspection/promptad:0.1.0 .
#
# There is no Docker engine on the build machine: tests/k8s.rs checks what this file relies on
# (the pins against scripts/bootstrap.sh and Cargo.toml, the RUNPATH, the system libraries the
# binary needs, the user the manifests run as).

ARG TORCH_VERSION=2.11.0
ARG PYTHON=python3.11
ARG VENV=/opt/promptad/venv
ARG UID=10001

FROM rust:1.95-bookworm AS build
ARG TORCH_VERSION
ARG PYTHON
ARG VENV
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*
RUN ${PYTHON} -m venv ${VENV} \
 && ${VENV}/bin/pip install --no-cache-dir --disable-pip-version-check torch==${TORCH_VERSION}
# What torch-sys reads to find libtorch in the venv (as scripts/env.sh sets it).
ENV VIRTUAL_ENV=${VENV} \
    LIBTORCH_USE_PYTORCH=1 \
    PATH=${VENV}/bin:${PATH} \
    CARGO_TARGET_DIR=/build/target
WORKDIR /build/src
COPY . .
RUN cargo build --release --locked --bin promptad \
 && readelf -d /build/target/release/promptad | grep "RUNPATH" | grep -F "${VENV}/lib/${PYTHON}/site-packages/torch/lib"

FROM debian:bookworm-slim AS runtime
ARG TORCH_VERSION
ARG PYTHON
ARG VENV
ARG UID
# python3.11 for the venv that holds libtorch; libstdc++6 and libgcc-s1 are what the binary and
# libtorch need from the system besides glibc; ca-certificates for HTTPS to S3.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libstdc++6 libgcc-s1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN ${PYTHON} -m venv ${VENV} \
 && ${VENV}/bin/pip install --no-cache-dir --disable-pip-version-check torch==${TORCH_VERSION} \
 && ${VENV}/bin/python -c "import torch, sys; v = torch.__version__; sys.exit(0 if v.startswith('${TORCH_VERSION}') else 'torch ' + v + ' is not ${TORCH_VERSION}')"
COPY --from=build /build/target/release/promptad /usr/local/bin/promptad
RUN groupadd --gid ${UID} promptad \
 && useradd --uid ${UID} --gid ${UID} --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin promptad
# libtorch found through the RUNPATH, of the right version, computing right (CPU self-test; the
# build has no GPU, the pods do: their logs show the same check on CUDA).
RUN promptad doctor
# Numeric, so that Kubernetes can verify runAsNonRoot (k8s/base: runAsUser 10001).
USER ${UID}:${UID}
ENV PROMPTAD_CACHE_DIR=/var/cache/promptad
ENTRYPOINT ["/usr/local/bin/promptad"]
CMD ["--help"]
