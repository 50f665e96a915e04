//! A stand-in pod for sandboxes: answers every TCP request with an HTTP response
//! whose body is its name, and every UDP datagram with its name. Enters a
//! network namespace first when given one.

use std::{
    io::{Read, Write},
    net::{TcpListener, UdpSocket},
    thread,
};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let mut name = "pod".to_string();
    let mut tcp = None;
    let mut udp = None;
    let mut i = 1;
    while i < args.len() {
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--name" => name = v,
            "--tcp" => tcp = Some(v.parse::<u16>()?),
            "--udp" => udp = Some(v.parse::<u16>()?),
            "--netns" => lash_tests::netns::enter(&v)?,
            "--cpu" => lash_tests::netns::pin_to_cpu(v.parse()?)?,
            other => anyhow::bail!("unknown argument {other}"),
        }
        i += 2;
    }
    let mut handles = Vec::new();
    if let Some(port) = udp {
        let sock = UdpSocket::bind(("0.0.0.0", port))?;
        let name = name.clone();
        handles.push(thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((_, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(name.as_bytes(), from);
            }
        }));
    }
    if let Some(port) = tcp {
        let listener = TcpListener::bind(("0.0.0.0", port))?;
        let name = name.clone();
        handles.push(thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let name = name.clone();
                thread::spawn(move || serve(conn, &name));
            }
        }));
    }
    println!("ready");
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// One response per request read; the connection stays open for more.
fn serve(mut conn: std::net::TcpStream, name: &str) {
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let body = format!("{name}\n");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if conn.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
