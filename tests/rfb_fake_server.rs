//! The RFB client against small scripted servers on loopback: every
//! handshake variant (3.3, 3.7, 3.8; None and VNC auth; failures) and the
//! session logic that needs exact control over what the server sends and
//! when (capture freshness, split answers, DesktopSize, hostile data).

use std::future::Future;
use std::time::Duration;

use smoke::geometry::Rect;
use smoke::rfb::auth::challenge_response;
use smoke::rfb::protocol::{
    ClientMessage, Encoding, PixelFormat, RectHeader, ServerInitHeader, framebuffer_update_header,
};
use smoke::rfb::{ConnectOptions, Endpoint, ProtocolVersion, RfbError, SecurityType, VncClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const WIDTH: u16 = 64;
const HEIGHT: u16 = 48;

/// The server end of one connection, with helpers to follow the protocol.
struct Peer {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn read(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            let mut chunk = [0u8; 4096];
            let k = self.stream.read(&mut chunk).await.unwrap();
            assert!(k > 0, "client closed while the server expected {n} bytes");
            self.buf.extend_from_slice(&chunk[..k]);
        }
        self.buf.drain(..n).collect()
    }

    async fn send_string(&mut self, text: &str) {
        let mut b = (text.len() as u32).to_be_bytes().to_vec();
        b.extend_from_slice(text.as_bytes());
        self.send(&b).await;
    }

    /// Version exchange: offer `offer`, expect the client to answer `expect`.
    async fn version(&mut self, offer: &[u8; 12], expect: ProtocolVersion) {
        self.send(offer).await;
        assert_eq!(self.read(12).await, expect.encode());
    }

    /// 3.7/3.8: list `types`, return the client's choice.
    async fn offer_security(&mut self, types: &[u8]) -> u8 {
        let mut b = vec![types.len() as u8];
        b.extend_from_slice(types);
        self.send(&b).await;
        self.read(1).await[0]
    }

    /// Send a challenge and check the response against `password`.
    async fn vnc_auth(&mut self, password: &str) -> bool {
        let challenge: [u8; 16] = *b"fake-challenge!!";
        self.send(&challenge).await;
        let response = self.read(16).await;
        response == challenge_response(password, &challenge)
    }

    /// ClientInit (must be shared) and ServerInit.
    async fn init(&mut self, name: &str) {
        assert_eq!(self.read(1).await, [1], "ClientInit must ask for a shared session");
        let header = ServerInitHeader {
            width: WIDTH,
            height: HEIGHT,
            // The server's own format differs: the client must replace it.
            pixel_format: PixelFormat { red_shift: 16, blue_shift: 0, ..PixelFormat::RGBX },
            name_len: name.len() as u32,
        };
        self.send(&header.encode()).await;
        self.send(name.as_bytes()).await;
    }

    async fn next_message(&mut self) -> ClientMessage {
        loop {
            if let Some((msg, used)) = ClientMessage::decode(&self.buf, 8 << 20).unwrap() {
                self.buf.drain(..used);
                return msg;
            }
            let mut chunk = [0u8; 4096];
            let k = self.stream.read(&mut chunk).await.unwrap();
            assert!(k > 0, "client closed");
            self.buf.extend_from_slice(&chunk[..k]);
        }
    }

    /// The setup after ServerInit: SetPixelFormat, SetEncodings, first request.
    async fn expect_setup(&mut self) -> Vec<i32> {
        assert_eq!(self.next_message().await, ClientMessage::SetPixelFormat(PixelFormat::RGBX));
        let ClientMessage::SetEncodings(codes) = self.next_message().await else { panic!("SetEncodings expected") };
        assert_eq!(self.next_non_incremental().await, (WIDTH, HEIGHT));
        codes
    }

    /// Skip messages until a non-incremental update request; its size.
    async fn next_non_incremental(&mut self) -> (u16, u16) {
        loop {
            if let ClientMessage::FramebufferUpdateRequest { incremental: false, x, y, width, height } =
                self.next_message().await
            {
                assert_eq!((x, y), (0, 0));
                return (width, height);
            }
        }
    }

    /// Answer the setup's full-screen request (connect waits for it).
    async fn first_frame(&mut self) {
        self.send(&raw_update(&[(full(), [0, 0, 0])])).await;
    }

    /// Complete handshake for a 3.8 server with security None, first frame
    /// included.
    async fn accept_none(&mut self) {
        self.version(b"RFB 003.008\n", ProtocolVersion::V3_8).await;
        assert_eq!(self.offer_security(&[1]).await, 1);
        self.send(&0u32.to_be_bytes()).await;
        self.init("fake").await;
        self.expect_setup().await;
        self.first_frame().await;
    }
}

