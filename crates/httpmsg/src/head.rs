//! Reading the head of a stored message from a file, without its body: `spool list`, whomp's
//! status API and its idempotency keys need the head of a message whose body may be large.

use std::io::Read;

/// The longest head a stored file may have: both daemons read their files back with this
/// limit, and [`read_head`] reads this far, so no reader cuts a head short that another reads.
pub const MAX_STORED_HEAD: usize = 1024 * 1024;

/// The head of the message `reader` holds, through its blank line: read in pieces up to
/// `max_bytes` (and a piece more), so a head is never cut short below the limit, however large
/// its writer made it, and a large body is not read.
pub fn read_head(mut reader: impl Read, max_bytes: usize) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut piece = [0u8; 16 * 1024];
    while head.len() <= max_bytes {
        let n = reader.read(&mut piece)?;
        if n == 0 {
            break;
        }
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&piece[..n]);
        if head[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_large_head_whole_and_stops_at_its_end() {
        let pad = "z".repeat(100 * 1024);
        let file = format!(
            "POST / HTTP/1.1\r\nX-Pad: {pad}\r\n\r\n{}",
            "b".repeat(1 << 20)
        );
        let head = read_head(file.as_bytes(), MAX_STORED_HEAD).unwrap();
        let end = file.find("\r\n\r\n").unwrap() + 4;
        assert!(head.len() >= end && head.len() < end + 16 * 1024);
        assert!(crate::parse_head_with(
            &head,
            &crate::Limits {
                max_header_bytes: MAX_STORED_HEAD,
                ..crate::Limits::default()
            }
        )
        .is_ok());
        let small = read_head(&b"GET / HTTP/1.1\r\n"[..], 16).unwrap();
        assert_eq!(
            small, b"GET / HTTP/1.1\r\n",
            "a file cut short gives what it has"
        );
    }
}
