//! Drives the handshake state machines over any async byte stream, under a deadline.
//!
//! TCP, unix, vsock and stdin/stdout all come through here, so every transport gets the
//! same limits: lines of at most [`MAX_LINE`] bytes and one deadline for the whole exchange.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::handshake::{
    AgentHandshake, AgentStep, Authenticated, GuestHandshake, GuestStep, Refusal, RefuseCode,
    Welcome, MAX_LINE,
};
use crate::keyfile::Key;
use crate::lines::{LineError, LineReader};

/// Default deadline for the whole handshake.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer refused us, with its reason.
    #[error("refused by the {peer}: {}", .refusal.reason)]
    RefusedByPeer {
        peer: &'static str,
        refusal: Refusal,
    },
    /// We refused the peer (the refusal was sent to it).
    #[error("{}", .0.reason)]
    RefusedPeer(Refusal),
    /// The exchange did not finish in time.
    #[error("the handshake did not finish within {0:?}")]
    Timeout(Duration),
    /// The stream failed or closed.
    #[error(transparent)]
    Line(#[from] LineError),
}

impl HandshakeError {
    /// The refusal code, when there was one.
    pub fn code(&self) -> Option<RefuseCode> {
        match self {
            HandshakeError::RefusedByPeer { refusal, .. }
            | HandshakeError::RefusedPeer(refusal) => Some(refusal.code),
            HandshakeError::Timeout(_) => Some(RefuseCode::Timeout),
            HandshakeError::Line(LineError::TooLong { .. }) => Some(RefuseCode::TooLong),
            HandshakeError::Line(_) => None,
        }
    }
}

/// Runs the guest's side. Returns the welcome and any bytes read past it (the start of X11).
pub async fn guest_handshake<S>(
    stream: &mut S,
    key: &Key,
    software: &str,
    deadline: Duration,
) -> Result<(Welcome, Vec<u8>), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut machine = GuestHandshake::new(key.clone(), software);
        let mut reader = LineReader::new(MAX_LINE);
        stream
            .write_all(&machine.hello())
            .await
            .map_err(LineError::Io)?;
        loop {
            let line = reader.read_line(stream).await?;
            match machine.receive(&line) {
                Ok(GuestStep::Send(reply)) => {
                    stream.write_all(&reply).await.map_err(LineError::Io)?
                }
                Ok(GuestStep::Welcomed(welcome)) => return Ok((welcome, reader.into_leftover())),
                Err(refusal) if is_from_peer(&line) => {
                    return Err(HandshakeError::RefusedByPeer {
                        peer: "host agent",
                        refusal,
                    })
                }
                Err(refusal) => {
                    let _ = stream.write_all(&refusal.to_line()).await;
                    return Err(HandshakeError::RefusedPeer(refusal));
                }
            }
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .unwrap_or(Err(HandshakeError::Timeout(deadline)))
}

/// Runs the agent's side. On success the caller sends [`Authenticated::welcome`] (or a
/// refusal); on failure the guest has already been sent the reason.
pub async fn agent_handshake<S>(
    stream: &mut S,
    key: &Key,
    deadline: Duration,
) -> Result<(Authenticated, Vec<u8>), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut machine = AgentHandshake::new(key.clone());
        let mut reader = LineReader::new(MAX_LINE);
        loop {
            let line = match reader.read_line(stream).await {
                Ok(line) => line,
                Err(LineError::TooLong { max }) => {
                    let refusal = Refusal::new(
                        RefuseCode::TooLong,
                        format!("a handshake line exceeded {max} bytes; is the guest speaking the xbridge protocol?"),
                    );
                    let _ = stream.write_all(&refusal.to_line()).await;
                    return Err(HandshakeError::RefusedPeer(refusal));
                }
                Err(e) => return Err(e.into()),
            };
            match machine.receive(&line) {
                Ok(AgentStep::Send(reply)) => {
                    stream.write_all(&reply).await.map_err(LineError::Io)?
                }
                Ok(AgentStep::Authenticated(auth)) => return Ok((auth, reader.into_leftover())),
                Err(refusal) if is_from_peer(&line) => {
                    return Err(HandshakeError::RefusedByPeer {
                        peer: "guest",
                        refusal,
                    })
                }
                Err(refusal) => {
                    let _ = stream.write_all(&refusal.to_line()).await;
                    return Err(HandshakeError::RefusedPeer(refusal));
                }
            }
        }
    };
    match tokio::time::timeout(deadline, exchange).await {
        Ok(outcome) => outcome,
        Err(_) => {
            let refusal = Refusal::new(
                RefuseCode::Timeout,
                format!("the handshake did not finish within {deadline:?}"),
            );
            // Best effort: a stalled peer may not be reading either.
            let _ = tokio::time::timeout(
                Duration::from_millis(100),
                stream.write_all(&refusal.to_line()),
            )
            .await;
            Err(HandshakeError::Timeout(deadline))
        }
    }
}