/// A FramebufferUpdate of solid-colour Raw rectangles.
fn raw_update(rects: &[(Rect, [u8; 3])]) -> Vec<u8> {
    let mut b = framebuffer_update_header(rects.len() as u16).to_vec();
    for (rect, rgb) in rects {
        b.extend_from_slice(&raw_rect(*rect, *rgb));
    }
    b
}

fn raw_rect(rect: Rect, rgb: [u8; 3]) -> Vec<u8> {
    let mut b = RectHeader { rect, encoding: Encoding::Raw }.encode().to_vec();
    for _ in 0..rect.area() {
        b.extend_from_slice(&[rgb[0], rgb[1], rgb[2], 0]);
    }
    b
}

fn full() -> Rect {
    Rect::screen(u32::from(WIDTH), u32::from(HEIGHT))
}

/// Listen on loopback, run `script` for the first connection.
async fn serve<F, Fut>(script: F) -> (Endpoint, JoinHandle<()>)
where
    F: FnOnce(Peer) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        script(Peer { stream, buf: Vec::new() }).await;
    });
    (Endpoint::tcp("127.0.0.1", port), task)
}

fn opts(password: Option<&str>) -> ConnectOptions {
    ConnectOptions {
        password: password.map(str::to_string),
        timeout: Duration::from_secs(5),
        ..ConnectOptions::default()
    }
}

fn is_solid(frame: &smoke::frame::Frame, rgb: [u8; 3]) -> bool {
    frame.pixels().chunks_exact(4).all(|p| p == [rgb[0], rgb[1], rgb[2], 255])
}

/// Wait until the client's snapshot satisfies `pred`.
async fn wait_for(client: &VncClient, pred: impl Fn(&smoke::frame::Frame) -> bool) {
    let mut updates = client.updates();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if pred(&client.snapshot()) {
                return;
            }
            updates.changed().await.unwrap();
        }
    })
    .await
    .expect("the snapshot never matched");
}

#[tokio::test]
async fn handshake_3_3_none_then_first_update() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.003\n", ProtocolVersion::V3_3).await;
        peer.send(&1u32.to_be_bytes()).await; // None, no SecurityResult in 3.3
        peer.init("fake 3.3").await;
        let codes = peer.expect_setup().await;
        assert_eq!(codes, vec![16, 1, 0, -223, -258, -257], "ZRLE first, DesktopSize and the QEMU extensions included");
        peer.send(&raw_update(&[(full(), [10, 20, 30])])).await;
        peer.next_message().await; // the next incremental request
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    // connect returns only after the first full frame.
    assert!(is_solid(&client.snapshot(), [10, 20, 30]));
    assert_eq!(client.desktop_name(), "fake 3.3");
    assert_eq!(client.server_info().version, ProtocolVersion::V3_3);
    assert_eq!(client.server_info().security, SecurityType::None);
    assert_eq!(client.size(), (64, 48));
    assert_eq!(client.update_seq(), 1);
    server.await.unwrap();
}

#[tokio::test]
async fn handshake_3_7_none_has_no_security_result() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.007\n", ProtocolVersion::V3_7).await;
        assert_eq!(peer.offer_security(&[1]).await, 1);
        // No SecurityResult for None in 3.7: straight to ClientInit.
        peer.init("fake 3.7").await;
        peer.expect_setup().await;
        peer.first_frame().await;
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    assert_eq!(client.server_info().version, ProtocolVersion::V3_7);
    assert_eq!(client.desktop_name(), "fake 3.7");
    server.await.unwrap();
}

