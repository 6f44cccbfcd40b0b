//! The one stream type both sides pass around, whatever the transport.

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream: TCP, unix, vsock, or stdin/stdout joined.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// A boxed [`ByteStream`], so transports mix in one list.
pub type BoxStream = Box<dyn ByteStream>;
