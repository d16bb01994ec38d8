//! The node's side of authenticated access (`--auth-token-file`): which
//! secrets it accepts and with what role, which role each request needs,
//! and the rate limit on failed attempts. The exchange itself and the
//! proofs are `wire::auth`'s.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use wire::auth::{parse_token_file, Role, Secret};
use wire::message::ArchivedRequest;

use crate::limits::{
    AUTH_FAILURES_PER_WINDOW_MAX, AUTH_FAILURE_SOURCES_MAX, AUTH_FAILURE_WINDOW_MS,
};

/// The secrets a node accepts, and the failed attempts it remembers.
#[derive(Debug)]
pub struct Auth {
    tokens: Vec<(Role, Secret)>,
    /// Failed attempts per source address in the current window.
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Auth {
    #[must_use]
    pub fn new(tokens: Vec<(Role, Secret)>) -> Auth {
        Auth {
            tokens,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Reads a token file (`wire::auth::parse_token_file`).
    pub fn from_file(path: &Path) -> anyhow::Result<Auth> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        let tokens = parse_token_file(&text)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("in the token file {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)?.permissions().mode();
            if mode & 0o077 != 0 {
                log::warn!(
                    "the token file {} can be read by other users (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
        }
        Ok(Auth::new(tokens))
    }

    /// The secrets that authenticate other nodes (the admin ones; the
    /// first signs what this node sends).
    pub fn node_secrets(&self) -> impl Iterator<Item = &Secret> {
        self.tokens
            .iter()
            .filter(|(role, _)| *role == Role::Admin)
            .map(|(_, s)| s)
    }

    /// How many secrets per role, for the start-up log (never the secrets).
    #[must_use]
    pub fn summary(&self) -> String {
        Role::ALL
            .iter()
            .map(|r| {
                let n = self.tokens.iter().filter(|(t, _)| t == r).count();
                format!("{n} {r}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The role whose secret made `proof`, if any. Every secret is checked
    /// (in constant time each), whichever matches.
    #[must_use]
    pub fn verify(
        &self,
        nonce: &[u8],
        client_nonce: &[u8],
        proof: &[u8],
    ) -> Option<(Role, &Secret)> {
        let mut found = None;
        for (role, secret) in &self.tokens {
            if secret.verify_client(nonce, client_nonce, proof) && found.is_none() {
                found = Some((*role, secret));
            }
        }
        found
    }

    /// The role of the secret `candidate` is, if any (a RESP `AUTH`).
    /// Every secret is compared, whichever matches.
    #[must_use]
    pub fn verify_plain(&self, candidate: &[u8]) -> Option<Role> {
        let mut found = None;
        for (role, secret) in &self.tokens {
            if secret.matches(candidate) && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }

    /// How long `source` must wait before trying again, if it failed too
    /// often lately.
    #[must_use]
    pub fn blocked(&self, source: Option<IpAddr>) -> Option<Duration> {
        let source = source_of(source?);
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (n, since) = failures.get(&source)?;
        let window = Duration::from_millis(AUTH_FAILURE_WINDOW_MS);
        let left = window.checked_sub(since.elapsed())?;
        (*n >= AUTH_FAILURES_PER_WINDOW_MAX).then_some(left)
    }

    /// Counts a failed attempt from `source`.
    pub fn record_failure(&self, source: Option<IpAddr>) {
        let Some(source) = source.map(source_of) else {
            return;
        };
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let window = Duration::from_millis(AUTH_FAILURE_WINDOW_MS);
        if failures.len() >= AUTH_FAILURE_SOURCES_MAX {
            failures.retain(|_, (_, since)| since.elapsed() < window);
        }
        if failures.len() >= AUTH_FAILURE_SOURCES_MAX {
            return; // bounded memory beats perfect accounting under a flood
        }
        let entry = failures.entry(source).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }
}

/// The role a request needs (`None`: allowed before authentication).
/// Writing a reserved key ([`is_reserved_key`]) directly needs `admin`,
/// like registering through the dedicated requests.
#[must_use]
pub fn required_role(req: &ArchivedRequest) -> Option<Role> {
    use ArchivedRequest as R;
    Some(match req {
        R::Hello(_) | R::Authenticate(_) => return None,
        R::Ping
        | R::Stats
        | R::ClusterStatus
        | R::Get(_)
        | R::GetLocal(_)
        | R::ListFunctions
        | R::ListDags => Role::Read,
        R::Put(p) => role_to_write(p.key.as_slice()),
        R::PutConcern(p) => role_to_write(p.key.as_slice()),
        R::PutIfAbsent(p) => role_to_write(p.key.as_slice()),
        R::Delete(d) => role_to_write(d.key.as_slice()),
        // A function may write state: calling one is writing.
        R::Call(_) | R::CallDag(_) | R::RunStep(_) | R::RunChain(_) => Role::Write,
        R::RegisterDag(_)
        | R::DeleteDag(_)
        | R::RegisterFunction(_)
        | R::DeleteFunction(_)
        | R::Leave
        | R::Merge(_)
        | R::Digest(_)
        | R::Subscribe(_)
        | R::CacheUpdate(_)
        | R::ChainDone(_) => Role::Admin,
    })
}

/// The role a write of `key` needs.
#[must_use]
pub fn role_to_write(key: &[u8]) -> Role {
    if is_reserved_key(key) {
        Role::Admin
    } else {
        Role::Write
    }
}

/// Keys that hold code, models, placement and what atomic calls wrote
/// (function and DAG registrations, model chunks, manifests and labels,
/// per-key copies, commit records): only admins write them, only through
/// requests, never through a function's store or a call's output key. A
/// forged commit record would stand for a call it does not belong to.
#[must_use]
pub fn is_reserved_key(key: &[u8]) -> bool {
    const PREFIXES: [&str; 6] = [
        wire::FUNCTION_KEY_PREFIX,
        wire::DAG_KEY_PREFIX,
        "squall:model",
        "squall:labels:",
        wire::REPLICAS_KEY_PREFIX,
        wire::TXN_KEY_PREFIX,
    ];
    PREFIXES.iter().any(|p| key.starts_with(p.as_bytes()))
}

/// The address failures are counted under: the host for IPv4, the /64
/// network for IPv6 (one host easily holds a whole /64).
fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_rate_limited_per_source() {
        let auth = Auth::new(vec![]);
        let a: IpAddr = "127.0.0.9".parse().unwrap_or_else(|_| unreachable!());
        let b: IpAddr = "127.0.0.10".parse().unwrap_or_else(|_| unreachable!());
        for _ in 0..AUTH_FAILURES_PER_WINDOW_MAX {
            assert!(auth.blocked(Some(a)).is_none());
            auth.record_failure(Some(a));
        }
        assert!(auth.blocked(Some(a)).is_some());
        assert!(auth.blocked(Some(b)).is_none());
    }

    #[test]
    fn the_matching_secret_decides_the_role() {
        let s = |t: &str| Secret::new(t).unwrap_or_else(|e| panic!("{e}"));
        let auth = Auth::new(vec![
            (Role::Read, s("rrrrrrrrrrrrrrrr")),
            (Role::Admin, s("aaaaaaaaaaaaaaaa")),
        ]);
        let (n, c) = ([3u8; 32], [4u8; 32]);
        let proof = s("aaaaaaaaaaaaaaaa").client_proof(&n, &c);
        assert_eq!(
            auth.verify(&n, &c, &proof).map(|(r, _)| r),
            Some(Role::Admin)
        );
        let wrong = s("xxxxxxxxxxxxxxxx").client_proof(&n, &c);
        assert!(auth.verify(&n, &c, &wrong).is_none());
        assert_eq!(auth.summary(), "1 read, 0 write, 1 admin");
    }
}