#[tokio::test]
async fn handshake_3_8_none_reads_security_result_and_newer_versions_get_3_8() {
    for offer in [b"RFB 003.008\n", b"RFB 003.889\n", b"RFB 004.001\n"] {
        let (endpoint, server) = serve(move |mut peer| async move {
            peer.version(offer, ProtocolVersion::V3_8).await;
            // VNC auth offered too, but without a password the client picks None.
            assert_eq!(peer.offer_security(&[2, 1]).await, 1);
            peer.send(&0u32.to_be_bytes()).await;
            peer.init("fake 3.8").await;
            peer.expect_setup().await;
            peer.first_frame().await;
        })
        .await;
        let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
        assert_eq!(client.server_info().version, ProtocolVersion::V3_8);
        server.await.unwrap();
    }
}

#[tokio::test]
async fn vnc_auth_succeeds_on_every_version() {
    for (offer, version) in [
        (b"RFB 003.003\n", ProtocolVersion::V3_3),
        (b"RFB 003.007\n", ProtocolVersion::V3_7),
        (b"RFB 003.008\n", ProtocolVersion::V3_8),
    ] {
        let (endpoint, server) = serve(move |mut peer| async move {
            peer.version(offer, version).await;
            if version == ProtocolVersion::V3_3 {
                peer.send(&2u32.to_be_bytes()).await;
            } else {
                assert_eq!(peer.offer_security(&[1, 2]).await, 2, "a password means VNC auth");
            }
            assert!(peer.vnc_auth("s3cret").await, "wrong DES response");
            peer.send(&0u32.to_be_bytes()).await;
            peer.init("auth").await;
            peer.expect_setup().await;
            peer.first_frame().await;
        })
        .await;
        let client = VncClient::connect(&endpoint, &opts(Some("s3cret"))).await.unwrap();
        assert_eq!(client.server_info().security, SecurityType::VncAuth);
        assert_eq!(client.server_info().version, version);
        server.await.unwrap();
    }
}

#[tokio::test]
async fn auth_failure_carries_the_server_reason_on_3_8() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.008\n", ProtocolVersion::V3_8).await;
        assert_eq!(peer.offer_security(&[2]).await, 2);
        assert!(!peer.vnc_auth("right").await);
        peer.send(&1u32.to_be_bytes()).await;
        peer.send_string("Authentication failure: wrong password").await;
    })
    .await;
    let err = VncClient::connect(&endpoint, &opts(Some("wrong"))).await.unwrap_err();
    match err {
        RfbError::AuthFailed { reason } => {
            assert_eq!(reason, "Authentication failure: wrong password")
        }
        other => panic!("{other}"),
    }
    server.await.unwrap();
}

