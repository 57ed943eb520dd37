# Build: docker build -t srs-relay .
# Run:   docker run -v /etc/srs-relay:/etc/srs-relay -p 2525:2525 srs-relay serve --config /etc/srs-relay/srs-relay.toml
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --home /var/lib/srs-relay srs-relay \
 && mkdir -p /var/lib/srs-relay /etc/srs-relay && chown srs-relay /var/lib/srs-relay
COPY --from=build /src/target/release/srs-relay /usr/local/bin/srs-relay
COPY config/srs-relay.toml /etc/srs-relay/srs-relay.toml
USER srs-relay
WORKDIR /var/lib/srs-relay
ENTRYPOINT ["/usr/local/bin/srs-relay"]
CMD ["check-config", "--config", "/etc/srs-relay/srs-relay.toml"]
