#![no_main]
//! The websocket client's frame reader against a server that sends the
//! fuzzer's bytes as frames after the upgrade: every input ends in data, EOF
//! or an error, never a panic, a hang or an allocation beyond the frame limit.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let bytes = data.to_vec();
        let peer = tokio::spawn(async move {
            let _ = server.write_all(&bytes).await;
            let mut sink = [0u8; 256];
            // take the client's pongs and closes until it stops, then hang up
            while let Ok(Ok(n)) = tokio::time::timeout(std::time::Duration::from_millis(5), server.read(&mut sink)).await {
                if n == 0 {
                    break;
                }
            }
        });
        let mut ws = smoke::rfb::websocket::WebSocketStream::after_upgrade(client);
        let _ = ws.write_all(b"RFB 003.008\n").await;
        let mut buf = vec![0u8; 4096];
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while let Ok(n) = ws.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        let _ = peer.await;
    });
});