#[tokio::test]
async fn auth_failure_on_3_7_has_no_reason_string() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.007\n", ProtocolVersion::V3_7).await;
        assert_eq!(peer.offer_security(&[2]).await, 2);
        peer.vnc_auth("right").await;
        peer.send(&1u32.to_be_bytes()).await; // then close, as 3.7 servers do
    })
    .await;
    let err = VncClient::connect(&endpoint, &opts(Some("wrong"))).await.unwrap_err();
    assert!(matches!(err, RfbError::AuthFailed { .. }), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn only_unsupported_security_types() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.008\n", ProtocolVersion::V3_8).await;
        peer.send(&[2, 5, 18]).await; // RA2, TLS (Vino's old type); VeNCrypt (19) is supported
        // The client must hang up without choosing.
        let mut rest = Vec::new();
        peer.stream.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "client sent {rest:?}");
    })
    .await;
    let err = VncClient::connect(&endpoint, &opts(Some("pw"))).await.unwrap_err();
    assert!(matches!(err, RfbError::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("RA2 (5)") && err.to_string().contains("TLS (18)"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn vnc_auth_without_password_and_refusals() {
    // Only VNC auth offered, no password given.
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.008\n", ProtocolVersion::V3_8).await;
        peer.send(&[1, 2]).await;
    })
    .await;
    let err = VncClient::connect(&endpoint, &opts(None)).await.unwrap_err();
    assert!(matches!(err, RfbError::AuthRequired), "{err}");
    server.await.unwrap();

    // 3.8 server refusing with zero security types and a reason.
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.008\n", ProtocolVersion::V3_8).await;
        peer.send(&[0]).await;
        peer.send_string("Too many security failures").await;
    })
    .await;
    let err = VncClient::connect(&endpoint, &opts(None)).await.unwrap_err();
    match err {
        RfbError::Refused { reason } => assert_eq!(reason, "Too many security failures"),
        other => panic!("{other}"),
    }
    server.await.unwrap();

    // 3.3 server refusing with security type 0.
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.003\n", ProtocolVersion::V3_3).await;
        peer.send(&0u32.to_be_bytes()).await;
        peer.send_string("go away").await;
    })
    .await;
    let err = VncClient::connect(&endpoint, &opts(None)).await.unwrap_err();
    assert!(matches!(&err, RfbError::Refused { reason } if reason == "go away"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn old_versions_garbage_and_silence() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.send(b"RFB 003.002\n").await;
    })
    .await;
    let err = VncClient::connect(&endpoint, &opts(None)).await.unwrap_err();
    assert!(matches!(err, RfbError::Unsupported { .. }), "{err}");
    server.await.unwrap();

    let (endpoint, server) = serve(|mut peer| async move {
        peer.send(b"SSH-2.0-Open").await;
    })
    .await;
    let err = VncClient::connect(&endpoint, &opts(None)).await.unwrap_err();
    assert!(matches!(err, RfbError::Protocol { .. }), "{err}");
    server.await.unwrap();

    // A server that accepts and never speaks: the handshake times out.
    let (endpoint, server) = serve(|mut peer| async move {
        let _ = peer.stream.read(&mut [0u8; 16]).await;
    })
    .await;
    let mut o = opts(None);
    o.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let err = VncClient::connect(&endpoint, &o).await.unwrap_err();
    assert!(matches!(err, RfbError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    drop(server);

    // An absurd desktop name length is refused without allocating it.
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.008\n", ProtocolVersion::V3_8).await;
        peer.offer_security(&[1]).await;
        peer.send(&0u32.to_be_bytes()).await;
        peer.read(1).await;
        let header =
            ServerInitHeader { width: WIDTH, height: HEIGHT, pixel_format: PixelFormat::RGBX, name_len: u32::MAX };
        peer.send(&header.encode()).await;
    })
    .await;
    let err = VncClient::connect(&endpoint, &opts(None)).await.unwrap_err();
    assert!(matches!(err, RfbError::LimitExceeded { .. }), "{err}");
    server.await.unwrap();
}

