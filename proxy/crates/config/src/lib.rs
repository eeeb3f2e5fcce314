//! Portcullis' configuration (crate `portcullis-config`): the TOML file, `PORTCULLIS_<SECTION>_<KEY>` environment overrides, CLI
//! overrides, and loading of Tyk API definitions into an immutable [`Snapshot`].
//!
//! Only this crate parses Tyk JSON: API definitions become validated [`ApiSpec`]s, and the
//! session and policy objects are [`TykSession`] and [`TykPolicy`], converted into auth's own
//! types. Loading returns every problem it finds (file, field, value) instead of stopping at
//! the first. It also holds the [`router`] a snapshot routes with, and plans the admin API's
//! changes to the definition files ([`plan`], checked by loading them unwritten:
//! [`load_snapshot_edited`]). Must not: depend on the data or control plane (it is a crate of its
//! own, below both), do network I/O (the control plane passes the JWKS fetcher, [`JwksFetch`]),
//! or write files (the control plane writes what [`plan`] says).

mod edit;
mod env;
mod file;
mod gjson;
pub mod router;
mod snapshot;
mod tls;
mod tyk;
mod tyk_auth;
mod tyk_cache;
mod tyk_errors;
mod tyk_policy;
mod tyk_session;
mod tyk_upstream_tls;
mod tyk_uptime;
mod tyk_version;
mod visibility;

pub use edit::{is_safe_id, plan, Change, FileEdit, PlanError, MAX_ID_BYTES};
pub use env::apply_env_overrides;
pub use file::{
    AcmeConfig, AdminConfig, AnalyticsConfig, AnalyticsSink, AppsConfig, AuthConfig, Config, EbpfConfig, EbpfMode,
    IoDriver, LogConfig, ProxyConfig, RateLimitHeaders, SinkConfig, StorageConfig, TlsCertificate, TlsConfig,
    MAX_BAN_TTL_SECS,
};
pub use portcullis_http1::MAX_HEADERS;
pub use snapshot::{load_snapshot_edited, load_snapshot_with, PolicySource, Skipped, Snapshot};
pub use tls::{acme_files, TlsListener};
pub use tyk::{ApiSpec, Target};
pub use tyk_auth::{JsonCheck, JwksFetch};
pub use tyk_cache::{is_safe as is_safe_method, CachePath, CacheRules, UPSTREAM_CACHE_HEADER};
pub use tyk_errors::{
    Body as OverrideBody, ErrorOverrides, ErrorTemplates, Override, Part as OverridePart, UpstreamMatch,
    MAX_BODY_FOR_MATCHING,
};
pub use tyk_policy::TykPolicy;
pub use tyk_session::{AccessDefinition, AccessSpec, BasicAuthData, RateProblem, TykSession};
pub use tyk_upstream_tls::UpstreamTls;
pub use tyk_uptime::{
    CheckKind, Command as UptimeCommand, UptimeCheck, UptimeTests, DEFAULT_TIMEOUT as UPTIME_DEFAULT_TIMEOUT,
};
pub use visibility::{sample_below, spec_candidates, Visibility};

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

/// Largest file the configuration reads (the config file, each API definition, the policies
/// file): 16 MiB, far above any real one.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a configuration file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a regular file (a {0}); only regular files are read")]
    NotRegular(&'static str),
    #[error("larger than {} MiB, the limit for configuration files", MAX_FILE_BYTES >> 20)]
    TooLarge,
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads a configuration file as text: regular files only (after following symlinks) and at
/// most [`MAX_FILE_BYTES`]. The type is checked before opening (opening a device can have
/// effects of its own), and again through the open descriptor, which is opened non-blocking (a
/// FIFO swapped in between would otherwise wait for a writer forever) and without becoming a
/// controlling terminal; so a FIFO or a device such as `/dev/zero` (endless) is never read.
pub fn read_file(path: &Path) -> Result<String, ReadError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    regular(&std::fs::metadata(path)?)?;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)?;
    let meta = file.metadata()?;
    regular(&meta)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    // The size may change after the check (a file being written): never read past the cap.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
    })
}

/// `Ok` for a regular file, else what it is.
fn regular(meta: &std::fs::Metadata) -> Result<(), ReadError> {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = meta.file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(ReadError::NotRegular(if kind.is_dir() {
        "directory"
    } else if kind.is_fifo() {
        "FIFO"
    } else if kind.is_char_device() {
        "character device"
    } else if kind.is_block_device() {
        "block device"
    } else if kind.is_socket() {
        "socket"
    } else {
        "special file"
    }))
}

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
    let text =
        read_file(path).map_err(|e| vec![ConfigError::new(path, "", "", format!("cannot read config file: {e}"))])?;
    let mut cfg = Config::parse(path, &text, env)?;
    // File paths are relative to the config file; CLI paths to the working directory.
    cfg.resolve_relative_paths(path);
    cfg.apply_cli(cli);
    cfg.validate(path)?;
    Ok(cfg)
}

/// A JSON value as an error message quotes it: at most 80 characters (cut on a character
/// boundary, so a long non-ASCII value cannot panic the loader).
/// A JSON value that sets something: true, non-zero, non-empty (how Tyk's zero values read).
pub(crate) fn truthy(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

pub(crate) fn brief(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quoting a long value cut inside a multi-byte character panicked the loader.
    #[test]
    fn brief_cuts_long_values_on_character_boundaries() {
        let v = serde_json::Value::String(format!("a{}", "é".repeat(100)));
        let b = brief(&v);
        assert!(b.ends_with("...") && b.chars().count() == 80, "{b}");
        assert_eq!(brief(&serde_json::json!(1)), "1");
    }

    #[test]
    fn read_file_takes_regular_files_only_and_caps_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("ok.json");
        std::fs::write(&ok, "{}").unwrap();
        assert_eq!(read_file(&ok).unwrap(), "{}");
        // A symlink to a regular file is followed.
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&ok, &link).unwrap();
        assert_eq!(read_file(&link).unwrap(), "{}");
        // A FIFO is refused at once (opening it for reading would wait for a writer forever).
        let fifo = dir.path().join("fifo.json");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_file(&fifo).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular("FIFO")), "{e}");
        // A symlink to an endless device is refused, not read.
        let zero = dir.path().join("zero.json");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let e = read_file(&zero).unwrap_err();
        assert!(e.to_string().contains("not a regular file (a character device)"), "{e}");
        assert!(matches!(read_file(dir.path()).unwrap_err(), ReadError::NotRegular("directory")));
        // Over the cap: refused, saying the limit.
        let big = dir.path().join("big.json");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = read_file(&big).unwrap_err();
        assert!(e.to_string().contains("16 MiB"), "{e}");
        f.set_len(MAX_FILE_BYTES).unwrap();
        assert_eq!(read_file(&big).unwrap().len() as u64, MAX_FILE_BYTES);
        assert!(read_file(&dir.path().join("missing")).unwrap_err().is_not_found());
    }

    #[test]
    fn load_config_refuses_a_fifo() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("portcullis.toml");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = load_config_with_env(&fifo, &CliOverrides::default(), Vec::new()).unwrap_err();
        assert!(e[0].to_string().contains("portcullis.toml") && e[0].message.contains("FIFO"), "{}", e[0]);
    }
}
