//! PNG output of the phantom's pictures (previews, CT appearance figures),
//! through the `png` crate the report already uses; this module only keeps the
//! two calls the phantom makes.

/// Encodes `rgb` (width*height*3 bytes, rows top to bottom) as PNG bytes.
pub(crate) fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> std::io::Result<Vec<u8>> {
    encode(width, height, rgb, ::png::ColorType::Rgb)
}

/// Encodes 8-bit grey (width*height bytes): a third of the size of RGB for
/// CT pictures.
pub(crate) fn encode_gray(width: u32, height: u32, grey: &[u8]) -> std::io::Result<Vec<u8>> {
    encode(width, height, grey, ::png::ColorType::Grayscale)
}

fn encode(
    width: u32,
    height: u32,
    px: &[u8],
    colour: ::png::ColorType,
) -> std::io::Result<Vec<u8>> {
    let err = |e: ::png::EncodingError| std::io::Error::other(e.to_string());
    let mut out = Vec::new();
    {
        let mut enc = ::png::Encoder::new(&mut out, width, height);
        enc.set_color(colour);
        enc.set_depth(::png::BitDepth::Eight);
        // Smallest files for the grey pictures committed to the repository.
        if colour == ::png::ColorType::Grayscale {
            enc.set_compression(::png::Compression::High);
        }
        let mut w = enc.write_header().map_err(err)?;
        w.write_image_data(px).map_err(err)?;
        w.finish().map_err(err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn grey_and_rgb_decode_back() {
        let grey: Vec<u8> = (0..12u8).collect();
        let bytes = super::encode_gray(4, 3, &grey).unwrap();
        let mut r = ::png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (4, 3));
        assert_eq!(&buf[..12], &grey[..]);
        assert!(super::encode_rgb(2, 2, &[0u8; 12]).is_ok());
    }
}
