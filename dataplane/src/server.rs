//! What one shard's connections share, and the loop that accepts them:
//! the shard and its side of the function platform, the node's connection
//! settings, the topology a `Hello` returns, the shutdown event, and the
//! connection count and its limit (idle connections are reclaimed near
//! it; past it a connection is refused with `overloaded`).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use wire::message as w;
use wire::Status;

use crate::conn::ConnSettings;
use crate::event::Event;
use crate::functions::ShardFunctions;
use crate::limits::{RECLAIM_AT_PERCENT, RECLAIM_PULSE_INTERVAL_MS};
use crate::shard::{bump, Shard};

/// One shard's serving side.
#[derive(Debug)]
pub(crate) struct Server {
    pub shard: Rc<Shard>,
    pub functions: Rc<ShardFunctions>,
    pub settings: Arc<ConnSettings>,
    /// The topology this shard reports, and its encoded `Response::Hello`
    /// body (encoded once).
    pub topology: w::Topology,
    pub hello_body: Vec<u8>,
    /// Set at shutdown; pulsed to make idle connections look at their age.
    pub shutdown: Event,
    open_connections: Cell<usize>,
    connections_max: usize,
}

impl Server {
    pub fn new(
        shard: Rc<Shard>,
        functions: Rc<ShardFunctions>,
        settings: Arc<ConnSettings>,
        topology: w::Topology,
        connections_max: usize,
    ) -> Result<Server, String> {
        let hello = w::Response::Hello(topology.clone());
        let mut hello_body = Vec::new();
        wire::frame::encode_frame(0, &hello, &mut hello_body).map_err(|e| e.to_string())?;
        let hello_body = hello_body.split_off(wire::frame::FRAME_HEADER_BYTES);
        Ok(Server {
            shard,
            functions,
            settings,
            topology,
            hello_body,
            shutdown: Event::default(),
            open_connections: Cell::new(0),
            connections_max,
        })
    }

    /// Accepts connections until shutdown.
    pub async fn accept_loop(self: &Rc<Self>, listener: &TcpListener) {
        let mut last_pulse = Instant::now() - Duration::from_secs(1);
        let max = self.connections_max;
        loop {
            let accepted =
                futures_lite::future::or(async { Some(listener.accept().await) }, async {
                    self.shutdown.wait_set().await;
                    None
                })
                .await;
            let stream = match accepted {
                None => return,
                Some(Ok(s)) => s,
                Some(Err(e)) => {
                    log::warn!("{}: accept failed: {e}", self.shard.id());
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            if self.open_connections.get() * 100 >= max * RECLAIM_AT_PERCENT {
                // Near the limit: idle connections look at their age and the
                // oldest make room (rate-limited: a pulse wakes them all).
                if last_pulse.elapsed() >= Duration::from_millis(RECLAIM_PULSE_INTERVAL_MS) {
                    last_pulse = Instant::now();
                    self.shutdown.pulse();
                    futures_lite::future::yield_now().await;
                }
            }
            let stats = self.shard.stats();
            if self.open_connections.get() >= max {
                bump(&stats.connections_refused);
                glommio::spawn_local(refuse(stream, max)).detach();
                continue;
            }
            bump(&stats.connections);
            self.open_connections.set(self.open_connections.get() + 1);
            let me = self.clone();
            glommio::spawn_local(async move {
                crate::conn::serve(me.clone(), stream).await;
                me.open_connections.set(me.open_connections.get() - 1);
            })
            .detach();
        }
    }

    /// After shutdown: waits until every connection has finished the batch
    /// in hand (idle ones close at once), or `deadline`.
    pub async fn drain(&self, deadline: Instant) {
        while self.open_connections.get() > 0 && Instant::now() < deadline {
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
        if self.open_connections.get() > 0 {
            log::warn!(
                "{}: {} connection(s) still busy after the drain timeout",
                self.shard.id(),
                self.open_connections.get()
            );
        }
    }
}

async fn refuse(mut stream: TcpStream, connections_max: usize) {
    use futures_lite::AsyncWriteExt;
    let mut buf = Vec::new();
    let msg =
        format!("this shard already serves {connections_max} connections (its limit); retry later");
    wire::frame::encode_error(0, Status::Overloaded, &msg, &mut buf);
    let _ = stream.write_all(&buf).await;
}
