//! Accepting a shard's connections, within its limit.

use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use wire::Status;

use super::serve;
use crate::limits::{RECLAIM_AT_PERCENT, RECLAIM_PULSE_INTERVAL_MS};
use crate::server::Server;
use crate::shard::bump;
use crate::uring::Stream;

/// What a listener's connections speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// Squall's framed protocol (`wire`).
    Native,
    /// RESP2, for Redis clients (`--resp-listen`).
    Resp,
}

/// Accepts connections until shutdown. RESP connections count in the same
/// limit as native ones.
pub(crate) async fn accept_loop(server: &Rc<Server>, listener: &TcpListener, protocol: Protocol) {
    let mut last_pulse = Instant::now() - Duration::from_secs(1);
    let max = server.connections_max;
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            server.shutdown.wait_set().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                log::warn!("{}: accept failed: {e}", server.shard.id());
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if server.open_connections.get() * 100 >= max * RECLAIM_AT_PERCENT {
            // Near the limit: idle connections look at their age and the
            // oldest make room (rate-limited: a pulse wakes them all).
            if last_pulse.elapsed() >= Duration::from_millis(RECLAIM_PULSE_INTERVAL_MS) {
                last_pulse = Instant::now();
                server.shutdown.pulse();
                futures_lite::future::yield_now().await;
            }
        }
        let stats = server.shard.stats();
        if server.open_connections.get() >= max {
            bump(&stats.connections_refused);
            glommio::spawn_local(refuse(stream, max, protocol)).detach();
            continue;
        }
        bump(&stats.connections);
        server
            .open_connections
            .set(server.open_connections.get() + 1);
        let me = server.clone();
        let stream = Stream::accepted(stream, server.net.as_ref());
        glommio::spawn_local(async move {
            match protocol {
                Protocol::Native => serve(me.clone(), stream).await,
                Protocol::Resp => super::resp::serve(me.clone(), stream).await,
            }
            me.open_connections.set(me.open_connections.get() - 1);
        })
        .detach();
    }
}

async fn refuse(mut stream: TcpStream, connections_max: usize, protocol: Protocol) {
    use futures_lite::AsyncWriteExt;
    let mut buf = Vec::new();
    let msg =
        format!("this shard already serves {connections_max} connections (its limit); retry later");
    match protocol {
        Protocol::Native => wire::frame::encode_error(0, Status::Overloaded, &msg, &mut buf),
        Protocol::Resp => wire::resp::reply::error(&mut buf, &format!("OVERLOADED {msg}")),
    }
    let _ = stream.write_all(&buf).await;
}
