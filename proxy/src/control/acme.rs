//! `[tls.acme]`: certificates ordered from an ACME authority (RFC 8555) with `instant-acme`,
//! proven with HTTP-01 challenges that the workers answer (`dataplane::acme`), written to
//! `state_dir` and served once a reload reads them (`config::tls`: the listener serves what
//! `state_dir/certs` holds). Runs on the control plane; the workers see only the published
//! challenge answers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::ControlState;
use crate::config::{AcmeConfig, Snapshot};

pub use crate::dataplane::acme::Challenges;

/// How often certificates are looked at when all are current.
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// The first wait after a failed round; it doubles up to [`CHECK_EVERY`].
const FIRST_RETRY: Duration = Duration::from_secs(10);

/// While another node orders a name, how soon this one looks again.
const OTHER_NODE_ORDERING: Duration = Duration::from_secs(5);
/// How often a node reads the other nodes' challenge answers from Redis.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How long a node may hold the order lock of a name in Redis.
const LOCK_MS: u64 = 10 * 60 * 1000;

/// The HTTP-01 answers this node publishes to its workers: its own orders', and with Redis the
/// other nodes' (the authority may ask any node behind the name).
pub struct Answers {
    own: std::sync::Mutex<Challenges>,
    remote: std::sync::Mutex<Challenges>,
    published: Arc<ArcSwap<Challenges>>,
}

impl Answers {
    pub fn new(published: Arc<ArcSwap<Challenges>>) -> Answers {
        Answers { own: Default::default(), remote: Default::default(), published }
    }

    fn publish(&self) {
        let own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        let remote = self.remote.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = remote.clone();
        all.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        self.published.store(Arc::new(all));
    }

    fn add_own(&self, token: &str, answer: &str) {
        self.own.lock().unwrap_or_else(|p| p.into_inner()).insert(token.to_owned(), answer.to_owned());
        self.publish();
    }

    fn remove_own(&self, tokens: &[String]) {
        self.own.lock().unwrap_or_else(|p| p.into_inner()).retain(|t, _| !tokens.contains(t));
        self.publish();
    }

    fn set_remote(&self, remote: Challenges) {
        *self.remote.lock().unwrap_or_else(|p| p.into_inner()) = remote;
        self.publish();
    }
}

/// Orders and renews certificates while the process runs (a round at start, then hourly, and
/// after a failure with a backoff). A round that wrote a certificate reloads the configuration,
/// so the TLS listener serves it.
pub async fn run(state: Arc<ControlState>, answers: Arc<Answers>) {
    tokio::spawn(follow_challenges(Arc::clone(&state), Arc::clone(&answers)));
    let mut retry = FIRST_RETRY;
    loop {
        let snap = state.reloader.snapshot.load_full();
        let acme = &snap.config.tls.acme;
        if !acme.enabled || !snap.config.tls.enabled() {
            tokio::time::sleep(Duration::from_secs(60)).await;
            continue;
        }
        match round(&snap, acme, &answers).await {
            Ok(done) => {
                retry = FIRST_RETRY;
                if done.issued > 0 {
                    let s = Arc::clone(&state);
                    let outcome = tokio::task::spawn_blocking(move || s.reloader.reload()).await;
                    tracing::info!(done.issued, ?outcome, "ACME: certificates written; configuration reloaded");
                    continue;
                }
                let wait = if done.elsewhere > 0 { OTHER_NODE_ORDERING } else { CHECK_EVERY };
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?retry, "ACME: ordering certificates failed");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(CHECK_EVERY);
            }
        }
    }
}