/// The stale-frame trap: an update that began arriving before the capture's
/// request was written must not satisfy the capture, even if it completes
/// afterwards and covers the whole screen.
#[tokio::test]
async fn capture_ignores_updates_that_began_before_the_request() {
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<usize>();
    let (endpoint, server) = serve(|mut peer| async move {
        peer.accept_none().await;
        // A red full-screen update, cut off in the middle of its second rectangle.
        let top = Rect::new(0, 0, u32::from(WIDTH), 24);
        let bottom = Rect::new(0, 24, u32::from(WIDTH), 24);
        let stale = raw_update(&[(top, [255, 0, 0]), (bottom, [255, 0, 0])]);
        let cut = stale.len() - 100;
        peer.send(&stale[..cut]).await;
        ready_tx.send(cut).unwrap();
        // The capture's request arrives; only now finish the stale update ...
        assert_eq!(peer.next_non_incremental().await, (WIDTH, HEIGHT));
        peer.send(&stale[cut..]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // ... and then answer with the fresh screen.
        peer.send(&raw_update(&[(full(), [0, 0, 255])])).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    let cut = ready_rx.await.unwrap() as u64;
    // Wait until the client has received the partial update.
    while client.stats().bytes_received < cut {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let frame = client.capture(Duration::from_secs(3)).await.unwrap();
    assert!(is_solid(&frame, [0, 0, 255]), "capture returned the stale frame");
    // The stale update was still applied to the live framebuffer in order
    // (after the first frame).
    assert_eq!(client.update_seq(), 3);
    server.await.unwrap();
}

/// An answer split over several updates (and overlapping rectangles) is
/// awaited until every pixel is covered.
#[tokio::test]
async fn capture_waits_for_an_answer_split_over_updates() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.accept_none().await;
        peer.next_non_incremental().await;
        let w = u32::from(WIDTH);
        peer.send(&raw_update(&[(Rect::new(0, 0, w, 20), [0, 200, 0])])).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        peer.send(&raw_update(&[(Rect::new(0, 10, w, 30), [0, 200, 0])])).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        peer.send(&raw_update(&[(Rect::new(0, 40, w / 2, 8), [0, 200, 0])])).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
        peer.send(&raw_update(&[(Rect::new(w / 2, 40, w / 2, 8), [0, 200, 0])])).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    let started = std::time::Instant::now();
    let frame = client.capture(Duration::from_secs(3)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400), "returned before the last part");
    assert!(is_solid(&frame, [0, 200, 0]));
    server.await.unwrap();
}

#[tokio::test]
async fn capture_times_out_with_coverage_in_the_error() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.accept_none().await;
        peer.next_non_incremental().await;
        peer.send(&raw_update(&[(Rect::new(0, 0, u32::from(WIDTH), 12), [1, 2, 3])])).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    let err = client.capture(Duration::from_millis(400)).await.unwrap_err();
    assert!(matches!(err, RfbError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("25.0% of the 64x48 screen"), "{err}");
    assert!(client.is_connected());
    server.await.unwrap();
}

/// A DesktopSize change while a capture waits: coverage restarts for the
/// new size and the client asks again for the whole new screen.
#[tokio::test]
async fn capture_across_a_desktop_size_change() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.accept_none().await;
        assert_eq!(peer.next_non_incremental().await, (WIDTH, HEIGHT));
        // Answer with a resize and only part of the new screen.
        let mut update = framebuffer_update_header(2).to_vec();
        update.extend_from_slice(
            &RectHeader { rect: Rect::new(0, 0, 100, 30), encoding: Encoding::DesktopSize }.encode(),
        );
        update.extend_from_slice(&raw_rect(Rect::new(0, 0, 100, 10), [9, 9, 9]));
        peer.send(&update).await;
        // The client must ask for the whole new screen.
        assert_eq!(peer.next_non_incremental().await, (100, 30));
        peer.send(&raw_update(&[(Rect::new(0, 0, 100, 30), [7, 8, 9])])).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    let frame = client.capture(Duration::from_secs(3)).await.unwrap();
    assert_eq!((frame.width(), frame.height()), (100, 30));
    assert!(is_solid(&frame, [7, 8, 9]));
    assert_eq!(client.size(), (100, 30));
    server.await.unwrap();
}

/// Bell, colour map entries and cut text are skipped without losing sync,
/// and input events arrive as sent.
#[tokio::test]
async fn other_server_messages_are_skipped_and_input_arrives() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.accept_none().await;
        let mut b = vec![2u8]; // Bell
        b.extend_from_slice(&[1, 0, 0, 5, 0, 2]); // SetColourMapEntries, 2 colours
        b.extend_from_slice(&[0xaa; 12]);
        b.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 5]); // ServerCutText "hello"
        b.extend_from_slice(b"hello");
        b.extend_from_slice(&raw_update(&[(full(), [50, 60, 70])]));
        peer.send(&b).await;
        let mut seen = Vec::new();
        while seen.len() < 4 {
            match peer.next_message().await {
                ClientMessage::FramebufferUpdateRequest { .. } => {}
                other => seen.push(other),
            }
        }
        assert_eq!(
            seen,
            vec![
                ClientMessage::KeyEvent { down: true, keysym: 0xffe1 },
                ClientMessage::KeyEvent { down: false, keysym: 0xffe1 },
                ClientMessage::PointerEvent { buttons: 1, x: 12, y: 34 },
                ClientMessage::ClientCutText(b"caf\xe9".to_vec()),
            ]
        );
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    wait_for(&client, |f| is_solid(f, [50, 60, 70])).await;
    client.key(0xffe1, true).await.unwrap();
    client.key(0xffe1, false).await.unwrap();
    client.pointer(12, 34, 1).await.unwrap();
    client.cut_text("café").await.unwrap();
    server.await.unwrap();
    assert!(client.is_connected() || client.capture(Duration::from_millis(50)).await.is_err());
}

