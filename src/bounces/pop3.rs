//! A session with the bounce mailbox over POP3 (async-pop), over TLS from
//! the first byte (tokio-rustls, the public web roots plus the provider's
//! CA bundle) or, by explicit choice, in clear text. Every step is bounded
//! by the caller's deadline. Deletions take effect at QUIT only (RFC 1939),
//! so a session cut off deletes nothing.

use std::sync::Arc;

use async_pop::response::list::ListResponse;
use async_pop::response::types::DataType;
use async_pop::response::uidl::UidlResponse;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite};
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

/// Turns the end of the stream into an error. async-pop 1.1.3 reads again
/// after a read of 0 bytes, without end: a server that closes the
/// connection in the middle of an answer would spin a worker thread for
/// ever (and no timeout fires in a future that never yields).
struct EndIsError<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for EndIsError<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let wanted = buf.remaining() > 0;
        match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) if wanted && buf.filled().len() == before => {
                std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the server closed the connection",
                )))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for EndIsError<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// One logged-in session.
pub struct Session {
    client: async_pop::Client<Box<dyn Stream>>,
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

fn protocol(step: &'static str) -> impl Fn(async_pop::error::Error) -> MailboxError {
    move |e| MailboxError::Protocol {
        step,
        why: e.to_string(),
    }
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

impl Session {
    /// Connects to `server` and logs in.
    pub async fn open(
        server: &Pop3Server,
        ca_pem: Option<&[u8]>,
        username: &str,
        password: &str,
    ) -> Result<Self, MailboxError> {
        bounded("connect", Self::connect(server, ca_pem, username, password)).await
    }

    async fn connect(
        server: &Pop3Server,
        ca_pem: Option<&[u8]>,
        username: &str,
        password: &str,
    ) -> Result<Self, MailboxError> {
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
                let config = tls_config(ca_pem, &server.host)?;
                let name =
                    ServerName::try_from(server.host.clone()).map_err(|e| MailboxError::Tls {
                        host: server.host.clone(),
                        why: e.to_string(),
                    })?;
                let tls = TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| MailboxError::Tls {
                        host: server.host.clone(),
                        why: e.to_string(),
                    })?;
                Box::new(tls)
            }
        };
        let stream: Box<dyn Stream> = Box::new(EndIsError(stream));
        let mut client = async_pop::new(stream).await.map_err(protocol("greeting"))?;
        client
            .login(username, password)
            .await
            .map_err(|e| MailboxError::Auth(e.to_string()))?;
        Ok(Self { client })
    }

    /// Every message: number, UIDL and size.
    pub async fn list(&mut self) -> Result<Vec<Listed>, MailboxError> {
        let uidl = bounded("UIDL", async {
            self.client.uidl(None).await.map_err(protocol("UIDL"))
        })
        .await?;
        let uids = match uidl {
            UidlResponse::Multiple(list) => list
                .items()
                .iter()
                .filter_map(|u| Some((u.index().value().ok()?, u.id().to_string())))
                .collect::<Vec<_>>(),
            UidlResponse::Single(u) => u
                .index()
                .value()
                .ok()
                .map(|i| vec![(i, u.id().to_string())])
                .unwrap_or_default(),
        };
        let listed = bounded("LIST", async {
            self.client.list(None).await.map_err(protocol("LIST"))
        })
        .await?;
        let sizes: std::collections::HashMap<usize, usize> = match listed {
            ListResponse::Multiple(list) => list
                .items()
                .iter()
                .filter_map(|s| Some((s.counter().value().ok()?, s.size().value().ok()?)))
                .collect(),
            ListResponse::Single(s) => s
                .counter()
                .value()
                .ok()
                .zip(s.size().value().ok())
                .into_iter()
                .collect(),
        };
        Ok(uids
            .into_iter()
            .map(|(number, uid)| Listed {
                number,
                uid,
                size: sizes.get(&number).copied().unwrap_or(usize::MAX),
            })
            .collect())
    }

    /// The whole of message `number`.
    pub async fn retrieve(&mut self, number: usize) -> Result<Vec<u8>, MailboxError> {
        let bytes = bounded("RETR", async {
            self.client.retr(number).await.map_err(protocol("RETR"))
        })
        .await?;
        Ok(bytes.to_vec())
    }

    /// Marks message `number` deleted (done at [`Session::close`]).
    pub async fn delete(&mut self, number: usize) -> Result<(), MailboxError> {
        bounded("DELE", async {
            self.client
                .dele(number)
                .await
                .map(drop)
                .map_err(protocol("DELE"))
        })
        .await
    }

    /// Ends the session: the server deletes what was marked.
    pub async fn close(mut self) -> Result<(), MailboxError> {
        bounded("QUIT", async {
            self.client.quit().await.map(drop).map_err(protocol("QUIT"))
        })
        .await
    }
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
