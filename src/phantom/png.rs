//! Minimal PNG encoder (8-bit RGB, zlib via flate2): enough for previews without
//! another dependency.

use flate2::write::ZlibEncoder;
use flate2::Compression;
use std::io::Write;

fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (n, t) in table.iter_mut().enumerate() {
        let mut c = n as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *t = c;
    }
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c = table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    c ^ 0xFFFF_FFFF
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut c = Vec::with_capacity(4 + data.len());
    c.extend_from_slice(kind);
    c.extend_from_slice(data);
    out.extend_from_slice(&c);
    out.extend_from_slice(&crc32(&c).to_be_bytes());
}

/// Encodes `rgb` (width*height*3 bytes, rows top to bottom) as PNG bytes.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> std::io::Result<Vec<u8>> {
    encode(width, height, rgb, 3)
}

/// Encodes 8-bit grey (width*height bytes): a third of the size of RGB for
/// CT pictures.
pub fn encode_gray(width: u32, height: u32, grey: &[u8]) -> std::io::Result<Vec<u8>> {
    encode(width, height, grey, 1)
}

fn encode(width: u32, height: u32, px: &[u8], channels: usize) -> std::io::Result<Vec<u8>> {
    let mut out = vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A];
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    let colour = if channels == 1 { 0 } else { 2 };
    ihdr.extend_from_slice(&[8, colour, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // Best compression for the grey pictures committed to the repository.
    let level = if channels == 1 {
        Compression::best()
    } else {
        Compression::default()
    };
    let mut z = ZlibEncoder::new(Vec::new(), level);
    let stride = width as usize * channels;
    for row in px.chunks(stride).take(height as usize) {
        z.write_all(&[0])?;
        z.write_all(row)?;
    }
    chunk(&mut out, b"IDAT", &z.finish()?);
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc_of_iend() {
        assert_eq!(super::crc32(b"IEND"), 0xAE42_6082);
    }
}