/// Hostile data ends the session with a reason; nothing panics, later calls
/// fail with Disconnected carrying that reason.
#[tokio::test]
async fn hostile_updates_end_the_session_with_a_reason() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ZRLE length", {
            let mut b = framebuffer_update_header(1).to_vec();
            b.extend_from_slice(&RectHeader { rect: full(), encoding: Encoding::Zrle }.encode());
            b.extend_from_slice(&u32::MAX.to_be_bytes());
            b
        }),
        ("outside the 64x48 framebuffer", {
            let mut b = framebuffer_update_header(1).to_vec();
            b.extend_from_slice(&RectHeader { rect: Rect::new(60, 0, 10, 10), encoding: Encoding::Raw }.encode());
            b
        }),
        ("encoding 2", {
            // RRE: never asked for, so its length is unknown
            let mut b = framebuffer_update_header(1).to_vec();
            b.extend_from_slice(&RectHeader { rect: full(), encoding: Encoding::Other(2) }.encode());
            b
        }),
        ("JPEG", {
            let mut b = framebuffer_update_header(1).to_vec();
            b.extend_from_slice(&RectHeader { rect: full(), encoding: Encoding::Tight }.encode());
            b.extend_from_slice(&[0x90, 0x10]);
            b
        }),
        ("no background", {
            let mut b = framebuffer_update_header(1).to_vec();
            b.extend_from_slice(&RectHeader { rect: full(), encoding: Encoding::Hextile }.encode());
            b.push(0);
            b
        }),
        ("65 screens", {
            let mut b = framebuffer_update_header(1).to_vec();
            b.extend_from_slice(&RectHeader { rect: full(), encoding: Encoding::ExtendedDesktopSize }.encode());
            b.extend_from_slice(&[65, 0, 0, 0]);
            b
        }),
        ("cursor", {
            let mut b = framebuffer_update_header(1).to_vec();
            b.extend_from_slice(&RectHeader { rect: Rect::new(0, 0, 4000, 4000), encoding: Encoding::Cursor }.encode());
            b
        }),
        ("unknown message type 99", vec![99]),
        ("ServerCutText of 4294967295 bytes", vec![3, 0, 0, 0, 255, 255, 255, 255]),
        ("framebuffer of 65535x65535", {
            let mut b = framebuffer_update_header(1).to_vec();
            b.extend_from_slice(
                &RectHeader { rect: Rect::new(0, 0, 65535, 65535), encoding: Encoding::DesktopSize }.encode(),
            );
            b
        }),
    ];
    for (needle, bytes) in cases {
        let (endpoint, server) = serve(move |mut peer| async move {
            peer.accept_none().await;
            peer.send(&bytes).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        })
        .await;
        let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
        let mut updates = client.updates();
        // The update counter's sender goes away when the session ends.
        let ended =
            tokio::time::timeout(Duration::from_secs(3), async { while updates.changed().await.is_ok() {} }).await;
        assert!(ended.is_ok(), "session did not end for {needle}");
        assert!(!client.is_connected());
        let err = client.key(0x61, true).await.unwrap_err();
        match &err {
            RfbError::Disconnected { reason } => {
                assert!(reason.contains(needle), "{reason} lacks {needle}")
            }
            other => panic!("{other}"),
        }
        let err = client.capture(Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, RfbError::Disconnected { .. }), "{err}");
        server.await.unwrap();
    }
}

