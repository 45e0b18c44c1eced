# The registry binary in a minimal image, for the processes that run
# against a real Kafka cluster and PostgreSQL server. The image carries the
# product alone: the measurement tools (cmd/registry-bench) and the chaos
# harness (cmd/chaos) are not built here, and this build has no failpoints.
#
#   docker run IMAGE serve | project | migrate | rejections [flags]
#
# `registry dev` does NOT work in this image: it starts a private PostgreSQL
# cluster from the server binaries (initdb, postgres), and the final image
# has none. Use `go run ./cmd/registry dev` on a machine with PostgreSQL
# installed, or docker-compose.yml, instead.
#
# Pins (bump them on purpose; deploy/compose_test.go checks that no FROM
# floats and that the Go version matches go.mod):
#   golang:1.26.8-bookworm                    the Go toolchain CI uses (go.mod: go 1.26)
#   gcr.io/distroless/static-debian12:nonroot static Debian 12 base, uid 65532,
#                                             CA certificates and tzdata, no shell.
# The distroless tag is the most specific one Google publishes; pin it by
# digest (`...:nonroot@sha256:...`) for reproducible production builds.

# The build stage runs on the builder's platform and cross-compiles, so a
# multi-platform buildx build needs no emulation. BUILDPLATFORM, TARGETOS
# and TARGETARCH come from BuildKit, the default builder since Docker 23 and
# the one docker compose uses.
FROM --platform=$BUILDPLATFORM golang:1.26.8-bookworm AS build
ARG TARGETOS
ARG TARGETARCH
WORKDIR /src

# Modules first, as their own layer: it is rebuilt only when go.mod or
# go.sum change, not on every source edit.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
# Static (no cgo, so no libc needed at run time), without local paths or
# debug symbols.
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -ldflags="-s -w" -o /out/registry ./cmd/registry

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/registry /registry
USER nonroot:nonroot
# Inside a container the binary's loopback defaults (127.0.0.1:8080 for the
# API, 127.0.0.1:9091 for projector metrics) would be unreachable from
# anywhere else, so listen on every interface. A flag or the variable set
# at run time still wins. The operator pages (REGISTRY_OPS_ADDR) stay on
# loopback unless the deployment says where they may be reached: they have
# no authentication of their own (docker-compose.yml sets 0.0.0.0:9090 on
# its private network).
ENV REGISTRY_HTTP_ADDR=0.0.0.0:8080 \
    REGISTRY_METRICS_ADDR=0.0.0.0:9091
# 8080: the API, its /healthz and /readyz (serve).
# 9090: the operator pages, /ui and /metrics (serve, with REGISTRY_OPS_ADDR).
# 9091: the projector's /metrics (project).
EXPOSE 8080 9090 9091
# No CMD: pick the command (serve, project, migrate, rejections) explicitly.
# Without one the binary prints its usage and exits.
ENTRYPOINT ["/registry"]
