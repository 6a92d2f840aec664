//! A tiny SMTP server that stalls: it speaks plain SMTP (no TLS, no AUTH),
//! accepts the greeting, EHLO, NOOP, MAIL and RCPT at once, takes the
//! message after DATA, and then never answers it, as a server that hangs
//! after the body does (or, started with `answering_after`, answers it
//! late, as a slow server does). Started with `capped`, it refuses a client
//! more connections than the cap as Postfix does (`421 4.7.0 too many
//! connections` at the greeting). It counts the messages it took in full,
//! the most connections it had open at once and the connections it refused.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A running stalling server, stopped when dropped.
pub struct StallingSmtp {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bodies: Arc<AtomicUsize>,
    connections: Arc<Connections>,
    task: tokio::task::JoinHandle<()>,
}

/// Connections open now, the most open at once, and those refused.
#[derive(Default)]
struct Connections {
    open: AtomicUsize,
    most: AtomicUsize,
    refused: AtomicUsize,
}

/// One open connection, counted until dropped.
struct Open(Arc<Connections>);

impl Open {
    fn new(connections: Arc<Connections>) -> Self {
        let now = connections.open.fetch_add(1, Ordering::SeqCst) + 1;
        connections.most.fetch_max(now, Ordering::SeqCst);
        Self(connections)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long a stalled connection is kept open at most (the test's own bound).
const HOLD: Duration = Duration::from_secs(120);

impl StallingSmtp {
    /// Starts it on a free port.
    pub async fn start() -> Self {
        Self::start_with(None, None).await
    }

    /// Starts one that accepts each body `delay` after it arrived.
    pub async fn answering_after(delay: Duration) -> Self {
        Self::start_with(Some(delay), None).await
    }

    /// Starts one that accepts each body `delay` after it arrived and
    /// refuses any connection past `cap` open at once.
    pub async fn capped(delay: Duration, cap: usize) -> Self {
        Self::start_with(Some(delay), Some(cap)).await
    }

    async fn start_with(answer_after: Option<Duration>, cap: Option<usize>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let port = listener.local_addr().expect("address").port();
        let bodies = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(Connections::default());
        let (counted, opened) = (bodies.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                if cap.is_some_and(|cap| opened.open.load(Ordering::SeqCst) >= cap) {
                    opened.refused.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let refusal = b"421 4.7.0 Error: too many connections from 127.0.0.1\r\n";
                        let _ = stream.write_all(refusal).await;
                    });
                    continue;
                }
                let open = Open::new(opened.clone());
                tokio::spawn(serve(stream, counted.clone(), open, answer_after));
            }
        });
        Self {
            port,
            bodies,
            connections,
            task,
        }
    }

    /// The most connections it had open at once.
    pub fn most_connections(&self) -> usize {
        self.connections.most.load(Ordering::SeqCst)
    }

    /// Connections it refused for its cap.
    pub fn refused(&self) -> usize {
        self.connections.refused.load(Ordering::SeqCst)
    }

    /// Messages it received in full (and never answered).
    pub fn bodies(&self) -> usize {
        self.bodies.load(Ordering::SeqCst)
    }
}

impl Drop for StallingSmtp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    stream: tokio::net::TcpStream,
    bodies: Arc<AtomicUsize>,
    _open: Open,
    answer_after: Option<Duration>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    if write.write_all(b"220 stalling ESMTP\r\n").await.is_err() {
        return;
    }
    let mut in_data = false;
    let deadline = tokio::time::Instant::now() + HOLD;
    while let Ok(Ok(Some(line))) = tokio::time::timeout_at(deadline, lines.next_line()).await {
        if in_data {
            if line == "." {
                bodies.fetch_add(1, Ordering::SeqCst);
                in_data = false;
                // Never answer (hold the connection until the client gives
                // up), or answer late.
                if let Some(delay) = answer_after {
                    tokio::time::sleep(delay).await;
                    if write.write_all(b"250 ok: queued\r\n").await.is_err() {
                        return;
                    }
                }
            }
            continue;
        }
        let verb = line.split_whitespace().next().unwrap_or("").to_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250-stalling\r\n250 8BITMIME\r\n",
            "DATA" => {
                in_data = true;
                b"354 go ahead\r\n"
            }
            "QUIT" => {
                let _ = write.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => b"250 ok\r\n",
        };
        if write.write_all(reply).await.is_err() {
            return;
        }
    }
}
