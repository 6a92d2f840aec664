//! A relay in front of the SMTP server that holds each of the server's
//! answers for a while, as a real server across a network answers each
//! command after some milliseconds. Bytes pass unchanged (STARTTLS and all),
//! so the controller talks to mailpit as before, only slower.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts the relay on a free local port in front of `server`; each read
/// from the server (an answer, or several sent at once) reaches the client
/// `delay` later. Returns the relay's `host:port`; it serves until the
/// process ends.
pub async fn start(server: &str, delay: Duration) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let server = server.to_string();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                if let Ok(upstream) = TcpStream::connect(&server).await {
                    relay(client, upstream, delay).await;
                }
            });
        }
    });
    Ok(address)
}

/// Carries one connection: the client's bytes at once, the server's late.
async fn relay(client: TcpStream, upstream: TcpStream, delay: Duration) {
    let (mut client_reads, mut client_writes) = client.into_split();
    let (mut server_reads, mut server_writes) = upstream.into_split();
    let outbound = async move {
        let _ = tokio::io::copy(&mut client_reads, &mut server_writes).await;
        let _ = server_writes.shutdown().await;
    };
    let inbound = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            let read = match server_reads.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(read) => read,
            };
            tokio::time::sleep(delay).await;
            if client_writes.write_all(&buffer[..read]).await.is_err() {
                break;
            }
        }
        let _ = client_writes.shutdown().await;
    };
    tokio::join!(outbound, inbound);
}
