# syntax=docker/dockerfile:1
# runbookd's image: a release build, then a small Debian runtime with the stripped binary, a
# non-root user and /data for the SQLite database and the lab's files. The playbooks are built
# into the binary. Build: docker build -t runbookd . (or podman build).
#
# The build stage can be replaced by a directory holding a binary built elsewhere, at
# out/runbookd: `podman build --build-context build=DIR` (tests/container.rs does that, as no
# container registry is reachable from its machines).
ARG RUST_IMAGE=docker.io/library/rust:1-slim-bookworm
ARG RUNTIME_IMAGE=docker.io/library/debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when Cargo.toml or Cargo.lock change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
 && for b in ingest ssh engine tools; do echo 'fn main() {}' > benches/$b.rs; done \
 && cargo build --release --locked \
 && rm -rf src benches
COPY . .
# Newer than the placeholder build, so cargo rebuilds the crate itself.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin runbookd \
 && mkdir -p /out \
 && strip -o /out/runbookd target/release/runbookd

FROM ${RUNTIME_IMAGE} AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="runbookd" \
      org.opencontainers.image.description="Alert-driven remediation for a Proxmox homelab" \
      org.opencontainers.image.source="https://github.com/runbookd/runbookd" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# A fixed uid/gid, so Kubernetes' runAsUser and a volume's owner can name it.
RUN groupadd --system --gid 10001 runbookd \
 && useradd --system --uid 10001 --gid runbookd --home-dir /data --no-create-home --shell /usr/sbin/nologin runbookd \
 && mkdir -p /data \
 && chown runbookd:runbookd /data
COPY --from=build /out/runbookd /usr/local/bin/runbookd
USER 10001:10001
WORKDIR /data
VOLUME ["/data"]
ENV RUNBOOKD_LISTEN=0.0.0.0:8080 \
    RUNBOOKD_DB=/data/runbookd.db \
    RUNBOOKD_LOG_FORMAT=json
EXPOSE 8080
# runbookd answers its own /healthz: no curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["runbookd", "health"]
# SIGTERM stops it gracefully: in-flight requests drain, runs stop at a step boundary.
STOPSIGNAL SIGTERM
ENTRYPOINT ["runbookd"]
CMD ["serve"]
