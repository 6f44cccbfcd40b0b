//! The guest/agent handshake, sans I/O: messages, proofs, and one state machine per role.
//!
//! Four newline-terminated JSON lines (see `PROTOCOL.md`):
//! guest `hello` (version, guest nonce) → agent `challenge` (agent nonce) → guest `auth`
//! (proof over both nonces) → agent `welcome` (its own proof, host facts) or `refuse`.
//! Each proof is HMAC-SHA256 under the pairing key with a role label, so neither side's proof
//! can be reflected as the other's, and a fresh nonce from each side defeats replay.
//! The key itself never crosses the wire.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::keyfile::Key;

/// The handshake version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest handshake line accepted, newline included.
pub const MAX_LINE: usize = 4096;
/// Bytes in each side's nonce.
pub const NONCE_LEN: usize = 32;

const GUEST_LABEL: &[u8] = b"xbridge-v1 guest proof\0";
const AGENT_LABEL: &[u8] = b"xbridge-v1 agent proof\0";

/// One handshake line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Message {
    /// Guest → agent: opens the exchange.
    Hello {
        version: u32,
        nonce: String,
        software: String,
    },
    /// Agent → guest: the agent's nonce.
    Challenge { version: u32, nonce: String },
    /// Guest → agent: proof of the key over both nonces.
    Auth { proof: String },
    /// Agent → guest: the agent's proof and what the guest should know. X11 bytes follow.
    Welcome(Welcome),
    /// Either side: the exchange is over, with a reason.
    Refuse { code: RefuseCode, reason: String },
}

/// What the agent tells an authenticated guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Welcome {
    /// The agent's proof, hex.
    pub proof: String,
    /// The protocol version in use.
    pub version: u32,
    /// The agent's software version, e.g. `host-agent 0.1.0`.
    pub agent: String,
    /// Facts about the host display.
    #[serde(flatten)]
    pub host: HostInfo,
}

/// Facts about the host display that let the guest fit in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Size of the host's primary output (or root window) in pixels.
    pub screen: Option<ScreenSize>,
    /// The host's XKB names (`_XKB_RULES_NAMES`).
    pub keymap: Option<Keymap>,
}

/// A screen size in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScreenSize {
    pub width: u16,
    pub height: u16,
}

/// XKB rule names, as in the root window's `_XKB_RULES_NAMES` property.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keymap {
    pub rules: String,
    pub model: String,
    pub layout: String,
    pub variant: String,
    pub options: String,
}

/// Why a handshake was refused: stable, machine-readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefuseCode {
    /// The two sides speak different protocol versions.
    Version,
    /// A proof did not match: the two sides hold different keys.
    BadProof,
    /// A line was not the expected JSON message.
    Malformed,
    /// A line exceeded [`MAX_LINE`].
    TooLong,
    /// The exchange did not finish before the deadline.
    Timeout,
    /// The agent is at its connection limit.
    Busy,
    /// The host display cannot be used as configured.
    HostDisplay,
}

/// The end of a handshake that did not succeed, as seen by the side that noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// Stable category.
    pub code: RefuseCode,
    /// A sentence a person can act on.
    pub reason: String,
}

impl Refusal {
    /// A refusal with the given category and sentence.
    pub fn new(code: RefuseCode, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
        }
    }

    /// The `refuse` line to send to the peer.
    pub fn to_line(&self) -> Vec<u8> {
        Message::Refuse {
            code: self.code,
            reason: self.reason.clone(),
        }
        .to_line()
    }
}

impl Message {
    /// Serialises as one JSON line with its newline.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).expect("handshake messages always serialise");
        line.push(b'\n');
        line
    }

    /// Parses one line (without its newline).
    pub fn parse(line: &[u8], from: &str) -> Result<Self, Refusal> {
        serde_json::from_slice(line).map_err(|e| {
            Refusal::new(
                RefuseCode::Malformed,
                format!("the {from} sent a handshake line that is not an xbridge message ({e}); is the other end an xbridge {from} of a matching version?"),
            )
        })
    }
}

fn proof(key: &Key, label: &[u8], first: &[u8], second: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(label);
    mac.update(first);
    mac.update(second);
    mac
}

/// Constant-time check of a hex proof (the comparison is `hmac`'s `verify_slice`).
fn verify(mac: Hmac<Sha256>, proof_hex: &str) -> bool {
    match hex::decode(proof_hex) {
        Ok(bytes) => mac.verify_slice(&bytes).is_ok(),
        Err(_) => false,
    }
}

