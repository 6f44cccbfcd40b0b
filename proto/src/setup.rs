//! X11 connection setup as a proxy sees it: the client's request (either byte order) and
//! the `Failed` reply, per the X11 protocol's "Connection Setup" section.
//!
//! Request layout (lengths in the client's byte order):
//! ```text
//! 0  byte-order 'l' (LSB first) or 'B' (MSB first)
//! 1  unused
//! 2  protocol-major  u16        4  protocol-minor u16
//! 6  auth-name len n u16        8  auth-data len d u16
//! 10 unused u16                 12 auth name, padded to 4; then auth data, padded to 4
//! ```

use tokio::io::{AsyncRead, AsyncReadExt};

/// Longest authorization protocol name accepted ("MIT-MAGIC-COOKIE-1" is 18).
pub const MAX_AUTH_NAME: usize = 64;
/// Longest authorization data accepted (cookies are 16 bytes; XDM-AUTHORIZATION-1 is 24).
pub const MAX_AUTH_DATA: usize = 256;
/// Fixed part of a setup request.
pub const HEADER_LEN: usize = 12;

/// The client's byte order, which every later length in its stream uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// `'l'`: least significant byte first.
    Little,
    /// `'B'`: most significant byte first.
    Big,
}

impl ByteOrder {
    /// The order of this machine, which x11rb writes.
    pub fn native() -> Self {
        if cfg!(target_endian = "little") {
            ByteOrder::Little
        } else {
            ByteOrder::Big
        }
    }

    fn read_u16(self, bytes: [u8; 2]) -> u16 {
        match self {
            ByteOrder::Little => u16::from_le_bytes(bytes),
            ByteOrder::Big => u16::from_be_bytes(bytes),
        }
    }

    fn write_u16(self, value: u16) -> [u8; 2] {
        match self {
            ByteOrder::Little => value.to_le_bytes(),
            ByteOrder::Big => value.to_be_bytes(),
        }
    }

    fn marker(self) -> u8 {
        match self {
            ByteOrder::Little => b'l',
            ByteOrder::Big => b'B',
        }
    }
}

/// Why a setup request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The first byte is neither `'l'` nor `'B'`: not an X11 client.
    #[error("not an X11 connection setup: first byte is {0:#04x}, expected 'l' or 'B'")]
    ByteOrder(u8),
    /// The authorization name is longer than [`MAX_AUTH_NAME`].
    #[error("the X11 setup request claims a {0}-byte authorization name (at most {MAX_AUTH_NAME} accepted)")]
    NameTooLong(usize),
    /// The authorization data is longer than [`MAX_AUTH_DATA`].
    #[error("the X11 setup request claims {0} bytes of authorization data (at most {MAX_AUTH_DATA} accepted)")]
    DataTooLong(usize),
    /// The stream ended before the request did.
    #[error("the X11 client closed the connection in the middle of its setup request")]
    Truncated,
    /// The stream ended before any byte of a request: the peer only wanted the handshake.
    #[error("the connection closed before an X11 setup request")]
    NoRequest,
    /// The stream failed.
    #[error("reading the X11 setup request failed: {0}")]
    Io(String),
}

/// A client's connection-setup request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupRequest {
    pub byte_order: ByteOrder,
    pub major: u16,
    pub minor: u16,
    pub auth_name: Vec<u8>,
    pub auth_data: Vec<u8>,
}

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

impl SetupRequest {
    /// Total length of a request, known from its 12-byte header; checks the caps first, so a
    /// caller can refuse before reading (or allocating for) the rest.
    pub fn total_len(header: &[u8; HEADER_LEN]) -> Result<usize, SetupError> {
        let order = match header[0] {
            b'l' => ByteOrder::Little,
            b'B' => ByteOrder::Big,
            other => return Err(SetupError::ByteOrder(other)),
        };
        let n = order.read_u16([header[6], header[7]]) as usize;
        let d = order.read_u16([header[8], header[9]]) as usize;
        if n > MAX_AUTH_NAME {
            return Err(SetupError::NameTooLong(n));
        }
        if d > MAX_AUTH_DATA {
            return Err(SetupError::DataTooLong(d));
        }
        Ok(HEADER_LEN + n + pad4(n) + d + pad4(d))
    }

    /// Parses a request from the start of `buf`. `Ok(None)` means more bytes are needed;
    /// otherwise returns the request and how many bytes it took.
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, SetupError> {
        if let Some(&first) = buf.first() {
            if first != b'l' && first != b'B' {
                return Err(SetupError::ByteOrder(first));
            }
        }
        let Some(header) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let header: &[u8; HEADER_LEN] = header.try_into().expect("slice of HEADER_LEN");
        let total = Self::total_len(header)?;
        if buf.len() < total {
            return Ok(None);
        }
        let byte_order = if header[0] == b'l' {
            ByteOrder::Little
        } else {
            ByteOrder::Big
        };
        let u16_at = |i: usize| byte_order.read_u16([header[i], header[i + 1]]);
        let n = u16_at(6) as usize;
        let d = u16_at(8) as usize;
        let name_start = HEADER_LEN;
        let data_start = name_start + n + pad4(n);
        Ok(Some((
            SetupRequest {
                byte_order,
                major: u16_at(2),
                minor: u16_at(4),
                auth_name: buf[name_start..name_start + n].to_vec(),
                auth_data: buf[data_start..data_start + d].to_vec(),
            },
            total,
        )))
    }

