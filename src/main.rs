//! The `srs-relay` command: the SRS codec from the shell, and (with the `server` feature)
//! the relay itself. Exit status: 0 done, 1 the address was refused, 2 usage or
//! configuration error — each failure one line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
#[cfg(feature = "server")]
mod cli {
    pub mod explain;
    pub mod healthcheck;
    pub mod queue;
    pub mod reload;
}

use srs_relay::config::{self, Config};
use srs_relay::srs::{Format, Srs, unix_now};

#[derive(Parser)]
#[command(
    name = "srs-relay",
    version,
    about = "SMTP forwarding relay with the Sender Rewriting Scheme"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct CodecArgs {
    /// Configuration file (TOML); without it, defaults and SRS_RELAY__* variables apply.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Secrets file (one per line, first signs), overriding srs.secrets_file.
    #[arg(long, value_name = "FILE")]
    secrets_file: Option<PathBuf>,
    /// Clock, in seconds since the epoch (for tests and for checking old addresses).
    #[arg(long, value_name = "UNIX_SECONDS")]
    now: Option<u64>,
}

#[derive(Subcommand)]
enum Command {
    /// Rewrite a sender address; prints the SRS address (or the sender, if exempt).
    Forward {
        #[command(flatten)]
        codec: CodecArgs,
        /// Form to write, overriding srs.format.
        #[arg(long, value_parser = ["microsoft", "classic"])]
        format: Option<String>,
        /// Forwarding mailbox (the alias that forwarded the message).
        #[arg(long, value_name = "USER@DOMAIN", conflicts_with = "domain")]
        alias: Option<String>,
        /// SRS domain, with no forwarding mailbox (default: srs.default_domain).
        #[arg(long, value_name = "SRS_DOMAIN")]
        domain: Option<String>,
        address: String,
    },
    /// Decode an SRS address; prints the original, or exits 1 saying why not.
    Reverse {
        #[command(flatten)]
        codec: CodecArgs,
        address: String,
    },
    /// Explain an SRS address hop by hop: its fields, whether its hash verifies (and under
    /// which secret), its age, and where a bounce to it goes or why it is refused.
    #[cfg(feature = "server")]
    Explain {
        #[command(flatten)]
        codec: CodecArgs,
        #[arg(long)]
        json: bool,
        address: String,
    },
    /// Is the relay on this host up? /healthz on admin.listen, else SMTP NOOP on the first
    /// server.listen address; exit 0, or 1 saying why (for a container's HEALTHCHECK).
    #[cfg(feature = "server")]
    Healthcheck {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print a new random secret (256 bits) for a secrets file.
    Keygen,
    /// Write a new ARC/DKIM signing key (PEM, mode 0600) for `arc.key` and print the DNS
    /// TXT record to publish; with --print-record, only print the record of an existing
    /// key (Ed25519 or RSA) at --out.
    #[cfg(feature = "server")]
    ArcKeygen {
        /// The key file to write (never overwritten) or, with --print-record, to read.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The selector (`arc.selector`): the record goes at <selector>._domainkey.<domain>.
        #[arg(long)]
        selector: String,
        /// The signing domain (`arc.domain`).
        #[arg(long)]
        domain: String,
        /// rsa (what Gmail, Microsoft and RFC 8617 verify; made by openssl) or ed25519
        /// (faster; verified by srs-relay and mail-auth, not by the big providers).
        #[arg(long, default_value = "rsa", value_parser = ["rsa", "ed25519"])]
        algorithm: String,
        /// The size of an RSA key (default 2048).
        #[arg(long)]
        bits: Option<u32>,
        #[arg(long)]
        print_record: bool,
    },
    /// Validate the configuration; names the offending key on error.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run the relay: SMTP listeners, spool and delivery, until SIGTERM/SIGINT.
    #[cfg(feature = "server")]
    Serve {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Run only the Postfix lookup services (socketmap, tcp_table) until SIGTERM/SIGINT.
    #[cfg(feature = "server")]
    Socketmap {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Search the message trace (works while serve runs); `trace show ID` for one message.
    #[cfg(feature = "server")]
    #[command(args_conflicts_with_subcommands = true)]
    Trace {
        #[command(subcommand)]
        show: Option<TraceShow>,
        #[command(flatten)]
        search: TraceArgs,
    },
    /// Queued messages: list, show, retry, hold, release, delete, bounce (through the
    /// running relay; with it stopped, on the spool directly).
    #[cfg(feature = "server")]
    Queue {
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Make the running relay read its configuration, aliases, secrets and certificate
    /// again (as SIGHUP does); prints what changed, or exits 1 with why it was refused.
    #[cfg(feature = "server")]
    Reload {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Write a self-signed certificate and key (cert.pem, key.pem) for a first run.
    #[cfg(feature = "server")]
    GenCert {
        /// Name in the certificate (default: server.hostname from the configuration).
        #[arg(long)]
        hostname: Option<String>,
        /// Directory to write into.
        #[arg(long, default_value = "certs")]
        dir: PathBuf,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// `srs-relay trace`'s filters and output.
#[cfg(feature = "server")]
#[derive(clap::Args)]
struct TraceArgs {
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Envelope sender, as given or as rewritten (`*` wildcards).
    #[arg(long)]
    sender: Option<String>,
    /// Recipient, as given or after alias expansion (`*` wildcards).
    #[arg(long)]
    recipient: Option<String>,
    /// Part of the Subject (`*` wildcards).
    #[arg(long)]
    subject: Option<String>,
    #[arg(long)]
    message_id: Option<String>,
    #[arg(long)]
    queue_id: Option<String>,
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(srs_relay::trace::STATUSES))]
    status: Option<String>,
    /// RFC 3339 time, or a time ago (`2h`, `3d`).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    until: Option<String>,
    /// Rows at most (up to 100000).
    #[arg(long, default_value_t = 1000)]
    limit: u32,
    /// Mail loops refused (554 5.4.6) by the hosts in their Received chains, with counts.
    #[arg(long, conflicts_with_all = ["sender", "recipient", "subject", "message_id", "queue_id", "status"])]
    loops: bool,
    /// RFC 4180 CSV with a header row.
    #[arg(long, conflicts_with = "json")]
    csv: bool,
    #[arg(long)]
    json: bool,
}

#[cfg(feature = "server")]
#[derive(Subcommand)]
enum TraceShow {
    /// Every event of one message (queue id or Message-ID) and of those sharing its Message-ID.
    Show {
        id: String,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[cfg(feature = "server")]
#[derive(Subcommand)]
enum QueueCommand {
    /// Every queued message: id, state, age, attempts, next attempt, sender as received
    /// and as sent, recipients with their state and last reply.
    List {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One message: its envelope, header and history (from the trace, if on).
    Show {
        id: String,
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Attempt now (held messages stay held).
    Retry(QueueSelect),
    /// Put on hold: not attempted, and not expiring, until released.
    Hold(QueueSelect),
    /// Release from hold: attempted now, lifetime extended by the time held.
    Release(QueueSelect),
    /// Remove from the queue without a DSN.
    Delete(QueueSelect),
    /// Fail now, with a DSN to the original sender.
    Bounce(QueueSelect),
}

/// The messages a queue action applies to: ids, `--all` or `--domain`.
#[cfg(feature = "server")]
#[derive(clap::Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("messages").required(true).multiple(false)))]
struct QueueSelect {
    /// Queue ids.
    #[arg(group = "messages")]
    ids: Vec<String>,
    /// Every queued message.
    #[arg(long, group = "messages")]
    all: bool,
    /// Messages with a pending recipient in this domain.
    #[arg(long, value_name = "DOMAIN", group = "messages")]
    domain: Option<String>,
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[cfg(feature = "server")]
fn queue(command: QueueCommand) -> Result<(), Failure> {
    use srs_relay::delivery::control::{Action, Select};
    let (action, select) = match command {
        QueueCommand::List { config, json } => {
            return cli::queue::list(&Config::load(config.as_deref())?, json);
        }
        QueueCommand::Show { id, config, json } => {
            return cli::queue::show(&Config::load(config.as_deref())?, &id, json);
        }
        QueueCommand::Retry(s) => (Action::Retry, s),
        QueueCommand::Hold(s) => (Action::Hold, s),
        QueueCommand::Release(s) => (Action::Release, s),
        QueueCommand::Delete(s) => (Action::Delete, s),
        QueueCommand::Bounce(s) => (Action::Bounce, s),
    };
    let cfg = Config::load(select.config.as_deref())?;
    // With the relay stopped the command acts on the spool itself: its log lines (one per
    // action, as the relay's) go to stderr.
    init_logging(&cfg.log.format);
    let which = match (select.all, select.domain) {
        (true, _) => Select::All,
        (false, Some(d)) => Select::Domain(d),
        (false, None) => Select::Ids(select.ids),
    };
    cli::queue::act(&cfg, action, which)
}

/// A failure and the exit status it maps to.
enum Failure {
    Refused(String),
    Usage(String),
}

impl From<config::ConfigError> for Failure {
    fn from(e: config::ConfigError) -> Self {
        Failure::Usage(e.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Refused(msg)) => {
            eprintln!("srs-relay: {msg}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(msg)) => {
            eprintln!("srs-relay: {msg}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Forward {
            codec,
            format,
            alias,
            domain,
            address,
        } => {
            let (cfg, mut srs_options, secrets) = load_codec(&codec)?;
            if let Some(f) = format {
                srs_options.format = f.parse::<Format>().map_err(Failure::Usage)?;
            }
            let srs = Srs::new(&secrets, srs_options).map_err(|e| Failure::Usage(e.to_string()))?;
            let now = codec.now.unwrap_or_else(unix_now);
            let out = match (alias, domain.or(cfg.srs.default_domain)) {
                (Some(alias), _) => srs.forward_at(&address, &alias, now),
                (None, Some(domain)) => srs.forward_for_domain_at(&address, &domain, now),
                (None, None) => {
                    return Err(Failure::Usage("no forwarding address: give --alias or --domain, or set srs.default_domain".into()));
                }
            };
            println!("{}", out.map_err(|e| Failure::Refused(e.to_string()))?);
            Ok(())
        }
        Command::Reverse { codec, address } => {
            let (cfg, options, secrets) = load_codec(&codec)?;
            let srs = Srs::new(&secrets, options).map_err(|e| Failure::Usage(e.to_string()))?;
            let now = codec.now.unwrap_or_else(unix_now);
            let decoded = srs
                .decode_at(&address, now)
                .map_err(|e| Failure::Refused(e.to_string()))?;
            let original = match decoded {
                srs_relay::srs::Decoded::Address(a) => a,
                srs_relay::srs::Decoded::Stored { token } => stored_sender(&cfg, &token)?,
            };
            println!("{original}");
            Ok(())
        }
        #[cfg(feature = "server")]
        Command::Explain {
            codec,
            json,
            address,
        } => {
            let cfg = Config::load(codec.config.as_deref())?;
            let options = cfg.srs.options()?;
            let path = codec
                .secrets_file
                .clone()
                .unwrap_or_else(|| cfg.secrets_path());
            let numbered = srs_relay::secrets::read_numbered(&path)?;
            let lines: Vec<usize> = numbered.iter().map(|(line, _)| *line).collect();
            let secrets: Vec<&[u8]> = numbered.iter().map(|(_, s)| s.as_slice()).collect();
            let srs = Srs::new(&secrets, options).map_err(|e| Failure::Usage(e.to_string()))?;
            let now = codec.now.unwrap_or_else(unix_now);
            cli::explain::run(&cfg, &srs, &lines, &path, &address, now, json)
        }
        #[cfg(feature = "server")]
        Command::Healthcheck { config } => {
            let cfg = Config::load(config.as_deref())?;
            cli::healthcheck::run(&cfg)
        }
        Command::Keygen => {
            println!("{}", srs_relay::secrets::new_secret()?);
            Ok(())
        }
        #[cfg(feature = "server")]
        Command::ArcKeygen {
            out,
            selector,
            domain,
            algorithm,
            bits,
            print_record,
        } => {
            use srs_relay::auth::SigningKey;
            if !print_record {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let pem = match (algorithm.as_str(), bits) {
                    ("ed25519", Some(_)) => Err("--bits is for RSA keys".to_owned()),
                    ("ed25519", None) => SigningKey::generate_ed25519_pem(),
                    (_, bits) => SigningKey::generate_rsa_pem(bits.unwrap_or(2048)),
                }
                .map_err(Failure::Usage)?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&out)
                    .map_err(|e| Failure::Usage(format!("{}: {e}", out.display())))?;
                if let Err(e) = f.write_all(pem.as_bytes()).and_then(|()| f.sync_all()) {
                    // No half-written key left to block the next try.
                    let _ = std::fs::remove_file(&out);
                    return Err(Failure::Usage(format!("{}: {e}", out.display())));
                }
                eprintln!("wrote {}", out.display());
            }
            let pem = std::fs::read(&out)
                .map_err(|e| Failure::Usage(format!("{}: {e}", out.display())))?;
            let key = SigningKey::from_pem(&pem)
                .map_err(|e| Failure::Usage(format!("{}: {e}", out.display())))?;
            println!(
                "{selector}._domainkey.{domain}. IN TXT {}",
                srs_relay::auth::keys::zone_strings(&key.dns_record())
            );
            Ok(())
        }
        Command::CheckConfig { config } => {
            let cfg = Config::load(config.as_deref())?;
            let secrets = cfg.secrets_path();
            if secrets.exists() {
                srs_relay::secrets::read(&secrets)?;
            } else {
                eprintln!(
                    "srs-relay: note: srs.secrets_file {} does not exist yet (serve creates it)",
                    secrets.display()
                );
            }
            #[cfg(feature = "server")]
            {
                srs_relay::policy::Policy::from_config(&cfg)?;
                srs_relay::socketmap::Settings::from_config(&cfg)?;
                srs_relay::auth::Authenticator::check_config(&cfg)?;
                if let (Some(cert), Some(key)) = (&cfg.tls.cert, &cfg.tls.key) {
                    srs_relay::tls::server_config(&cfg.resolve(cert), &cfg.resolve(key))
                        .map_err(Failure::Usage)?;
                }
            }
            if cfg.srs.default_domain.is_none() && !cfg.server.hostname.contains('.') {
                eprintln!(
                    "srs-relay: note: server.hostname {:?} is not a domain name and srs.default_domain is not set: relayed mail's SRS addresses would end in @{}; set srs.default_domain (and server.hostname to this host's full name)",
                    cfg.server.hostname, cfg.server.hostname
                );
            }
            println!("configuration OK");
            Ok(())
        }
        #[cfg(feature = "server")]
        Command::Serve { config } => {
            let cfg = Config::load(config.as_deref())?;
            init_logging(&cfg.log.format);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))?;
            runtime
                .block_on(srs_relay::relay::serve(cfg))
                .map_err(Failure::Usage)
        }
        #[cfg(feature = "server")]
        Command::Socketmap { config } => {
            let cfg = Config::load(config.as_deref())?;
            init_logging(&cfg.log.format);
            // Only the listeners are async; every connection has a thread of its own.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Failure::Usage(format!("cannot start the runtime: {e}")))?;
            runtime
                .block_on(srs_relay::relay::serve_lookups(cfg))
                .map_err(Failure::Usage)
        }
        #[cfg(feature = "server")]
        Command::Trace { show, search } => trace(show, search),
        #[cfg(feature = "server")]
        Command::Queue { command } => queue(command),
        #[cfg(feature = "server")]
        Command::Reload { config } => cli::reload::run(&Config::load(config.as_deref())?),
        #[cfg(feature = "server")]
        Command::GenCert {
            hostname,
            dir,
            config,
        } => {
            let cfg = Config::load(config.as_deref())?;
            let hostname = hostname.unwrap_or(cfg.server.hostname);
            let (cert, key) =
                srs_relay::tls::generate_self_signed(&hostname, &dir).map_err(Failure::Usage)?;
            println!(
                "wrote {} and {} for {hostname}",
                cert.display(),
                key.display()
            );
            Ok(())
        }
    }
}

/// `srs-relay trace`: search, or show one message.
#[cfg(feature = "server")]
fn trace(show: Option<TraceShow>, args: TraceArgs) -> Result<(), Failure> {
    use srs_relay::trace::{self, Filter, output, parse_time};
    if let Some(TraceShow::Show { id, config }) = show {
        let cfg = Config::load(config.as_deref())?;
        let store = trace::open_for_reading(&cfg).map_err(Failure::Usage)?;
        let events = store.show(&id).map_err(|e| Failure::Usage(e.to_string()))?;
        if events.is_empty() {
            return Err(Failure::Refused(format!("no trace of {id}")));
        }
        print!("{}", output::events(&events));
        return Ok(());
    }
    if args.limit == 0 || args.limit > trace::MAX_LIMIT {
        return Err(Failure::Usage(format!(
            "--limit: {} is not between 1 and {}",
            args.limit,
            trace::MAX_LIMIT
        )));
    }
    let time = |flag: &str, t: &Option<String>| {
        t.as_deref()
            .map(parse_time)
            .transpose()
            .map_err(|e| Failure::Usage(format!("--{flag}: {e}")))
    };
    if args.loops {
        let cfg = Config::load(args.config.as_deref())?;
        let store = trace::open_for_reading(&cfg).map_err(Failure::Usage)?;
        let since = time("since", &args.since)?.unwrap_or(0);
        let until = time("until", &args.until)?.unwrap_or(i64::MAX);
        let refusals = store
            .loop_refusals(since, until, args.limit)
            .map_err(|e| Failure::Usage(e.to_string()))?;
        let (hosts, loops) = trace::loops::by_host(&refusals);
        if args.csv {
            print!("{}", output::loops_csv(&hosts));
        } else if args.json {
            println!("{}", output::loops_json(&hosts, loops));
        } else {
            print!("{}", output::loops_table(&hosts, loops));
        }
        return Ok(());
    }
    let filter = Filter {
        since: time("since", &args.since)?,
        until: time("until", &args.until)?,
        sender: args.sender,
        recipient: args.recipient,
        subject: args.subject,
        message_id: args.message_id,
        queue_id: args.queue_id,
        status: args.status,
        limit: args.limit,
    };
    let cfg = Config::load(args.config.as_deref())?;
    let store = trace::open_for_reading(&cfg).map_err(Failure::Usage)?;
    let rows = store
        .search(&filter)
        .map_err(|e| Failure::Usage(e.to_string()))?;
    if args.csv {
        print!("{}", output::csv(&rows));
    } else if args.json {
        println!("{}", output::json(&rows));
    } else {
        print!("{}", output::table(&rows));
    }
    Ok(())
}

/// One structured line per event on stderr, readable text or JSON (`log.format`);
/// `RUST_LOG` filters (default `info`).
#[cfg(feature = "server")]
fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        // Every field (queue_id, event, ...) at the top level of each line.
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        builder.with_ansi(ansi).init();
    }
}

/// The sender a stored-form token names, from `srs.store`.
fn stored_sender(cfg: &Config, token: &str) -> Result<String, Failure> {
    stored_lookup(cfg, token)?.ok_or_else(|| {
        Failure::Refused("stored SRS address: its token is unknown or expired in srs.store".into())
    })
}

/// The sender a stored-form token names in `srs.store`, if it is there.
#[cfg(feature = "server")]
fn stored_lookup(cfg: &Config, token: &str) -> Result<Option<String>, Failure> {
    use srs_relay::sender_store::SenderStore;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Usage(e.to_string()))?;
    runtime.block_on(async {
        // The embedded file is locked while `serve` runs: say so rather than wait.
        let store = SenderStore::open(&cfg.srs.store, &cfg.base_dir)
            .await
            .map_err(|e| Failure::Usage(format!("srs.store: {e}")))?;
        store
            .get(token)
            .await
            .map_err(|e| Failure::Usage(e.to_string()))
    })
}

#[cfg(not(feature = "server"))]
fn stored_lookup(_: &Config, token: &str) -> Result<Option<String>, Failure> {
    Err(Failure::Refused(format!(
        "stored SRS address (token {token}): its sender is in the relay's store, which this build cannot read"
    )))
}

fn load_codec(args: &CodecArgs) -> Result<(Config, srs_relay::Options, Vec<Vec<u8>>), Failure> {
    let cfg = Config::load(args.config.as_deref())?;
    let options = cfg.srs.options()?;
    let secrets_path = match &args.secrets_file {
        Some(p) => p.clone(),
        None => cfg.secrets_path(),
    };
    let secrets = srs_relay::secrets::read(&secrets_path)?;
    Ok((cfg, options, secrets))
}
