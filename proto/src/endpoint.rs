//! Endpoint syntax shared by the agent's `--listen` and the guest's `agent =` setting.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where a guest reaches the host agent, or where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `tcp:HOST:PORT`; an IPv6 host is written in brackets, `tcp:[::1]:6010`.
    Tcp { host: String, port: u16 },
    /// `unix:PATH`, a filesystem socket.
    Unix(PathBuf),
    /// `vsock:CID:PORT`; the host is CID 2 as seen from a VM.
    Vsock { cid: u32, port: u32 },
    /// `stdio`: one connection on standard input and output (slirp `add exec`, QEMU `guestfwd`).
    Stdio,
}

/// Why an endpoint string was not understood; the message quotes it and shows valid forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint `{text}`: {reason} (examples: tcp:127.0.0.1:6010, unix:/run/user/1000/xbridge.sock, vsock:2:6010, stdio)")]
pub struct EndpointError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| EndpointError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text == "stdio" {
            return Ok(Endpoint::Stdio);
        }
        let (scheme, rest) = text
            .split_once(':')
            .ok_or_else(|| fail("missing the `scheme:` prefix"))?;
        match scheme {
            "tcp" => {
                let (host, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| fail("expected tcp:HOST:PORT"))?;
                let host = match host.strip_prefix('[') {
                    Some(inner) => inner
                        .strip_suffix(']')
                        .ok_or_else(|| fail("an IPv6 host needs a closing `]`"))?,
                    None if host.contains(':') => {
                        return Err(fail("write an IPv6 host in brackets, as tcp:[::1]:6010"))
                    }
                    None => host,
                };
                if host.is_empty() {
                    return Err(fail("the host is empty"));
                }
                if host.contains(['[', ']', '/', ' ']) {
                    return Err(fail("the host has a character no host name or address has"));
                }
                let port = port
                    .parse()
                    .map_err(|_| fail("the port is not a number from 0 to 65535"))?;
                Ok(Endpoint::Tcp {
                    host: host.to_owned(),
                    port,
                })
            }
            "unix" if !rest.is_empty() => Ok(Endpoint::Unix(PathBuf::from(rest))),
            "unix" => Err(fail("the socket path is empty")),
            "vsock" => {
                let (cid, port) = rest
                    .split_once(':')
                    .ok_or_else(|| fail("expected vsock:CID:PORT"))?;
                let cid = cid
                    .parse()
                    .map_err(|_| fail("the CID is not a 32-bit number"))?;
                let port = port
                    .parse()
                    .map_err(|_| fail("the port is not a 32-bit number"))?;
                Ok(Endpoint::Vsock { cid, port })
            }
            _ => Err(fail("unknown scheme, expected tcp, unix, vsock or stdio")),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "tcp:[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "tcp:{host}:{port}"),
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
            Endpoint::Stdio => f.write_str("stdio"),
        }
    }
}

impl serde::Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Endpoint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_forms_round_trip() {
        for text in [
            "tcp:127.0.0.1:6010",
            "tcp:10.0.2.2:6010",
            "tcp:[::1]:6010",
            "tcp:localhost:1",
            "unix:/run/user/1000/xbridge.sock",
            "vsock:2:6010",
            "stdio",
        ] {
            let parsed: Endpoint = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
        }
    }

    #[test]
    fn errors_quote_the_text_and_show_an_example() {
        for (text, reason) in [
            ("tcp:127.0.0.1", "expected tcp:HOST:PORT"),
            ("tcp:127.0.0.1:99999", "port"),
            ("tcp:::1:6010", "brackets"),
            ("tcp::6010", "host is empty"),
            // Found by `cargo xtask fuzz`: parsed, but printed as something that did not parse.
            ("tcp:[[]:6", "character"),
            ("unix:", "path is empty"),
            ("vsock:two:6010", "CID"),
            ("http://x", "unknown scheme"),
            ("6010", "scheme"),
        ] {
            let message = text.parse::<Endpoint>().unwrap_err().to_string();
            assert!(message.contains(&format!("`{text}`")), "{message}");
            assert!(message.contains(reason), "{message}");
            assert!(message.contains("tcp:127.0.0.1:6010"), "{message}");
        }
    }
}
