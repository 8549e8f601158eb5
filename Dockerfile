# syntax=docker/dockerfile:1

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, so source changes do not rebuild them. Cargo reads every workspace
# member's manifest and targets, so the bench crate is stubbed too (and its stubs stay:
# only the gateway is built, but the second build loads the workspace again).
COPY Cargo.toml Cargo.lock ./
COPY bench/Cargo.toml ./bench/
RUN mkdir -p src tests/api bench/src bench/benches/amqp_clients \
    && echo 'fn main() {}' > src/main.rs && touch src/lib.rs \
    && echo 'fn main() {}' > tests/api/main.rs \
    && echo 'fn main() {}' > bench/src/main.rs \
    && echo 'fn main() {}' > bench/benches/amqp_clients/main.rs \
    && cargo build --release --locked -p event-gateway --bin event-gateway \
    && rm -rf src tests
COPY src ./src
COPY openapi ./openapi
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs && cargo build --release --locked -p event-gateway --bin event-gateway

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home gateway
COPY --from=build /src/target/release/event-gateway /usr/local/bin/event-gateway
USER gateway
ENV HTTP_ADDR=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/health/live || exit 1
ENTRYPOINT ["event-gateway"]
CMD ["serve"]
