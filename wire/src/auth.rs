//! Authenticated access: a shared secret proved by challenge–response; the
//! secret itself never crosses the wire.
//!
//! ## The exchange (`docs/wire-protocol.md`, "Authentication")
//! 1. Client → node: `Hello`.
//! 2. Node → client: `Challenge { nonce }` — 32 fresh random bytes for this
//!    connection (an open node answers `Hello(Topology)` instead).
//! 3. Client → node: `Authenticate { client_nonce, proof }` with 32 random
//!    bytes of its own and `proof = HMAC-SHA256(secret, "squall-auth-v1 client"
//!    ‖ nonce ‖ client_nonce)`.
//! 4. Node → client: `Welcome { role, proof, topology }` with
//!    `proof = HMAC-SHA256(secret, "squall-auth-v1 node" ‖ nonce ‖
//!    client_nonce)`, which the client checks: it proves the node holds the
//!    secret too (the same exchange authenticates node-to-node links). A
//!    wrong proof gets `Unauthenticated` and the connection closes.
//!
//! A replayed `Authenticate` fails: every connection gets a new challenge.
//! Which secret verifies the proof decides the connection's [`Role`].

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of each nonce.
pub const NONCE_BYTES: usize = 32;

/// Bytes of a proof (HMAC-SHA256).
pub const PROOF_BYTES: usize = 32;

/// Shortest secret accepted (a guessable secret defeats the exchange).
pub const SECRET_BYTES_MIN: usize = 16;

const CLIENT_LABEL: &[u8] = b"squall-auth-v1 client";
const NODE_LABEL: &[u8] = b"squall-auth-v1 node";
const PACKET_LABEL: &[u8] = b"squall-auth-v1 packet";
const PLAIN_LABEL: &[u8] = b"squall-auth-v1 plain";
/// Bytes of the tag on each membership packet (HMAC-SHA256).
pub const PACKET_TAG_BYTES: usize = 32;

/// What an authenticated connection may do; each role includes the ones
/// below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Role {
    /// Reads, pings, stats, listings.
    Read = 1,
    /// Also puts, deletes and calls of functions and DAGs.
    Write = 2,
    /// Also registering and deleting functions, DAGs and models.
    Admin = 3,
}

impl Role {
    /// Every role, lowest first.
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    /// The wire value.
    #[must_use]
    pub fn code(self) -> u8 {
        self as u8
    }

