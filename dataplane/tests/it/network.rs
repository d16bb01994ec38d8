//! Both paths client sockets can take (`--net uring`, the default, and
//! `--net glommio`): a peer that pipelines without reading its replies is
//! slowed down by the node, never buffered without bound, and still gets
//! every reply in order; the native protocol and RESP served on each.
//! (Every other test runs on the default path: the connection semantics —
//! limits, deadlines, refusals, bad input — are the same on both.)

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::hardening::rss_mb;
use crate::harness::{connect, lww, rt, temp_dir, Node};

const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";
const PONG: &[u8] = b"+PONG\r\n";

/// 56 MB of PINGs (28 MB of replies, more than the socket buffers hold) from a peer that reads nothing until
/// its writes stall: the node stops reading (its memory grows by less than
/// a fraction of that), then answers every one of them, in order.
fn pipelining_without_reading_is_held_back(net: &str) {
    let dir = temp_dir(&format!("net-{net}"));
    let args = ["--resp-listen", "127.0.0.1:0", "--net", net];
    let node = Node::try_start(1, "never", &dir, &args).unwrap();
    let resp = node
        .ready
        .split_whitespace()
        .find_map(|w| w.strip_prefix("resp="))
        .unwrap()
        .to_owned();
    let before_mb = rss_mb(node.pid());
    const PINGS: usize = 4_000_000;
    let stream = TcpStream::connect(&resp).unwrap();
    let mut reader = stream.try_clone().unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (mut stream, written) = (stream, written.clone());
        std::thread::spawn(move || {
            let chunk = PING.repeat(4096);
            for _ in 0..PINGS / 4096 {
                stream.write_all(&chunk).unwrap();
                written.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            let rest = PING.repeat(PINGS % 4096);
            stream.write_all(&rest).unwrap();
            written.fetch_add(rest.len(), Ordering::SeqCst);
        })
    };
    // Until the writer stalls: the node has stopped taking bytes.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = written.load(Ordering::SeqCst);
        if now == last || Instant::now() > deadline {
            break;
        }
        last = now;
    }
    let total = PINGS * PING.len();
    assert!(
        last < total,
        "{net}: the writer never stalled ({last} of {total} bytes taken)"
    );
    let grown_mb = rss_mb(node.pid()).saturating_sub(before_mb);
    assert!(
        grown_mb < 20,
        "{net}: the node grew by {grown_mb} MiB holding a peer's unread replies"
    );
    let mut buf = vec![0u8; 1 << 16];
    let mut got = Vec::new();
    let mut pongs = 0;
    while pongs < PINGS {
        let n = reader.read(&mut buf).unwrap();
        assert!(n > 0, "{net}: closed after {pongs} replies");
        got.extend_from_slice(&buf[..n]);
        let whole = got.len() / PONG.len() * PONG.len();
        assert!(
            got[..whole].chunks(PONG.len()).all(|c| c == PONG),
            "{net}: a reply other than +PONG after {pongs}"
        );
        pongs += whole / PONG.len();
        got.drain(..whole);
    }
    writer.join().unwrap();
    assert!(got.is_empty(), "{net}: bytes beyond the replies");
    // The connection still serves.
    let mut w = reader.try_clone().unwrap();
    w.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n")
        .unwrap();
    let mut ok = [0u8; 5];
    reader.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");
    // And the native protocol beside it.
    rt().block_on(async {
        let mut c = connect(node.addr()).await;
        c.put(b"native", lww("on both paths")).await.unwrap();
        assert!(c.get(b"k").await.unwrap().is_some());
    });
}

#[test]
fn the_ring_holds_back_a_peer_that_does_not_read() {
    pipelining_without_reading_is_held_back("uring");
}

#[test]
fn glommios_sockets_hold_back_a_peer_that_does_not_read() {
    pipelining_without_reading_is_held_back("glommio");
}