    /// Encodes the request in its own byte order, with zero padding.
    pub fn encode(&self) -> Vec<u8> {
        let o = self.byte_order;
        let (n, d) = (self.auth_name.len(), self.auth_data.len());
        let mut out = Vec::with_capacity(HEADER_LEN + n + d + 6);
        out.push(o.marker());
        out.push(0);
        out.extend_from_slice(&o.write_u16(self.major));
        out.extend_from_slice(&o.write_u16(self.minor));
        out.extend_from_slice(&o.write_u16(n as u16));
        out.extend_from_slice(&o.write_u16(d as u16));
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.auth_name);
        out.resize(out.len() + pad4(n), 0);
        out.extend_from_slice(&self.auth_data);
        out.resize(out.len() + pad4(d), 0);
        out
    }

    /// The same request with another authorization, keeping byte order and version.
    pub fn with_auth(&self, name: &[u8], data: &[u8]) -> Self {
        SetupRequest {
            auth_name: name.to_vec(),
            auth_data: data.to_vec(),
            ..self.clone()
        }
    }

    /// An X11 `Failed` reply to this client, in its byte order and protocol version.
    pub fn failed_reply(&self, reason: &str) -> Vec<u8> {
        failed_reply(self.byte_order, self.major, self.minor, reason)
    }
}

/// Builds a `Failed` setup reply: status 0, reason length, version, and the padded reason.
/// Reasons longer than 255 bytes are cut, as the length field is one byte.
pub fn failed_reply(order: ByteOrder, major: u16, minor: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(255)];
    let padded = reason.len() + pad4(reason.len());
    let mut out = Vec::with_capacity(8 + padded);
    out.push(0);
    out.push(reason.len() as u8);
    out.extend_from_slice(&order.write_u16(major));
    out.extend_from_slice(&order.write_u16(minor));
    out.extend_from_slice(&order.write_u16((padded / 4) as u16));
    out.extend_from_slice(reason);
    out.resize(8 + padded, 0);
    out
}