    #[must_use]
    pub fn from_code(code: u8) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.code() == code)
    }

    /// `read`, `write` or `admin`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    #[must_use]
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A shared secret. Its `Debug` form never shows it, so it cannot leak into
/// logs by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A secret of at least [`SECRET_BYTES_MIN`] bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, String> {
        let bytes = bytes.into();
        if bytes.len() < SECRET_BYTES_MIN {
            return Err(format!(
                "a secret must have at least {SECRET_BYTES_MIN} bytes, not {}",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }

    fn mac(&self, label: &[u8], nonce: &[u8], client_nonce: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length; `new_from_slice` cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(label);
        mac.update(nonce);
        mac.update(client_nonce);
        mac
    }

    /// The client's proof for the node's `nonce` and its own `client_nonce`.
    #[must_use]
    pub fn client_proof(&self, nonce: &[u8], client_nonce: &[u8]) -> Vec<u8> {
        self.mac(CLIENT_LABEL, nonce, client_nonce)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// The node's proof, answering a verified client proof.
    #[must_use]
    pub fn node_proof(&self, nonce: &[u8], client_nonce: &[u8]) -> Vec<u8> {
        self.mac(NODE_LABEL, nonce, client_nonce)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Whether `proof` is this secret's client proof (constant time).
    #[must_use]
    pub fn verify_client(&self, nonce: &[u8], client_nonce: &[u8], proof: &[u8]) -> bool {
        nonce.len() == NONCE_BYTES
            && client_nonce.len() == NONCE_BYTES
            && self
                .mac(CLIENT_LABEL, nonce, client_nonce)
                .verify_slice(proof)
                .is_ok()
    }

    /// The tag a node appends to each membership packet it sends to other
    /// nodes: HMAC-SHA256(secret, "squall-auth-v1 packet" ‖ packet).
    #[must_use]
    pub fn packet_tag(&self, packet: &[u8]) -> Vec<u8> {
        self.mac(PACKET_LABEL, packet, &[])
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Whether `tag` is this secret's tag of `packet` (constant time).
    #[must_use]
    pub fn verify_packet_tag(&self, packet: &[u8], tag: &[u8]) -> bool {
        self.mac(PACKET_LABEL, packet, &[])
            .verify_slice(tag)
            .is_ok()
    }

    /// Whether `candidate` is this secret itself, as a RESP `AUTH` sends it
    /// (in the clear: for loopback and trusted networks). The comparison
    /// takes the same time wherever the two differ; only a difference in
    /// length returns early.
    #[must_use]
    pub fn matches(&self, candidate: &[u8]) -> bool {
        // HMAC pads short keys with zeros: equal lengths make the keys
        // themselves equal exactly when their tags are.
        candidate.len() == self.0.len()
            && Secret(candidate.to_vec())
                .mac(PLAIN_LABEL, &[], &[])
                .verify_slice(&self.mac(PLAIN_LABEL, &[], &[]).finalize().into_bytes())
                .is_ok()
    }

    /// Whether `proof` is this secret's node proof (constant time).
    #[must_use]
    pub fn verify_node(&self, nonce: &[u8], client_nonce: &[u8], proof: &[u8]) -> bool {
        self.mac(NODE_LABEL, nonce, client_nonce)
            .verify_slice(proof)
            .is_ok()
    }
}

/// Parses a token file: one `ROLE SECRET` per line (`read`, `write` or
/// `admin`; the secret is the rest of the line, trimmed), `#` comments and
/// blank lines ignored. A file holding a single secret and nothing else
/// (no role) grants `admin` — the simple one-secret set-up.
pub fn parse_token_file(text: &str) -> Result<Vec<(Role, Secret)>, String> {
    let lines: Vec<(usize, &str)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if let [(_, only)] = lines.as_slice() {
        if !only.contains(char::is_whitespace) {
            return Ok(vec![(Role::Admin, Secret::new(only.as_bytes())?)]);
        }
    }
    let mut tokens = Vec::new();
    for (n, line) in lines {
        let (role, secret) = line
            .split_once(char::is_whitespace)
            .ok_or_else(|| format!("line {n}: expected `ROLE SECRET`"))?;
        let role = Role::parse(role)
            .ok_or_else(|| format!("line {n}: unknown role {role:?} (read, write or admin)"))?;
        let secret = Secret::new(secret.trim().as_bytes()).map_err(|e| format!("line {n}: {e}"))?;
        if tokens.iter().any(|(_, s)| *s == secret) {
            return Err(format!("line {n}: this secret is listed twice"));
        }
        tokens.push((role, secret));
    }
    if tokens.is_empty() {
        return Err("no secret in the token file".into());
    }
    Ok(tokens)
}

/// Reads the secret a client presents: the file's first non-comment line,
/// trimmed (a `ROLE SECRET` line of a node's token file works too).
pub fn parse_client_secret(text: &str) -> Result<Secret, String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or("the token file holds no secret")?;
    let secret = match line.split_once(char::is_whitespace) {
        Some((role, rest)) if Role::parse(role).is_some() => rest.trim(),
        _ => line,
    };
    Secret::new(secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const N: [u8; NONCE_BYTES] = [1; NONCE_BYTES];
    const C: [u8; NONCE_BYTES] = [2; NONCE_BYTES];

    #[test]
    fn a_plain_secret_matches_only_itself() {
        let s = Secret::new("0123456789abcdef").unwrap();
        assert!(s.matches(b"0123456789abcdef"));
        assert!(!s.matches(b"0123456789abcdeX"));
        assert!(!s.matches(b"0123456789abcdef\0"));
        assert!(!s.matches(b"0123456789abcde"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn proofs_verify_only_with_the_same_secret_and_nonces() {
        let s = Secret::new("0123456789abcdef").unwrap();
        let other = Secret::new("0123456789abcdeX").unwrap();
        let p = s.client_proof(&N, &C);
        assert_eq!(p.len(), PROOF_BYTES);
        assert!(s.verify_client(&N, &C, &p));
        assert!(!other.verify_client(&N, &C, &p));
        assert!(!s.verify_client(&C, &N, &p), "a replay under another nonce");
        assert!(!s.verify_client(&N[..8], &C, &p));
        // The two directions differ: a node cannot echo the client's proof.
        assert!(!s.verify_node(&N, &C, &p));
        assert!(s.verify_node(&N, &C, &s.node_proof(&N, &C)));
    }

    #[test]
    fn packet_tags_verify_only_for_the_same_secret_and_bytes() {
        let s = Secret::new("0123456789abcdef").unwrap();
        let other = Secret::new("0123456789abcdeX").unwrap();
        let tag = s.packet_tag(b"gossip");
        assert_eq!(tag.len(), PACKET_TAG_BYTES);
        assert!(s.verify_packet_tag(b"gossip", &tag));
        assert!(!s.verify_packet_tag(b"gossiq", &tag));
        assert!(!other.verify_packet_tag(b"gossip", &tag));
        assert!(!s.verify_packet_tag(b"gossip", &tag[..31]));
        // Not a client or node proof under any nonce either.
        assert_ne!(tag, s.client_proof(b"gossip", &[]));
    }

    #[test]
    fn secrets_are_redacted_and_long_enough() {
        let s = Secret::new("0123456789abcdef").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(Secret::new("short").is_err());
    }

    #[test]
    fn token_files_map_secrets_to_roles() {
        let t = parse_token_file(
            "# squall tokens\nread  rrrrrrrrrrrrrrrr\nwrite wwwwwwwwwwwwwwww\n\nadmin aaaaaaaaaaaaaaaa\n",
        )
        .unwrap();
        let roles: Vec<Role> = t.iter().map(|(r, _)| *r).collect();
        assert_eq!(roles, [Role::Read, Role::Write, Role::Admin]);
        let single = parse_token_file("just-one-secret-here\n").unwrap();
        assert_eq!(single[0].0, Role::Admin);
        assert!(parse_token_file("boss xxxxxxxxxxxxxxxx")
            .unwrap_err()
            .contains("unknown role"));
        assert!(parse_token_file("read short")
            .unwrap_err()
            .contains("at least 16"));
        assert!(
            parse_token_file("read xxxxxxxxxxxxxxxx\nadmin xxxxxxxxxxxxxxxx")
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse_token_file("# nothing\n").is_err());
        let c = parse_client_secret("write wwwwwwwwwwwwwwww\n").unwrap();
        assert_eq!(c, Secret::new("wwwwwwwwwwwwwwww").unwrap());
    }
}
