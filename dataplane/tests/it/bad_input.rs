//! Hostile and broken input: errors or a closed connection, never a panic,
//! and the node keeps serving other clients throughout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use wire::frame::{decode_response_owned, encode_frame, FrameHeader, FRAME_HEADER_BYTES};
use wire::message::{Hello, KvGet, LwwValue, Request, Response, Value};
use wire::Status;

use crate::harness::{connect, rt, temp_dir, Node};

pub(crate) fn raw(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads one response frame; `None` if the node closed the connection.
pub(crate) fn read_response(s: &mut TcpStream) -> Option<(u64, Response)> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    s.read_exact(&mut header).ok()?;
    let h = FrameHeader::parse(&header).unwrap().unwrap();
    let mut body = vec![0; h.body_len];
    s.read_exact(&mut body).ok()?;
    Some((
        h.request_id,
        decode_response_owned(&body).expect("node sends valid responses"),
    ))
}

pub(crate) fn error_code(r: &Response) -> Option<u16> {
    match r {
        Response::Error(e) => Some(e.code),
        _ => None,
    }
}

pub(crate) fn hello(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let req = Request::Hello(Hello {
        protocol_version: wire::PROTOCOL_VERSION,
        client_name: b"raw".to_vec(),
    });
    encode_frame(1, &req, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
    assert!(matches!(read_response(s), Some((1, Response::Hello(_)))));
}

/// Whether the node closed the connection (EOF or reset) within 5 s; a read
/// that merely times out means it is still open.
pub(crate) fn closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn broken_frames_get_errors_or_closed_connections_while_others_are_served() {
    let dir = temp_dir("bad");
    let mut node = Node::start(2, "never", &dir);
    let addr = node.addr().to_owned();

    // A well-behaved client runs throughout and must never fail.
    let stop = Arc::new(AtomicBool::new(false));
    let good_ops = Arc::new(AtomicUsize::new(0));
    let bystander = {
        let (addr, stop, good_ops) = (addr.clone(), stop.clone(), good_ops.clone());
        std::thread::spawn(move || {
            rt().block_on(async {
                let mut c = connect(&addr).await;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("good-{}", i % 100);
                    let v = Value::Lww(LwwValue {
                        timestamp: 0,
                        writer: 0,
                        bytes: i.to_le_bytes().to_vec(),
                    });
                    c.put(key.as_bytes(), v).await.expect("bystander put");
                    assert!(c
                        .get(key.as_bytes())
                        .await
                        .expect("bystander get")
                        .is_some());
                    good_ops.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            })
        })
    };

    // 1. Random garbage, many times.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..50 {
        let mut s = raw(&addr);
        let n = rng.random_range(1..2048);
        let junk: Vec<u8> = (0..n).map(|_| rng.random()).collect();
        let _ = s.write_all(&junk);
        let _ = s.shutdown(std::net::Shutdown::Write);
        // Whatever comes back must be valid frames; then the node closes.
        while read_response(&mut s).is_some() {}
    }

    // 2. An oversized length prefix: FrameTooLarge, then the connection closes.
    let mut s = raw(&addr);
    let mut header = Vec::new();
    header.extend_from_slice(&u32::MAX.to_le_bytes());
    header.extend_from_slice(&9u64.to_le_bytes());
    header.extend_from_slice(&0u64.to_le_bytes()); // epoch
    s.write_all(&header).unwrap();
    let (id, r) = read_response(&mut s).expect("an error frame");
    assert_eq!(
        (id, error_code(&r)),
        (9, Some(Status::FrameTooLarge.code()))
    );
    assert!(closed(&mut s));

    // 3. A valid header with a body that is not a valid archive: BadFrame,
    //    and the connection stays usable.
    let mut s = raw(&addr);
    hello(&mut s);
    let body = [0xffu8; 24];
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&5u64.to_le_bytes());
    frame.extend_from_slice(&0u64.to_le_bytes()); // epoch
    frame.extend_from_slice(&body);
    s.write_all(&frame).unwrap();
    let (id, r) = read_response(&mut s).expect("an error frame");
    assert_eq!((id, error_code(&r)), (5, Some(Status::BadFrame.code())));
    let mut buf = Vec::new();
    encode_frame(6, &Request::Ping, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
    assert_eq!(read_response(&mut s), Some((6, Response::Pong)));

    // 4. A truncated frame, then the client goes away.
    let mut s = raw(&addr);
    let mut buf = Vec::new();
    encode_frame(
        1,
        &Request::Get(KvGet {
            keys: vec![b"k".to_vec()],
        }),
        &mut buf,
    )
    .unwrap();
    s.write_all(&buf[..buf.len() - 3]).unwrap();
    drop(s);

    // 5. No Hello first: HandshakeRequired, and Hello still works after.
    let mut s = raw(&addr);
    let mut buf = Vec::new();
    encode_frame(3, &Request::Ping, &mut buf).unwrap();
    s.write_all(&buf).unwrap();
    let (_, r) = read_response(&mut s).unwrap();
    assert_eq!(error_code(&r), Some(Status::HandshakeRequired.code()));
    hello(&mut s);

    // 6. A wrong protocol version.
    let mut s = raw(&addr);
    let mut buf = Vec::new();
    encode_frame(
        4,
        &Request::Hello(Hello {
            protocol_version: 999,
            client_name: vec![],
        }),
        &mut buf,
    )
    .unwrap();
    s.write_all(&buf).unwrap();
    let (_, r) = read_response(&mut s).unwrap();
    assert_eq!(error_code(&r), Some(Status::VersionMismatch.code()));

    // 7. Every single-byte mutation of a valid request, on one connection.
    let mut s = raw(&addr);
    hello(&mut s);
    let mut valid = Vec::new();
    encode_frame(
        100,
        &Request::Get(KvGet {
            keys: vec![b"abc".to_vec(), b"de".to_vec()],
        }),
        &mut valid,
    )
    .unwrap();
    for i in FRAME_HEADER_BYTES..valid.len() {
        for byte in [0x00, 0x7f, 0xff] {
            let mut f = valid.clone();
            f[i] = byte;
            s.write_all(&f).unwrap();
            let (id, _) = read_response(&mut s).expect("one reply per frame");
            assert_eq!(id, 100);
        }
    }

    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    bystander
        .join()
        .expect("the well-behaved client never failed");
    assert!(good_ops.load(Ordering::Relaxed) > 10);
    assert!(node.is_running(), "the node survived:\n{}", node.stderr());
    assert!(!node.stderr().contains("panicked"), "{}", node.stderr());
}

#[test]
fn a_client_that_stalls_mid_frame_is_disconnected_and_idle_ones_are_not() {
    let dir = temp_dir("stall");
    let node = Node::try_start(1, "never", &dir, &["--partial-frame-timeout-ms", "300"]).unwrap();
    let mut idle = raw(node.addr());
    hello(&mut idle);
    let mut stalled = raw(node.addr());
    hello(&mut stalled);
    let mut buf = Vec::new();
    encode_frame(2, &Request::Ping, &mut buf).unwrap();
    stalled.write_all(&buf[..5]).unwrap(); // half a header, then nothing
    std::thread::sleep(Duration::from_millis(1000));
    assert!(closed(&mut stalled), "the stalled connection was closed");
    // The idle one (no partial frame) is still served.
    let mut ping = Vec::new();
    encode_frame(3, &Request::Ping, &mut ping).unwrap();
    idle.write_all(&ping).unwrap();
    assert_eq!(read_response(&mut idle), Some((3, Response::Pong)));
}