/// Reads one setup request from a stream, starting with bytes already read (`pending`).
/// Returns the request and any bytes that followed it. Refuses oversized lengths after the
/// 12-byte header, before reading further.
pub async fn read_setup_request<R: AsyncRead + Unpin>(
    stream: &mut R,
    mut pending: Vec<u8>,
) -> Result<(SetupRequest, Vec<u8>), SetupError> {
    loop {
        if let Some((request, used)) = SetupRequest::parse(&pending)? {
            pending.drain(..used);
            return Ok((request, pending));
        }
        let want = if pending.len() < HEADER_LEN {
            HEADER_LEN - pending.len()
        } else {
            let header: &[u8; HEADER_LEN] = pending[..HEADER_LEN].try_into().expect("header");
            SetupRequest::total_len(header)? - pending.len()
        };
        let start = pending.len();
        pending.resize(start + want, 0);
        let n = stream
            .read(&mut pending[start..])
            .await
            .map_err(|e| SetupError::Io(e.to_string()))?;
        pending.truncate(start + n);
        if n == 0 && start == 0 {
            return Err(SetupError::NoRequest);
        }
        if n == 0 {
            return Err(SetupError::Truncated);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A little-endian request: X11 11.0 with a 3-byte name "abc" and 5 bytes of data.
    const LE_ODD: &[u8] = &[
        b'l', 0, // byte order, unused
        11, 0, 0, 0, // major 11, minor 0
        3, 0, 5, 0, // name length 3, data length 5
        0, 0, // unused
        b'a', b'b', b'c', 0, // name + 1 byte of padding
        1, 2, 3, 4, 5, 0, 0, 0, // data + 3 bytes of padding
    ];

    /// The same request in big-endian order.
    const BE_ODD: &[u8] = &[
        b'B', 0, // byte order, unused
        0, 11, 0, 0, // major 11, minor 0
        0, 3, 0, 5, // name length 3, data length 5
        0, 0, // unused
        b'a', b'b', b'c', 0, // name + padding
        1, 2, 3, 4, 5, 0, 0, 0, // data + padding
    ];

    /// LE_ODD rewritten to MIT-MAGIC-COOKIE-1 (18 bytes, 2 padding) with a 16-byte cookie.
    fn le_cookie() -> Vec<u8> {
        let mut v = vec![b'l', 0, 11, 0, 0, 0, 18, 0, 16, 0, 0, 0];
        v.extend_from_slice(b"MIT-MAGIC-COOKIE-1\0\0");
        v.extend(0xa0..0xb0u8);
        v
    }

    fn be_cookie() -> Vec<u8> {
        let mut v = vec![b'B', 0, 0, 11, 0, 0, 0, 18, 0, 16, 0, 0];
        v.extend_from_slice(b"MIT-MAGIC-COOKIE-1\0\0");
        v.extend(0xa0..0xb0u8);
        v
    }

    #[test]
    fn parses_both_byte_orders() {
        for (bytes, order) in [(LE_ODD, ByteOrder::Little), (BE_ODD, ByteOrder::Big)] {
            let (req, used) = SetupRequest::parse(bytes).unwrap().unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(req.byte_order, order);
            assert_eq!((req.major, req.minor), (11, 0));
            assert_eq!(req.auth_name, b"abc");
            assert_eq!(req.auth_data, [1, 2, 3, 4, 5]);
            assert_eq!(req.encode(), bytes);
        }
    }

    #[test]
    fn rewrites_byte_for_byte_in_both_orders() {
        let cookie: Vec<u8> = (0xa0..0xb0u8).collect();
        for (bytes, expected) in [(LE_ODD, le_cookie()), (BE_ODD, be_cookie())] {
            let (req, _) = SetupRequest::parse(bytes).unwrap().unwrap();
            assert_eq!(
                req.with_auth(b"MIT-MAGIC-COOKIE-1", &cookie).encode(),
                expected
            );
        }
        // And back to odd lengths, which need padding again.
        let (req, _) = SetupRequest::parse(&be_cookie()).unwrap().unwrap();
        assert_eq!(req.with_auth(b"abc", &[1, 2, 3, 4, 5]).encode(), BE_ODD);
        // Removing the authorization entirely leaves the bare 12-byte header.
        let (req, _) = SetupRequest::parse(LE_ODD).unwrap().unwrap();
        assert_eq!(
            req.with_auth(b"", b"").encode(),
            [b'l', 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn one_byte_at_a_time_needs_more_until_complete() {
        for len in 0..LE_ODD.len() {
            assert_eq!(
                SetupRequest::parse(&LE_ODD[..len]).unwrap(),
                None,
                "at {len}"
            );
        }
        assert!(SetupRequest::parse(LE_ODD).unwrap().is_some());
    }

    #[test]
    fn oversized_lengths_are_refused_from_the_header() {
        let mut huge = LE_ODD[..12].to_vec();
        huge[6..8].copy_from_slice(&0xffffu16.to_le_bytes());
        assert_eq!(
            SetupRequest::parse(&huge),
            Err(SetupError::NameTooLong(0xffff))
        );
        let mut huge = BE_ODD[..12].to_vec();
        huge[8..10].copy_from_slice(&0x1000u16.to_be_bytes());
        assert_eq!(
            SetupRequest::parse(&huge),
            Err(SetupError::DataTooLong(0x1000))
        );
        assert_eq!(
            SetupRequest::parse(b"GET / HTTP/1.1"),
            Err(SetupError::ByteOrder(b'G'))
        );
    }

    #[test]
    fn failed_reply_parses_back_with_x11rb() {
        use x11rb_protocol::protocol::xproto::SetupFailed;
        use x11rb_protocol::x11_utils::TryParse;
        let reason = "Authorization required, but no authorization protocol specified";
        let reply = failed_reply(ByteOrder::native(), 11, 0, reason);
        assert_eq!(reply.len() % 4, 0);
        let (parsed, _padding) = SetupFailed::try_parse(&reply).unwrap();
        assert_eq!(reply.len(), 8 + 4 * parsed.length as usize);
        assert_eq!(parsed.status, 0);
        assert_eq!(parsed.protocol_major_version, 11);
        assert_eq!(parsed.reason, reason.as_bytes());
    }

    #[test]
    fn failed_reply_in_big_endian_is_hand_checked() {
        let reply = failed_reply(ByteOrder::Big, 11, 0, "no");
        assert_eq!(reply, [0, 2, 0, 11, 0, 0, 0, 1, b'n', b'o', 0, 0]);
        let long = "x".repeat(300);
        assert_eq!(failed_reply(ByteOrder::Little, 11, 0, &long)[1], 255);
    }

    #[tokio::test]
    async fn read_setup_request_keeps_what_follows() {
        let mut stream: Vec<u8> = LE_ODD[3..].to_vec();
        stream.extend_from_slice(b"REQS");
        let (req, rest) = read_setup_request(&mut &stream[..], LE_ODD[..3].to_vec())
            .await
            .unwrap();
        assert_eq!(req.auth_name, b"abc");
        // Reads stop at the end of the request, so the rest stays in the stream.
        assert!(rest.is_empty());
        let err = read_setup_request(&mut &LE_ODD[5..10], LE_ODD[..5].to_vec())
            .await
            .unwrap_err();
        assert_eq!(err, SetupError::Truncated);
    }
}
