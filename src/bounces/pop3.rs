//! A session with the bounce mailbox over POP3 (RFC 1939: USER, PASS, UIDL,
//! LIST, RETR, DELE, QUIT), over TLS from the first byte (tokio-rustls, the
//! public web roots plus the provider's CA bundle) or, by explicit choice,
//! in clear text. Every step is bounded by [`STEP_TIMEOUT`], every line and
//! every answer by a size, so a server cannot hold or fill the reader.
//! Deletions take effect at QUIT only, so a session cut off deletes nothing.
//!
//! The protocol is spoken here, on tokio's buffered reader, because the one
//! maintained async POP3 crate (async-pop 1.1.3) keeps a stale decoder
//! state after an answer that spans two reads: the next, shorter answer is
//! never decoded and the session hangs (every mailbox of about 30 mails).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::api::bounces::{MailboxTls, Pop3Server};

/// Why the mailbox could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MailboxError {
    /// No connection (refused, no route, DNS).
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// host:port.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// TLS failed (certificate, handshake) or the CA bundle is unusable.
    #[error("TLS with {host} failed: {why}")]
    Tls {
        /// The host.
        host: String,
        /// What failed.
        why: String,
    },
    /// The server refused the user name or password.
    #[error("the POP3 server refused the credentials: {0}")]
    Auth(String),
    /// Any other POP3 error.
    #[error("POP3 {step} failed: {why}")]
    Protocol {
        /// The command.
        step: &'static str,
        /// The server's answer or the error.
        why: String,
    },
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One logged-in session.
pub struct Session {
    stream: BufReader<Box<dyn Stream>>,
}

/// A message in the mailbox: its number in this session, unique id, size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The message number (this session only).
    pub number: usize,
    /// The UIDL, stable across sessions.
    pub uid: String,
    /// Its size in octets.
    pub size: usize,
}

/// The longest one step (connecting, one command and its answer) may take.
pub const STEP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `step`, cut off after [`STEP_TIMEOUT`].
async fn bounded<T>(
    step: &'static str,
    work: impl std::future::Future<Output = Result<T, MailboxError>>,
) -> Result<T, MailboxError> {
    tokio::time::timeout(STEP_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| {
            Err(MailboxError::Protocol {
                step,
                why: format!("no answer within {} s", STEP_TIMEOUT.as_secs()),
            })
        })
}