/// The names certificates are ordered for: `[tls.acme] domains` and the loaded APIs' `domain`s
/// (host names only: a wildcard or an IP address cannot be proven with HTTP-01), lower case.
pub fn wanted(snap: &Snapshot, acme: &AcmeConfig) -> Vec<String> {
    let apis = snap.apis.iter().filter_map(|a| a.domain.as_deref());
    let mut names: Vec<String> = acme
        .domains
        .iter()
        .map(String::as_str)
        .chain(apis)
        .map(|n| n.trim().trim_end_matches('.').to_ascii_lowercase())
        .filter(|n| portcullis_tls::certs::is_name(n) && !n.starts_with("*.") && n.parse::<std::net::IpAddr>().is_err())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Whether `name` needs a certificate: none on disk, or one that expires within
/// `renew_before_days`.
fn due(acme: &AcmeConfig, name: &str, now: i64) -> bool {
    let (cert_file, key_file) = crate::config::acme_files(&acme.state_dir, name);
    let spec = portcullis_tls::CertSpec { field: "tls.acme".into(), cert_file, key_file, domains: Vec::new() };
    let before = i64::try_from(acme.renew_before_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    match portcullis_tls::load(&spec, now) {
        Ok(l) => l.not_after.saturating_sub(now) < before,
        Err(_) => true,
    }
}

/// What a round did.
#[derive(Debug, Default)]
struct Round {
    /// Certificates written (ordered here, or taken from Redis).
    issued: usize,
    /// Names another node is ordering now.
    elsewhere: usize,
}

/// One round: orders what is due, or with Redis takes what another node ordered.
async fn round(snap: &Snapshot, acme: &AcmeConfig, answers: &Answers) -> Result<Round, String> {
    let now = i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX);
    let due: Vec<String> = wanted(snap, acme).into_iter().filter(|n| due(acme, n, now)).collect();
    let mut done = Round::default();
    if due.is_empty() {
        return Ok(done);
    }
    let shared = match snap.config.storage.redis.as_str() {
        "" => None,
        url => Some(Shared::connect(url, snap.config.admin.secret.as_bytes()).await?),
    };
    let mut account = None;
    for name in &due {
        if let Some(sh) = &shared {
            if let Some((chain, key)) = sh.take(acme, name, now).await? {
                write_pair(acme, name, &chain, &key).map_err(|e| format!("{name}: writing the certificate: {e}"))?;
                tracing::info!(name, "ACME: certificate taken from Redis (ordered by another node)");
                done.issued += 1;
                continue;
            }
            if !sh.lock(name).await? {
                done.elsewhere += 1;
                continue;
            }
        }
        if account.is_none() {
            account = Some(self::account(acme).await?);
        }
        let Some(account) = account.as_ref() else { continue };
        let ordered = order(account, name, answers, shared.as_ref()).await.map_err(|e| format!("{name}: {e}"));
        if let Some(sh) = &shared {
            if let Ok((chain, key)) = &ordered {
                sh.put(name, chain, key).await?;
            }
            sh.unlock(name).await;
        }
        let (chain, key) = ordered?;
        write_pair(acme, name, &chain, &key).map_err(|e| format!("{name}: writing the certificate: {e}"))?;
        tracing::info!(name, "ACME: certificate issued");
        done.issued += 1;
    }
    Ok(done)
}

/// With `[storage] redis`: certificates every node takes (`portcullis-acme-cert:<name>`: the
/// chain, and the key sealed with `[admin] secret`, as Tyk seals private keys with its
/// `secret`), a lock so that one node orders a name at a time (`portcullis-acme-lock:<name>`),
/// and the challenges' answers every node gives (`portcullis-acme-challenges`).
struct Shared {
    con: redis::aio::MultiplexedConnection,
    secret: Vec<u8>,
}

const CHALLENGES_KEY: &str = "portcullis-acme-challenges";

fn redis_err(e: redis::RedisError) -> String {
    format!("Redis: {e}")
}

impl Shared {
    async fn connect(url: &str, secret: &[u8]) -> Result<Shared, String> {
        let client = redis::Client::open(url).map_err(redis_err)?;
        let con = tokio::time::timeout(Duration::from_secs(3), client.get_multiplexed_async_connection())
            .await
            .map_err(|_| "Redis: connect timed out".to_string())?
            .map_err(redis_err)?;
        Ok(Shared { con, secret: secret.to_vec() })
    }

    /// The certificate of `name` another node put in Redis, if it is current.
    async fn take(&self, acme: &AcmeConfig, name: &str, now: i64) -> Result<Option<(String, String)>, String> {
        let (chain, sealed): (Option<String>, Option<Vec<u8>>) = redis::cmd("HMGET")
            .arg(format!("portcullis-acme-cert:{name}"))
            .arg("cert")
            .arg("key")
            .query_async(&mut self.con.clone())
            .await
            .map_err(redis_err)?;
        let (Some(chain), Some(sealed)) = (chain, sealed) else { return Ok(None) };
        let Some(key) = portcullis_tls::seal::open(&self.secret, &format!("acme key {name}"), &sealed) else {
            tracing::warn!(name, "ACME: the key in Redis does not open with [admin] secret (nodes must share it)");
            return Ok(None);
        };
        let key = String::from_utf8(key).map_err(|_| "the key in Redis is not PEM".to_string())?;
        let spec = portcullis_tls::CertSpec {
            field: "tls.acme (Redis)".into(),
            cert_file: PathBuf::from(format!("redis:portcullis-acme-cert:{name}")),
            key_file: PathBuf::from(format!("redis:portcullis-acme-cert:{name}")),
            domains: Vec::new(),
        };
        let before = i64::try_from(acme.renew_before_days.saturating_mul(86_400)).unwrap_or(i64::MAX);
        match portcullis_tls::load_pem(&spec, chain.as_bytes(), key.as_bytes(), now) {
            Ok(l) if l.not_after.saturating_sub(now) >= before => Ok(Some((chain, key))),
            _ => Ok(None),
        }
    }

    async fn lock(&self, name: &str) -> Result<bool, String> {
        let got: Option<String> = redis::cmd("SET")
            .arg(format!("portcullis-acme-lock:{name}"))
            .arg(std::process::id())
            .arg("NX")
            .arg("PX")
            .arg(LOCK_MS)
            .query_async(&mut self.con.clone())
            .await
            .map_err(redis_err)?;
        Ok(got.is_some())
    }

    async fn unlock(&self, name: &str) {
        let _: Result<i64, _> =
            redis::cmd("DEL").arg(format!("portcullis-acme-lock:{name}")).query_async(&mut self.con.clone()).await;
    }

    async fn put(&self, name: &str, chain: &str, key: &str) -> Result<(), String> {
        let sealed = portcullis_tls::seal::seal(&self.secret, &format!("acme key {name}"), key.as_bytes())
            .ok_or("sealing the key failed")?;
        redis::cmd("HSET")
            .arg(format!("portcullis-acme-cert:{name}"))
            .arg("cert")
            .arg(chain)
            .arg("key")
            .arg(sealed)
            .query_async::<i64>(&mut self.con.clone())
            .await
            .map_err(redis_err)?;
        Ok(())
    }

    async fn answer(&self, token: &str, answer: &str) -> Result<(), String> {
        redis::pipe()
            .cmd("HSET")
            .arg(CHALLENGES_KEY)
            .arg(token)
            .arg(answer)
            .ignore()
            .cmd("PEXPIRE")
            .arg(CHALLENGES_KEY)
            .arg(LOCK_MS)
            .ignore()
            .query_async::<()>(&mut self.con.clone())
            .await
            .map_err(redis_err)
    }

    async fn forget(&self, tokens: &[String]) {
        if !tokens.is_empty() {
            let _: Result<i64, _> =
                redis::cmd("HDEL").arg(CHALLENGES_KEY).arg(tokens).query_async(&mut self.con.clone()).await;
        }
    }
}

/// With `[tls.acme]` and `[storage] redis`: every second, the challenges other nodes are
/// answering, published to this node's workers too (the authority may ask any node).
async fn follow_challenges(state: Arc<ControlState>, answers: Arc<Answers>) {
    let mut shared: Option<(String, Shared)> = None;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let snap = state.reloader.snapshot.load_full();
        let url = &snap.config.storage.redis;
        if !snap.config.tls.acme.enabled || url.is_empty() {
            continue;
        }
        if shared.as_ref().is_none_or(|(u, _)| u != url) {
            shared = Shared::connect(url, b"").await.ok().map(|s| (url.clone(), s));
        }
        let Some((_, sh)) = &shared else { continue };
        let all: Result<Challenges, _> =
            redis::cmd("HGETALL").arg(CHALLENGES_KEY).query_async(&mut sh.con.clone()).await;
        match all {
            Ok(all) => answers.set_remote(all),
            Err(_) => shared = None,
        }
    }
}