fn decode_nonce(hex_text: &str, from: &str) -> Result<[u8; NONCE_LEN], Refusal> {
    hex::decode(hex_text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Refusal::new(
                RefuseCode::Malformed,
                format!("the {from}'s nonce is not {NONCE_LEN} bytes of hex"),
            )
        })
}

/// What the guest does next.
#[derive(Debug)]
pub enum GuestStep {
    /// Send this line and wait for the next.
    Send(Vec<u8>),
    /// The agent proved the key and welcomed us; X11 bytes may flow.
    Welcomed(Welcome),
}

/// The guest's side of the handshake.
#[derive(Debug)]
pub struct GuestHandshake {
    key: Key,
    nonce: [u8; NONCE_LEN],
    agent_nonce: Option<[u8; NONCE_LEN]>,
    software: String,
}

impl GuestHandshake {
    /// Starts a handshake with a fresh nonce.
    pub fn new(key: Key, software: impl Into<String>) -> Self {
        Self::with_nonce(key, software, crate::random_bytes())
    }

    /// Starts a handshake with a chosen nonce (tests).
    pub fn with_nonce(key: Key, software: impl Into<String>, nonce: [u8; NONCE_LEN]) -> Self {
        GuestHandshake {
            key,
            nonce,
            agent_nonce: None,
            software: software.into(),
        }
    }

    /// The opening `hello` line.
    pub fn hello(&self) -> Vec<u8> {
        self.hello_with_version(PROTOCOL_VERSION)
    }

    /// A `hello` claiming another version (tests of version refusal).
    pub fn hello_with_version(&self, version: u32) -> Vec<u8> {
        Message::Hello {
            version,
            nonce: hex::encode(self.nonce),
            software: self.software.clone(),
        }
        .to_line()
    }

    /// Feeds one line from the agent.
    pub fn receive(&mut self, line: &[u8]) -> Result<GuestStep, Refusal> {
        match (Message::parse(line, "agent")?, self.agent_nonce) {
            (Message::Refuse { code, reason }, _) => Err(Refusal { code, reason }),
            (Message::Challenge { version, nonce }, None) => {
                if version != PROTOCOL_VERSION {
                    return Err(version_mismatch("agent", version));
                }
                let agent_nonce = decode_nonce(&nonce, "agent")?;
                self.agent_nonce = Some(agent_nonce);
                let mac = proof(&self.key, GUEST_LABEL, &agent_nonce, &self.nonce);
                let proof = hex::encode(mac.finalize().into_bytes());
                Ok(GuestStep::Send(Message::Auth { proof }.to_line()))
            }
            (Message::Welcome(welcome), Some(agent_nonce)) => {
                let mac = proof(&self.key, AGENT_LABEL, &self.nonce, &agent_nonce);
                if !verify(mac, &welcome.proof) {
                    return Err(Refusal::new(
                        RefuseCode::BadProof,
                        "the agent could not prove it holds our pairing key; the guest's key file differs from the host's (copy the host's guest.key to the guest again)",
                    ));
                }
                Ok(GuestStep::Welcomed(welcome))
            }
            (other, _) => Err(unexpected(&other, "agent")),
        }
    }
}

/// What the agent does next.
#[derive(Debug)]
pub enum AgentStep {
    /// Send this line and wait for the next.
    Send(Vec<u8>),
    /// The guest proved the key; call [`Authenticated::welcome`] (or refuse) next.
    Authenticated(Authenticated),
}

/// The agent's side of the handshake.
#[derive(Debug)]
pub struct AgentHandshake {
    key: Key,
    nonce: [u8; NONCE_LEN],
    guest_nonce: Option<[u8; NONCE_LEN]>,
    software: String,
}

/// A guest that has proved the key; holds what the agent needs to prove itself in turn.
#[derive(Debug)]
pub struct Authenticated {
    key: Key,
    guest_nonce: [u8; NONCE_LEN],
    agent_nonce: [u8; NONCE_LEN],
    /// What the guest called itself in `hello` (for logs only; unauthenticated text).
    pub software: String,
}

impl AgentHandshake {
    /// Starts the agent's side with a fresh nonce.
    pub fn new(key: Key) -> Self {
        Self::with_nonce(key, crate::random_bytes())
    }

    /// Starts the agent's side with a chosen nonce (tests).
    pub fn with_nonce(key: Key, nonce: [u8; NONCE_LEN]) -> Self {
        AgentHandshake {
            key,
            nonce,
            guest_nonce: None,
            software: String::new(),
        }
    }

