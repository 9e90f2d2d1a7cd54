//! The tests of `tls_session.rs`, in a file of their own so that the module reads in one sitting.

use super::*;
use std::io::{self, Read, Write};

use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ClientConnection, RootCertStore, SupportedProtocolVersion};

use crate::tls_config::tls_provider;

const ALPN: &[u8] = b"line/1";

/// A server config and a client config that trusts it, for `localhost`.
struct Configs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl Configs {
    fn new(versions: &[&'static SupportedProtocolVersion]) -> Configs {
        Configs::with(versions, |_| {})
    }

    fn with(
        versions: &[&'static SupportedProtocolVersion],
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> Configs {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
        let mut server = ServerConfig::builder_with_provider(tls_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![c.cert.der().clone()], key)
            .unwrap();
        server.alpn_protocols = vec![ALPN.to_vec()];
        adjust(&mut server);
        let mut roots = RootCertStore::empty();
        roots.add(c.cert.der().clone()).unwrap();
        let mut client = ClientConfig::builder_with_provider(tls_provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![ALPN.to_vec()];
        Configs {
            server: Arc::new(server),
            client: Arc::new(client),
        }
    }

    fn pair(&self) -> Pair {
        self.pair_for("localhost")
    }

    fn pair_for(&self, name: &str) -> Pair {
        let name = ServerName::try_from(name.to_string()).unwrap();
        Pair {
            server: TlsSession::new(self.server.clone()).unwrap(),
            client: ClientConnection::new(self.client.clone(), name).unwrap(),
            at_server: Vec::new(),
            at_client: Vec::new(),
            client_eof: false,
        }
    }

    /// A pair with its handshake done.
    fn open(&self) -> Pair {
        let mut pair = self.pair();
        pair.handshake();
        pair
    }
}

/// A session and a rustls client talking through memory.
struct Pair {
    server: TlsSession,
    client: ClientConnection,
    /// Plaintext the server has received.
    at_server: Vec<u8>,
    /// Plaintext the client has received.
    at_client: Vec<u8>,
    /// The client has seen close_notify.
    client_eof: bool,
}

impl Pair {
    /// What the client has to send.
    fn client_wire(&mut self) -> Vec<u8> {
        let mut wire = Vec::new();
        while self.client.wants_write() {
            self.client.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// Feeds `input` to the server, collecting its plaintext, and hands
    /// what it sends back to the client.
    fn deliver_to_server(&mut self, input: &mut [u8]) -> Received {
        self.try_deliver_to_server(input).unwrap()
    }

    fn try_deliver_to_server(&mut self, input: &mut [u8]) -> Result<Received, TlsError> {
        let mut wire = Vec::new();
        let at_server = &mut self.at_server;
        let got = self.server.receive(input, &mut wire, |p| {
            at_server.extend_from_slice(p);
            ControlFlow::Continue(())
        });
        self.deliver_to_client(&wire);
        got
    }

    fn deliver_to_client(&mut self, mut wire: &[u8]) {
        while !wire.is_empty() {
            self.client.read_tls(&mut wire).unwrap();
            self.client.process_new_packets().unwrap();
            self.drain_client();
        }
    }

    fn drain_client(&mut self) {
        let mut buf = [0; 4096];
        loop {
            match self.client.reader().read(&mut buf) {
                Ok(0) => {
                    self.client_eof = true;
                    return;
                }
                Ok(n) => self.at_client.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }

    /// Runs the handshake to its end, in whole flights.
    fn handshake(&mut self) -> Received {
        let mut done = Received::default();
        for _ in 0..10 {
            let mut wire = self.client_wire();
            let got = self.deliver_to_server(&mut wire);
            done.handshake_done |= got.handshake_done;
            if !self.client.is_handshaking() && !self.server.is_handshaking() {
                assert!(done.handshake_done, "completion is reported");
                return done;
            }
        }
        panic!("handshake did not finish");
    }

    fn client_sends(&mut self, data: &[u8]) -> Vec<u8> {
        self.client.writer().write_all(data).unwrap();
        self.client_wire()
    }

    fn server_sends(&mut self, data: &[u8]) {
        let mut wire = Vec::new();
        self.server.send(data, &mut wire).unwrap();
        self.deliver_to_client(&wire);
    }
}

mod handshake {
    use super::*;

    /// TLS 1.3: lines go both ways, and ALPN, SNI and the version are
    /// visible once the handshake is done.
    #[test]
    fn tls13_then_lines_both_ways() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.pair();
        assert!(pair.server.is_handshaking());
        pair.handshake();
        assert_eq!(
            pair.server.protocol_version(),
            Some(ProtocolVersion::TLSv1_3)
        );
        assert_eq!(pair.server.alpn_protocol(), Some(ALPN));
        assert_eq!(pair.server.server_name(), Some("localhost"));
        assert!(pair.server.negotiated_cipher_suite().is_some());
        assert!(pair.server.peer_certificates().is_none(), "no client auth");
        let mut wire = pair.client_sends(b"PING\n");
        pair.deliver_to_server(&mut wire);
        assert_eq!(pair.at_server, b"PING\n");
        pair.server_sends(b"+PONG\n");
        assert_eq!(pair.at_client, b"+PONG\n");
        assert_eq!(pair.server.held_capacity(), 0);
    }

    /// TLS 1.2 works the same way.
    #[test]
    fn tls12_then_lines_both_ways() {
        let configs = Configs::new(&[&TLS12]);
        let mut pair = configs.open();
        assert_eq!(
            pair.server.protocol_version(),
            Some(ProtocolVersion::TLSv1_2)
        );
        assert_eq!(pair.server.alpn_protocol(), Some(ALPN));
        assert_eq!(pair.server.server_name(), Some("localhost"));
        for i in 0..3 {
            let line = format!("line {i}\n");
            let mut wire = pair.client_sends(line.as_bytes());
            pair.deliver_to_server(&mut wire);
            pair.server_sends(line.as_bytes());
        }
        assert_eq!(pair.at_server, b"line 0\nline 1\nline 2\n");
        assert_eq!(pair.at_client, pair.at_server);
    }

    /// Data the client sends with its Finished is not decrypted in the
    /// call that completes the handshake: the loop meets the handler
    /// first, then asks for the rest.
    #[test]
    fn completion_comes_before_any_plaintext() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.pair();
        let mut hello = pair.client_wire();
        pair.deliver_to_server(&mut hello);
        assert!(!pair.client.is_handshaking(), "client done after one round");
        // Finished and the first line, in one read.
        let mut wire = pair.client_sends(b"first\n");
        let got = pair.deliver_to_server(&mut wire);
        assert!(got.handshake_done && got.more, "{got:?}");
        assert!(pair.at_server.is_empty(), "nothing decrypted yet");
        assert!(pair.server.held_len() > 0);
        let got = pair.deliver_to_server(&mut []);
        assert_eq!(got, Received::default());
        assert_eq!(pair.at_server, b"first\n");
        assert_eq!(pair.server.held_capacity(), 0, "freed once used");
    }

    /// A handshake and a line sent one byte per read arrive intact.
    #[test]
    fn byte_at_a_time() {
        for versions in [&[&TLS13][..], &[&TLS12][..]] {
            let configs = Configs::new(versions);
            let mut pair = configs.pair();
            let mut done = false;
            for _ in 0..10 {
                let wire = pair.client_wire();
                for &b in &wire {
                    let got = pair.deliver_to_server(&mut [b]);
                    assert!(!got.more, "nothing complete waits");
                    done |= got.handshake_done;
                    assert!(pair.server.held_len() <= MAX_HELD);
                }
                if done && !pair.client.is_handshaking() {
                    break;
                }
            }
            assert!(done && !pair.server.is_handshaking());
            assert_eq!(pair.server.server_name(), Some("localhost"));
            let wire = pair.client_sends(b"slowly\n");
            for &b in &wire {
                pair.deliver_to_server(&mut [b]);
            }
            assert_eq!(pair.at_server, b"slowly\n");
            assert_eq!(pair.server.held_capacity(), 0);
        }
    }

    /// A client that connects by address sends no server name.
    #[test]
    fn no_server_name_without_sni() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.pair_for("127.0.0.1");
        let mut hello = pair.client_wire();
        let mut wire = Vec::new();
        pair.server
            .receive(&mut hello, &mut wire, |_| ControlFlow::Continue(()))
            .unwrap();
        assert!(!wire.is_empty(), "the server answered");
        assert!(matches!(pair.server.sni, Sni::Read(None)));
        assert_eq!(pair.server.server_name(), None);
    }

    /// Progress counts handshake bytes, and stops with the handshake.
    #[test]
    fn progress_counts_handshake_bytes() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.pair();
        assert_eq!(pair.server.handshake_progress(), 0);
        let mut hello = pair.client_wire();
        let hello_len = hello.len() as u32;
        pair.deliver_to_server(&mut hello);
        assert_eq!(pair.server.handshake_progress(), hello_len);
        let mut finished = pair.client_wire();
        let total = hello_len + finished.len() as u32;
        pair.deliver_to_server(&mut finished);
        assert!(!pair.server.is_handshaking());
        assert_eq!(pair.server.handshake_progress(), total);
        let mut wire = pair.client_sends(b"x\n");
        pair.deliver_to_server(&mut wire);
        assert_eq!(
            pair.server.handshake_progress(),
            total,
            "data is not handshake"
        );
    }
}

mod records {
    use super::*;

    /// Three records, cut in two at every byte, give the same plaintext.
    #[test]
    fn cut_at_every_byte() {
        let configs = Configs::new(&[&TLS13]);
        let long = vec![b'z'; 200];
        let mut expected = b"alpha\nbravo charlie\n".to_vec();
        expected.extend_from_slice(&long);
        let wire_len = {
            let mut pair = configs.open();
            pair.client.writer().write_all(b"alpha\n").unwrap();
            pair.client.writer().write_all(b"bravo charlie\n").unwrap();
            pair.client_sends(&long).len()
        };
        for cut in 0..=wire_len {
            let mut pair = configs.open();
            pair.client.writer().write_all(b"alpha\n").unwrap();
            pair.client.writer().write_all(b"bravo charlie\n").unwrap();
            let mut wire = pair.client_sends(&long);
            assert_eq!(wire.len(), wire_len);
            let (a, b) = wire.split_at_mut(cut);
            pair.deliver_to_server(a);
            pair.deliver_to_server(b);
            assert_eq!(pair.at_server, expected, "cut at {cut}");
            assert_eq!(pair.server.held_capacity(), 0, "cut at {cut}");
        }
    }

    /// Several records in one input are all delivered, in order.
    #[test]
    fn several_records_in_one_input() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.open();
        for i in 0..20 {
            pair.client
                .writer()
                .write_all(format!("{i},").as_bytes())
                .unwrap();
        }
        let mut wire = pair.client_wire();
        let got = pair.deliver_to_server(&mut wire);
        assert_eq!(got, Received::default());
        let expected: String = (0..20).map(|i| format!("{i},")).collect();
        assert_eq!(pair.at_server, expected.as_bytes());
    }

    /// A partial record is held, exactly, and freed when it completes.
    #[test]
    fn a_partial_record_is_held_then_freed() {
        let configs = Configs::new(&[&TLS12]);
        let mut pair = configs.open();
        let mut wire = pair.client_sends(b"split\n");
        let (a, b) = wire.split_at_mut(9);
        pair.deliver_to_server(a);
        assert_eq!(pair.server.held_len(), 9);
        assert!(pair.at_server.is_empty());
        pair.deliver_to_server(b);
        assert_eq!(pair.at_server, b"split\n");
        assert_eq!(
            (pair.server.held_len(), pair.server.held_capacity()),
            (0, 0)
        );
    }

    /// A 16 KiB record arrives whole, however it is cut, and nothing of
    /// it stays afterwards.
    #[test]
    fn a_16k_record_leaves_nothing() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.open();
        let data: Vec<u8> = (0..16_384u32).map(|i| (i % 251) as u8).collect();
        let mut wire = pair.client_sends(&data);
        for chunk in wire.chunks_mut(1500) {
            pair.deliver_to_server(chunk);
        }
        assert_eq!(pair.at_server, data);
        assert_eq!(pair.server.held_capacity(), 0);
    }

    /// Stopping after a record keeps the rest, which `receive` with empty
    /// input then delivers; input that arrives meanwhile queues behind.
    #[test]
    fn stop_keeps_the_rest() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.open();
        for line in [&b"one\n"[..], b"two\n", b"three\n"] {
            pair.client.writer().write_all(line).unwrap();
        }
        let mut wire = pair.client_wire();
        let mut seen = Vec::new();
        let mut out = Vec::new();
        let got = pair
            .server
            .receive(&mut wire, &mut out, |p| {
                seen.extend_from_slice(p);
                ControlFlow::Break(())
            })
            .unwrap();
        assert!(got.more);
        assert_eq!(seen, b"one\n");
        // Still stopped; more input arrives anyway.
        let mut late = pair.client_sends(b"four\n");
        let got = pair
            .server
            .receive(&mut late, &mut out, |p| {
                seen.extend_from_slice(p);
                ControlFlow::Break(())
            })
            .unwrap();
        assert!(got.more);
        assert_eq!(seen, b"one\ntwo\n");
        let got = pair
            .server
            .receive(&mut [], &mut out, |p| {
                seen.extend_from_slice(p);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert!(!got.more);
        assert_eq!(seen, b"one\ntwo\nthree\nfour\n");
        assert!(out.is_empty(), "nothing to send");
        assert_eq!(pair.server.held_capacity(), 0);
        // A stop on the last record leaves nothing to come back for.
        let mut wire = pair.client_sends(b"five\n");
        let got = pair
            .server
            .receive(&mut wire, &mut out, |_| ControlFlow::Break(()))
            .unwrap();
        assert!(!got.more);
    }

    /// A stop on the last held record also holds back new input.
    #[test]
    fn stop_on_the_last_held_record_holds_new_input() {
        let configs = Configs::new(&[&TLS12]);
        let mut pair = configs.open();
        pair.client.writer().write_all(b"one\n").unwrap();
        let mut wire = pair.client_sends(b"two\n");
        let mut seen = Vec::new();
        let stop_after = |server: &mut TlsSession, wire: &mut [u8], seen: &mut Vec<u8>| {
            let mut out = Vec::new();
            server
                .receive(wire, &mut out, |p| {
                    seen.extend_from_slice(p);
                    ControlFlow::Break(())
                })
                .unwrap()
        };
        assert!(stop_after(&mut pair.server, &mut wire, &mut seen).more);
        assert_eq!(seen, b"one\n");
        let mut wire = pair.client_sends(b"three\n");
        let got = stop_after(&mut pair.server, &mut wire, &mut seen);
        assert_eq!(seen, b"one\ntwo\n", "nothing from the new input");
        assert!(got.more, "three waits");
        let got = stop_after(&mut pair.server, &mut [], &mut seen);
        assert_eq!(seen, b"one\ntwo\nthree\n");
        assert!(!got.more);
        assert_eq!(pair.server.held_capacity(), 0);
    }

    /// Replies are cut into records of at most 16 KiB of plaintext.
    #[test]
    fn large_replies_are_cut_into_records() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.open();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 253) as u8).collect();
        let mut wire = Vec::new();
        pair.server.send(&data, &mut wire).unwrap();
        let mut rest = &wire[..];
        let mut records = 0;
        while !rest.is_empty() {
            let len = record_len(rest);
            assert!(len <= HEADER_LEN + 16_384 + 256, "{len}");
            rest = &rest[len..];
            records += 1;
        }
        assert_eq!(records, 3);
        pair.deliver_to_client(&wire);
        assert_eq!(pair.at_client, data);
    }

