//! The fastest a tcp_table server can answer on this machine: one thread per connection,
//! blocking reads, every request line answered with the same `200` line and no other work.
//! `benches/compare-postsrsd.sh` measures it next to postsrsd and srs-relay, so the ratio
//! between them can be read against what the kernel and the client leave to gain.
//!
//! ```text
//! cargo run --release --example table_ceiling -- 127.0.0.1:10009
//! ```

use std::io::{Read, Write};
use std::net::TcpListener;

const REPLY: &[u8] = b"200 SRS0=HHHH=TT=domain1.example=user1@bench.example\n";

fn main() {
    let Some(addr) = std::env::args().nth(1) else {
        eprintln!("usage: table_ceiling HOST:PORT");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("table_ceiling: {addr}: {e}");
        std::process::exit(1)
    });
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut filled = 0;
            loop {
                match stream.read(&mut buf[filled..]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => filled += n,
                }
                // One reply per complete line; keep a partial one.
                let mut start = 0;
                while let Some(end) = buf[start..filled].iter().position(|&b| b == b'\n') {
                    if stream.write_all(REPLY).is_err() {
                        return;
                    }
                    start += end + 1;
                }
                buf.copy_within(start..filled, 0);
                filled -= start;
                if filled == buf.len() {
                    return;
                }
            }
        });
    }
}
