//! `portcullis` command line: `run` and `check` (docs/deployment.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use portcullis::config::CliOverrides;
use portcullis::server;

#[derive(Parser)]
#[command(name = "portcullis", version, about = "eBPF-assisted, thread-per-core edge proxy and API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run(Common),
    /// Validate the config file, API definitions and policies; print every error; exit 1 on error.
    Check(Common),
}

#[derive(Args)]
struct Common {
    /// Config file (TOML).
    #[arg(long, short, default_value = "portcullis.toml")]
    config: PathBuf,
    /// Proxy listen address (overrides proxy.listen).
    #[arg(long)]
    listen: Option<String>,
    /// Admin listen address (overrides admin.listen).
    #[arg(long)]
    admin: Option<String>,
    /// Directory of API definitions (overrides apps.dir).
    #[arg(long)]
    apps: Option<PathBuf>,
    /// Policies file (overrides apps.policies).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Number of workers, 0 = one per CPU (overrides proxy.workers).
    #[arg(long)]
    workers: Option<usize>,
}

impl Common {
    fn overrides(&self) -> CliOverrides {
        CliOverrides {
            listen: self.listen.clone(),
            admin: self.admin.clone(),
            apps: self.apps.clone(),
            policies: self.policies.clone(),
            workers: self.workers,
        }
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn check_logged(c: &Common) -> Result<server::Checked, Vec<portcullis::config::ConfigError>> {
    init_logging("warn");
    server::check(&c.config, &c.overrides())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // Warnings found while loading (a JWKS not fetched yet, a middleware Tyk also skips) go
        // to standard error; the verdict to standard output.
        Command::Check(c) => match check_logged(&c) {
            Ok(ok) => {
                for s in &ok.inactive {
                    println!("skipped: {} (api_id {:?}): {}", s.file, s.api_id, s.reason);
                }
                let cfg = &ok.config;
                println!(
                    "{}: OK ({} APIs from {}, {} skipped as inactive, listen {}, admin {})",
                    c.config.display(),
                    ok.apis,
                    cfg.apps.dir.display(),
                    ok.inactive.len(),
                    cfg.proxy.listen,
                    cfg.admin.listen
                );
                ExitCode::SUCCESS
            }
            Err(errs) => {
                for e in &errs {
                    println!("error: {e}");
                }
                println!("{} error(s)", errs.len());
                ExitCode::FAILURE
            }
        },
        Command::Run(c) => {
            // The log level comes from the file; read it leniently here, errors surface in run().
            // Bounded, regular files only: a FIFO or /dev/zero must not hang or flood startup.
            let level = portcullis::config::read_file(&c.config)
                .ok()
                .and_then(|t| t.parse::<toml::Table>().ok())
                .and_then(|t| t.get("log")?.get("level")?.as_str().map(str::to_string))
                .unwrap_or_else(|| "info".into());
            init_logging(&level);
            match server::run(&c.config, c.overrides()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