/// Whether a line is the peer's own `refuse` message (as opposed to something we refuse).
fn is_from_peer(line: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<crate::handshake::Message>(line),
        Ok(crate::handshake::Message::Refuse { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::HostInfo;
    use tokio::io::AsyncReadExt;

    async fn pair(
        guest_key: Key,
        agent_key: Key,
    ) -> (Result<Welcome, HandshakeError>, Result<(), HandshakeError>) {
        let (mut g, mut a) = tokio::io::duplex(64);
        let agent = tokio::spawn(async move {
            let (auth, _) = agent_handshake(&mut a, &agent_key, HANDSHAKE_DEADLINE).await?;
            a.write_all(&auth.welcome(HostInfo::default()))
                .await
                .unwrap();
            a.write_all(b"X11!").await.unwrap();
            Ok(())
        });
        let guest = guest_handshake(&mut g, &guest_key, "test", HANDSHAKE_DEADLINE).await;
        let guest = match guest {
            Ok((welcome, mut leftover)) => {
                // The stream after the welcome is intact, however the reads were split.
                while leftover.len() < 4 {
                    let mut byte = [0];
                    g.read_exact(&mut byte).await.unwrap();
                    leftover.push(byte[0]);
                }
                assert_eq!(leftover, b"X11!");
                Ok(welcome)
            }
            Err(e) => Err(e),
        };
        drop(g);
        (guest, agent.await.unwrap())
    }

    #[tokio::test]
    async fn both_roles_agree() {
        let key = Key::generate();
        let (guest, agent) = pair(key.clone(), key).await;
        assert!(guest.is_ok() && agent.is_ok());
    }

    #[tokio::test]
    async fn wrong_key_is_refused_on_both_sides_with_the_reason() {
        let (guest, agent) = pair(Key::generate(), Key::generate()).await;
        let guest = guest.unwrap_err();
        assert!(
            matches!(guest, HandshakeError::RefusedByPeer { .. }),
            "{guest:?}"
        );
        assert!(
            guest.to_string().contains("refused by the host agent"),
            "{guest}"
        );
        assert!(guest.to_string().contains("guest.key"), "{guest}");
        let agent = agent.unwrap_err();
        assert_eq!(agent.code(), Some(RefuseCode::BadProof));
    }

    #[tokio::test]
    async fn a_stalled_guest_hits_the_deadline() {
        let (mut g, mut a) = tokio::io::duplex(64);
        g.write_all(b"{\"type\":\"hel").await.unwrap();
        let err = agent_handshake(&mut a, &Key::generate(), Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout(_)));
        let mut sent = vec![0; 256];
        let n = g.read(&mut sent).await.unwrap();
        assert!(String::from_utf8_lossy(&sent[..n]).contains("\"code\":\"timeout\""));
    }

    #[tokio::test]
    async fn an_oversized_line_is_refused_after_a_few_kib() {
        let (mut g, mut a) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 64 * 1024];
            let mut written = 0usize;
            while written < 5_000_000 {
                match g.write(&chunk).await {
                    Ok(n) => written += n,
                    Err(_) => break,
                }
            }
            (g, written)
        });
        let err = agent_handshake(&mut a, &Key::generate(), HANDSHAKE_DEADLINE)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(RefuseCode::TooLong));
        drop(a);
        let (_g, _written) = writer.await.unwrap();
    }

    #[tokio::test]
    async fn garbage_is_refused_as_malformed() {
        let (mut g, mut a) = tokio::io::duplex(256);
        g.write_all(b"\x16\x03\x01 hello?\n").await.unwrap();
        let err = agent_handshake(&mut a, &Key::generate(), HANDSHAKE_DEADLINE)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(RefuseCode::Malformed));
        assert!(err.to_string().contains("not an xbridge message"), "{err}");
    }
}
