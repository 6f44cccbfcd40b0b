//! A fixed amount of image traffic with every byte checked: what the load test and the
//! benchmark's scale run (`xbridge-load`) both have each client do.

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{ConnectionExt, ImageFormat};

/// Side of the square image each round puts and gets back: 64 KiB at 32 bits per pixel.
pub const SIDE: u16 = 128;

/// Bytes one round moves each way.
pub const ROUND_BYTES: u64 = SIDE as u64 * SIDE as u64 * 4;

/// Puts a pattern unique to `client` and `round` into a pixmap and reads it back, `rounds`
/// times; the first pixel that differs is an error naming the client and round.
pub fn image_round_trips(conn: &impl Connection, client: u32, rounds: u32) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("client {client}: {what}: {e}");
    let root = conn.setup().roots[0].root;
    let pixmap = conn.generate_id().map_err(|e| fail("id", &e))?;
    conn.create_pixmap(24, pixmap, root, SIDE, SIDE)
        .map_err(|e| fail("CreatePixmap", &e))?;
    let gc = conn.generate_id().map_err(|e| fail("id", &e))?;
    conn.create_gc(gc, pixmap, &Default::default())
        .map_err(|e| fail("CreateGC", &e))?;
    for round in 0..rounds {
        let data: Vec<u8> = (0..ROUND_BYTES as u32)
            .map(|b| (b.wrapping_mul(31) ^ (client.wrapping_mul(7).wrapping_add(round))) as u8)
            .collect();
        conn.put_image(
            ImageFormat::Z_PIXMAP,
            pixmap,
            gc,
            SIDE,
            SIDE,
            0,
            0,
            0,
            24,
            &data,
        )
        .map_err(|e| fail("PutImage", &e))?;
        let got = conn
            .get_image(ImageFormat::Z_PIXMAP, pixmap, 0, 0, SIDE, SIDE, !0)
            .map_err(|e| fail("GetImage", &e))?
            .reply()
            .map_err(|e| fail("GetImage reply", &e))?
            .data;
        if got.len() != data.len() {
            return Err(format!(
                "client {client} round {round}: GetImage returned {} bytes, expected {}",
                got.len(),
                data.len()
            ));
        }
        // Depth 24 in 32-bit pixels: the pad byte is the server's to fill.
        if let Some(pixel) = got
            .chunks(4)
            .zip(data.chunks(4))
            .position(|(g, d)| g[..3] != d[..3])
        {
            return Err(format!(
                "client {client} round {round}: pixel {pixel} came back different"
            ));
        }
    }
    conn.free_gc(gc).map_err(|e| fail("FreeGC", &e))?;
    conn.free_pixmap(pixmap)
        .map_err(|e| fail("FreePixmap", &e))?;
    conn.flush().map_err(|e| fail("flush", &e))?;
    Ok(())
}
