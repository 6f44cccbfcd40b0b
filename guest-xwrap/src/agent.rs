//! Reaching the host agent: connect over the configured transport and run the handshake.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UnixStream};
use xbridge_proto::exchange::{guest_handshake, HandshakeError, HANDSHAKE_DEADLINE};
use xbridge_proto::handshake::RefuseCode;
use xbridge_proto::stream::BoxStream;
use xbridge_proto::{Endpoint, Key, Welcome};

/// Why the agent could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach host agent at {endpoint}: {cause} — is host-agent running on the host, and is `agent` in xwrap.toml right?")]
    Connect {
        endpoint: Endpoint,
        cause: io::Error,
    },
    #[error("handshake with host agent at {endpoint} failed: {error}")]
    Handshake {
        endpoint: Endpoint,
        error: HandshakeError,
    },
}

impl AgentError {
    /// Whether waiting could help: the agent may be starting, restarting or busy. A key or
    /// version mismatch will not fix itself.
    pub fn is_transient(&self) -> bool {
        match self {
            AgentError::Connect { .. } => true,
            AgentError::Handshake { error, .. } => !matches!(
                error.code(),
                Some(RefuseCode::BadProof | RefuseCode::Version | RefuseCode::Malformed)
            ),
        }
    }
}

/// Opens a raw stream to the endpoint.
pub async fn connect(endpoint: &Endpoint) -> io::Result<BoxStream> {
    match endpoint {
        Endpoint::Tcp { host, port } => {
            let stream = TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream))
        }
        Endpoint::Unix(path) => Ok(Box::new(UnixStream::connect(path).await?)),
        Endpoint::Vsock { cid, port } => Ok(Box::new(connect_vsock(*cid, *port)?)),
        Endpoint::Stdio => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "stdio is an agent-side mode; the guest dials tcp, unix or vsock",
        )),
    }
}

/// Connects and authenticates. Returns the stream, the welcome, and any X11 bytes already read.
pub async fn open(
    endpoint: &Endpoint,
    key: &Key,
) -> Result<(BoxStream, Welcome, Vec<u8>), AgentError> {
    let mut stream = connect(endpoint)
        .await
        .map_err(|source| AgentError::Connect {
            endpoint: endpoint.clone(),
            cause: source,
        })?;
    let software = concat!("guest-xwrap ", env!("CARGO_PKG_VERSION"));
    let (welcome, leftover) = guest_handshake(&mut stream, key, software, HANDSHAKE_DEADLINE)
        .await
        .map_err(|error| AgentError::Handshake {
            endpoint: endpoint.clone(),
            error,
        })?;
    Ok((stream, welcome, leftover))
}

/// Handshakes once to learn the host's facts, retrying transient failures with backoff until
/// `wait` has passed. Each attempt is logged.
pub async fn wait_for_agent(
    endpoint: &Endpoint,
    key: &Key,
    wait: Duration,
) -> Result<Welcome, AgentError> {
    let start = Instant::now();
    let mut backoff = Duration::from_millis(100);
    for attempt in 1.. {
        match open(endpoint, key).await {
            Ok((_, welcome, _)) => {
                tracing::info!(attempt, agent = %welcome.agent, "host agent at {endpoint} accepted us");
                return Ok(welcome);
            }
            Err(e) if e.is_transient() && start.elapsed() + backoff < wait => {
                tracing::warn!(attempt, "{e}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
    unreachable!("the loop returns")
}

fn connect_vsock(cid: u32, port: u32) -> io::Result<UnixStream> {
    // SAFETY: plain socket(2); checked before use.
    let raw = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_vm is plain data.
    let mut addr: libc::sockaddr_vm = unsafe { std::mem::zeroed() };
    addr.svm_family = libc::AF_VSOCK as libc::sa_family_t;
    addr.svm_cid = cid;
    addr.svm_port = port;
    // SAFETY: addr is a valid sockaddr_vm of the given size. A blocking connect is fine here:
    // vsock connects complete or fail promptly.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_vm).cast(),
            std::mem::size_of::<libc::sockaddr_vm>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // Connected stream sockets all read, write and shut down alike; drive it as a unix stream.
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    UnixStream::from_std(std)
}
