#![no_main]
//! The client handshake against a server that sends the fuzzer's bytes
//! (versions, security lists, failure reasons, challenges, ServerInit) and
//! then hangs up: every input ends in a result or an error, never a panic
//! or a hang.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    rt.block_on(async {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let bytes = data.to_vec();
        let peer = tokio::spawn(async move {
            let _ = server.write_all(&bytes).await;
            let mut sink = [0u8; 256];
            // read what the client says until it gives up, then hang up
            while let Ok(Ok(n)) = tokio::time::timeout(std::time::Duration::from_millis(5), server.read(&mut sink)).await {
                if n == 0 {
                    break;
                }
            }
        });
        let password = if data.first().is_some_and(|b| b & 1 == 1) { Some("secret12") } else { None };
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            smoke::rfb::handshake::handshake(client, password),
        )
        .await;
        let _ = peer.await;
    });
});
