//! `[tls.acme]`: certificates ordered from an ACME authority (RFC 8555) with `instant-acme`,
//! proven with HTTP-01 challenges that the workers answer (`dataplane::acme`), written to
//! `state_dir` and served once a reload reads them (`config::tls`: the listener serves what
//! `state_dir/certs` holds). Runs on the control plane; the workers see only the published
//! challenge answers.

use std::collections::HashMap;
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

/// HTTP-01 answers the workers give: token -> key authorization.
pub type Challenges = HashMap<String, String>;

/// How often certificates are looked at when all are current.
const CHECK_EVERY: Duration = Duration::from_secs(3600);
/// The first wait after a failed round; it doubles up to [`CHECK_EVERY`].
const FIRST_RETRY: Duration = Duration::from_secs(10);

/// Orders and renews certificates while the process runs (a round at start, then hourly, and
/// after a failure with a backoff). A round that wrote a certificate reloads the configuration,
/// so the TLS listener serves it.
pub async fn run(state: Arc<ControlState>, challenges: Arc<ArcSwap<Challenges>>) {
    let mut retry = FIRST_RETRY;
    loop {
        let snap = state.reloader.snapshot.load_full();
        let acme = &snap.config.tls.acme;
        if !acme.enabled || !snap.config.tls.enabled() {
            tokio::time::sleep(Duration::from_secs(60)).await;
            continue;
        }
        match round(&snap, acme, &challenges).await {
            Ok(issued) => {
                retry = FIRST_RETRY;
                if issued > 0 {
                    let s = Arc::clone(&state);
                    let outcome = tokio::task::spawn_blocking(move || s.reloader.reload()).await;
                    tracing::info!(issued, ?outcome, "ACME: certificates written; configuration reloaded");
                    continue;
                }
                tokio::time::sleep(CHECK_EVERY).await;
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

/// One round: orders what is due; how many certificates were written.
async fn round(snap: &Snapshot, acme: &AcmeConfig, challenges: &ArcSwap<Challenges>) -> Result<usize, String> {
    let now = i64::try_from(crate::clock::unix_now()).unwrap_or(i64::MAX);
    let due: Vec<String> = wanted(snap, acme).into_iter().filter(|n| due(acme, n, now)).collect();
    if due.is_empty() {
        return Ok(0);
    }
    let account = account(acme).await?;
    let mut issued = 0;
    for name in &due {
        let (chain, key) = order(&account, name, challenges).await.map_err(|e| format!("{name}: {e}"))?;
        write_pair(acme, name, &chain, &key).map_err(|e| format!("{name}: writing the certificate: {e}"))?;
        tracing::info!(name, "ACME: certificate issued");
        issued += 1;
    }
    Ok(issued)
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

/// Orders a certificate for `name`, answering its HTTP-01 challenge through the workers; the
/// chain and the key, PEM.
async fn order(account: &Account, name: &str, challenges: &ArcSwap<Challenges>) -> Result<(String, String), String> {
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
            challenges.rcu(|c| {
                let mut c = Challenges::clone(c);
                c.insert(token.clone(), answer.clone());
                c
            });
            tokens.push(token);
            ch.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
        }
        let status = order.poll_ready(&RetryPolicy::default()).await.map_err(|e| format!("validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!("the order is {status:?}, not ready (the challenge failed?)"));
        }
        Ok(())
    }
    .await;
    challenges.rcu(|c| {
        let mut c = Challenges::clone(c);
        c.retain(|t, _| !tokens.contains(t));
        c
    });
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