    /// Feeds one line from the guest. An `Err` is to be sent to the guest with
    /// [`Refusal::to_line`] before closing.
    pub fn receive(&mut self, line: &[u8]) -> Result<AgentStep, Refusal> {
        match (Message::parse(line, "guest")?, self.guest_nonce) {
            (Message::Hello { version, .. }, None) if version != PROTOCOL_VERSION => {
                Err(version_mismatch("guest", version))
            }
            (
                Message::Hello {
                    nonce, software, ..
                },
                None,
            ) => {
                self.guest_nonce = Some(decode_nonce(&nonce, "guest")?);
                self.software = software.chars().take(80).collect();
                Ok(AgentStep::Send(
                    Message::Challenge {
                        version: PROTOCOL_VERSION,
                        nonce: hex::encode(self.nonce),
                    }
                    .to_line(),
                ))
            }
            (Message::Auth { proof: guest_proof }, Some(guest_nonce)) => {
                let mac = proof(&self.key, GUEST_LABEL, &self.nonce, &guest_nonce);
                if !verify(mac, &guest_proof) {
                    return Err(Refusal::new(
                        RefuseCode::BadProof,
                        "the guest's proof does not match this agent's pairing key; copy the host's guest.key (see `host-agent init`) to the guest's key_file",
                    ));
                }
                Ok(AgentStep::Authenticated(Authenticated {
                    key: self.key.clone(),
                    guest_nonce,
                    agent_nonce: self.nonce,
                    software: self.software.clone(),
                }))
            }
            (other, _) => Err(unexpected(&other, "guest")),
        }
    }
}

impl Authenticated {
    /// The `welcome` line, carrying the agent's proof and the host facts.
    pub fn welcome(&self, host: HostInfo) -> Vec<u8> {
        let mac = proof(&self.key, AGENT_LABEL, &self.guest_nonce, &self.agent_nonce);
        Message::Welcome(Welcome {
            proof: hex::encode(mac.finalize().into_bytes()),
            version: PROTOCOL_VERSION,
            agent: format!("host-agent {}", env!("CARGO_PKG_VERSION")),
            host,
        })
        .to_line()
    }
}

fn version_mismatch(peer: &str, theirs: u32) -> Refusal {
    Refusal::new(
        RefuseCode::Version,
        format!(
            "the {peer} speaks xbridge protocol version {theirs}, but this side speaks version {PROTOCOL_VERSION}; install matching versions of host-agent and guest-xwrap"
        ),
    )
}