    /// A key update the client asks for is answered before the next
    /// reply, which the client then reads.
    #[test]
    fn key_update_requested_by_the_client() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.open();
        for round in 0..3 {
            pair.client.refresh_traffic_keys().unwrap();
            let line = format!("round {round}\n");
            let mut wire = pair.client_sends(line.as_bytes());
            pair.deliver_to_server(&mut wire);
            pair.server_sends(line.as_bytes());
        }
        assert_eq!(pair.at_server, b"round 0\nround 1\nround 2\n");
        assert_eq!(pair.at_client, pair.at_server);
    }

    /// 0-RTT data, when the config accepts it, reaches the callback in
    /// order before the handshake completes.
    #[test]
    fn early_data_when_the_config_accepts_it() {
        let configs = Configs::with(&[&TLS13], |c| {
            c.max_early_data_size = 1024;
            c.send_tls13_tickets = 1;
        });
        let mut client = configs.client.as_ref().clone();
        client.enable_early_data = true;
        let configs = Configs {
            client: Arc::new(client),
            ..configs
        };
        // First connection: earns a ticket.
        configs.open();
        // Second: resumes and sends early data.
        let mut pair = configs.pair();
        let mut early = pair
            .client
            .early_data()
            .expect("a ticket allows early data");
        early.write_all(b"early\n").unwrap();
        pair.handshake();
        assert!(pair.client.is_early_data_accepted());
        let mut wire = pair.client_sends(b"late\n");
        pair.deliver_to_server(&mut wire);
        assert_eq!(pair.at_server, b"early\nlate\n");
    }
}

