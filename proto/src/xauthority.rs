//! Xauthority files: the private one-cookie files xbridge writes, and reading a server's
//! `-auth` file.
//!
//! Client-side lookups ("which cookie for this display?") are x11rb-protocol's
//! [`x11rb_protocol::xauth::get_auth`]; this module covers what it does not: writing a file,
//! and reading a server's `-auth` file, where every entry belongs to that one server.
//!
//! Format: entries of `family: u16 BE`, then four `u16 BE`-length-prefixed strings:
//! address, display number, auth name, auth data.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The only authorization scheme xbridge issues.
pub const MIT_MAGIC_COOKIE_1: &[u8] = b"MIT-MAGIC-COOKIE-1";
/// The family that matches any address.
pub const FAMILY_WILD: u16 = 0xffff;

/// One Xauthority entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub family: u16,
    pub address: Vec<u8>,
    pub number: Vec<u8>,
    pub name: Vec<u8>,
    pub data: Vec<u8>,
}

impl Entry {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.family.to_be_bytes());
        for field in [&self.address, &self.number, &self.name, &self.data] {
            out.extend_from_slice(&(field.len() as u16).to_be_bytes());
            out.extend_from_slice(field);
        }
    }
}

/// Parses every entry of an Xauthority file's contents.
pub fn parse_entries(mut bytes: &[u8]) -> io::Result<Vec<Entry>> {
    fn field(bytes: &mut &[u8]) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 2];
        bytes.read_exact(&mut len)?;
        let mut value = vec![0u8; u16::from_be_bytes(len) as usize];
        bytes.read_exact(&mut value)?;
        Ok(value)
    }
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let mut family = [0u8; 2];
        bytes.read_exact(&mut family)?;
        entries.push(Entry {
            family: u16::from_be_bytes(family),
            address: field(&mut bytes)?,
            number: field(&mut bytes)?,
            name: field(&mut bytes)?,
            data: field(&mut bytes)?,
        });
    }
    Ok(entries)
}

/// The MIT-MAGIC-COOKIE-1 an X server started with `-auth path` accepts, for a client of
/// display `display`: an entry for that display number if there is one, else any.
pub fn server_cookie(path: &Path, display: u16) -> io::Result<Option<Vec<u8>>> {
    let entries = parse_entries(&fs::read(path)?)?;
    let number = display.to_string().into_bytes();
    let cookies = || entries.iter().filter(|e| e.name == MIT_MAGIC_COOKIE_1);
    Ok(cookies()
        .find(|e| e.number == number)
        .or_else(|| cookies().next())
        .map(|e| e.data.clone()))
}

/// Writes a new private (0600) Xauthority file holding one MIT-MAGIC-COOKIE-1 for any
/// address and display `display`.
pub fn write_cookie_file(path: &Path, display: u16, cookie: &[u8]) -> io::Result<()> {
    let mut bytes = Vec::new();
    Entry {
        family: FAMILY_WILD,
        address: Vec::new(),
        number: display.to_string().into_bytes(),
        name: MIT_MAGIC_COOKIE_1.to_vec(),
        data: cookie.to_vec(),
    }
    .encode(&mut bytes);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn written_file_is_private_and_reads_back() {
        let dir = std::env::temp_dir().join(format!(
            "xbridge-xauth-{}",
            hex::encode(crate::random_bytes::<8>())
        ));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth");
        write_cookie_file(&path, 7, &[9; 16]).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(server_cookie(&path, 7).unwrap(), Some(vec![9; 16]));
        // Hand-checked encoding: family, "", "7", name, 16 bytes.
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..7], &[0xff, 0xff, 0, 0, 0, 1, b'7']);
        assert_eq!(bytes.len(), 2 + 2 + 3 + 2 + 18 + 2 + 16);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn server_cookie_prefers_the_display_number() {
        let mut bytes = Vec::new();
        for (number, data) in [(b"1".to_vec(), vec![1; 16]), (b"3".to_vec(), vec![3; 16])] {
            Entry {
                family: 256,
                address: b"host".to_vec(),
                number,
                name: MIT_MAGIC_COOKIE_1.to_vec(),
                data,
            }
            .encode(&mut bytes);
        }
        let entries = parse_entries(&bytes).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(parse_entries(&bytes[..bytes.len() - 1]).is_err());
    }
}