fn unexpected(message: &Message, from: &str) -> Refusal {
    let kind = serde_json::to_value(message)
        .ok()
        .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    Refusal::new(
        RefuseCode::Malformed,
        format!("the {from} sent `{kind}` out of turn; the handshake order is hello, challenge, auth, welcome"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(line: Vec<u8>) -> Vec<u8> {
        assert_eq!(line.last(), Some(&b'\n'));
        line[..line.len() - 1].to_vec()
    }

    fn run(guest_key: Key, agent_key: Key) -> (Vec<u8>, Result<Welcome, Refusal>) {
        let mut transcript = Vec::new();
        let mut guest = GuestHandshake::new(guest_key, "test");
        let mut agent = AgentHandshake::new(agent_key);
        let hello = guest.hello();
        transcript.extend_from_slice(&hello);
        let AgentStep::Send(challenge) = agent.receive(&strip(hello)).unwrap() else {
            panic!("agent should challenge")
        };
        transcript.extend_from_slice(&challenge);
        let GuestStep::Send(auth) = guest.receive(&strip(challenge)).unwrap() else {
            panic!("guest should answer")
        };
        transcript.extend_from_slice(&auth);
        let welcome = match agent.receive(&strip(auth)) {
            Ok(AgentStep::Authenticated(a)) => a.welcome(HostInfo::default()),
            Ok(AgentStep::Send(_)) => panic!("agent should decide"),
            Err(refusal) => {
                transcript.extend_from_slice(&refusal.to_line());
                return (transcript, Err(refusal));
            }
        };
        transcript.extend_from_slice(&welcome);
        let outcome = match guest.receive(&strip(welcome)) {
            Ok(GuestStep::Welcomed(w)) => Ok(w),
            Ok(GuestStep::Send(_)) => panic!("guest should be done"),
            Err(e) => Err(e),
        };
        (transcript, outcome)
    }

    #[test]
    fn same_key_succeeds() {
        let key = Key::generate();
        let (_, outcome) = run(key.clone(), key);
        assert_eq!(outcome.unwrap().version, PROTOCOL_VERSION);
    }

    #[test]
    fn wrong_key_is_refused_and_never_crosses_the_wire() {
        let guest_key = Key::generate();
        let agent_key = Key::generate();
        let (transcript, outcome) = run(guest_key.clone(), agent_key.clone());
        let refusal = outcome.unwrap_err();
        assert_eq!(refusal.code, RefuseCode::BadProof);
        assert!(refusal.reason.contains("guest.key"));
        for key in [&guest_key, &agent_key] {
            let hex_key = hex::encode(key.as_bytes());
            assert!(!contains(&transcript, key.as_bytes()));
            assert!(!contains(&transcript, hex_key.as_bytes()));
        }
        assert!(contains(&transcript, b"\"type\":\"refuse\""));
    }

    #[test]
    fn guest_refuses_an_agent_with_another_key() {
        // The agent's welcome is computed under a different key than the guest's.
        let mut guest = GuestHandshake::new(Key::generate(), "test");
        let mut agent = AgentHandshake::new(Key::generate());
        let AgentStep::Send(challenge) = agent.receive(&strip(guest.hello())).unwrap() else {
            panic!()
        };
        guest.receive(&strip(challenge)).unwrap();
        let impostor = Authenticated {
            key: Key::generate(),
            guest_nonce: [0; NONCE_LEN],
            agent_nonce: [0; NONCE_LEN],
            software: String::new(),
        };
        let refusal = guest
            .receive(&strip(impostor.welcome(HostInfo::default())))
            .unwrap_err();
        assert_eq!(refusal.code, RefuseCode::BadProof);
        assert!(refusal.reason.contains("agent could not prove"));
    }

    #[test]
    fn replayed_guest_proof_is_refused() {
        let key = Key::generate();
        let mut guest = GuestHandshake::new(key.clone(), "test");
        let hello = strip(guest.hello());
        let mut first = AgentHandshake::new(key.clone());
        let AgentStep::Send(challenge) = first.receive(&hello).unwrap() else {
            panic!()
        };
        let GuestStep::Send(auth) = guest.receive(&strip(challenge)).unwrap() else {
            panic!()
        };
        assert!(matches!(
            first.receive(&strip(auth.clone())),
            Ok(AgentStep::Authenticated(_))
        ));
        // An eavesdropper replays hello and auth against a new session: the agent's fresh nonce differs.
        let mut second = AgentHandshake::new(key);
        second.receive(&hello).unwrap();
        let refusal = second.receive(&strip(auth)).unwrap_err();
        assert_eq!(refusal.code, RefuseCode::BadProof);
    }

    #[test]
    fn unknown_version_names_both() {
        let guest = GuestHandshake::new(Key::generate(), "test");
        let mut agent = AgentHandshake::new(Key::generate());
        let refusal = agent
            .receive(&strip(guest.hello_with_version(7)))
            .unwrap_err();
        assert_eq!(refusal.code, RefuseCode::Version);
        assert!(refusal.reason.contains("version 7"), "{}", refusal.reason);
        assert!(refusal
            .reason
            .contains(&format!("version {PROTOCOL_VERSION}")));
    }

    #[test]
    fn non_json_and_out_of_order_are_malformed() {
        let mut agent = AgentHandshake::new(Key::generate());
        let refusal = agent.receive(b"GET / HTTP/1.1").unwrap_err();
        assert_eq!(refusal.code, RefuseCode::Malformed);
        assert!(refusal.reason.contains("not an xbridge message"));
        let refusal = agent
            .receive(br#"{"type":"auth","proof":"00"}"#)
            .unwrap_err();
        assert!(refusal.reason.contains("out of turn"), "{}", refusal.reason);
        let refusal = agent
            .receive(br#"{"type":"hello","version":1,"nonce":"zz","software":""}"#)
            .unwrap_err();
        assert!(refusal.reason.contains("nonce"));
    }

    #[test]
    fn refusal_from_the_agent_reaches_the_guest() {
        let mut guest = GuestHandshake::new(Key::generate(), "test");
        let line = Refusal::new(RefuseCode::Busy, "too many guests").to_line();
        let refusal = guest.receive(&strip(line)).unwrap_err();
        assert_eq!(refusal, Refusal::new(RefuseCode::Busy, "too many guests"));
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
}