#[tokio::test]
async fn server_closing_fails_pending_captures_and_later_calls() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.accept_none().await;
        peer.next_non_incremental().await; // the capture's request
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(peer);
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    let err = client.capture(Duration::from_secs(3)).await.unwrap_err();
    match &err {
        RfbError::Disconnected { reason } => assert!(reason.contains("closed"), "{reason}"),
        other => panic!("{other}"),
    }
    let err = client.pointer(1, 1, 0).await.unwrap_err();
    assert!(matches!(err, RfbError::Disconnected { .. }), "{err}");
    server.await.unwrap();

    // close() from our side.
    let (endpoint, server) = serve(|mut peer| async move {
        peer.accept_none().await;
        let mut rest = Vec::new();
        let _ = peer.stream.read_to_end(&mut rest).await; // ends when the client closes
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    let other_handle = client.clone();
    client.close().await;
    assert!(!other_handle.is_connected());
    let err = other_handle.key(0x61, true).await.unwrap_err();
    assert!(err.to_string().contains("closed by the client"), "{err}");
    tokio::time::timeout(Duration::from_secs(3), server).await.unwrap().unwrap();
}

/// A call dropped halfway (here: a 4 MB cut text under a 20 ms timeout while
/// the server is not reading) must not leave half a message on the wire:
/// everything the server reads afterwards still parses.
#[tokio::test]
async fn cancelled_calls_never_corrupt_the_stream() {
    let big = "x".repeat(4 << 20);
    let expected = big.clone();
    let (endpoint, server) = serve(move |mut peer| async move {
        peer.accept_none().await;
        tokio::time::sleep(Duration::from_millis(300)).await; // not reading
        let mut seen = Vec::new();
        while seen.len() < 2 {
            match peer.next_message().await {
                ClientMessage::FramebufferUpdateRequest { .. } => {}
                other => seen.push(other),
            }
        }
        assert_eq!(seen[0], ClientMessage::ClientCutText(expected.into_bytes()));
        assert_eq!(seen[1], ClientMessage::KeyEvent { down: true, keysym: 0x61 });
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    let cut = tokio::time::timeout(Duration::from_millis(20), client.cut_text(&big)).await;
    assert!(cut.is_err(), "the cut text should still be in flight");
    client.key(0x61, true).await.unwrap();
    server.await.unwrap();
    assert!(client.is_connected());
}

/// connect waits for the answer to its full-screen request: a server that
/// never sends a frame makes it time out, naming what it waited for.
#[tokio::test]
async fn connect_waits_for_the_first_frame() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.008\n", ProtocolVersion::V3_8).await;
        peer.offer_security(&[1]).await;
        peer.send(&0u32.to_be_bytes()).await;
        peer.init("no frames").await;
        peer.expect_setup().await;
        // Only half the screen: not a complete first frame.
        peer.send(&raw_update(&[(Rect::new(0, 0, 64, 24), [1, 1, 1])])).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
    })
    .await;
    let mut o = opts(None);
    o.timeout = Duration::from_millis(400);
    let err = VncClient::connect(&endpoint, &o).await.unwrap_err();
    assert!(matches!(err, RfbError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains("first framebuffer update"), "{err}");
    server.await.unwrap();
}

/// Concurrent captures take turns: the server never has two full-screen
/// requests outstanding, so no capture can take another one's late answer.
#[tokio::test]
async fn concurrent_captures_take_turns() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.accept_none().await;
        for colour in [[1, 1, 1], [2, 2, 2], [3, 3, 3]] {
            peer.next_non_incremental().await;
            // No second full-screen request while this one is unanswered.
            let early = tokio::time::timeout(Duration::from_millis(150), peer.next_non_incremental()).await;
            assert!(early.is_err(), "a second full-screen request arrived before the answer");
            peer.send(&raw_update(&[(full(), colour)])).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    let (a, b, c) = tokio::join!(
        client.capture(Duration::from_secs(3)),
        client.capture(Duration::from_secs(3)),
        client.capture(Duration::from_secs(3)),
    );
    let mut colours: Vec<[u8; 3]> = [a, b, c].into_iter().map(|f| f.unwrap().rgb(0, 0)).collect();
    colours.sort();
    assert_eq!(colours, vec![[1, 1, 1], [2, 2, 2], [3, 3, 3]]);
    server.await.unwrap();
}

/// Skip messages until one that is not an update request.
async fn next_input(peer: &mut Peer) -> ClientMessage {
    loop {
        match peer.next_message().await {
            ClientMessage::FramebufferUpdateRequest { .. } => continue,
            other => return other,
        }
    }
}

/// QEMU's way: the server acknowledges Extended Key Event and says the
/// pointer is relative, with pseudo-rectangles that carry no pixels. Keys
/// then go by scancode; pointer moves go as offsets from 0x7fff; and the
/// pseudo-rectangles (full-screen sized, as QEMU sends them) complete no
/// capture.
#[tokio::test]
async fn qemu_extended_keys_and_relative_pointer() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.version(b"RFB 003.008\n", ProtocolVersion::V3_8).await;
        assert_eq!(peer.offer_security(&[1]).await, 1);
        peer.send(&0u32.to_be_bytes()).await;
        peer.init("fake qemu").await;
        let codes = peer.expect_setup().await;
        assert!(codes.contains(&-258) && codes.contains(&-257), "{codes:?}");
        let mut acks = framebuffer_update_header(2).to_vec();
        acks.extend_from_slice(&RectHeader { rect: full(), encoding: Encoding::Other(-258) }.encode());
        acks.extend_from_slice(
            &RectHeader { rect: Rect::new(0, 0, u32::from(WIDTH), u32::from(HEIGHT)), encoding: Encoding::Other(-257) }
                .encode(),
        );
        peer.send(&acks).await;
        peer.first_frame().await;
        assert_eq!(
            next_input(&mut peer).await,
            ClientMessage::QemuKeyEvent { down: true, keysym: 0x61, scancode: 0x1e }
        );
        assert_eq!(next_input(&mut peer).await, ClientMessage::KeyEvent { down: true, keysym: 0x0100_0436 });
        assert_eq!(
            next_input(&mut peer).await,
            ClientMessage::PointerEvent { buttons: 0, x: 0x7fff + 10, y: 0x7fff + 5 }
        );
        assert_eq!(next_input(&mut peer).await, ClientMessage::PointerEvent { buttons: 1, x: 0x7fff - 4, y: 0x7fff });
        // the capture after this needs a real answer
        peer.next_non_incremental().await;
        let mut pseudo = framebuffer_update_header(1).to_vec();
        pseudo.extend_from_slice(&RectHeader { rect: full(), encoding: Encoding::Other(-258) }.encode());
        peer.send(&pseudo).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        peer.send(&raw_update(&[(full(), [5, 6, 7])])).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    assert!(client.takes_scancodes());
    assert_eq!(client.pointer_absolute(), Some(false));
    client.key_code(0x61, 0x1e, true).await.unwrap();
    client.key_code(0x0100_0436, 0, true).await.unwrap();
    client.pointer(10, 5, 0).await.unwrap();
    client.pointer(6, 5, 1).await.unwrap();
    let frame = client.capture(Duration::from_secs(3)).await.unwrap();
    assert!(is_solid(&frame, [5, 6, 7]), "a pseudo-rectangle completed the capture");
    server.await.unwrap();
}

