//! Before a connection's session opens: `Hello`, and on a node that
//! requires it, the challenge–response of `wire::auth`.

use wire::message::{self as w, ArchivedRequest};
use wire::Status;

use super::Conn;

impl Conn {
    /// Before the session opens: `Hello`, then, on a node that requires
    /// it, the challenge–response (`wire::auth`). Anything else is refused;
    /// on such a node with `unauthenticated`, closing the connection.
    pub(super) fn handshake(&mut self, request_id: u64, req: &ArchivedRequest) {
        let auth = self.server.settings.auth.clone();
        match (req, auth) {
            (ArchivedRequest::Hello(h), auth) => {
                let v = h.protocol_version.to_native();
                if !(wire::PROTOCOL_VERSION_MIN..=wire::PROTOCOL_VERSION).contains(&v) {
                    let msg = format!(
                        "protocol version {v} is not supported; this node speaks {} to {}",
                        wire::PROTOCOL_VERSION_MIN,
                        wire::PROTOCOL_VERSION
                    );
                    return self.error(request_id, Status::VersionMismatch, &msg);
                }
                self.from_node = h.client_name.as_slice() == crate::links::NODE_CLIENT_NAME;
                let Some(auth) = auth else {
                    self.greeted = true;
                    return self.reply_topology(request_id);
                };
                if let Some(wait) = auth.blocked(self.peer_ip) {
                    let msg = format!(
                        "too many failed authentications from this address; try again in {} s",
                        wait.as_secs() + 1
                    );
                    return self.refuse(request_id, Status::Unauthenticated, msg);
                }
                let mut nonce = [0u8; wire::auth::NONCE_BYTES];
                if let Err(e) = getrandom::fill(&mut nonce) {
                    return self.refuse(
                        request_id,
                        Status::Internal,
                        format!("no randomness: {e}"),
                    );
                }
                self.challenge = Some(nonce);
                let challenge = w::Challenge {
                    nonce: nonce.to_vec(),
                };
                self.reply(request_id, &w::Response::Challenge(challenge));
            }
            (ArchivedRequest::Authenticate(a), Some(auth)) => {
                let Some(nonce) = self.challenge.take() else {
                    let msg = "send Hello first and answer its Challenge".to_owned();
                    return self.refuse(request_id, Status::Unauthenticated, msg);
                };
                if let Some(wait) = auth.blocked(self.peer_ip) {
                    // Checked again here: proofs sent on many connections
                    // challenged before the limit was reached count too.
                    let msg = format!(
                        "too many failed authentications from this address; try again in {} s",
                        wait.as_secs() + 1
                    );
                    return self.refuse(request_id, Status::Unauthenticated, msg);
                }
                let client_nonce = a.client_nonce.as_slice();
                let Some((role, secret)) = auth.verify(&nonce, client_nonce, a.proof.as_slice())
                else {
                    auth.record_failure(self.peer_ip);
                    log::warn!(
                        "{}: failed authentication from {}",
                        self.shard.id(),
                        self.peer_ip.map_or("?".to_owned(), |ip| ip.to_string())
                    );
                    let msg = "the proof matches no secret this node accepts".to_owned();
                    return self.refuse(request_id, Status::Unauthenticated, msg);
                };
                let welcome = w::Welcome {
                    role: role.code(),
                    proof: secret.node_proof(&nonce, client_nonce),
                    topology: self.server.topology(),
                };
                self.greeted = true;
                self.role = role;
                self.reply(request_id, &w::Response::Welcome(welcome));
            }
            (_, Some(_)) => {
                let msg = "this node requires authentication: send Hello and answer its Challenge"
                    .to_owned();
                self.refuse(request_id, Status::Unauthenticated, msg);
            }
            (_, None) => self.error(
                request_id,
                Status::HandshakeRequired,
                "send Hello first: it returns the topology",
            ),
        }
    }

    /// The `Hello` reply, encoded once per shard at start.
    pub(super) fn reply_topology(&mut self, request_id: u64) {
        let topology = self.server.topology();
        self.reply(request_id, &w::Response::Hello(topology));
    }

    /// Answers with an error, then closes the connection.
    fn refuse(&mut self, request_id: u64, status: Status, msg: String) {
        self.error(request_id, status, &msg);
        self.closing = Some(msg);
    }
}
