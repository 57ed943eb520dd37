# Build: docker build -t srs-relay .
# Run:   docker run -d --name srs-relay -p 2525:2525 \
#          -v srs-relay-state:/var/lib/srs-relay \
#          -v /etc/srs-relay:/etc/srs-relay:ro \
#          -e SRS_RELAY__SRS__DEFAULT_DOMAIN=forward.example \
#          srs-relay
# /etc/srs-relay holds srs-relay.toml and aliases (contrib/docker/ has both to start
# from); the volume holds the state: spool, secrets (made on first start), sender store,
# message trace. The relay runs as the unprivileged user srs-relay.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
RUN useradd --system --home-dir /var/lib/srs-relay --shell /usr/sbin/nologin srs-relay \
 && mkdir -p /var/lib/srs-relay /etc/srs-relay \
 && chown srs-relay:srs-relay /var/lib/srs-relay && chmod 0700 /var/lib/srs-relay
COPY --from=build /src/target/release/srs-relay /usr/local/bin/srs-relay
COPY contrib/docker/srs-relay.toml contrib/aliases /etc/srs-relay/
USER srs-relay
WORKDIR /var/lib/srs-relay
VOLUME ["/var/lib/srs-relay"]
EXPOSE 2525
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s \
  CMD ["/usr/local/bin/srs-relay", "healthcheck", "--config", "/etc/srs-relay/srs-relay.toml"]
ENTRYPOINT ["/usr/local/bin/srs-relay"]
CMD ["serve", "--config", "/etc/srs-relay/srs-relay.toml"]