/// The account at `directory`: the one whose credentials `state_dir` keeps, else a new one
/// (its credentials written there, readable by the owner only).
async fn account(acme: &AcmeConfig) -> Result<Account, String> {
    let builder = if acme.ca_file.as_os_str().is_empty() {
        Account::builder()
    } else {
        Account::builder_with_root(&acme.ca_file)
    }
    .map_err(|e| format!("ACME client: {e}"))?;
    let file = account_file(acme);
    if let Ok(text) = std::fs::read(&file) {
        let creds: AccountCredentials =
            serde_json::from_slice(&text).map_err(|e| format!("{}: not account credentials: {e}", file.display()))?;
        return builder.from_credentials(creds).await.map_err(|e| format!("ACME account: {e}"));
    }
    let contact = format!("mailto:{}", acme.email);
    let contacts: Vec<&str> = if acme.email.is_empty() { Vec::new() } else { vec![contact.as_str()] };
    let new = NewAccount { contact: &contacts, terms_of_service_agreed: true, only_return_existing: false };
    let (account, creds) =
        builder.create(&new, acme.directory.clone(), None).await.map_err(|e| format!("ACME account: {e}"))?;
    let json = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
    write_private(&file, &json).map_err(|e| format!("{}: {e}", file.display()))?;
    tracing::info!(directory = %acme.directory, "ACME: account created");
    Ok(account)
}

