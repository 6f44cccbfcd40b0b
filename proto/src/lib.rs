//! xbridge's shared protocol: everything the guest and the host agent must agree on.
//!
//! # Layout
//! - [`endpoint`]: the `tcp:HOST:PORT`, `unix:PATH`, `vsock:CID:PORT` and `stdio` address syntax.
//! - [`keyfile`]: the pairing key file (generate, load, refuse loose permissions).
//! - [`handshake`]: the sans-IO guest/agent handshake: messages, proofs and the two state machines.
//! - [`lines`]: reading newline-delimited frames with a hard size cap.
//! - [`report`]: error chains as one line for people.
//! - [`exchange`]: drives the handshake over any async byte stream, under a deadline.
//! - [`setup`]: X11 connection-setup requests in both byte orders; auth rewriting; `Failed` replies.
//! - [`stream`]: the boxed byte-stream type every transport becomes.
//! - [`xauthority`]: reading and writing Xauthority files.
//!
//! The parsing core does no I/O; only [`exchange`] and [`setup::read_setup_request`] touch streams.

pub mod endpoint;
pub mod exchange;
pub mod handshake;
pub mod keyfile;
pub mod lines;
pub mod report;
pub mod setup;
pub mod stream;
pub mod xauthority;

pub use endpoint::Endpoint;
pub use handshake::{HostInfo, Keymap, RefuseCode, ScreenSize, Welcome, PROTOCOL_VERSION};
pub use keyfile::Key;

/// Fills a buffer from the operating system's random source.
///
/// Nonces, keys and cookies all come from here; there is no fallback to a weaker source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::getrandom(&mut out).expect("the operating system's random source is unavailable");
    out
}
