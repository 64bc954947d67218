//! TCP listeners (RFC 7766): two-byte length framing, pipelined queries answered as they
//! complete (out of order is allowed, §6.2.1.1), idle connections closed (§6.2.3), and a
//! bound on connections so a flood of idle clients cannot exhaust the process.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};

use super::handler::{Engine, Fast, Job, Proto, ReplyTo};
use crate::metrics as m;

/// Bind a TCP listener with SO_REUSEPORT.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.bind(&addr.into())?;
    s.listen(1024)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

pub async fn serve(
    listener: std::net::TcpListener,
    engine: Arc<ArcSwap<Engine>>,
    stop: Arc<AtomicBool>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("tcp listener: {e}");
            return;
        }
    };
    let limit = Arc::new(Semaphore::new(
        engine.load().config.server.max_tcp_connections,
    ));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped.changed() => break,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::counter!(m::OVERLOAD_DROPS, "limit" => "max_tcp_connections").increment(1);
            continue; // dropping the stream closes it
        };
        let engine = engine.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _permit = permit;
            connection(stream, peer, engine, stop).await;
        });
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    engine: Arc<ArcSwap<Engine>>,
    stop: Arc<AtomicBool>,
) {
    let _ = stream.set_nodelay(true);
    let (mut rd, mut wr) = stream.into_split();
    let idle = engine.load().config.server.tcp_idle_timeout;
    // Replies from the resolver tasks and from this reader go through one writer.
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        let mut framed = Vec::with_capacity(1024);
        while let Some(msg) = rx.recv().await {
            framed.clear();
            framed.extend_from_slice(&(msg.len() as u16).to_be_bytes());
            framed.extend_from_slice(&msg);
            if wr.write_all(&framed).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut len = [0u8; 2];
    let mut msg = Vec::with_capacity(512);
    let mut out = Vec::with_capacity(512);
    while !stop.load(Ordering::Relaxed) {
        match tokio::time::timeout(idle, rd.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => break, // idle, closed, or reset
        }
        let n = u16::from_be_bytes(len) as usize;
        msg.resize(n, 0);
        // A client that sends a length and then stalls is held to the same idle bound.
        match tokio::time::timeout(idle.max(Duration::from_secs(1)), rd.read_exact(&mut msg)).await
        {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let e = engine.load_full();
        let now = Instant::now();
        let fast = e.handle_fast(&msg, Proto::Tcp, peer, now, &mut out);
        e.flush_events();
        match fast {
            Fast::Answered => {
                if tx.send(std::mem::take(&mut out)).await.is_err() {
                    break;
                }
            }
            Fast::Drop => {}
            Fast::Resolve { view, zone, plan } => {
                tokio::spawn(e.resolve(Job {
                    query: msg.clone(),
                    view,
                    zone,
                    plan,
                    reply: Some(ReplyTo::Tcp(tx.clone())),
                    proto: Proto::Tcp,
                    client: peer,
                    started: now,
                }));
            }
            Fast::Prefetch { view, zone, plan } => {
                if tx.send(std::mem::take(&mut out)).await.is_err() {
                    break;
                }
                tokio::spawn(e.resolve(Job {
                    query: msg.clone(),
                    view,
                    zone,
                    plan,
                    reply: None,
                    proto: Proto::Tcp,
                    client: peer,
                    started: now,
                }));
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}
