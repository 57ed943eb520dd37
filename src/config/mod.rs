//! Typed configuration: one TOML file (`config/srs-relay.toml` documents every key) with
//! environment overrides `SRS_RELAY__SECTION__KEY`. Defaults live in one place, with the
//! sections. Every error names the key it is about.

mod error;
mod load;
mod sections;
mod validate;
mod values;

pub use error::ConfigError;
pub use load::ENV_PREFIX;
pub use sections::{
    AdminConfig, AlertsConfig, ArcConfig, AuthConfig, Config, DnsConfig, DsnConfig, LogConfig,
    QueueConfig, RelayConfig, ServerConfig, SocketmapConfig, SpoolConfig, SrsConfig,
    TcpTableConfig, TlsConfig, TraceConfig,
};
pub use values::{
    BounceSenders, DmarcRejectAction, DnsSettings, ListenAddr, delay_warning, duration,
    optional_duration,
};
