//! Newline-delimited frames with a hard cap, read without over-reading into what follows.
//!
//! The handshake is followed on the same stream by raw X11 bytes, so whatever was read past
//! the last line is handed back by [`LineReader::into_leftover`] rather than lost.

use tokio::io::{AsyncRead, AsyncReadExt};

/// Why no line could be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// More than the cap arrived without a newline; nothing more was read.
    #[error("a handshake line exceeded {max} bytes without a newline")]
    TooLong { max: usize },
    /// The peer closed the stream mid-exchange.
    #[error("the connection closed in the middle of the handshake{}", if *.partial > 0 { format!(" (after {} bytes of an unfinished line)", .partial) } else { String::new() })]
    Closed { partial: usize },
    /// The stream failed.
    #[error("reading the handshake failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads lines of at most `max` bytes (newline included) from a stream.
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    max: usize,
}

impl LineReader {
    /// A reader that refuses lines longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        LineReader {
            buf: Vec::with_capacity(max),
            max,
        }
    }

    /// Returns the next line without its newline.
    ///
    /// Never holds more than `max` bytes: a peer sending an endless line is cut off after
    /// `max` bytes have been read.
    pub async fn read_line<R: AsyncRead + Unpin>(
        &mut self,
        stream: &mut R,
    ) -> Result<Vec<u8>, LineError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + pos;
                let line = self.buf[..end].to_vec();
                self.buf.drain(..=end);
                return Ok(line);
            }
            scanned = self.buf.len();
            if self.buf.len() >= self.max {
                return Err(LineError::TooLong { max: self.max });
            }
            let room = self.max - self.buf.len();
            let mut chunk = [0u8; 1024];
            let want = room.min(chunk.len());
            let n = stream.read(&mut chunk[..want]).await?;
            if n == 0 {
                return Err(LineError::Closed {
                    partial: self.buf.len(),
                });
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Bytes read past the last line: the start of the stream that follows the handshake.
    pub fn into_leftover(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn lines_one_byte_at_a_time_keep_the_leftover() {
        let (mut a, mut b) = tokio::io::duplex(1);
        tokio::spawn(async move {
            a.write_all(b"first\nsecond\nX11").await.unwrap();
        });
        let mut reader = LineReader::new(64);
        assert_eq!(reader.read_line(&mut b).await.unwrap(), b"first");
        assert_eq!(reader.read_line(&mut b).await.unwrap(), b"second");
        // Whatever follows is not consumed beyond what the last read brought in.
        let mut rest = reader.into_leftover();
        let mut tail = Vec::new();
        b.read_to_end(&mut tail).await.unwrap();
        rest.extend(tail);
        assert_eq!(rest, b"X11");
    }

    #[tokio::test]
    async fn an_endless_line_is_cut_off_after_the_cap() {
        // A 5 MB "line" without a newline, behind a pipe that counts what it gave out.
        struct Endless {
            given: usize,
        }
        impl AsyncRead for Endless {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let n = buf.remaining().min(5_000_000 - self.given);
                buf.put_slice(&vec![b'a'; n]);
                self.given += n;
                std::task::Poll::Ready(Ok(()))
            }
        }
        let mut stream = Endless { given: 0 };
        let mut reader = LineReader::new(4096);
        let err = reader.read_line(&mut stream).await.unwrap_err();
        assert!(matches!(err, LineError::TooLong { max: 4096 }));
        assert!(stream.given <= 4096, "read {} bytes", stream.given);
    }

    #[tokio::test]
    async fn truncated_input_is_reported() {
        let mut input: &[u8] = b"{\"type\":";
        let err = LineReader::new(64).read_line(&mut input).await.unwrap_err();
        assert!(matches!(err, LineError::Closed { partial: 8 }));
        assert!(err.to_string().contains("closed in the middle"));
    }
}
