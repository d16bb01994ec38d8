//! Accepting a shard's connections, within its limit.

use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::net::{TcpListener, TcpStream};
use wire::Status;

use super::serve;
use crate::limits::{RECLAIM_AT_PERCENT, RECLAIM_PULSE_INTERVAL_MS};
use crate::server::Server;
use crate::shard::bump;

/// Accepts connections until shutdown.
pub(crate) async fn accept_loop(server: &Rc<Server>, listener: &TcpListener) {
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
            glommio::spawn_local(refuse(stream, max)).detach();
            continue;
        }
        bump(&stats.connections);
        server
            .open_connections
            .set(server.open_connections.get() + 1);
        let me = server.clone();
        glommio::spawn_local(async move {
            serve(me.clone(), stream).await;
            me.open_connections.set(me.open_connections.get() - 1);
        })
        .detach();
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
