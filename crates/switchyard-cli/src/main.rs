//! `switchyard`: serve the gateway, or administer its routes table from the shell.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard_cli::{DEFAULT_MAX_BODY_BYTES, ServeConfig, ServerTlsFiles, Workers};
use switchyard_router::{Admin, RouteRow};

/// Resilience and routing for tower services: an HTTP gateway whose routes — local, remote or
/// switched off — live in a SQLite table you can change while it runs.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve `POST /{service}` over the routes table, reloading it when it changes.
    Serve {
        /// The routes database; created, with routes `echo` and `billing`, if missing.
        #[arg(long, default_value = "./switchyard.db")]
        db: PathBuf,
        /// The address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// How often to check the database for changes (e.g. `200ms`, `1s`).
        #[arg(long, default_value = "200ms", value_parser = parse_duration)]
        poll_interval: Duration,
        /// Let `http` routes call loopback and private addresses (trusted networks only).
        #[arg(long)]
        allow_internal: bool,
        /// Enable the admin API under `/admin/routes`, guarded by this bearer token (prefer the
        /// environment variable: arguments show in `ps`).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// The largest request body accepted, in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_BODY_BYTES)]
        max_body_bytes: usize,
        /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with this PEM certificate chain; reloaded
        /// when the file changes (a pair that does not load keeps the previous one serving).
        #[arg(long, requires = "tls_key", value_name = "FILE")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of `--tls-cert` (PKCS#8, PKCS#1 or SEC1).
        #[arg(long, requires = "tls_cert", value_name = "FILE")]
        tls_key: Option<PathBuf>,
        /// Require client certificates signed by the CA(s) in this PEM file (mTLS).
        #[arg(long, requires = "tls_cert", value_name = "FILE")]
        tls_client_ca: Option<PathBuf>,
        /// Serving threads: a count (default: one per core), each with its own runtime and its
        /// own socket on the address, so a request never changes thread; or `shared`, one
        /// work-stealing runtime behind one socket (for handlers that block their thread).
        #[arg(long, default_value_t = Workers::per_core(), value_name = "N|shared")]
        workers: Workers,
    },
    /// Read and change the routes table (a running server picks changes up by itself).
    Routes {
        /// The routes database.
        #[arg(long, default_value = "./switchyard.db", global = true)]
        db: PathBuf,
        #[command(subcommand)]
        command: RoutesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum RoutesCommand {
    /// List every route.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one route as JSON.
    Get {
        /// The service name.
        service: String,
    },
    /// Create or replace a route.
    Set {
        /// The service name.
        service: String,
        /// `local`, `noop`, `http` or another registered strategy.
        #[arg(long)]
        strategy: String,
        /// The remote endpoint (a URL for `http`).
        #[arg(long)]
        endpoint: Option<String>,
        /// The route's config: a JSON object (resilience sections and `transport`).
        #[arg(long)]
        config: Option<String>,
    },
    /// Change only a route's strategy (`noop` switches it off).
    Strategy {
        /// The service name.
        service: String,
        /// The new strategy.
        strategy: String,
    },
    /// Delete a route.
    Delete {
        /// The service name.
        service: String,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(duration)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            db,
            listen,
            poll_interval,
            allow_internal,
            admin_token,
            max_body_bytes,
            tls_cert,
            tls_key,
            tls_client_ca,
            workers,
        } => serve(ServeConfig {
            db,
            listen,
            poll_interval,
            allow_internal,
            admin_token,
            max_body_bytes,
            tls: tls_cert.zip(tls_key).map(|(cert, key)| ServerTlsFiles {
                cert,
                key,
                client_ca: tls_client_ca,
            }),
            workers,
        }),
        Command::Routes { db, command } => match routes(&db, command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("switchyard: {err}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config: ServeConfig) -> ExitCode {
    // RUST_LOG takes one level (error, warn, info, debug, trace) for every target.
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("switchyard: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let result = runtime.block_on(switchyard_cli::serve(
        config,
        |addr| {
            // Scripts and tests read the bound address (useful with port 0) from stdout.
            println!("switchyard listening on {scheme}://{addr}");
            let _ = std::io::stdout().flush();
        },
        switchyard_cli::shutdown_signal(),
    ));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("switchyard: {err}");
            ExitCode::FAILURE
        }
    }
}

fn routes(db: &std::path::Path, command: RoutesCommand) -> Result<(), Box<dyn std::error::Error>> {
    // Only `set` may create a database: a mistyped `--db` must not silently make an empty one.
    if !db.exists() && !matches!(command, RoutesCommand::Set { .. }) {
        return Err(format!(
            "no routes database at {} (`switchyard serve` creates one; or pass --db)",
            db.display()
        )
        .into());
    }
    let admin = Admin::open(db)?;
    let admin = admin.blocking();
    match command {
        RoutesCommand::List { json } => {
            let rows = admin.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<24} {:<10} {:<40} config",
                    "service", "strategy", "endpoint"
                );
                for row in rows {
                    println!(
                        "{:<24} {:<10} {:<40} {}",
                        row.service_name,
                        row.strategy,
                        row.endpoint.unwrap_or_default(),
                        row.config.unwrap_or_default()
                    );
                }
            }
        }
        RoutesCommand::Get { service } => {
            println!("{}", serde_json::to_string_pretty(&admin.get(&service)?)?);
        }
        RoutesCommand::Set {
            service,
            strategy,
            endpoint,
            config,
        } => {
            let mut row = RouteRow::new(service, strategy);
            row.endpoint = endpoint;
            row.config = config;
            admin.upsert(&row)?;
        }
        RoutesCommand::Strategy { service, strategy } => admin.set_strategy(&service, &strategy)?,
        RoutesCommand::Delete { service } => admin.delete(&service)?,
    }
    Ok(())
}