mod closing {
    use super::*;

    /// The client closes first: the session says so, drops what follows,
    /// and can still reply and close.
    #[test]
    fn client_closes_first() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.open();
        pair.client.writer().write_all(b"last\n").unwrap();
        pair.client.send_close_notify();
        let mut wire = pair.client_wire();
        let got = pair.deliver_to_server(&mut wire);
        assert!(got.peer_closed);
        assert_eq!(pair.at_server, b"last\n");
        let got = pair.deliver_to_server(&mut [0x17, 0x03, 0x03, 0x00, 0x01, 0xff]);
        assert_eq!(got, Received::default(), "ignored after close_notify");
        pair.server_sends(b"bye\n");
        let mut wire = Vec::new();
        pair.server.close_notify(&mut wire);
        assert!(!wire.is_empty());
        pair.deliver_to_client(&wire);
        assert_eq!(pair.at_client, b"bye\n");
        assert!(pair.client_eof);
        assert_eq!(pair.server.held_capacity(), 0);
    }

    /// The server closes first: close_notify goes out once, nothing is
    /// encrypted after it, and the client's answer is recognised.
    #[test]
    fn server_closes_first() {
        let configs = Configs::new(&[&TLS12]);
        let mut pair = configs.open();
        let mut wire = Vec::new();
        pair.server.close_notify(&mut wire);
        let sent = wire.len();
        assert!(sent > 0);
        pair.server.close_notify(&mut wire);
        pair.server.send(b"too late\n", &mut wire).unwrap();
        assert_eq!(wire.len(), sent, "once, and nothing after");
        pair.deliver_to_client(&wire);
        assert!(pair.client_eof);
        pair.client.send_close_notify();
        let mut wire = pair.client_wire();
        assert!(pair.deliver_to_server(&mut wire).peer_closed);
    }

    /// Before rustls may send application data, close_notify cannot be
    /// sent: nothing is appended.
    #[test]
    fn close_during_the_handshake_sends_nothing() {
        let configs = Configs::new(&[&TLS12]);
        let mut pair = configs.pair();
        let mut wire = Vec::new();
        pair.server.close_notify(&mut wire);
        assert!(wire.is_empty());
    }
}

