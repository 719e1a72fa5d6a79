//! tokio-tungstenite echo / broadcast server on one core.
//!
//! Echo: read a message, `send` it back (the crate flushes on `send`). Broadcast: a reader task
//! passes every data message to the hub; a writer task per client drains its queue with `feed`
//! and flushes once per burst. `Message::Text/Binary` hold `Utf8Bytes`/`Bytes`, so a broadcast
//! clones no payload.

use std::rc::Rc;

use futures_util::{SinkExt, StreamExt};
use ringws_peers::{Hub, Mode, args_or_exit, listen, run_local, serve_all};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// A connection: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Unpin + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + 'static> Stream for S {}

async fn echo(stream: impl Stream) {
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

async fn broadcast(stream: impl Stream, hub: Rc<Hub<Message>>) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let key = hub.join(tx);
    let writer = tokio::task::spawn_local(async move {
        while let Some(first) = rx.recv().await {
            let mut next = Some(first);
            while let Some(m) = next {
                if sink.feed(m).await.is_err() {
                    return;
                }
                next = rx.try_recv().ok();
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        if msg.is_text() || msg.is_binary() {
            hub.broadcast(&msg);
        }
    }
    hub.leave(key);
    writer.abort();
}

fn main() {
    let args = args_or_exit();
    run_local(async move {
        let listener = listen(args.port, args.tls.is_some()).await;
        match args.mode {
            Mode::Echo => serve_all!(args, listener, |s| echo(s)),
            Mode::Broadcast => {
                let hub = Hub::new();
                serve_all!(args, listener, |s| broadcast(s, hub.clone()))
            }
        }
    });
}
