//! One connection to one shard: the handshake ([`dial`]: `Hello`, and
//! the challenge-response when the node requires authentication) and the
//! frames written and read over it. Which requests go on it, and when, is
//! [`crate::pool`]'s business.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::frame::{
    decode_response_owned, encode_frame, encode_frame_epoch, FrameError, FrameHeader,
};
use wire::message::{Hello, Request, Response, Topology};
use wire::Status;

use crate::{into_result, io, protocol, unexpected, ClientError, ClientOptions, Result};

/// A connection to one shard, with its buffers.
#[derive(Debug)]
pub(crate) struct ShardConn {
    pub(crate) addr: String,
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Start of unread bytes in `rbuf`.
    rpos: usize,
    wbuf: Vec<u8>,
}

impl ShardConn {
    /// Appends a request frame to the write buffer (sent by [`Self::flush`]),
    /// its header carrying the client's `epoch`.
    pub(crate) fn queue(&mut self, id: u64, epoch: u64, req: &Request) -> Result<()> {
        encode_frame_epoch(id, epoch, req, &mut self.wbuf)
            .map_err(|e| protocol(&self.addr, &e.to_string()))
    }

    /// Writes the queued frames, if any, in one write.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if !self.wbuf.is_empty() {
            self.stream
                .write_all(&self.wbuf)
                .await
                .map_err(|e| io(&self.addr, e))?;
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Writes one request frame (the handshake's).
    async fn send_one(&mut self, id: u64, req: &Request) -> Result<()> {
        let addr = self.addr.clone();
        encode_frame(id, req, &mut self.wbuf).map_err(|e| protocol(&addr, &e.to_string()))?;
        let res = self.stream.write_all(&self.wbuf).await;
        self.wbuf.clear();
        res.map_err(|e| io(&addr, e))
    }

    /// Reads the next reply frame: its request id, the node's epoch and the
    /// response.
    pub(crate) async fn read_frame(&mut self) -> Result<(u64, u64, Response)> {
        loop {
            let avail = &self.rbuf[self.rpos..];
            if let Some(h) =
                FrameHeader::parse(avail).map_err(|e| protocol(&self.addr, &e.to_string()))?
            {
                if avail.len() >= h.frame_len() {
                    let body = &avail[wire::frame::FRAME_HEADER_BYTES..h.frame_len()];
                    let resp = decode_response_owned(body)
                        .map_err(|e: FrameError| protocol(&self.addr, &e.to_string()))?;
                    self.rpos += h.frame_len();
                    if self.rpos == self.rbuf.len() {
                        self.rbuf.clear();
                        self.rpos = 0;
                    }
                    return Ok((h.request_id, h.epoch, resp));
                }
            }
            if self.rpos > 0 {
                self.rbuf.drain(..self.rpos);
                self.rpos = 0;
            }
            self.rbuf.reserve(READ_CHUNK_BYTES);
            let n = self
                .stream
                .read_buf(&mut self.rbuf)
                .await
                .map_err(|e| io(&self.addr, e))?;
            if n == 0 {
                return Err(io(
                    &self.addr,
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "node closed the connection",
                    ),
                ));
            }
        }
    }
}

/// Bytes reserved for each socket read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Connects to `addr` and performs the handshake; returns the connection
/// and the topology the node sent.
pub(crate) async fn dial(addr: &str, opts: &ClientOptions) -> Result<(ShardConn, Topology)> {
    let handshake = async {
        let stream = TcpStream::connect(addr).await.map_err(|e| io(addr, e))?;
        stream.set_nodelay(true).map_err(|e| io(addr, e))?;
        let mut conn = ShardConn {
            addr: addr.to_owned(),
            stream,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
        };
        let hello = Request::Hello(Hello {
            protocol_version: wire::PROTOCOL_VERSION,
            client_name: opts.client_name.as_bytes().to_vec(),
        });
        conn.send_one(1, &hello).await?;
        let nonce = match into_result(conn.read_frame().await?.2)? {
            Response::Hello(t) if opts.token.is_none() => return Ok((conn, t)),
            Response::Hello(_) => {
                // A node that knows the secret proves it; one that does not
                // ask may not be the node the secret is for.
                return Err(protocol(
                    addr,
                    "this node does not require authentication, but the client has a token: \
                     refusing a node that cannot prove the secret (unset SQUALL_TOKEN or \
                     --token-file to talk to an open node)",
                ));
            }
            Response::Challenge(c) => c.nonce,
            other => return Err(unexpected(&other)),
        };
        let Some(secret) = &opts.token else {
            return Err(ClientError::Server {
                status: Status::Unauthenticated,
                message: format!(
                    "{addr} requires authentication; give the client a token \
                     (SQUALL_TOKEN or --token-file for the CLI)"
                ),
            });
        };
        let mut client_nonce = [0u8; wire::auth::NONCE_BYTES];
        getrandom::fill(&mut client_nonce)
            .map_err(|e| protocol(addr, &format!("no randomness for the handshake: {e}")))?;
        let answer = Request::Authenticate(wire::message::Authenticate {
            client_nonce: client_nonce.to_vec(),
            proof: secret.client_proof(&nonce, &client_nonce),
        });
        conn.send_one(2, &answer).await?;
        match into_result(conn.read_frame().await?.2)? {
            Response::Welcome(w) if secret.verify_node(&nonce, &client_nonce, &w.proof) => {
                Ok((conn, w.topology))
            }
            Response::Welcome(_) => Err(protocol(
                addr,
                "the node could not prove it holds the secret (not the node you meant?)",
            )),
            other => Err(unexpected(&other)),
        }
    };
    tokio::time::timeout(opts.timeout, handshake)
        .await
        .map_err(|_| ClientError::Timeout {
            addr: addr.to_owned(),
            timeout: opts.timeout,
        })?
}
