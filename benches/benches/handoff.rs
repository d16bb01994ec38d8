//! Cross-thread hand-off costs, which decide how executors sit beside
//! shards (functions/DAG issue): a round trip between two threads over
//! crossbeam channels, back to back and after the other thread has gone to
//! sleep, with and without a bounded spin before parking.

use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError};

/// Receives, spinning up to `spin` before blocking.
fn recv_spinning<T>(rx: &Receiver<T>, spin: Duration) -> Option<T> {
    let start = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) if start.elapsed() < spin => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return rx.recv().ok(),
        }
    }
}

fn echo_thread(spin: Duration) -> (Sender<u64>, Receiver<u64>, thread::JoinHandle<()>) {
    let (to_tx, to_rx) = bounded::<u64>(1);
    let (back_tx, back_rx) = bounded::<u64>(1);
    let h = thread::spawn(move || {
        while let Some(v) = recv_spinning(&to_rx, spin) {
            if back_tx.send(v + 1).is_err() {
                return;
            }
        }
    });
    (to_tx, back_rx, h)
}

fn handoff(c: &mut Criterion) {
    for (name, spin) in [
        ("park", Duration::ZERO),
        ("spin_50us", Duration::from_micros(50)),
    ] {
        let (tx, rx, h) = echo_thread(spin);
        c.bench_function(&format!("handoff/crossbeam_round_trip_{name}"), |b| {
            b.iter(|| {
                tx.send(1).expect("echo thread alive");
                recv_spinning(&rx, spin).expect("echo reply")
            })
        });
        // The same, after the echo thread has been idle long enough to sleep
        // in the kernel: this is the wake-up a request pays on a quiet node.
        c.bench_function(
            &format!("handoff/crossbeam_round_trip_{name}_after_idle_1ms"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        thread::sleep(Duration::from_millis(1));
                        let t0 = Instant::now();
                        tx.send(1).expect("echo thread alive");
                        recv_spinning(&rx, spin).expect("echo reply");
                        total += t0.elapsed();
                    }
                    total
                })
            },
        );
        drop(tx);
        h.join().expect("echo thread");
    }
}

criterion_group!(benches, handoff);
criterion_main!(benches);