/// One account file per directory, so that changing `directory` makes a new account there.
fn account_file(acme: &AcmeConfig) -> PathBuf {
    use sha2::Digest;
    let id = sha2::Sha256::digest(acme.directory.as_bytes());
    let hex: String = id.iter().take(8).map(|b| format!("{b:02x}")).collect();
    acme.state_dir.join(format!("account-{hex}.json"))
}

/// Orders a certificate for `name`, answering its HTTP-01 challenge through the workers (and
/// with Redis through every node's); the chain and the key, PEM.
async fn order(
    account: &Account,
    name: &str,
    answers: &Answers,
    shared: Option<&Shared>,
) -> Result<(String, String), String> {
    let ids = [Identifier::Dns(name.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(|e| format!("new order: {e}"))?;
    let mut tokens = Vec::new();
    let proven = async {
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut a = a.map_err(|e| format!("authorization: {e}"))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let mut ch = a.challenge(ChallengeType::Http01).ok_or("the authority offers no http-01 challenge")?;
            let token = ch.token.clone();
            let answer = ch.key_authorization().as_str().to_owned();
            answers.add_own(&token, &answer);
            tokens.push(token.clone());
            if let Some(sh) = shared {
                sh.answer(&token, &answer).await?;
                // Every node picks the answers up within a second (`follow_challenges`); the
                // authority may ask any of them as soon as it is told.
                tokio::time::sleep(2 * FOLLOW_EVERY).await;
            }
            ch.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
        }
        let status = order.poll_ready(&RetryPolicy::default()).await.map_err(|e| format!("validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!("the order is {status:?}, not ready (the challenge failed?)"));
        }
        Ok(())
    }
    .await;
    answers.remove_own(&tokens);
    if let Some(sh) = shared {
        sh.forget(&tokens).await;
    }
    proven?;
    let key = order.finalize().await.map_err(|e| format!("finalize: {e}"))?;
    let chain = order.poll_certificate(&RetryPolicy::default()).await.map_err(|e| format!("certificate: {e}"))?;
    Ok((chain, key))
}

/// Writes `name`'s key, then its chain (the listener looks for the chain), each atomically.
fn write_pair(acme: &AcmeConfig, name: &str, chain: &str, key: &str) -> std::io::Result<()> {
    let (cert_file, key_file) = crate::config::acme_files(&acme.state_dir, name);
    write_private(&key_file, key.as_bytes())?;
    write_private(&cert_file, chain.as_bytes())
}

/// Writes `path` through a temporary file and a rename, readable by the owner only.
fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}
