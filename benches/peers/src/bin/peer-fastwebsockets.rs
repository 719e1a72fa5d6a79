//! fastwebsockets echo / broadcast server on one core: hyper's HTTP/1 upgrade as the crate's
//! examples do, auto-pong and auto-close on (the defaults).
//!
//! Echo: the crate's example loop (`FragmentCollector`, write the frame back). Broadcast: the
//! socket is split (`unstable-split`); the reader copies each message's payload once into
//! `Bytes` and passes it to the hub; a writer task per client writes `Frame`s that borrow that
//! shared payload into a `BufWriter` and flushes once per burst.

use std::convert::Infallible;
use std::rc::Rc;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, Frame, OpCode, Payload, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use ringws_peers::{Hub, Mode, args_or_exit, listen, run_local, serve_all};
use tokio::io::{AsyncRead, AsyncWrite, BufWriter};
use tokio::sync::mpsc;

/// A message to send: opcode and the shared payload.
type Out = (OpCode, Bytes);

async fn echo(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn broadcast(fut: upgrade::UpgradeFut, hub: Rc<Hub<Out>>) -> Result<(), WebSocketError> {
    let ws = fut.await?;
    let (mut rd, mut wr) = ws.split(|s| {
        let (r, w) = tokio::io::split(s);
        (r, BufWriter::with_capacity(64 * 1024, w))
    });
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let key = hub.join(tx.clone());
    let writer = tokio::task::spawn_local(async move {
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some((op, payload)) = next {
                let frame = Frame::new(true, op, None, Payload::Borrowed(&payload));
                if wr.write_frame(frame).await.is_err() {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if wr.flush().await.is_err() {
                return;
            }
        }
    });
    // Pongs and the close echo that the reader owes go out through this client's own queue.
    let mut obligated = |f: Frame<'_>| {
        let _ = tx.send((f.opcode, Bytes::copy_from_slice(&f.payload)));
        async { Ok::<(), Infallible>(()) }
    };
    let res = loop {
        match rd.read_frame(&mut obligated).await {
            Ok(f) if matches!(f.opcode, OpCode::Text | OpCode::Binary) => {
                hub.broadcast(&(f.opcode, Bytes::copy_from_slice(&f.payload)));
            }
            Ok(f) if f.opcode == OpCode::Close => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(e),
        }
    };
    hub.leave(key);
    drop(tx);
    let _ = writer.await;
    res
}

async fn upgrade_request(
    mut req: Request<Incoming>,
    mode: Mode,
    hub: Rc<Hub<Out>>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::task::spawn_local(tokio::task::unconstrained(async move {
        let _ = match mode {
            Mode::Echo => echo(fut).await,
            Mode::Broadcast => broadcast(fut, hub).await,
        };
    }));
    Ok(response)
}

async fn serve(
    stream: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    mode: Mode,
    hub: Rc<Hub<Out>>,
) {
    let io = TokioIo::new(stream);
    let svc = service_fn(move |req| upgrade_request(req, mode, hub.clone()));
    let _ = http1::Builder::new()
        .serve_connection(io, svc)
        .with_upgrades()
        .await;
}

fn main() {
    let args = args_or_exit();
    run_local(async move {
        let listener = listen(args.port, args.tls.is_some()).await;
        let hub = Hub::new();
        let mode = args.mode;
        serve_all!(args, listener, |s| serve(s, mode, hub.clone()))
    });
}
