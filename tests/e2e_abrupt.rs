//! Abrupt ends: resets mid-frame, half-closes, resets while the server sends. Each is reported
//! once (1006) and leaves no slot or descriptor behind.
mod common;

use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::sync::mpsc;

use common::{Client, Event, metric, serve, test_config};
use ringws::proto::frame::OpCode;
use ringws::{Conn, ConnId, Handler, Message};

struct Recorder(mpsc::Sender<(ConnId, u16)>);

impl Handler for Recorder {
    fn on_message(&mut self, conn: &mut Conn<'_>, msg: Message<'_>) {
        conn.send(msg);
    }
    fn on_close(&mut self, id: ConnId, code: u16, _reason: &str) {
        let _ = self.0.send((id, code));
    }
}

/// Closes with RST instead of FIN (SO_LINGER with a zero timeout).
fn reset(c: Client) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a live linger struct of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            c.stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    drop(c);
}

fn settles(addr: std::net::SocketAddr, name: &str, want: u64) -> bool {
    (0..500).any(|_| {
        let ok = metric(addr, name) == want;
        if !ok {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        ok
    })
}

#[test]
fn abrupt_ends_are_reported_once_and_leak_nothing() {
    let (tx, rx) = mpsc::channel();
    let server = serve(test_config(), move |_| Recorder(tx.clone()));
    let addr = server.local_addr();

    // 1. Reset in the middle of a frame.
    let mut a = Client::connect(addr).unwrap();
    a.send_raw(&[0x82, 0xfe, 0x10, 0x00, 1, 2, 3, 4, 9, 9, 9])
        .unwrap();
    reset(a);
    // 2. Half-close without a Close frame: the server ends TCP too.
    let mut b = Client::connect(addr).unwrap();
    b.send_text("before").unwrap();
    assert_eq!(b.recv().unwrap(), Event::Text("before".into()));
    b.stream.shutdown(Shutdown::Write).unwrap();
    b.read_to_eof().unwrap();
    // 3. Reset while the server is sending a large echo.
    let mut c = Client::connect(addr).unwrap();
    c.send_binary(&vec![5u8; 4 << 20]).unwrap();
    c.send_frame(true, OpCode::Binary, &[1], Some([1, 2, 3, 4]))
        .unwrap();
    reset(c);
    // 4. A clean one, for contrast.
    let mut d = Client::connect(addr).unwrap();
    d.close(1000, "").unwrap();
    assert_eq!(d.recv_close().unwrap().0, 1000);
    d.read_to_eof().unwrap();
    drop(d);

    let mut codes: Vec<u16> = (0..4)
        .map(|_| rx.recv_timeout(common::READ_TIMEOUT).unwrap().1)
        .collect();
    codes.sort();
    assert_eq!(codes, [1000, 1006, 1006, 1006]);
    assert!(settles(addr, "ringws_slab_slots", 1), "a slot leaked");
    assert!(
        settles(addr, "ringws_fixed_files_in_use", 1),
        "a descriptor leaked"
    );
    assert!(
        rx.try_recv().is_err(),
        "on_close called twice for a connection"
    );
    server.shutdown();
    server.join().unwrap();
}