fn tls_config(ca_pem: Option<&[u8]>, host: &str) -> Result<rustls::ClientConfig, MailboxError> {
    let tls_error = |why: String| MailboxError::Tls {
        host: host.to_string(),
        why,
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| tls_error(format!("the CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| tls_error(format!("the CA bundle: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(tls_error("the CA bundle holds no PEM certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The longest status or listing line: RFC 1939 allows 512 octets. A
/// message's lines are bounded by what is left of its size instead.
const MAX_LINE: usize = 4096;
/// The longest UIDL or LIST answer: 1 MiB, some 20,000 messages.
const MAX_LISTING: usize = 1024 * 1024;
/// The most of a message read beyond its size: dot-stuffing and line ends.
const RETR_SLACK: usize = 64 * 1024;

impl Session {
    /// Connects to `server` and logs in.
    pub async fn open(
        server: &Pop3Server,
        ca_pem: Option<&[u8]>,
        username: &str,
        password: &str,
    ) -> Result<Self, MailboxError> {
        let mut session = bounded("connect", Self::connect(server, ca_pem)).await?;
        bounded("greeting", session.status("greeting")).await?;
        let login = async {
            session.command("USER", &format!("USER {username}")).await?;
            session.command("PASS", &format!("PASS {password}")).await
        };
        bounded("login", login).await.map_err(|e| match e {
            MailboxError::Protocol { why, .. } => MailboxError::Auth(why),
            other => other,
        })?;
        Ok(session)
    }

    async fn connect(server: &Pop3Server, ca_pem: Option<&[u8]>) -> Result<Self, MailboxError> {
        let address = format!("{}:{}", server.host, server.port);
        let tcp = TcpStream::connect(&address)
            .await
            .map_err(|source| MailboxError::Connect {
                address: address.clone(),
                source,
            })?;
        let stream: Box<dyn Stream> = match server.tls {
            MailboxTls::None => Box::new(tcp),
            MailboxTls::Implicit => {
                let tls_error = |why: String| MailboxError::Tls {
                    host: server.host.clone(),
                    why,
                };
                let config = tls_config(ca_pem, &server.host)?;
                let name = ServerName::try_from(server.host.clone())
                    .map_err(|e| tls_error(e.to_string()))?;
                let tls = TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_error(e.to_string()))?;
                Box::new(tls)
            }
        };
        Ok(Self {
            stream: BufReader::new(stream),
        })
    }

    /// One line of the answer, without its line end; an error at the end
    /// of the stream or past `max` octets.
    async fn line(&mut self, step: &'static str, max: usize) -> Result<Vec<u8>, MailboxError> {
        let mut line = Vec::new();
        let read = (&mut self.stream)
            .take(max as u64 + 2)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|e| fault(step, e.to_string()))?;
        if read == 0 {
            return Err(fault(step, "the server closed the connection".into()));
        }
        if line.last() != Some(&b'\n') {
            return Err(fault(
                step,
                format!("a line longer than {max} octets, or cut off"),
            ));
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(line)
    }

    /// Reads a status line: the text after `+OK`, or the server's `-ERR`.
    async fn status(&mut self, step: &'static str) -> Result<String, MailboxError> {
        let line = self.line(step, MAX_LINE).await?;
        let line = String::from_utf8_lossy(&line);
        if let Some(rest) = line.strip_prefix("+OK") {
            return Ok(rest.trim().to_string());
        }
        let why: String = line.chars().take(200).collect();
        Err(fault(step, format!("the server answered {why:?}")))
    }

    /// Sends `line` and reads its status.
    async fn command(&mut self, step: &'static str, line: &str) -> Result<String, MailboxError> {
        if line.contains(['\r', '\n']) {
            return Err(fault(step, "a line break in the command".into()));
        }
        let stream = self.stream.get_mut();
        let sent = async {
            stream.write_all(line.as_bytes()).await?;
            stream.write_all(b"\r\n").await?;
            stream.flush().await
        };
        sent.await.map_err(|e| fault(step, e.to_string()))?;
        self.status(step).await
    }

    /// The lines of a multi-line answer up to its lone ".", unstuffed,
    /// each ending in CRLF; an error past `limit` octets.
    async fn lines(&mut self, step: &'static str, limit: usize) -> Result<Vec<u8>, MailboxError> {
        let mut body = Vec::new();
        loop {
            let left = limit.saturating_sub(body.len()).max(MAX_LINE);
            let line = self.line(step, left).await?;
            if line == b"." {
                return Ok(body);
            }
            let line = line.strip_prefix(b".").unwrap_or(&line);
            if body.len() + line.len() + 2 > limit {
                return Err(fault(step, format!("an answer longer than {limit} octets")));
            }
            body.extend_from_slice(line);
            body.extend_from_slice(b"\r\n");
        }
    }

    /// A multi-line listing: `number word` per line.
    async fn listing(&mut self, step: &'static str) -> Result<Vec<(usize, String)>, MailboxError> {
        self.command(step, step).await?;
        let body = self.lines(step, MAX_LISTING).await?;
        Ok(String::from_utf8_lossy(&body)
            .lines()
            .filter_map(|line| {
                let (number, word) = line.trim().split_once(' ')?;
                Some((number.parse().ok()?, word.trim().to_string()))
            })
            .collect())
    }

    /// Every message: number, UIDL and size.
    pub async fn list(&mut self) -> Result<Vec<Listed>, MailboxError> {
        let uids = bounded("UIDL", self.listing("UIDL")).await?;
        let sizes: std::collections::HashMap<usize, usize> = bounded("LIST", self.listing("LIST"))
            .await?
            .into_iter()
            .filter_map(|(number, size)| Some((number, size.parse().ok()?)))
            .collect();
        Ok(uids
            .into_iter()
            .map(|(number, uid)| Listed {
                number,
                uid,
                size: sizes.get(&number).copied().unwrap_or(usize::MAX),
            })
            .collect())
    }

    /// The whole of message `number`, whose size the listing gave as
    /// `size` (read up to a little more, for line ends and dot-stuffing).
    pub async fn retrieve(&mut self, number: usize, size: usize) -> Result<Vec<u8>, MailboxError> {
        let limit = size.saturating_add(RETR_SLACK);
        bounded("RETR", async {
            self.command("RETR", &format!("RETR {number}")).await?;
            self.lines("RETR", limit).await
        })
        .await
    }

    /// Marks message `number` deleted (done at [`Session::close`]).
    pub async fn delete(&mut self, number: usize) -> Result<(), MailboxError> {
        bounded("DELE", self.command("DELE", &format!("DELE {number}")))
            .await
            .map(drop)
    }

    /// Ends the session: the server deletes what was marked.
    pub async fn close(mut self) -> Result<(), MailboxError> {
        bounded("QUIT", self.command("QUIT", "QUIT"))
            .await
            .map(drop)
    }
}

fn fault(step: &'static str, why: String) -> MailboxError {
    MailboxError::Protocol { step, why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A server that greets, reads one command and hangs up.
    async fn hang_up_after_greeting() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let (read, mut write) = socket.into_split();
                let _ = write.write_all(b"+OK ready\r\n").await;
                let mut line = String::new();
                let _ = BufReader::new(read).read_line(&mut line).await;
            }
        });
        port
    }

    /// A server that answers each command from `script` (command prefix,
    /// answer), writing each answer in pieces of `piece` bytes.
    async fn scripted(script: Vec<(&'static str, String)>, piece: usize) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let (read, mut write) = socket.into_split();
            let mut read = BufReader::new(read);
            let _ = write.write_all(b"+OK ready\r\n").await;
            loop {
                let mut line = String::new();
                if read.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let answer = script
                    .iter()
                    .find(|(command, _)| line.starts_with(command))
                    .map_or("-ERR unknown\r\n".to_string(), |(_, a)| a.clone());
                for chunk in answer.as_bytes().chunks(piece) {
                    let _ = write.write_all(chunk).await;
                    let _ = write.flush().await;
                    tokio::task::yield_now().await;
                }
            }
        });
        port
    }

    fn plain(port: u16) -> Pop3Server {
        Pop3Server {
            host: "127.0.0.1".into(),
            port,
            tls: MailboxTls::None,
            ca_bundle: None,
        }
    }

    #[tokio::test]
    async fn long_answers_in_many_pieces_are_read_and_the_next_answer_too() {
        let count = 300;
        let uidl: String = (1..=count)
            .map(|n| format!("{n} uid-{n:0>40}\r\n"))
            .collect();
        let list: String = (1..=count)
            .map(|n| format!("{n} {}\r\n", 100 + n))
            .collect();
        let message = "Subject: x\r\n\r\n..a stuffed line\r\nlast\r\n";
        let script = vec![
            ("USER", "+OK\r\n".to_string()),
            ("PASS", "+OK logged in\r\n".to_string()),
            ("UIDL", format!("+OK\r\n{uidl}.\r\n")),
            ("LIST", format!("+OK {count} messages\r\n{list}.\r\n")),
            ("RETR", format!("+OK\r\n{message}.\r\n")),
            ("DELE", "+OK\r\n".to_string()),
            ("QUIT", "+OK bye\r\n".to_string()),
        ];
        let port = scripted(script, 7).await;
        let mut session = Session::open(&plain(port), None, "user", "password")
            .await
            .expect("logged in");
        for _ in 0..3 {
            let listed = session.list().await.expect("listed");
            assert_eq!(listed.len(), count);
            assert_eq!(listed[count - 1].uid, format!("uid-{count:0>40}"));
            assert_eq!(listed[count - 1].size, 100 + count);
        }
        let raw = session.retrieve(1, 200).await.expect("retrieved");
        assert_eq!(raw, b"Subject: x\r\n\r\n.a stuffed line\r\nlast\r\n");
        session.delete(1).await.expect("deleted");
        session.close().await.expect("closed");
    }

    #[tokio::test]
    async fn an_answer_longer_than_its_bound_or_an_err_is_an_error() {
        let script = vec![
            ("USER", "+OK\r\n".to_string()),
            ("PASS", "-ERR [AUTH] invalid password\r\n".to_string()),
        ];
        let port = scripted(script, 64).await;
        let error = Session::open(&plain(port), None, "user", "wrong")
            .await
            .err()
            .expect("refused");
        assert!(
            matches!(&error, MailboxError::Auth(why) if why.contains("invalid password")),
            "{error}"
        );
        let big = format!("+OK\r\n{}\r\n.\r\n", "x".repeat(70_000));
        let script = vec![
            ("USER", "+OK\r\n".to_string()),
            ("PASS", "+OK\r\n".to_string()),
            ("RETR", big),
        ];
        let port = scripted(script, 4096).await;
        let mut session = Session::open(&plain(port), None, "user", "password")
            .await
            .expect("logged in");
        let error = session.retrieve(1, 100).await.expect_err("too long");
        assert!(error.to_string().contains("longer than"), "{error}");
    }

    #[test]
    fn a_server_that_hangs_up_mid_answer_is_an_error_not_a_spin() {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let outcome = runtime.block_on(async {
                let port = hang_up_after_greeting().await;
                let server = Pop3Server {
                    host: "127.0.0.1".into(),
                    port,
                    tls: MailboxTls::None,
                    ca_bundle: None,
                };
                Session::open(&server, None, "user", "password").await.err()
            });
            let _ = done.send(outcome.map(|e| e.to_string()));
        });
        let error = result
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the session ended within 10 s")
            .expect("an error");
        assert!(
            error.contains("credentials") || error.contains("closed"),
            "{error}"
        );
    }
}
