//! tokio-websockets echo / broadcast server on one core.
//!
//! Echo: the crate's own example loop. Broadcast: a reader task passes every data message to the
//! hub; a writer task per client drains its queue with `feed` and flushes once (one write per
//! burst). `Message` holds its payload in `Bytes`, so a broadcast clones no payload.

use std::rc::Rc;

use futures_util::{SinkExt, StreamExt};
use ringws_peers::{Hub, Mode, accept_loop, args_or_exit, listen, run_local};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_websockets::{Config, Limits, Message, ServerBuilder, WebSocketStream};

type Ws = WebSocketStream<TcpStream>;

async fn accept(stream: TcpStream) -> Option<Ws> {
    let builder = ServerBuilder::new()
        .config(Config::default().frame_size(usize::MAX))
        .limits(Limits::unlimited());
    builder.accept(stream).await.ok().map(|(_req, ws)| ws)
}

async fn echo(stream: TcpStream) {
    let Some(mut ws) = accept(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

async fn broadcast(stream: TcpStream, hub: Rc<Hub<Message>>) {
    let Some(ws) = accept(stream).await else {
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
        if args.tls.is_some() {
            eprintln!("peer-tokio-websockets: no --tls-cert here (plain ws:// only)");
            std::process::exit(2);
        }
        let listener = listen(args.port, false).await;
        match args.mode {
            Mode::Echo => accept_loop(listener, echo).await,
            Mode::Broadcast => {
                let hub = Hub::new();
                accept_loop(listener, move |s| broadcast(s, hub.clone())).await
            }
        }
    });
}
