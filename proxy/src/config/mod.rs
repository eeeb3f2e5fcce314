//! Configuration: the TOML file, `PORTCULLIS_<SECTION>_<KEY>` environment overrides, CLI
//! overrides, and loading of Tyk API definitions into an immutable [`Snapshot`].
//!
//! Only this module parses Tyk JSON; the data plane sees validated [`ApiSpec`]s. Loading returns
//! every problem it finds (file, field, value) instead of stopping at the first.

mod env;
mod file;
mod snapshot;
mod tyk;
mod tyk_auth;

pub use env::apply_env_overrides;
pub use file::{
    AdminConfig, AnalyticsConfig, AnalyticsSink, AppsConfig, AuthConfig, Config, EbpfConfig, EbpfMode, IoDriver,
    LogConfig, ProxyConfig, StorageConfig,
};
pub use snapshot::{load_snapshot, load_snapshot_with, Snapshot};
pub use tyk::{ApiSpec, Target};
pub use tyk_auth::JwksFetch;

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem found while loading configuration, naming where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File the problem is in (or the environment variable / flag that set it).
    pub file: String,
    /// Field, as a dotted path (`proxy.listen_path`), empty when the whole file is at fault.
    pub field: String,
    /// The offending value as written, empty when not applicable.
    pub value: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub fn new(
        file: impl AsRef<Path>,
        field: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            file: file.as_ref().display().to_string(),
            field: field.into(),
            value: value.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if !self.field.is_empty() {
            write!(f, ": field `{}`", self.field)?;
        }
        if !self.value.is_empty() {
            write!(f, " = {}", self.value)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Overrides given on the command line; they win over the file and the environment.
#[derive(Debug, Default, Clone)]
pub struct CliOverrides {
    pub listen: Option<String>,
    pub admin: Option<String>,
    pub apps: Option<PathBuf>,
    pub policies: Option<PathBuf>,
    pub workers: Option<usize>,
}

/// Reads the config file, applies the process environment and the CLI overrides, validates.
pub fn load_config(path: &Path, cli: &CliOverrides) -> Result<Config, Vec<ConfigError>> {
    load_config_with_env(path, cli, std::env::vars())
}

/// As [`load_config`], with the environment given explicitly (tests pass their own).
pub fn load_config_with_env(
    path: &Path,
    cli: &CliOverrides,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ConfigError::new(path, "", "", format!("cannot read config file: {e}"))])?;
    let mut cfg = Config::parse(path, &text, env)?;
    // File paths are relative to the config file; CLI paths to the working directory.
    cfg.resolve_relative_paths(path);
    cfg.apply_cli(cli);
    cfg.validate(path)?;
    Ok(cfg)
}
