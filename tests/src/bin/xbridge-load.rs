//! `xbridge-load CLIENTS ROUNDS`: that many concurrent X clients on `$DISPLAY` (with
//! `$XAUTHORITY`), each connected before any starts, each putting and getting back 64 KiB
//! images `ROUNDS` times, every byte checked. Prints one JSON line with the wall time; exits 1
//! naming the first client that failed. Used by `cargo xtask bench` for its scale run.

use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use xbridge_e2e::load::{image_round_trips, ROUND_BYTES};

fn main() -> ExitCode {
    let args: Vec<u32> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("usage: xbridge-load CLIENTS ROUNDS"))
        .collect();
    let [clients, rounds] = args[..] else {
        eprintln!("usage: xbridge-load CLIENTS ROUNDS");
        return ExitCode::from(2);
    };
    let connected = Arc::new(Barrier::new(clients as usize + 1));
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let connected = Arc::clone(&connected);
            std::thread::spawn(move || {
                let conn = x11rb::connect(None).map(|(c, _)| c);
                connected.wait();
                let conn = conn.map_err(|e| format!("client {client}: cannot connect: {e}"))?;
                image_round_trips(&conn, client, rounds)
            })
        })
        .collect();
    connected.wait();
    let start = Instant::now();
    let mut failed = None;
    for worker in workers {
        if let Err(e) = worker.join().expect("worker does not panic") {
            failed.get_or_insert(e);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    if let Some(e) = failed {
        eprintln!("xbridge-load: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "{{\"clients\":{clients},\"rounds\":{rounds},\"bytes_each_way\":{},\"seconds\":{seconds}}}",
        clients as u64 * rounds as u64 * ROUND_BYTES
    );
    ExitCode::SUCCESS
}