mod errors {
    use super::*;

    fn assert_alert(wire: &[u8], description: u8) {
        assert_eq!(wire.len(), 7, "one plaintext alert record: {wire:?}");
        assert_eq!(wire[0], 0x15, "alert content type");
        assert_eq!(&wire[5..], [2, description], "fatal, {description}");
    }

    /// Not TLS at all: an alert, then the error.
    #[test]
    fn plaintext_http_is_refused_with_an_alert() {
        let configs = Configs::new(&[&TLS13]);
        let mut session = TlsSession::new(configs.server).unwrap();
        let mut input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let mut wire = Vec::new();
        let err = session
            .receive(&mut input, &mut wire, |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(matches!(err, TlsError::Rustls(_)), "{err}");
        assert_alert(&wire, 50); // decode_error
    }

    /// A record header rustls refuses is refused as soon as it arrives,
    /// not after its announced length.
    #[test]
    fn an_oversized_record_is_refused_at_its_header() {
        let configs = Configs::new(&[&TLS13]);
        let mut session = TlsSession::new(configs.server).unwrap();
        let mut wire = Vec::new();
        let err = session
            .receive(&mut [0x16, 0x03, 0x01, 0xff, 0xff], &mut wire, |_| {
                ControlFlow::Continue(())
            })
            .unwrap_err();
        assert!(matches!(err, TlsError::Rustls(_)), "{err}");
        assert_alert(&wire, 50);
    }

    /// A record tampered with after the handshake: an encrypted alert,
    /// then the error.
    #[test]
    fn a_tampered_record_is_refused() {
        let configs = Configs::new(&[&TLS13]);
        let mut pair = configs.open();
        let mut wire = pair.client_sends(b"tampered\n");
        let last = wire.len() - 1;
        wire[last] ^= 1;
        let mut out = Vec::new();
        let err = pair
            .server
            .receive(&mut wire, &mut out, |_| ControlFlow::Continue(()))
            .unwrap_err();
        assert!(
            matches!(err, TlsError::Rustls(rustls::Error::DecryptError)),
            "{err}"
        );
        assert_eq!(out[0], 0x17, "an alert, encrypted as TLS 1.3 does");
    }

    /// A handshake message larger than the session holds is refused.
    #[test]
    fn an_oversized_handshake_message_is_refused() {
        let configs = Configs::new(&[&TLS13]);
        let mut session = TlsSession::new(configs.server).unwrap();
        // A ClientHello announcing 40,000 bytes, in full records.
        let mut stream = Vec::new();
        let mut body = vec![1, 0x00, 0x9c, 0x40];
        body.resize(4 + 40_000, 0);
        for chunk in body.chunks(16_384) {
            stream.extend_from_slice(&[0x16, 0x03, 0x01]);
            stream.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            stream.extend_from_slice(chunk);
        }
        let mut wire = Vec::new();
        let mut result = Ok(Received::default());
        for chunk in stream.chunks_mut(4096) {
            result = session.receive(chunk, &mut wire, |_| ControlFlow::Continue(()));
            if result.is_err() {
                break;
            }
            assert!(session.held_len() <= MAX_HELD);
        }
        assert!(matches!(result, Err(TlsError::TooLarge)), "{result:?}");
    }

    /// Sending before the handshake allows it is refused, not queued.
    #[test]
    fn send_before_the_handshake_is_refused() {
        let configs = Configs::new(&[&TLS12]);
        let mut pair = configs.pair();
        let mut wire = Vec::new();
        let err = pair.server.send(b"early\n", &mut wire).unwrap_err();
        assert!(matches!(err, TlsError::NotReady), "{err}");
        assert!(wire.is_empty());
        pair.handshake();
        pair.server_sends(b"in time\n");
        assert_eq!(pair.at_client, b"in time\n");
    }
}
