//! `brig-api healthcheck`: asks the local brig-api's `/ready` and exits 0 when
//! it answers 200, 1 otherwise. Plain std networking, so images need no curl
//! and no shell.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The exit code: 0 ready, 1 not.
pub fn probe() -> i32 {
    let port = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(8000);
    match ready(port) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(err) => {
            eprintln!("brig-api healthcheck: {err}");
            1
        }
    }
}

fn ready(port: u16) -> std::io::Result<bool> {
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET /ready HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    Ok(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
}
