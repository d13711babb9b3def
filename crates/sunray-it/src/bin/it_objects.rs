//! Object scenarios for the integration tests (large objects that stay on the node that
//! made them): each prints what the test checks, one fact per line.

use std::io::BufRead;

use bytes::Bytes;
use sunray::TaskOptions;

/// `mb` MiB of `fill`, made where the task runs, and that node's address.
#[sunray::remote]
fn make(mb: usize, fill: u8) -> (Bytes, String) {
    (
        Bytes::from(vec![fill; mb << 20]),
        sunray::get_runtime_context().node_ip,
    )
}

/// What a reader sees of a blob: its length, whether every byte is `fill`, where the
/// blob was made, and where it was read.
#[sunray::remote]
fn inspect(blob: (Bytes, String), fill: u8) -> (usize, bool, String, String) {
    (
        blob.0.len(),
        blob.0.iter().all(|b| *b == fill),
        blob.1,
        sunray::get_runtime_context().node_ip,
    )
}

fn on(resource: &str) -> TaskOptions {
    TaskOptions::new().resource(resource, 1.0)
}

fn wait_for_stdin(tag: &str) {
    println!("{tag}");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();
}

fn main() {
    sunray::init().expect("init");
    let args: Vec<String> = std::env::args().collect();
    let mb: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    match args.get(1).map(String::as_str) {
        // Made on the node with resource "maker", read by a task on the node with
        // "reader" and by this driver.
        Some("move") => {
            let blob = make.options(on("maker")).remote(mb, 7);
            sunray::wait(std::slice::from_ref(&blob), 1, None).unwrap();
            wait_for_stdin("MADE");
            let seen = inspect.options(on("reader")).remote(&blob, 7);
            let (len, same, made, read) = seen.get().unwrap();
            println!("READ {len} {same} {made} {read}");
            let (b, made) = blob.get().unwrap();
            println!("GOT {} {} {made}", b.len(), b.iter().all(|x| *x == 7));
            drop((b, blob));
            wait_for_stdin("DROPPED");
        }
        // Made on some node, which the test then kills: the driver's get and a task
        // taking it as an argument see it rebuilt on the other node.
        Some("lineage") => {
            let blob = make.remote(mb, 3);
            let (_, _, made, _) = inspect.remote(&blob, 3).get().unwrap();
            println!("MADE {made}");
            wait_for_stdin("KILL");
            let (b, again) = blob.get().unwrap();
            println!("REBUILT {} {} {again}", b.len(), b.iter().all(|x| *x == 3));
            let (len, same, made, _) = inspect.remote(&blob, 3).get().unwrap();
            println!("READ {len} {same} {made}");
        }
        other => panic!("unknown scenario {other:?}"),
    }
}
