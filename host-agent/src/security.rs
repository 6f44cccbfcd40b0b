//! The X SECURITY extension's authorization requests, which x11rb does not bind
//! (libxcb never did either; `xauth generate` goes through libXext).
//!
//! Wire format from the extension's protocol header (`securproto.h`):
//! GenerateAuthorization (minor 1): u16 name length, u16 data length, u32 value mask, the
//! padded name and data, then one u32 per mask bit in bit order. Reply: u32 authorization id,
//! u16 data length, then the generated data. RevokeAuthorization (minor 2): u32 id.

use std::io::IoSlice;

use x11rb::connection::RequestConnection;
use x11rb::errors::{ConnectionError, ParseError, ReplyError};
use x11rb::x11_utils::TryParse;

/// The extension's name as the server lists it.
pub const EXTENSION_NAME: &str = "SECURITY";
const GENERATE_AUTHORIZATION: u8 = 1;
const REVOKE_AUTHORIZATION: u8 = 2;
const ATTR_TIMEOUT: u32 = 1 << 0;
const ATTR_TRUST_LEVEL: u32 = 1 << 1;
const CLIENT_UNTRUSTED: u32 = 1;

/// An authorization minted by the server.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The server's id for it, used to revoke it.
    pub id: u32,
    /// The cookie the client presents (MIT-MAGIC-COOKIE-1 data).
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct GenerateReply {
    id: u32,
    data: Vec<u8>,
}

impl TryParse for GenerateReply {
    fn try_parse(value: &[u8]) -> Result<(Self, &[u8]), ParseError> {
        // type, pad, sequence (2), length (4), authId (4), dataLength (2), pad (18), data.
        let header = value.get(..32).ok_or(ParseError::InsufficientData)?;
        let id = u32::from_ne_bytes(header[8..12].try_into().expect("4 bytes"));
        let len = u16::from_ne_bytes(header[12..14].try_into().expect("2 bytes")) as usize;
        let data = value
            .get(32..32 + len)
            .ok_or(ParseError::InsufficientData)?;
        Ok((
            GenerateReply {
                id,
                data: data.to_vec(),
            },
            &value[32 + len..],
        ))
    }
}

fn opcode<C: RequestConnection>(conn: &C) -> Result<Option<u8>, ConnectionError> {
    Ok(conn
        .extension_information(EXTENSION_NAME)?
        .map(|info| info.major_opcode))
}

/// Mints an untrusted MIT-MAGIC-COOKIE-1 authorization, as `xauth generate … untrusted` does.
/// `Ok(None)` when the server has no SECURITY extension.
///
/// `timeout_s` is how long the server keeps the authorization while no client uses it.
pub fn generate_untrusted<C: RequestConnection>(
    conn: &C,
    timeout_s: u32,
) -> Result<Option<Minted>, ReplyError> {
    let Some(major) = opcode(conn)? else {
        return Ok(None);
    };
    let name = xbridge_proto::xauthority::MIT_MAGIC_COOKIE_1;
    let mut request = Vec::with_capacity(12 + 20 + 8);
    let length_words = (12 + name.len().div_ceil(4) * 4 + 8) / 4;
    request.push(major);
    request.push(GENERATE_AUTHORIZATION);
    request.extend_from_slice(&(length_words as u16).to_ne_bytes());
    request.extend_from_slice(&(name.len() as u16).to_ne_bytes());
    request.extend_from_slice(&0u16.to_ne_bytes()); // no data: the server generates it
    request.extend_from_slice(&(ATTR_TIMEOUT | ATTR_TRUST_LEVEL).to_ne_bytes());
    request.extend_from_slice(name);
    request.resize(12 + name.len().div_ceil(4) * 4, 0);
    request.extend_from_slice(&timeout_s.to_ne_bytes());
    request.extend_from_slice(&CLIENT_UNTRUSTED.to_ne_bytes());
    debug_assert_eq!(request.len(), length_words * 4);
    let reply: GenerateReply = conn
        .send_request_with_reply(&[IoSlice::new(&request)], Vec::new())?
        .reply()?;
    Ok(Some(Minted {
        id: reply.id,
        data: reply.data,
    }))
}

/// Revokes an authorization; the server also disconnects any client still using it.
pub fn revoke<C: RequestConnection>(conn: &C, id: u32) -> Result<(), ReplyError> {
    let Some(major) = opcode(conn)? else {
        return Ok(());
    };
    let mut request = vec![major, REVOKE_AUTHORIZATION];
    request.extend_from_slice(&2u16.to_ne_bytes());
    request.extend_from_slice(&id.to_ne_bytes());
    conn.send_request_without_reply(&[IoSlice::new(&request)], Vec::new())?
        .check()
}
