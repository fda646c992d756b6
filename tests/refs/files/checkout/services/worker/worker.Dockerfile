ARG GO_VERSION
ARG ALPINE=alpine:3.19

FROM golang:${GO_VERSION:-1.22}-bookworm as build
ARG TARGETOS
ARG TARGETARCH
RUN --mount=type=bind,from=registry.example.com/team/shared-assets:2024.05,target=/assets \
    GOOS=$TARGETOS GOARCH=$TARGETARCH go build -o /worker ./cmd/worker

FROM ${ALPINE}
COPY --from=build /worker /usr/local/bin/worker
COPY --from=registry.example.com/team/migrations@sha256:4d7e4f0b8e2a8c1f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f /sql /sql

FROM ${UNSET_BASE}