/// A server that goes silent after the first frame: the capture forces a
/// small non-incremental request after ~2 s, gives up on the session after
/// ~4 s, connects again (handshake and authentication included) and takes
/// its frame from the new session, all within its own time limit.
#[tokio::test]
async fn a_silent_server_is_probed_then_replaced_by_a_new_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut first = Peer { stream, buf: Vec::new() };
        first.accept_none().await;
        // read what the client sends while never answering
        let probe = tokio::spawn(async move {
            loop {
                if let ClientMessage::FramebufferUpdateRequest { incremental: false, width: 1, height: 1, .. } =
                    first.next_message().await
                {
                    return (std::time::Instant::now(), first);
                }
            }
        });
        let (stream, _) = listener.accept().await.unwrap();
        let reconnected = std::time::Instant::now();
        let mut second = Peer { stream, buf: Vec::new() };
        second.accept_none().await;
        second.next_non_incremental().await;
        second.send(&raw_update(&[(full(), [40, 50, 60])])).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let (probed, _first) = probe.await.unwrap();
        assert!(probed < reconnected, "the probe came after the reconnection");
    });
    let client = VncClient::connect(&Endpoint::tcp("127.0.0.1", port), &opts(None)).await.unwrap();
    client.set_reconnect(true);
    let started = std::time::Instant::now();
    let frame = client.capture(Duration::from_secs(10)).await.unwrap();
    let took = started.elapsed();
    assert!(is_solid(&frame, [40, 50, 60]));
    assert_eq!(client.reconnects(), 1);
    assert!(took >= Duration::from_secs(4) && took < Duration::from_secs(7), "{took:?}");
    server.await.unwrap();
}

/// Without reconnection (the default) a silent server is a plain timeout.
#[tokio::test]
async fn a_silent_server_without_reconnection_times_out() {
    let (endpoint, server) = serve(|mut peer| async move {
        peer.accept_none().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    })
    .await;
    let client = VncClient::connect(&endpoint, &opts(None)).await.unwrap();
    let err = client.capture(Duration::from_millis(1200)).await.unwrap_err();
    assert!(matches!(err, RfbError::Timeout { .. }), "{err}");
    assert_eq!(client.reconnects(), 0);
    server.await.unwrap();
}
