//! The agent's and the guest's handshake machines fed arbitrary lines, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xbridge_proto::handshake::{AgentHandshake, GuestHandshake, Message};
use xbridge_proto::Key;

fuzz_target!(|data: &[u8]| {
    let key = Key::from_bytes([7; 32]);
    let mut agent = AgentHandshake::with_nonce(key.clone(), [1; 32]);
    let mut guest = GuestHandshake::with_nonce(key, "fuzz", [2; 32]);
    for line in data.split(|&b| b == b'\n').take(8) {
        let _ = Message::parse(line, "peer");
        let _ = agent.receive(line);
        let _ = guest.receive(line);
    }
});
