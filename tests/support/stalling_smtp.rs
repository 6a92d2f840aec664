//! A tiny SMTP server that stalls: it speaks plain SMTP (no TLS, no AUTH),
//! accepts the greeting, EHLO, NOOP, MAIL and RCPT at once, takes the
//! message after DATA, and then never answers it, as a server that hangs
//! after the body does. It counts the messages it took in full.

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
    task: tokio::task::JoinHandle<()>,
}

/// How long a stalled connection is kept open at most (the test's own bound).
const HOLD: Duration = Duration::from_secs(120);

impl StallingSmtp {
    /// Starts it on a free port.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding");
        let port = listener.local_addr().expect("address").port();
        let bodies = Arc::new(AtomicUsize::new(0));
        let counted = bodies.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, counted.clone()));
            }
        });
        Self { port, bodies, task }
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

async fn serve(stream: tokio::net::TcpStream, bodies: Arc<AtomicUsize>) {
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
                // Never answer: hold the connection until the client gives up.
                in_data = false;
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
