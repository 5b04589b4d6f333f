# gengate's container images, from one Dockerfile (see docs/deploy.md, "Containers"):
#
#   docker build -t gengate .                             the API (and gengatectl): small
#   docker build --target worker -t gengate-worker .      the workers: the same binaries and ffmpeg
#   docker build --target sim -t gengate-sim .            the provider simulator (demo and tests)
#   docker compose up --build                             the whole stack (compose.yaml)
#
# Stages: `build` compiles the workspace's binaries (release) in the official Rust image; `base` is
# Debian slim with CA certificates, curl (for health checks) and the unprivileged user `gengate`
# (uid 10001), which every image runs as; `runtime` (the default, last stage) adds gengate-api,
# gengate-worker and gengatectl; `worker` adds the same three and ffmpeg (the workers probe result
# files and cut posters with it); `sim` adds the simulator only.
#
# Build arguments, for builds without a registry or a second compilation (the container test,
# tests/tests/e2e/containers.rs, uses both):
#   RUNTIME_BASE  the image the runtime stages start from (default debian:bookworm-slim; the test
#                 gives a local Debian bookworm image made by deploy/containers/base-image)
#   BINARIES      `build` (default: compile here) or `prebuilt`: take the binaries from `bin/` in the
#                 build context (gengate-api, gengate-worker, gengatectl, provider-sim), built on a
#                 glibc no newer than the runtime base's (Debian 12: 2.36); the `build` stage is
#                 then skipped altogether.
#   RUST_IMAGE    the compiler image (default rust:1.94-slim-bookworm, the workspace's rust-version
#                 on the runtime base's Debian release).
#   STRIP         `true` (default): the compiled binaries lose their debug information (line
#                 tables); `false` keeps it (binaries four times as large).

ARG RUST_IMAGE=docker.io/library/rust:1.94-slim-bookworm
ARG RUNTIME_BASE=docker.io/library/debian:bookworm-slim
ARG BINARIES=build

# ---- build: the release binaries, compiled from the build context (see .dockerignore) ----------
FROM ${RUST_IMAGE} AS build
# The release profile keeps line tables (file:line in backtraces), which makes each binary about
# 120 MB; the images carry them stripped of debug information (about 30 MB, function names kept).
# --build-arg STRIP=false keeps it.
ARG STRIP=true
WORKDIR /src
COPY . .
# The registry and the target directory are cache mounts: a rebuild after a source change compiles
# gengate's crates, not every dependency again.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
        -p gengate-api -p gengate-worker -p gengatectl -p gengate-sim \
    && mkdir /out \
    && cp target/release/gengate-api target/release/gengate-worker target/release/gengatectl \
          target/release/provider-sim /out/ \
    && if [ "$STRIP" = true ]; then strip --strip-debug /out/*; fi

# ---- prebuilt: binaries compiled outside, from the build context's bin/ -------------------------
FROM scratch AS prebuilt
COPY bin/gengate-api bin/gengate-worker bin/gengatectl bin/provider-sim /out/

# ---- binaries: whichever of the two BINARIES names ----------------------------------------------
# (The `:-build` repeats the default for buildah, which otherwise overlooks that this stage needs
# `build` when BINARIES is not given on the command line, skips it, and fails.)
FROM ${BINARIES:-build} AS binaries

# ---- base: what every runtime image has ----------------------------------------------------------
FROM ${RUNTIME_BASE} AS base
# ca-certificates: the providers and S3 are reached over HTTPS. curl: the compose health checks
# call /readyz with it. The user owns /var/lib/gengate (the default storage directory), so a fresh
# named volume mounted there is writable by it.
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates curl; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 gengate; \
    useradd --system --uid 10001 --gid gengate --home-dir /var/lib/gengate --shell /usr/sbin/nologin gengate; \
    install -d -o gengate -g gengate -m 0750 /var/lib/gengate /var/lib/gengate/objects
WORKDIR /var/lib/gengate

# ---- sim: the provider simulator (for the demo stack and tests; never deploy it to production) --
FROM base AS sim
COPY --from=binaries /out/provider-sim /usr/local/bin/provider-sim
USER 10001:10001
EXPOSE 8099
ENTRYPOINT ["/usr/local/bin/provider-sim"]
CMD ["--listen", "0.0.0.0:8099"]

# ---- worker: the three binaries and ffmpeg; runs gengate-worker ---------------------------------
FROM base AS worker
# ffmpeg/ffprobe: the workers probe every copied result file and cut a poster from each video
# (archive.ffprobe, archive.ffmpeg); without them files are still copied, without posters or sizes.
# Debian's ffmpeg brings most of a media stack (several hundred MB), hence an image of its own: the
# API's stays small.
RUN set -eux; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*
COPY --from=binaries /out/gengate-api /out/gengate-worker /out/gengatectl /usr/local/bin/
# Listen on every interface inside the container (the defaults are 127.0.0.1, for a host); keep
# result files under /var/lib/gengate/objects (mount a volume there, or use S3). Everything else:
# GENGATE__… variables or a TOML file (GENGATE_CONFIG); see deploy/gengate.example.toml.
ENV GENGATE__API__LISTEN=0.0.0.0:8080 \
    GENGATE__API__OPS_LISTEN=0.0.0.0:8081 \
    GENGATE__WORKER__LISTEN=0.0.0.0:9090 \
    GENGATE__STORAGE__PATH=/var/lib/gengate/objects \
    GENGATE__TELEMETRY__LOG_FORMAT=json
USER 10001:10001
# 9090: the worker's /healthz, /readyz and /metrics.
EXPOSE 9090
CMD ["gengate-worker"]

# ---- runtime (the default): the three binaries, small; runs gengate-api ------------------------
FROM base AS runtime
COPY --from=binaries /out/gengate-api /out/gengate-worker /out/gengatectl /usr/local/bin/
# As in `worker`.
ENV GENGATE__API__LISTEN=0.0.0.0:8080 \
    GENGATE__API__OPS_LISTEN=0.0.0.0:8081 \
    GENGATE__WORKER__LISTEN=0.0.0.0:9090 \
    GENGATE__STORAGE__PATH=/var/lib/gengate/objects \
    GENGATE__TELEMETRY__LOG_FORMAT=json
USER 10001:10001
# 8080: the public API; 8081: its operations listener (metrics, health; keep it off the internet).
EXPOSE 8080 8081
CMD ["gengate-api", "serve"]
