//! Connections: at most `--max-connections` at once, and each must begin
//! HTTP/2 within `--handshake-timeout-secs`.

use super::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the peer closes `conn` (a read of 0 bytes or an error).
async fn closed(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    tokio::time::timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue, // the server's SETTINGS, say
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn half_open_connections_are_closed_and_never_more_than_the_maximum_are_open() {
    let app = spawn_app_in(tempfile::tempdir().unwrap(), |c| {
        c.max_connections = 3;
        c.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let mut half_open = Vec::new();
    for _ in 0..3 {
        let mut conn = TcpStream::connect(app.addr).await.unwrap();
        conn.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(); // half the preface
        half_open.push(conn);
    }
    // A fourth is closed at once: the three hold every slot.
    let mut fourth = TcpStream::connect(app.addr).await.unwrap();
    assert!(
        closed(&mut fourth, Duration::from_secs(5)).await,
        "the fourth stays open"
    );
    // The three are closed once the handshake timeout passes…
    for conn in &mut half_open {
        assert!(
            closed(conn, Duration::from_secs(10)).await,
            "a half-open one stays open"
        );
    }
    // …and the slots they held serve real clients again.
    still_serving(&app).await;
}
