//! The host display: connecting to it as libxcb would, and the credentials guests borrow.
//!
//! The agent keeps one trusted control connection of its own, used to mint and revoke
//! per-guest untrusted authorizations and to describe the screen. Guest traffic never goes
//! over it: each guest gets its own connection, opened with a credential only the agent sees.

use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpStream, UnixStream};
use x11rb::connection::{Connection, RequestConnection};
use x11rb::protocol::randr::ConnectionExt as _;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _};
use x11rb::rust_connection::RustConnection;
use x11rb_protocol::parse_display::{parse_display, ConnectAddress, ParsedDisplay};
use x11rb_protocol::xauth::{get_auth, Family};
use xbridge_proto::stream::BoxStream;
use xbridge_proto::{HostInfo, Keymap, ScreenSize};

use crate::security;

/// How much a guest may do on the host display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Trust {
    /// A fresh SECURITY-extension authorization per guest connection, revoked when it ends.
    Untrusted,
    /// The host's own cookie from the Xauthority file: full access, like a local client.
    Trusted,
}

/// Why the host display could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    #[error("no host display given: set DISPLAY or pass --display :0")]
    NoDisplay,
    #[error("cannot parse host display `{display}`: {reason}")]
    Parse { display: String, reason: String },
    #[error("cannot connect to host display {display}: {cause} — is the X server running, and is DISPLAY right?")]
    Connect { display: String, cause: io::Error },
    #[error("cannot open the control connection to host display {display}: {reason} — check DISPLAY and XAUTHORITY (or --xauthority)")]
    Control { display: String, reason: String },
    #[error("host display {display} has no SECURITY extension, so an untrusted authorization cannot be minted; run host-agent with --trust trusted to give guests full access instead")]
    NoSecurity { display: String },
    #[error("cannot mint an authorization on host display {display}: {reason}")]
    Mint { display: String, reason: String },
}

/// A credential for one guest connection. Dropping it revokes a minted authorization.
#[derive(Debug)]
pub struct Credential {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    revoke: Option<(u32, Arc<HostDisplay>)>,
}

impl Drop for Credential {
    fn drop(&mut self) {
        if let Some((id, display)) = self.revoke.take() {
            // Revoking is a blocking round trip; keep it off the async workers.
            tokio::task::spawn_blocking(move || display.revoke(id));
        }
    }
}

/// The host display as the agent uses it.
#[derive(Debug)]
pub struct HostDisplay {
    name: String,
    parsed: ParsedDisplay,
    trust: Trust,
    control: Mutex<Option<RustConnection>>,
}

impl HostDisplay {
    /// Parses the display name; connects nothing yet.
    pub fn new(name: Option<String>, trust: Trust) -> Result<Self, DisplayError> {
        let name = name
            .filter(|n| !n.is_empty())
            .ok_or(DisplayError::NoDisplay)?;
        let parsed = parse_display(Some(&name)).map_err(|e| DisplayError::Parse {
            display: name.clone(),
            reason: e.to_string(),
        })?;
        Ok(HostDisplay {
            name,
            parsed,
            trust,
            control: Mutex::new(None),
        })
    }

