# syntax=docker/dockerfile:1
#
# backplan in a container: `backplan daemon` as a sidecar next to the application
# (see deploy/compose.yaml and docs/operations.md, "Deployment").
#
#   docker build -t backplan .
#   docker run --rm -v ./backplan.yaml:/etc/backplan/policy.yaml:ro backplan plan
#
# Two stages: the build on Debian bookworm with what scripts/install-deps installs for
# a build (a C toolchain, pkg-config, OpenSSL's headers, libclang for bindgen), and a
# slim bookworm runtime with the PostgreSQL client tools of every supported major
# version (backplan picks a pg_dump at least as new as the server, newest first) from
# the PostgreSQL project's apt repository (PGDG).

FROM rust:1-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && install -m 0755 target/release/backplan /usr/local/bin/backplan

FROM debian:bookworm-slim AS runtime
# The PostgreSQL majors whose client tools the image carries.
ARG PG_MAJORS="14 15 16 17 18"
# ca-certificates: TLS to S3 and the other services; libssl3: OpenPGP (sequoia's
# OpenSSL backend); openssh-client: sftp destinations; curl: the health check and
# the PGDG key; redis-server: the throwaway servers a restore drill restores Redis
# into (backplan speaks Redis's protocol itself; no client tool is needed).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 openssh-client redis-server \
    && install -d /usr/share/postgresql-common/pgdg \
    && curl -fsSL -o /usr/share/postgresql-common/pgdg/apt.postgresql.org.asc \
        https://www.postgresql.org/media/keys/ACCC4CF8.asc \
    && echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt bookworm-pgdg main" \
        > /etc/apt/sources.list.d/pgdg.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends $(for v in $PG_MAJORS; do echo "postgresql-client-$v"; done) \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/backplan /usr/local/bin/backplan
# Not root: the uploads and config volumes need only be readable by this user (or
# its group), the fs destination writable. Restores that set file owners run as root
# (`docker run --user 0 …`).
# /var/lib/backplan/backups is there for an fs destination on a volume: a new named
# volume mounted on it starts out owned by this user.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/backplan --create-home backplan \
    && install -d -o backplan -g backplan /var/lib/backplan/backups
USER backplan
WORKDIR /var/lib/backplan
ENV BACKPLAN_POLICY=/etc/backplan/policy.yaml
EXPOSE 9184
# The daemon's /healthz, on the address CMD gives it.
HEALTHCHECK --interval=1m --timeout=5s \
    CMD curl -fsS http://127.0.0.1:9184/healthz >/dev/null || exit 1
ENTRYPOINT ["backplan"]
CMD ["daemon", "--listen", "0.0.0.0:9184"]
