//! One guest connection, from handshake to the last byte.
//!
//! handshake → credential and host facts → welcome → the guest's X11 setup request →
//! authorization swapped for the host credential → bytes pumped both ways until either
//! side closes. The host credential is only ever written toward the host display.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use xbridge_proto::exchange::{agent_handshake, HandshakeError};
use xbridge_proto::handshake::{Refusal, RefuseCode};
use xbridge_proto::setup::{read_setup_request, SetupError};
use xbridge_proto::stream::{pump, BoxStream};
use xbridge_proto::Key;

use crate::display::{DisplayError, HostDisplay};

/// What every session needs.
#[derive(Debug)]
pub struct Context {
    pub key: Key,
    pub display: Arc<HostDisplay>,
    /// Deadline for the handshake, and again for the X11 setup request after it.
    pub handshake_deadline: Duration,
}

/// Why a session ended early.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Display(#[from] DisplayError),
    #[error("bad X11 setup request: {0}")]
    Setup(#[from] SetupError),
    #[error("the guest sent no X11 setup request within {0:?}")]
    SetupTimeout(Duration),
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
}

/// Byte counts of a finished session.
#[derive(Debug, Clone, Copy)]
pub struct Transferred {
    pub to_host: u64,
    pub to_guest: u64,
}

/// Serves one guest to completion.
pub async fn serve(ctx: Arc<Context>, mut guest: BoxStream) -> Result<Transferred, SessionError> {
    let (auth, leftover) = agent_handshake(&mut guest, &ctx.key, ctx.handshake_deadline).await?;
    tracing::debug!(software = %auth.software, "guest authenticated");

    let (mut host, family, address) = match ctx.display.connect().await {
        Ok(found) => found,
        Err(e) => return Err(refuse(&mut guest, e).await),
    };
    let display = Arc::clone(&ctx.display);
    let prepared = tokio::task::spawn_blocking(move || {
        let credential = display.credential(family, &address)?;
        Ok::<_, DisplayError>((credential, display.info()))
    })
    .await
    .expect("credential task does not panic");
    let (credential, info) = match prepared {
        Ok(found) => found,
        Err(e) => return Err(refuse(&mut guest, e).await),
    };
    guest.write_all(&auth.welcome(info)).await?;

    let read = tokio::time::timeout(
        ctx.handshake_deadline,
        read_setup_request(&mut guest, leftover),
    )
    .await
    .map_err(|_| SessionError::SetupTimeout(ctx.handshake_deadline))?;
    let (request, rest) = match read {
        Ok(found) => found,
        // guest-xwrap's preflight and `check` only handshake; that is a complete session.
        Err(SetupError::NoRequest) => {
            tracing::debug!("guest closed after the handshake (a preflight check)");
            return Ok(Transferred {
                to_host: 0,
                to_guest: 0,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let rewritten = request
        .with_auth(&credential.name, &credential.data)
        .encode();
    host.write_all(&rewritten).await?;
    host.write_all(&rest).await?;

    let (to_host, to_guest) = pump(&mut guest, &mut host).await?;
    // The credential (and with it a minted authorization) lives exactly as long as the pump.
    drop(credential);
    Ok(Transferred {
        to_host: to_host + rewritten.len() as u64,
        to_guest,
    })
}

/// Tells the guest why the host display cannot be used, then reports the same.
async fn refuse(guest: &mut BoxStream, error: DisplayError) -> SessionError {
    let refusal = Refusal::new(RefuseCode::HostDisplay, format!("host agent: {error}"));
    let _ = guest.write_all(&refusal.to_line()).await;
    let _ = guest.shutdown().await;
    SessionError::Display(error)
}