    /// The display name, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens a new connection to the display's socket, trying addresses as libxcb does
    /// (on Linux the abstract socket before the filesystem one).
    pub async fn connect(&self) -> Result<(BoxStream, Family, Vec<u8>), DisplayError> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address to try");
        for address in self.parsed.connect_instruction() {
            let attempt = match address {
                ConnectAddress::Hostname(host, port) => connect_tcp(host, port).await,
                ConnectAddress::Socket(path) => connect_unix(&path).await,
                _ => continue,
            };
            match attempt {
                Ok(found) => return Ok(found),
                Err(e) => last = e,
            }
        }
        Err(DisplayError::Connect {
            display: self.name.clone(),
            cause: last,
        })
    }

    /// Gets the credential a new guest connection will present. Blocking: call from
    /// `spawn_blocking`.
    pub fn credential(
        self: &Arc<Self>,
        family: Family,
        address: &[u8],
    ) -> Result<Credential, DisplayError> {
        match self.trust {
            Trust::Trusted => {
                let (name, data) = get_auth(family, address, self.parsed.display)
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                Ok(Credential {
                    name,
                    data,
                    revoke: None,
                })
            }
            Trust::Untrusted => {
                let minted = self.with_control(|conn| {
                    security::generate_untrusted(conn, 60).map_err(|e| e.to_string())
                })?;
                let minted = minted.ok_or_else(|| DisplayError::NoSecurity {
                    display: self.name.clone(),
                })?;
                Ok(Credential {
                    name: xbridge_proto::xauthority::MIT_MAGIC_COOKIE_1.to_vec(),
                    data: minted.data,
                    revoke: Some((minted.id, Arc::clone(self))),
                })
            }
        }
    }

    fn revoke(&self, id: u32) {
        match self.with_control(|conn| security::revoke(conn, id).map_err(|e| e.to_string())) {
            Ok(()) => tracing::debug!(id, "revoked untrusted authorization"),
            Err(e) => tracing::warn!(id, "could not revoke authorization: {e}"),
        }
    }

    /// What the guest should know: screen size and keymap. Blocking.
    pub fn info(&self) -> HostInfo {
        self.with_control(|conn| Ok(describe(conn)))
            .unwrap_or_else(|e| {
                tracing::warn!("cannot describe host display: {e}");
                HostInfo::default()
            })
    }

    /// Runs `f` on the control connection, reconnecting once if the old one broke (the host
    /// server may have reset, which also kills every minted authorization).
    fn with_control<T>(
        &self,
        f: impl Fn(&RustConnection) -> Result<T, String>,
    ) -> Result<T, DisplayError> {
        let mut slot = self.control.lock().unwrap_or_else(|p| p.into_inner());
        for attempt in 0..2 {
            if slot.is_none() {
                let (conn, _) =
                    x11rb::connect(Some(&self.name)).map_err(|e| DisplayError::Control {
                        display: self.name.clone(),
                        reason: e.to_string(),
                    })?;
                *slot = Some(conn);
            }
            let conn = slot.as_ref().expect("just set");
            match f(conn) {
                Ok(value) => return Ok(value),
                Err(reason) if attempt == 0 => {
                    tracing::debug!("control connection failed ({reason}); reconnecting");
                    *slot = None;
                }
                Err(reason) => {
                    return Err(DisplayError::Mint {
                        display: self.name.clone(),
                        reason,
                    })
                }
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    /// Checks the control connection works and, in untrusted mode, that SECURITY is there.
    pub fn preflight(&self) -> Result<(), DisplayError> {
        let has_security = self.with_control(|conn| {
            conn.extension_information(security::EXTENSION_NAME)
                .map(|i| i.is_some())
                .map_err(|e| e.to_string())
        })?;
        if self.trust == Trust::Untrusted && !has_security {
            return Err(DisplayError::NoSecurity {
                display: self.name.clone(),
            });
        }
        Ok(())
    }
}

fn describe(conn: &RustConnection) -> HostInfo {
    let root = conn.setup().roots[0].root;
    HostInfo {
        screen: primary_output_size(conn, root).or_else(|| {
            let screen = &conn.setup().roots[0];
            Some(ScreenSize {
                width: screen.width_in_pixels,
                height: screen.height_in_pixels,
            })
        }),
        keymap: keymap(conn, root),
    }
}

fn primary_output_size(conn: &RustConnection, root: u32) -> Option<ScreenSize> {
    let primary = conn
        .randr_get_output_primary(root)
        .ok()?
        .reply()
        .ok()?
        .output;
    if primary == 0 {
        return None;
    }
    let info = conn.randr_get_output_info(primary, 0).ok()?.reply().ok()?;
    if info.crtc == 0 {
        return None;
    }
    let crtc = conn.randr_get_crtc_info(info.crtc, 0).ok()?.reply().ok()?;
    (crtc.width > 0 && crtc.height > 0).then_some(ScreenSize {
        width: crtc.width,
        height: crtc.height,
    })
}

fn keymap(conn: &RustConnection, root: u32) -> Option<Keymap> {
    let atom = conn
        .intern_atom(true, b"_XKB_RULES_NAMES")
        .ok()?
        .reply()
        .ok()?
        .atom;
    if atom == 0 {
        return None;
    }
    let prop = conn
        .get_property(false, root, atom, AtomEnum::STRING, 0, 1024)
        .ok()?
        .reply()
        .ok()?;
    let mut fields = prop
        .value
        .split(|&b| b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned());
    let mut next = || fields.next().unwrap_or_default();
    Some(Keymap {
        rules: next(),
        model: next(),
        layout: next(),
        variant: next(),
        options: next(),
    })
}

async fn connect_tcp(host: &str, port: u16) -> io::Result<(BoxStream, Family, Vec<u8>)> {
    let stream = TcpStream::connect((host, port)).await?;
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    // Like libxcb: a loopback peer is this machine, so its cookies are filed under our hostname.
    let (family, address) = match peer.ip() {
        ip if ip.is_loopback() => (Family::LOCAL, hostname()),
        IpAddr::V4(ip) => (Family::INTERNET, ip.octets().to_vec()),
        IpAddr::V6(ip) => (Family::INTERNET6, ip.octets().to_vec()),
    };
    Ok((Box::new(stream), family, address))
}

async fn connect_unix(path: &str) -> io::Result<(BoxStream, Family, Vec<u8>)> {
    use std::os::linux::net::SocketAddrExt;
    let abstract_addr = std::os::unix::net::SocketAddr::from_abstract_name(path.as_bytes())?;
    let std_stream = match std::os::unix::net::UnixStream::connect_addr(&abstract_addr) {
        Ok(s) => s,
        Err(_) => std::os::unix::net::UnixStream::connect(path)?,
    };
    std_stream.set_nonblocking(true)?;
    Ok((
        Box::new(UnixStream::from_std(std_stream)?),
        Family::LOCAL,
        hostname(),
    ))
}

/// This machine's hostname, as Xauthority files record local displays.
pub fn hostname() -> Vec<u8> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return Vec::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    buf[..end].to_vec()
}

/// Whether every address a TCP host name stands for is loopback.
pub fn is_loopback_host(host: &str) -> bool {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    match (host, 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}
